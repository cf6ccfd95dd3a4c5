"""llama-server's flags for a configuration: every setting written out, spellings read from --help."""

from __future__ import annotations

from dataclasses import fields

import pytest

from tuner.config import AUTO_SLOTS, DRAFT_KEYS, KV_TYPES, LOAD_KEYS, SAMPLING_KEYS, SERVER_KEYS, CONTEXT_KEYS, EngineConfig
from tuner.errors import ConfigError
from tuner.server_flags import SERVER_FLAGS, check_lacking, help_flags, lacking_settings, missing_flags, server_args

# Lines as llama-server's --help writes them (llama.cpp 0c1e570): options, then their text.
HELP = """\
----- common params -----

-h,    --help, --usage                  print usage and exit
-t,    --threads N                      number of CPU threads to use during generation (default: -1)
-c,    --ctx-size N                     size of the prompt context (default: 0, 0 = loaded from model)
-fa,   --flash-attn [on|off|auto]       set Flash Attention use ('on', 'off', or 'auto', default: 'auto')
--swa-full                              use full-size SWA cache (default: false)
                                        when set without -c/--ctx-size, the shared KV pool is sized to
--host HOST                             IP addresses to listen on, comma-separated, or UNIX socket paths
"""


def _value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_every_setting_is_written_out_so_no_default_of_the_binary_decides():
    args = server_args(EngineConfig(n_ctx=4096))
    # llama-cpp-python's "engine decides" is resolved here, not left to llama-server's own rule
    resolved = EngineConfig().effective()
    assert (_value(args, "-t"), _value(args, "-tb")) == (str(resolved.n_threads), str(resolved.n_threads_batch))
    for key, flag in SERVER_FLAGS.items():
        if key != "seed":  # None: a random seed per request, llama-server's default too
            assert flag in args, key
    assert _value(args, "-c") == "4096" and _value(args, "-fa") == "off" and _value(args, "-ctk") == "f16"
    assert "--swa-full" in args  # llama-cpp-python's default; llama-server's is a window-sized cache
    assert args[-2:] == ["-np", "1"]


def test_each_setting_reaches_its_flag():
    config = EngineConfig(
        n_ctx=1024, n_batch=256, n_ubatch=128, n_threads=2, n_threads_batch=2, flash_attn=True, n_gpu_layers=-1,
        type_k=KV_TYPES["q8_0"], type_v=KV_TYPES["q8_0"], offload_kqv=False, op_offload=False, swa_full=False,
        use_mmap=False, temperature=0.2, top_k=7, top_p=0.5, min_p=0.1, repeat_penalty=1.1, seed=3, n_parallel=4,
    )
    args = server_args(config)
    assert [_value(args, f) for f in ("-c", "-b", "-ub", "-t", "-tb", "-fa", "-ngl", "-ctk", "-ctv")] == [
        "4096", "256", "128", "2", "2", "on", "all", "q8_0", "q8_0"]
    assert [_value(args, f) for f in ("--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty", "-s")] == ["0.2", "7", "0.5", "0.1", "1.1", "3"]
    assert {"-nkvo", "--no-op-offload"} <= set(args) and "--swa-full" not in args
    assert _value(args, "--load-mode") == "none" and _value(args, "-np") == "4"  # 4 slots of 1024 tokens each: -c 4096


def test_auto_slots_share_the_context_as_for_a_user_who_sets_only_c():
    """-np -1 is llama-server's default: 4 slots sharing one cache of -c cells, each request may
    use all of it; -c is not multiplied by the slots as it is for -np N."""
    args = server_args(EngineConfig(n_ctx=4096, n_parallel=AUTO_SLOTS))
    assert (_value(args, "-c"), _value(args, "-np")) == ("4096", "-1")
    assert _value(server_args(EngineConfig(n_ctx=4096, n_parallel=4)), "-c") == "16384"
    shared = server_args(EngineConfig(n_ctx=4096, n_parallel=2, kv_unified=True))  # N slots sharing, as auto's 4 do
    assert (_value(shared, "-c"), _value(shared, "-np")) == ("4096", "2") and "--kv-unified" in shared
    assert "--kv-unified" not in server_args(EngineConfig(n_ctx=4096, kv_unified=True))  # one slot shares nothing


def test_every_engine_setting_has_a_server_flag():
    """A setting the tuner varies that llama-server cannot be given would be measured in one
    engine and silently dropped in the other. The exception is llama-cpp-python's prompt lookup
    (DRAFT_KEYS): only a llama-cpp-python study keeps it, and an export to llama-server says it
    does not carry (tests/test_export.py)."""
    covered = set(SERVER_FLAGS) | {"use_mmap", "use_mlock", "offload_kqv", "op_offload", "swa_full", "split_mode", "main_gpu", "n_parallel", "kv_unified", "spec_type"}
    assert {f.name for f in fields(EngineConfig)} - set(DRAFT_KEYS) == covered == set(LOAD_KEYS + CONTEXT_KEYS + SAMPLING_KEYS + SERVER_KEYS)


def test_speculation_is_written_only_when_a_type_is_kept():
    assert "--spec-type" not in server_args(EngineConfig())
    assert _value(server_args(EngineConfig(spec_type="ngram-simple")), "--spec-type") == "ngram-simple"
    with pytest.raises(ConfigError, match="spec_type='ngram' is not a llama-server speculation type"):
        EngineConfig(spec_type="ngram")


def test_the_flags_a_binary_has_are_read_from_its_help_options_not_their_text():
    flags = help_flags(HELP)
    assert {"-h", "--help", "--usage", "-t", "--threads", "-c", "--ctx-size", "-fa", "--flash-attn", "--swa-full", "--host"} == flags
    assert "--ctx-size" in flags and "-1" not in flags  # "(default: -1)" is text


def test_a_flag_the_binary_lacks_is_named_and_values_are_not_flags():
    assert missing_flags(["-t", "2", "-c", "512", "--temp", "-0.5", "--kv-unified"], {"-t", "-c"}) == ["--temp", "--kv-unified"]


def test_a_setting_the_binary_has_no_flag_for_is_left_out_and_refused_at_another_value():
    """A build without --min-p runs min_p at its own value: the flag is not written, a
    configuration asking that value runs, one asking another is refused by name (it would run
    at the binary's value, labelled with another)."""
    flags = {flag for flag in SERVER_FLAGS.values() if flag != "--min-p"} | {"--kv-unified"}
    assert lacking_settings(flags) == ["min_p"]
    assert lacking_settings(flags - {"-c"}) == ["min_p"]  # the context is always written (find checks --ctx-size)
    assert lacking_settings(flags - {"--kv-unified"}) == ["min_p", "kv_unified"]  # a switch too: slots then share nothing
    args = server_args(EngineConfig(n_ctx=512, min_p=0.05), lacking=["min_p"])
    assert "--min-p" not in args and _value(args, "--top-p") == "0.95"
    check_lacking(EngineConfig(n_ctx=512, min_p=0.05), {"min_p": 0.05}, "old-server")
    with pytest.raises(ConfigError, match=r"old-server has no --min-p: it runs min_p at 0.05, not 0.1") as refused:
        check_lacking(EngineConfig(n_ctx=512, min_p=0.1), {"min_p": 0.05}, "old-server")
    assert "leave min_p at 0.05" in refused.value.fix
