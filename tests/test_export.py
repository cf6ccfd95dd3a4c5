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
from tuner.export import FORMATS, to_llama_server, to_modelfile
from tuner.gguf import read_gguf_info
from tuner.preset import Preset

STUDY = "s"

# llama-server options (ggml-org/llama.cpp common/arg.cpp) -> the values each accepts.
# `-fa` takes a value in a current llama.cpp (a bare `-fa` would swallow the next word), and
# `-ngl` reads -1 as "auto": "every layer" is spelled `all`.
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
}
LLAMA_SERVER_SWITCHES = {"-nkvo"}  # options without a value

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


def test_llama_server_line_uses_current_flags_with_the_preset_values(study):
    result = _export(study, "--format", "llama-server")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    options = _parse_llama_server(result.stdout)
    preset = study["preset"]
    engine, sampling = preset.engine, preset.sampling
    assert options.pop("-m") == preset.model
    expected = {
        "-c": str(engine["n_ctx"]),
        "-b": str(engine["n_batch"]),
        "-ub": str(engine["n_ubatch"]),
        "-t": str(engine["n_threads"]),
        "-tb": str(engine["n_threads_batch"]),
        "-fa": "on" if engine["flash_attn"] else "off",
        "-ngl": str(engine["n_gpu_layers"]),  # a CPU study: 0
        "-ctk": _kv(engine["type_k"]),
        "-ctv": _kv(engine["type_v"]),
        "--top-k": str(sampling["top_k"]),
    }
    floats = {"--temp": "temperature", "--top-p": "top_p", "--min-p": "min_p", "--repeat-penalty": "repeat_penalty"}
    assert {flag: float(options.pop(flag)) for flag in floats} == {flag: sampling[key] for flag, key in floats.items()}
    # mmap, no mlock, KV offload, layer split, GPU 0 are llama-server's defaults too: not repeated
    assert options == expected


def test_llama_server_line_for_full_offload_and_quantized_kv(study):
    preset = _variant(study["preset"], n_gpu_layers=-1, flash_attn=True, type_k=8, type_v=2, use_mlock=True, offload_kqv=False)
    options = _parse_llama_server(to_llama_server(preset))
    assert options["-ngl"] == "all"  # not -1, which current llama.cpp reads as "auto"
    assert (options["-fa"], options["-ctk"], options["-ctv"]) == ("on", "q8_0", "q4_0")
    assert options["--load-mode"] == "mlock" and "-nkvo" in options


@pytest.mark.parametrize("path", ["/models/my model's copy.gguf", "/models/$HOME;rm -rf ~.gguf"])
def test_llama_server_quotes_the_model_path(study, path):
    preset = dataclasses.replace(study["preset"], model=path)
    assert _parse_llama_server(to_llama_server(preset))["-m"] == path


def test_llama_server_writes_only_what_the_preset_sets(study):
    preset = dataclasses.replace(study["preset"], engine={"n_ctx": 2048}, sampling={"top_k": 20})
    assert shlex.split(to_llama_server(preset))[3:] == ["-c", "2048", "--top-k", "20"]


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
    expected_ints = {"num_ctx": engine["n_ctx"], "num_batch": engine["n_batch"], "num_thread": engine["n_threads"], "num_gpu": 0, "top_k": sampling["top_k"]}
    assert {name: int(params[name]) for name in expected_ints} == expected_ints
    for name in ("temperature", "top_p", "min_p", "repeat_penalty"):
        assert float(params[name]) == sampling[name]
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
    assert settings == preset.engine  # type_k/type_v as ggml ids, which ModelSettings takes
    note = server_json["stderr"].strip()
    assert note.startswith("note: ") and "\n" not in note
    assert json.loads(note[note.index("{") : note.rindex("}") + 1]) == preset.sampling


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
