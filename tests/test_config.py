"""EngineConfig: typed, validated settings, rejected loudly where llama-cpp-python would ignore them."""

from __future__ import annotations

import llama_cpp
import pytest

from tuner.config import AUTO_SLOT_COUNT, AUTO_SLOTS, CONTEXT_KEYS, KV_TYPES, LOAD_KEYS, EngineConfig
from tuner.errors import ConfigError


def test_unknown_key_is_an_error_with_a_suggestion():
    with pytest.raises(ConfigError) as err:
        EngineConfig.from_dict({"n_thread": 2})
    assert "unknown key 'n_thread'" in str(err.value)
    assert "n_threads" in err.value.fix


def test_removed_guide_keys_are_rejected_not_ignored():
    # llama_cpp.Llama(**kwargs) would swallow these silently.
    for key in ("tfs_z", "mul_mat_q", "cont_batching"):
        with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
            EngineConfig.from_dict({key: 1})


def test_wrong_types_are_rejected():
    with pytest.raises(ConfigError, match="wrong type"):
        EngineConfig(n_threads="2")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="wrong type"):
        EngineConfig(flash_attn=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="wrong type"):
        EngineConfig(n_batch=3.5)  # type: ignore[arg-type]


def test_impossible_values_are_rejected():
    with pytest.raises(ConfigError, match="needs flash_attn"):
        EngineConfig(type_k=KV_TYPES["q8_0"], type_v=KV_TYPES["q8_0"], flash_attn=False)
    with pytest.raises(ConfigError, match="top_p"):
        EngineConfig(top_p=1.5)
    with pytest.raises(ConfigError, match="n_threads"):
        EngineConfig(n_threads=0)
    with pytest.raises(ConfigError, match="KV-cache type"):
        EngineConfig.from_dict({"type_k": "q5_9"})


def test_kv_type_names_map_to_ggml_ids():
    cfg = EngineConfig.from_dict({"type_k": "q8_0", "type_v": "q8_0", "flash_attn": True})
    assert (cfg.type_k, cfg.type_v) == (llama_cpp.GGML_TYPE_Q8_0, llama_cpp.GGML_TYPE_Q8_0)
    assert cfg.kv_type == "q8_0"


def test_our_names_exist_in_llama_cpp_structs():
    # ctypes structs accept misspelled attributes silently: check each name we set is real.
    context_fields = {name for name, _ in llama_cpp.llama_context_params._fields_}
    model_fields = {name for name, _ in llama_cpp.llama_model_params._fields_}
    renamed = {"flash_attn": "flash_attn_type"}
    for key in CONTEXT_KEYS:
        assert renamed.get(key, key) in context_fields, key
    for key in LOAD_KEYS:
        assert {"use_mmap": "load_mode", "use_mlock": "load_mode"}.get(key, key) in model_fields, key


def test_effective_clamps_like_llama_cpp():
    cfg = EngineConfig(n_ctx=2048, n_batch=4096, n_ubatch=4096)
    eff = cfg.effective()
    assert (eff.n_batch, eff.n_ubatch) == (2048, 2048)
    assert eff.n_threads >= 1 and eff.n_threads_batch >= 1


def test_llama_servers_slots_give_the_context_their_sharing_implies():
    """-c is n_ctx for each of N slots of their own, or n_ctx for all of them when they share one
    cache (auto, or --kv-unified with 2 slots or more); users at once in a shared cache need it
    to hold all of their requests."""
    own, shared, auto = EngineConfig(n_ctx=4096, n_parallel=2), EngineConfig(n_ctx=4096, n_parallel=2, kv_unified=True), EngineConfig(n_ctx=4096, n_parallel=AUTO_SLOTS)
    assert [c.server_ctx for c in (own, shared, auto)] == [8192, 4096, 4096]
    assert [c.slot_count for c in (own, shared, auto)] == [2, 2, AUTO_SLOT_COUNT]
    assert [c.context_needed(1000, users=4) for c in (own, shared, auto)] == [1000, 2000, 4000]
    assert auto.context_needed(1000, users=1) == 1000  # one request may use the whole shared cache
    one = EngineConfig(n_ctx=4096, kv_unified=True)
    assert not one.shares_cache and one.effective().kv_unified is False  # one slot shares nothing
