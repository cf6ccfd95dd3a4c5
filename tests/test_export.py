"""`tune export --format`: the best preset of a real study, written for llama-server, ollama and llama-cpp-python's server.

The spellings checked here are the targets' own, not this project's: llama-server's options from
llama.cpp's common/arg.cpp, ollama's PARAMETER names from its api/types.go, and the JSON file
against llama-cpp-python's own server settings when its `server` extra is installed.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from typing import Any

import llama_cpp
import pytest
import yaml

from tests.conftest import SMALL_ARGS, run_tune
from tuner.config import AUTO_SLOTS
from tuner.export import FORMATS, notes, to_llama_server, to_modelfile, to_server_config
from tuner.gguf import read_gguf_info
from tuner.hardware import physical_cores
from tuner.preset import Preset

STUDY = "s"

# llama-server options (ggml-org/llama.cpp common/arg.cpp) -> the values each accepts.
# `-fa` takes a value in a current llama.cpp (a bare `-fa` would swallow the next word), and
# `-ngl` reads -1 as "auto": "every layer" is spelled `all`.
# Each target's defaults, read from its own source (a setting equal to them is left out of an
# export): llama.cpp common/common.h (threads: the physical cores on this non-hybrid x86 CPU;
# prompt threads -tb follow the generation threads -t when -t is given),
# ollama api/types.go DefaultOptions, llama-cpp-python server/settings.py and server/types.py.
LLAMA_SERVER_DEFAULTS = {"n_batch": 2048, "n_ubatch": 512, "n_threads": physical_cores(), "n_threads_batch": physical_cores(), "type_k": 1, "type_v": 1,
                         "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0}
OLLAMA_DEFAULTS = {"num_batch": 512, "temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.1}

KV_CACHE_TYPES = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"}
INT = re.compile(r"-?\d+$")


def _is_float(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


LLAMA_SERVER_OPTIONS = {
    "-m": lambda v: bool(v),
    "-c": INT.match,
    "-b": INT.match,
    "-ub": INT.match,
    "-t": INT.match,
    "-tb": INT.match,
    "-fa": {"on", "off", "auto"}.__contains__,
    "-ngl": lambda v: v in ("auto", "all") or INT.match(v),
    "-ctk": KV_CACHE_TYPES.__contains__,
    "-ctv": KV_CACHE_TYPES.__contains__,
    "--temp": _is_float,
    "--top-k": INT.match,
    "--top-p": _is_float,
    "--min-p": _is_float,
    "--repeat-penalty": _is_float,
    "-s": INT.match,
    "--load-mode": {"none", "mmap", "mlock", "dio"}.__contains__,
    "-sm": {"none", "layer", "row", "tensor"}.__contains__,
    "-mg": INT.match,
    "-np": INT.match,
    "--spec-type": {"none", "ngram-simple", "ngram-mod", "ngram-map-k", "ngram-map-k4v", "ngram-cache"}.__contains__,
}
LLAMA_SERVER_SWITCHES = {"-nkvo", "--no-op-offload", "--swa-full", "--kv-unified"}  # options without a value (common/arg.cpp)

# ollama Modelfile PARAMETER names (json tags of ollama's api.Options and api.Runner) -> type.
OLLAMA_INT = {"num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread", "top_k", "seed", "num_keep", "num_predict", "repeat_last_n"}
OLLAMA_FLOAT = {"temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty", "frequency_penalty"}
OLLAMA_BOOL = {"use_mmap"}


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict[str, Any]:
    """A 3-trial study made by the real `tune start`, and its best preset exported with the default format."""
    cwd = tmp_path_factory.mktemp("export")
    storage = f"sqlite:///{cwd / 'study.db'}"
    # speed only and no confirmation rounds: the export is under test here, not the study
    args = ["--trials", "3", "--study", STUDY, "--storage", storage, "--seed", "1", "--no-quality", "--confirm-rounds", "0"]
    started = run_tune("start", *args, *SMALL_ARGS, cwd=cwd)
    assert started.returncode == 0, started.stderr
    exported = run_tune("export", STUDY, "--storage", storage, "--out", "preset.yaml", cwd=cwd)
    assert exported.returncode == 0, exported.stderr
    return {"cwd": cwd, "storage": storage, "preset": Preset.load(cwd / "preset.yaml")}


def _export(study: dict[str, Any], *args: str):
    return run_tune("export", STUDY, "--storage", study["storage"], *args, cwd=study["cwd"])


def _one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def _parse_llama_server(line: str) -> dict[str, str | None]:
    """A llama-server command line as {option: value}; fails on an option llama.cpp does not have."""
    words = shlex.split(line)
    assert words[0] == "llama-server"
    options: dict[str, str | None] = {}
    rest = iter(words[1:])
    for word in rest:
        assert word not in options, f"{word} given twice"
        if word in LLAMA_SERVER_SWITCHES:
            options[word] = None
            continue
        assert word in LLAMA_SERVER_OPTIONS, f"llama-server has no option {word}"
        value = next(rest, None)
        assert value is not None and LLAMA_SERVER_OPTIONS[word](value), f"{word} {value!r} is not a value llama-server takes"
        options[word] = value
    return options


def _parse_modelfile(text: str) -> tuple[list[str], str, dict[str, str]]:
    """A Modelfile as (comment lines, FROM value, {PARAMETER: value})."""
    comments, sources, params = [], [], {}
    for line in text.splitlines():
        if line.startswith("#"):
            comments.append(line)
        elif line.startswith("FROM "):
            sources.append(line.removeprefix("FROM "))
        else:
            instruction, name, value = line.split(" ", 2)
            assert instruction == "PARAMETER", line
            assert name not in params, f"{name} set twice"
            params[name] = value
    assert len(sources) == 1
    return comments, sources[0], params


def _kv(ggml_id: int) -> str:
    return {1: "f16", 8: "q8_0", 2: "q4_0"}[ggml_id]


# ---------------------------------------------------------------------------------------------
# yaml (the default)


def test_yaml_stays_the_default(study):
    printed = _export(study, "--format", "yaml")
    assert printed.returncode == 0, printed.stderr
    as_yaml, default = yaml.safe_load(printed.stdout), yaml.safe_load((study["cwd"] / "preset.yaml").read_text())
    for data in (as_yaml, default):
        data["provenance"].pop("exported")  # a timestamp
    assert as_yaml == default
    assert printed.stderr == ""


# ---------------------------------------------------------------------------------------------
# llama-server


def _command(text: str) -> str:
    """The command line of a llama-server export (after its # lines)."""
    lines = text.splitlines()
    assert all(line.startswith("# ") for line in lines[:-1]) and not lines[-1].startswith("#"), text
    return lines[-1]


def test_llama_server_line_uses_current_flags_with_the_preset_values(study):
    result = _export(study, "--format", "llama-server")
    assert result.returncode == 0, result.stderr
    options = _parse_llama_server(_command(result.stdout))
    preset = study["preset"]
    engine, sampling = preset.engine, preset.sampling
    assert options.pop("-m") == preset.model
    assert "-np" not in options  # measured one request at a time: llama-server's auto slots serve one alike
    flags = {"-c": "n_ctx", "-b": "n_batch", "-ub": "n_ubatch", "-t": "n_threads", "-tb": "n_threads_batch", "-fa": "flash_attn",
             "-ngl": "n_gpu_layers", "-ctk": "type_k", "-ctv": "type_v", "--top-k": "top_k", "--temp": "temperature",
             "--top-p": "top_p", "--min-p": "min_p", "--repeat-penalty": "repeat_penalty"}
    values = {**engine, **sampling}
    defaults = {**LLAMA_SERVER_DEFAULTS, "n_threads_batch": int(options["-t"]) if "-t" in options else physical_cores()}
    for flag, key in flags.items():
        if key in defaults and values[key] == pytest.approx(defaults[key]):
            assert flag not in options, f"{flag}: {key} {values[key]} is llama-server's default, it changes nothing"
            continue
        written = options.pop(flag)
        if key == "flash_attn":
            assert written == ("on" if values[key] else "off")
        elif key in ("type_k", "type_v"):
            assert written == _kv(values[key])
        else:
            assert float(written) == values[key]
    # llama-cpp-python keeps a full-size SWA cache; llama-server's default is a window-sized one
    assert (options.pop("--swa-full", "absent") is None) == engine.get("swa_full", True)
    # mmap, no mlock, KV offload, op offload, layer split, GPU 0 are llama-server's defaults too: not repeated
    assert options == {}


def test_llama_server_export_names_its_baseline_and_the_slots_it_implies(study):
    text = to_llama_server(study["preset"])
    header = text.splitlines()[:-1]
    assert any("x llama-cpp-python's defaults" in line and "on this machine" in line for line in header), header
    assert any(line.startswith("# no -np: llama-server's default, 4 slots sharing one ") and "--concurrency N" in line for line in header)
    assert header[-2].endswith("llama-server runs its own build and defaults: re-measure there (tune start --engine llama-server)")


def test_llama_server_line_for_full_offload_and_quantized_kv(study):
    preset = _variant(study["preset"], n_gpu_layers=-1, flash_attn=True, type_k=8, type_v=2, use_mlock=True, offload_kqv=False)
    options = _parse_llama_server(_command(to_llama_server(preset)))
    assert options["-ngl"] == "all"  # not -1, which current llama.cpp reads as "auto"
    assert (options["-fa"], options["-ctk"], options["-ctv"]) == ("on", "q8_0", "q4_0")
    assert options["--load-mode"] == "mlock" and "-nkvo" in options


def test_op_offload_and_swa_full_reach_the_targets_that_can_set_them(study):
    """llama-server has --no-op-offload and --swa-full (its default: a window-sized SWA cache);
    ollama and llama-cpp-python's server have neither: they run llama.cpp's defaults (both true),
    so a preset that turns one off says it is not carried, and the JSON file never names them."""
    off = _variant(study["preset"], op_offload=False, swa_full=True)
    options = _parse_llama_server(_command(to_llama_server(off)))
    assert "--no-op-offload" in options and "--swa-full" in options
    assert "--swa-full" not in _parse_llama_server(_command(to_llama_server(_variant(study["preset"], swa_full=False))))
    models = json.loads(to_server_config(off))["models"][0]
    assert "op_offload" not in models and "swa_full" not in models
    assert any("op_offload false: the llama-cpp-python server has no such setting" in line for line in notes(off, "json"))
    assert "# op_offload false: ollama has no such setting and runs llama.cpp's default (true)" in to_modelfile(off, n_layers=19)


@pytest.mark.parametrize("path", ["/models/my model's copy.gguf", "/models/$HOME;rm -rf ~.gguf"])
def test_llama_server_quotes_the_model_path(study, path):
    preset = dataclasses.replace(study["preset"], model=path)
    assert _parse_llama_server(_command(to_llama_server(preset)))["-m"] == path


def test_llama_server_writes_only_what_the_preset_sets(study):
    preset = dataclasses.replace(study["preset"], engine={"n_ctx": 2048}, sampling={"top_k": 20})
    assert shlex.split(_command(to_llama_server(preset)))[3:] == ["-c", "2048", "--top-k", "20"]


# ---------------------------------------------------------------------------------------------
# ollama


def test_ollama_modelfile(study):
    result = _export(study, "--format", "ollama", "--out", "Modelfile")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wrote Modelfile (trial #")
    comments, source, params = _parse_modelfile((study["cwd"] / "Modelfile").read_text())
    preset = study["preset"]
    assert source == preset.model
    header = "\n".join(comments)
    assert f"study '{STUDY}', trial #{preset.provenance['trial']}" in header
    assert f"{preset.measured['decode_tok_s']['median']} ± {preset.measured['decode_tok_s']['iqr']} decode tok/s" in header
    assert set(params) <= OLLAMA_INT | OLLAMA_FLOAT | OLLAMA_BOOL, "ollama create rejects an unknown parameter"
    assert all(INT.match(params[name]) for name in set(params) & OLLAMA_INT)  # ollama parses these with ParseInt
    engine, sampling = preset.engine, preset.sampling
    assert {name: int(params[name]) for name in ("num_ctx", "num_thread", "num_gpu")} == {"num_ctx": engine["n_ctx"], "num_thread": engine["n_threads"], "num_gpu": 0}
    values = {"num_batch": engine["n_batch"], **{name: sampling[name] for name in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty")}}
    for name, value in values.items():
        if value == pytest.approx(OLLAMA_DEFAULTS[name]):
            assert name not in params, f"{name} {value} is ollama's default: left out"
        else:
            assert float(params[name]) == value
    # what a Modelfile cannot carry is said, not dropped
    assert any(f"n_ubatch {engine['n_ubatch']}" in line for line in comments)
    kv = _kv(engine["type_k"])
    assert any(f"OLLAMA_FLASH_ATTENTION={int(engine['flash_attn'])} OLLAMA_KV_CACHE_TYPE={kv} ollama serve" in line for line in comments)


def test_ollama_num_gpu_for_every_layer_is_the_models_layer_count(study, model_path):
    preset = _variant(study["preset"], n_gpu_layers=-1)
    comments, _, params = _parse_modelfile(to_modelfile(preset))
    layers = read_gguf_info(model_path).n_layers + 1  # the repeating layers and the output layer
    assert params["num_gpu"] == str(layers)  # ollama's -1 would mean "decide for me"
    assert any(line.startswith(f"# num_gpu {layers}:") for line in comments)


def test_ollama_num_gpu_when_the_layer_count_is_unknown(study, tmp_path):
    preset = dataclasses.replace(_variant(study["preset"], n_gpu_layers=-1), model=str(tmp_path / "gone.gguf"))
    comments, _, params = _parse_modelfile(to_modelfile(preset))
    assert params["num_gpu"] == "999"
    assert any(line.startswith("# num_gpu 999:") and "unknown" in line for line in comments)


# ---------------------------------------------------------------------------------------------
# json (llama-cpp-python's server)


@pytest.fixture(scope="module")
def server_json(study) -> dict[str, Any]:
    result = _export(study, "--format", "json")
    assert result.returncode == 0, result.stderr
    return {"text": result.stdout, "stderr": result.stderr}


def test_json_is_a_server_config_with_the_engine_settings(study, server_json):
    data = json.loads(server_json["text"])  # stdout is the file alone; the note went to stderr
    assert list(data) == ["models"] and len(data["models"]) == 1
    settings = data["models"][0]
    preset = study["preset"]
    assert settings.pop("model") == preset.model
    assert settings.pop("logits_all") is False  # as measured; the server's own default is true
    assert settings.items() <= preset.engine.items()  # type_k/type_v as ggml ids, which ModelSettings takes
    # left out: only what llama-cpp-python's server already defaults to here (ModelSettings' own defaults)
    from llama_cpp.server.settings import ModelSettings

    for key in preset.engine.keys() - settings.keys() - {"op_offload", "swa_full"}:  # those two: no such setting there
        default = ModelSettings.model_fields[key].default
        assert preset.engine[key] == (1 if default is None and key in ("type_k", "type_v") else default), key
    if ModelSettings.model_fields["use_mlock"].default:  # the server locks the model where it can; Llama does not
        assert preset.engine["use_mlock"] is False and settings["use_mlock"] is False
    lines = server_json["stderr"].strip().splitlines()
    assert all(line.startswith("note: ") for line in lines)
    assert any("x llama-cpp-python's defaults" in line for line in lines)
    sampling = [line for line in lines if "takes sampling per request" in line]
    if sampling:
        sent = json.loads(sampling[0][sampling[0].index("{") : sampling[0].rindex("}") + 1])
        assert sent.items() <= preset.sampling.items()


def test_json_is_accepted_by_llama_cpp_pythons_own_server(study, server_json):
    try:
        from llama_cpp.server.model import LlamaProxy
        from llama_cpp.server.settings import ConfigFileSettings
        from llama_cpp.server.types import CreateCompletionRequest
    except ImportError as exc:
        pytest.skip(f"llama-cpp-python's server extra is not installed ({exc}): cannot validate against its settings")
    config = ConfigFileSettings.model_validate_json(server_json["text"])  # as `--config_file FILE.json` reads it
    preset = study["preset"]
    request = CreateCompletionRequest(prompt="x", **preset.sampling)
    assert {key: getattr(request, key) for key in preset.sampling} == preset.sampling
    llm = LlamaProxy.load_llama_from_model_settings(config.models[0])
    try:
        params, engine = llm.context_params, preset.engine
        assert llm.n_ctx() == engine["n_ctx"]
        assert (params.n_batch, params.n_ubatch) == (engine["n_batch"], engine["n_ubatch"])
        assert (params.n_threads, params.n_threads_batch) == (engine["n_threads"], engine["n_threads_batch"])
        assert (params.type_k, params.type_v) == (engine["type_k"], engine["type_v"])
        assert params.flash_attn_type == (
            llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if engine["flash_attn"] else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        assert config.models[0].logits_all is False
    finally:
        llm.close()


# ---------------------------------------------------------------------------------------------
# what carries over: a gain the target's defaults already have


def _gained(study, start: str, **changes: tuple[Any, Any]) -> Preset:
    """The study's preset, made to claim one measured gain: ``key=(from, to)`` from ``start``."""
    preset = _variant(study["preset"], **{key: to for key, (_, to) in changes.items() if key in study["preset"].engine})
    measured = {
        **preset.measured,
        "starting_point": start,
        "changes": {key: {"from": was, "to": to, "group": "test"} for key, (was, to) in changes.items()},
        "vs_defaults": 1.2,
        "vs_yours": 1.2,
    }
    return dataclasses.replace(preset, measured=measured)


def test_llama_server_a_thread_gain_it_already_has_carries_no_flag_and_says_so(study):
    cores = physical_cores()
    preset = _gained(study, "defaults", n_threads=(1, cores), n_threads_batch=(1, cores))
    text = to_llama_server(preset)
    options = _parse_llama_server(_command(text))
    assert "-t" not in options and "-tb" not in options
    assert f"# 1.2x llama-cpp-python's defaults (n_threads 1, n_threads_batch 1) on this machine" in text
    assert f"# llama-server defaults to n_threads {cores} here: this gain is already yours there (left out)" in text


def test_llama_server_prompt_threads_follow_the_generation_threads_it_is_given(study):
    # -tb defaults to -t: with -t 1 written, prompt threads equal to the cores must be written too
    cores = physical_cores()
    if cores < 2:
        pytest.skip("needs two physical cores: one thread must differ from the cores")
    preset = _gained(study, "yours", n_threads=(cores, 1), n_threads_batch=(1, cores))
    options = _parse_llama_server(_command(to_llama_server(preset)))
    assert options["-t"] == "1" and options["-tb"] == str(cores)
    same = _gained(study, "yours", n_threads=(cores, 1), n_threads_batch=(cores, 1))
    options = _parse_llama_server(_command(to_llama_server(same)))
    assert options["-t"] == "1" and "-tb" not in options  # 1 is -t's: llama-server's default for -tb then


def test_a_preset_from_your_settings_that_changes_nothing_says_keep_your_settings(study):
    text = to_llama_server(_gained(study, "yours"))
    assert "no change measurably paid: keep your settings, at the context the application requires" in text


def test_a_minimal_preset_from_the_defaults_leaves_what_it_does_not_change_to_the_target(study):
    # Writing llama-cpp-python's unchanged defaults (-t 1 on 2 cores) would make llama-server
    # slower than its own defaults: only the change and the required context are written.
    preset = _gained(study, "defaults", flash_attn=(False, True))
    text = to_llama_server(preset)
    options = _parse_llama_server(_command(text))
    assert set(options) == {"-m", "-c", "-fa"} and options["-fa"] == "on"
    assert "# left to llama-server's own defaults (the preset does not change them; measured with llama-cpp-python's): " in text
    nothing = _gained(study, "defaults")  # the study found no change that pays
    assert set(_parse_llama_server(_command(to_llama_server(nothing)))) == {"-m", "-c"}
    assert "no change measurably paid: keep llama-server's own defaults" in to_llama_server(nothing)
    on_server = dataclasses.replace(preset, provenance={**preset.provenance, "engine": {"name": "llama-server"}})
    assert "(the preset does not change them; measured with llama-server's): " in to_modelfile(on_server)  # the engine that measured


def test_ollama_a_batch_gain_it_already_has_carries_no_parameter_and_threads_are_its_own_choice(study):
    # ollama's thread count is its own choice (0: decided at run time), so no thread gain can be
    # said to be already there; its num_batch default (512) can.
    preset = _gained(study, "yours", n_batch=(256, 512), n_threads=(1, 2))
    comments, _, params = _parse_modelfile(to_modelfile(preset))
    header = "\n".join(comments)
    assert "num_batch" not in params and params["num_thread"] == "2"
    assert "1.2x your settings (--baseline) (n_batch 256, n_threads 1) on this machine" in header
    assert "ollama defaults to n_batch 512 here: this gain is already yours there (left out)" in header
    assert "ollama decides n_threads itself: the worth of n_threads 1 -> 2 may not carry over" in header


def test_json_a_thread_gain_the_server_already_has_carries_no_key_and_says_so(study):
    cpus = __import__("multiprocessing").cpu_count()
    default = max(cpus // 2, 1)  # llama-cpp-python's server: n_threads cpu_count // 2
    preset = _gained(study, "yours", n_threads=(default + 3, default))
    settings = json.loads(to_server_config(preset))["models"][0]
    assert "n_threads" not in settings
    said = "\n".join(notes(preset, "json"))
    assert f"llama-cpp-python's server defaults to n_threads {default} here: this gain is already yours there (left out)" in said
    # a default that differs from the baseline's value: the ratio does not carry over
    other = _gained(study, "defaults", n_ctx=(4096, 8192))
    assert "llama-cpp-python's server defaults to n_ctx 2048, not the 4096 measured against: the ratio does not carry over" in "\n".join(notes(other, "json"))


# ---------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(("value", "fragment"), [("toml", "unknown export format 'toml'"), ("olama", "did you mean 'ollama'?")])
def test_unknown_format_is_one_line_naming_the_formats(tmp_path, value, fragment):
    # no storage here: the format is checked before anything is opened
    result = run_tune("export", STUDY, "--format", value, "--out", str(tmp_path / "x"), cwd=tmp_path)
    _one_line_error(result, fragment, *FORMATS)
    assert not (tmp_path / "x").exists() and not (tmp_path / "studies").exists()


def test_unwritable_out_is_one_line(study, tmp_path):
    _one_line_error(_export(study, "--format", "llama-server", "--out", str(tmp_path)), f"cannot write {tmp_path}", "--out")


def _variant(preset: Preset, **engine: Any) -> Preset:
    """The study's preset with some engine settings changed (still a valid config)."""
    changed = dataclasses.replace(preset, engine={**preset.engine, **engine})
    changed.config()
    return changed


# ---------------------------------------------------------------------------------------------
# a draft (prompt-lookup speculation, kept by tuner.study.speculation)


def _drafted(study) -> Preset:
    preset = study["preset"]
    return dataclasses.replace(preset, engine={**preset.engine, "logits_all": True}, draft={"num_pred_tokens": 10, "max_ngram_size": 2})


def test_a_draft_reaches_llama_cpp_pythons_own_server_and_is_said_not_to_carry_elsewhere(study):
    preset = _drafted(study)
    settings = json.loads(to_server_config(preset))["models"][0]
    assert settings["draft_model"] == "prompt-lookup-decoding" and settings["draft_model_num_pred_tokens"] == 10 and settings["logits_all"] is True
    assert any("prompt-lookup speculation (10 draft tokens from 2-grams) carries over" in line for line in notes(preset, "json"))
    server = to_llama_server(preset)
    assert "# not carried: prompt-lookup speculation (10 draft tokens from 2-grams)" in server and "--spec-type ngram-simple" in server
    assert "--spec" not in _command(server) and "logits" not in _command(server)
    assert "ollama has no speculation setting" in to_modelfile(preset)
    assert "logits_all" not in to_modelfile(preset) and "draft" not in to_modelfile(preset).split("#")[0]
    try:
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding
        from llama_cpp.server.model import LlamaProxy
        from llama_cpp.server.settings import ConfigFileSettings
    except ImportError as exc:
        pytest.skip(f"llama-cpp-python's server extra is not installed ({exc})")
    llm = LlamaProxy.load_llama_from_model_settings(ConfigFileSettings.model_validate_json(to_server_config(preset)).models[0])
    try:
        assert isinstance(llm.draft_model, LlamaPromptLookupDecoding) and llm.draft_model.num_pred_tokens == 10
        assert llm.scores.shape[0] == llm.n_ctx()  # logits_all: no failure past n_batch
    finally:
        llm.close()


def test_a_llama_server_preset_with_speculation_starts_with_its_spec_type(study):
    """A preset measured on llama-server carries the --spec-type it kept, and says what it was worth."""
    preset = study["preset"]
    why = "kept ngram-simple (ngram-simple 1.30x none (1.25-1.40, 80% of drafts accepted); 5 interleaved rounds on your requests' text)"
    served = dataclasses.replace(preset, server={"spec_type": "ngram-simple"}, provenance={**preset.provenance, "engine": {"name": "llama-server", "version": "b1"}},
                                 measured={**preset.measured, "speculation": {"kept": "ngram-simple", "why": why, "candidates": []}})
    text = to_llama_server(served)
    assert _parse_llama_server(_command(text))["--spec-type"] == "ngram-simple"
    assert f"# speculation on your requests' text: {why}" in text


def test_a_llama_server_preset_that_changes_nothing_names_its_starting_point(study):
    """On the engine that measured it, "nothing paid" is said of the settings the study started
    from: llama-server's defaults, or your --baseline settings (not called the engine's defaults)."""
    on_server = {**study["preset"].provenance, "engine": {"name": "llama-server", "version": "b1"}}
    for start, words in (("defaults", "these are the engine's own defaults here"), ("yours", "these are your settings (--baseline)")):
        preset = dataclasses.replace(study["preset"], provenance=on_server, measured={**study["preset"].measured, "changes": {}, "starting_point": start})
        assert f"# no change measurably paid: {words}, written out" in to_llama_server(preset)


def test_a_llama_server_preset_keeping_its_auto_slots_starts_them_and_says_they_share_the_context(study):
    """A study on llama-server starts at its defaults, -np -1 (auto: 4 slots sharing -c); a preset
    that kept them writes -np -1 with -c the context each request may use, and says so."""
    on_server = {**study["preset"].provenance, "engine": {"name": "llama-server", "version": "b1"}}
    auto = dataclasses.replace(study["preset"], server={"n_parallel": AUTO_SLOTS}, provenance=on_server)
    text = to_llama_server(auto)
    options = _parse_llama_server(_command(text))
    assert (options["-np"], options["-c"]) == ("-1", str(auto.engine["n_ctx"]))
    assert f"# -np -1: llama-server's default, 4 slots sharing one {auto.engine['n_ctx']}-token KV cache" in text
    shared = dataclasses.replace(auto, server={"n_parallel": 2, "kv_unified": True})
    options = _parse_llama_server(_command(to_llama_server(shared)))
    assert (options["-np"], options["-c"]) == ("2", str(auto.engine["n_ctx"])) and "--kv-unified" in options
    assert f"# -np 2 --kv-unified: 2 slots sharing one {auto.engine['n_ctx']}-token KV cache" in to_llama_server(shared)
    one = dataclasses.replace(auto, server={})
    assert f"# -np 1: one slot with all {auto.engine['n_ctx']} tokens of context, measured one request at a time (llama-server's default" in to_llama_server(one)
