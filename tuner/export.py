"""Export formats: a tuned preset written for the servers people actually run.

* ``yaml``: the preset itself (what :class:`tuner.engine.Engine` loads), unchanged.
* ``llama-server``: one command line for llama.cpp's ``llama-server``, in the flag spellings of a
  current llama.cpp (``common/arg.cpp``): ``-fa on|off`` takes a value, and ``-ngl -1`` now means
  "auto", so llama-cpp-python's "all layers" (-1) is written ``-ngl all``.
* ``ollama``: a Modelfile (``FROM`` + ``PARAMETER`` lines); what ollama cannot set per model is
  said in ``#`` comments instead of being dropped silently.
* ``json``: a config file for llama-cpp-python's own server,
  ``python -m llama_cpp.server --config_file FILE``: ``{"models": [ModelSettings]}``. That file
  rejects unknown keys and sampling is per request there, so sampling goes to :func:`notes`.

Writers are functions ``Preset -> str`` in :data:`FORMATS`. Each writes the keys the preset sets
whose value is not already the target's own default here (:mod:`tuner.targets`), and says what
its ratio was measured against and what of it carries over to the target (:func:`claim_lines`:
``#`` lines for llama-server and ollama, notes on stderr for the JSON file).
"""

from __future__ import annotations

import difflib
import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuner.config import AUTO_SLOT_COUNT, AUTO_SLOTS, KV_TYPE_NAMES, KV_TYPES
from tuner.errors import ModelError, OutputError
from tuner.preset import DRAFT_ENGINE, Preset
from tuner.stats import UNITS
from tuner.server_flags import SERVER_FLAGS, load_flags, server_args, server_value
from tuner.targets import baseline_words, carry_over, defaults_for, left_out, target, targets_own, value_text

__all__ = [
    "DEFAULT_FORMAT",
    "FORMATS",
    "claim_lines",
    "notes",
    "sampling_request",
    "save",
    "to_llama_server",
    "to_modelfile",
    "to_server_config",
    "to_yaml",
    "writer",
]

DEFAULT_FORMAT = "yaml"

# preset key -> ollama PARAMETER (json tags of ollama's api.Options / api.Runner).
OLLAMA_PARAMS = {
    "n_ctx": "num_ctx",
    "n_batch": "num_batch",
    "n_threads": "num_thread",
    "n_gpu_layers": "num_gpu",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
    "seed": "seed",
}
# num_gpu when every layer is asked for and the model's layer count cannot be read: more layers
# than any model has, which llama.cpp-based runners clamp to "all".
ALL_LAYERS_FALLBACK = 999
# Context settings a target cannot set: it runs llama.cpp's defaults for them (both true).
NOT_SETTABLE = {"ollama": ("op_offload", "swa_full"), "json": ("op_offload", "swa_full")}


def writer(name: str) -> Callable[[Preset], str]:
    """The writer for an ``--format`` name.

    Raises:
        OutputError: an unknown format (the message lists the valid ones).
    """
    try:
        return FORMATS[name]
    except KeyError:
        guess = difflib.get_close_matches(name, FORMATS, n=1)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        raise OutputError(f"unknown export format '{name}'", f"{hint}use one of: {', '.join(FORMATS)}") from None


def to_yaml(preset: Preset) -> str:
    """The preset YAML (the default format)."""
    return preset.dumps()


def to_llama_server(preset: Preset) -> str:
    """A runnable ``llama-server`` command line, after ``#`` lines that say what it was measured
    against (a valid shell script). A preset measured on llama-server (``tune start --engine
    llama-server``) gets exactly the flags it was measured with (:func:`tuner.server_flags.server_args`).

    The flags in :data:`SERVER_FLAGS` are written where the preset's value is not llama-server's
    default here; load-time settings (mmap/mlock, KV offload, split mode, main GPU) only where
    they differ from it. No ``-np``: the preset was measured one request at a time, and
    llama-server's default (4 slots sharing one KV cache of n_ctx cells) gives one request the
    whole context too (one slot read 0.98x auto here, benchmarks/concurrency.py --clients 1). A
    preset measured on llama-server carries its slots: ``-np -1`` (that default, its "defaults"
    baseline, kept when another count does not pay), ``-np N --kv-unified`` (N slots sharing
    ``-c`` n_ctx) or ``-np N`` with ``-c`` N times the context each request needs
    (:func:`slots_line` says which).
    """
    if measured_on(preset) == "llama-server":  # the flags it ran with, every one of them
        words = ["llama-server", "-m", _one_line(preset.model), *server_args(preset.config())]
    else:
        values = _target_values(preset, "llama-server")
        words = ["llama-server", "-m", _one_line(preset.model)]
        for key, flag in SERVER_FLAGS.items():
            if key in values:
                words += [flag, server_value(key, values[key])]
        words += load_flags(values)  # no -np: measured one request at a time, which auto slots serve alike
    header = [f"# {line}" for line in [*claim_lines(preset, "llama-server"), slots_line(preset)]]
    return "\n".join([*header, shlex.join(words)]) + "\n"


def slots_line(preset: Preset) -> str:
    """What the exported ``-np`` means for the requests: each slot's context, whether requests at
    once share it, and what it was measured with."""
    n_ctx, config = preset.engine.get("n_ctx") or 0, preset.config().effective()
    users = int((preset.measured.get("workload") or {}).get("concurrency", 1))
    pool = f"one {n_ctx}-token KV cache" if n_ctx else "one KV cache"
    with_users = f"measured with {users} users at once" if users > 1 else "measured one request at a time"
    shared = "(one request may use all of it; requests at once share it"
    if measured_on(preset) != "llama-server":  # the line has no -np
        return (f"no -np: llama-server's default, {AUTO_SLOT_COUNT} slots sharing {pool} {shared}); {with_users}: "
                f"for users at once, measure there (tune start --engine llama-server --concurrency N)")
    waits = "; with fewer slots than users, requests wait for a slot" if config.slot_count < users else ""
    if config.n_parallel == AUTO_SLOTS:
        return f"-np -1: llama-server's default, {AUTO_SLOT_COUNT} slots sharing {pool} {shared}), {with_users}{waits}"
    if config.shares_cache:
        return f"-np {config.n_parallel} --kv-unified: {config.n_parallel} slots sharing {pool} {shared}), {with_users}{waits}"
    if config.n_parallel > 1 or users > 1:
        return (f"-np {config.n_parallel}: {config.n_parallel} slot(s) of {n_ctx} tokens each (-c {config.server_ctx} in all), {with_users}"
                + (waits or ", decoded together"))
    context = f"all {n_ctx} tokens of context" if n_ctx else "the whole context"
    return f"-np 1: one slot with {context}, {with_users} (llama-server's default: {AUTO_SLOT_COUNT} slots sharing {pool})"


def to_modelfile(preset: Preset, n_layers: int | None = None) -> str:
    """An ollama Modelfile: a provenance header, ``FROM`` the GGUF file, one ``PARAMETER`` a setting.

    Args:
        preset: the tuned preset.
        n_layers: layers llama.cpp can offload (repeating layers + output), for ``num_gpu`` when
            the preset offloads all of them; read from the GGUF header when not given.
    """
    values = _target_values(preset, "ollama")
    lines = _modelfile_header(preset)
    lines.append(f"FROM {_modelfile_path(preset.model)}")
    for key, name in OLLAMA_PARAMS.items():
        if key not in values:
            continue
        value = values[key]
        if key == "n_gpu_layers" and value == -1:
            value, why = _all_layers(preset.model, n_layers)
            lines.append(f"# num_gpu {value}: the preset offloads every layer (n_gpu_layers -1); {why}")
        lines.append(f"PARAMETER {name} {value}")
    if values.get("main_gpu"):
        lines.append(f"PARAMETER main_gpu {values['main_gpu']}")
    if values.get("use_mmap") is False:
        lines.append("PARAMETER use_mmap false")
    lines += _ollama_unsupported(values)
    return "\n".join(lines) + "\n"


def to_server_config(preset: Preset) -> str:
    """A config file for ``python -m llama_cpp.server --config_file FILE``: ``{"models": [ModelSettings]}``.

    Every engine setting the preset sets is a ``ModelSettings`` field of the same name and type
    (type_k/type_v as ggml ids). Sampling is not: that server takes it per request (:func:`notes`).
    """
    settings: dict[str, Any] = {"model": preset.model}
    settings.update({key: value for key, value in _target_values(preset, "json").items() if key in preset.engine and key not in NOT_SETTABLE["json"]})
    # The server defaults to logits_all=true, which computes and copies logits for every prompt
    # token (and holds an n_ctx x n_vocab array); the tuner measured with llama-cpp-python's own
    # default, false, as create_completion users get it. Set it to true only to get logprobs.
    # A draft needs it (tuner.preset.DRAFT_ENGINE); the server's prompt lookup uses 2-grams.
    settings["logits_all"] = bool(preset.draft)
    if preset.draft:
        settings.update(draft_model="prompt-lookup-decoding", draft_model_num_pred_tokens=preset.draft["num_pred_tokens"])
    return json.dumps({"models": [settings]}, indent=2) + "\n"


def sampling_request(preset: Preset) -> dict[str, Any]:
    """The preset's sampling as fields of a llama-cpp-python server completion request (those
    that differ from the request's own defaults)."""
    return {key: value for key, value in _target_values(preset, "json").items() if key in preset.sampling}


def notes(preset: Preset, name: str) -> list[str]:
    """What a user must know that the exported text itself cannot carry (one line each): for the
    JSON file, which has no comments, what it was measured against and the sampling to send."""
    if name != "json":
        return []
    lines = [f"note: {line}" for line in claim_lines(preset, "json") + _not_settable(_target_values(preset, "json"), "json")]
    request = sampling_request(preset)
    if request:
        lines.append(
            "note: llama-cpp-python's server takes sampling per request, not in its config file: "
            f"send {json.dumps(request)} with each completion request"
        )
    return lines


def claim_lines(preset: Preset, name: str) -> list[str]:
    """What the preset's figures say and what of them holds for target ``name``: the measured
    figures, the baseline in words, what carries over, what was left out as the target's default."""
    lines = measured_lines(preset)
    if not lines:
        return []
    if measured_on(preset) == name:
        return [*lines, *_same_engine_lines(preset)]
    who, values = target(name).words, _values(preset)
    kept = targets_own(preset.measured, values, name)
    defaults = defaults_for(name, values, kept)
    if preset.measured.get("changes") == {}:
        keep = f"{who}'s own defaults" if preset.measured.get("starting_point") == "defaults" else "your settings"
        lines.append(f"no change measurably paid: keep {keep}, at the context the application requires")
    lines += carry_over(preset.measured, name, values, kept)
    same = left_out(values, name, kept)
    own = {key: value for key, value in kept.items() if key not in same}
    if same:
        lines.append(f"left out, {who}'s defaults here: " + ", ".join(f"{key} {value_text(key, value)}" for key, value in same.items()))
    if own:
        lines.append(
            f"left to {who}'s own defaults (the preset does not change them; measured with {measured_on(preset)}'s): "
            + ", ".join(f"{key} {value_text(key, value)}" + (f" (there {value_text(key, defaults[key])})" if key in defaults else "") for key, value in own.items())
        )
    lines += _draft_lines(preset, name)
    how = " (tune start --engine llama-server)" if name == "llama-server" else ""
    lines.append(f"measured in {measured_on(preset)}; {who} runs its own build and defaults: re-measure there{how}")
    return lines


def _draft_lines(preset: Preset, name: str) -> list[str]:
    """What becomes of the preset's draft (llama-cpp-python's prompt lookup) on target ``name``."""
    if not preset.draft:
        return []
    lookup = f"prompt-lookup speculation ({preset.draft['num_pred_tokens']} draft tokens from {preset.draft['max_ngram_size']}-grams)"
    if name == "json":
        grams = "" if preset.draft["max_ngram_size"] == 2 else f"; the server looks up 2-grams, the preset measured {preset.draft['max_ngram_size']}"
        return [f"{lookup} carries over: draft_model prompt-lookup-decoding, with logits_all true as it needs{grams}"]
    other = {"llama-server": "llama-server has n-gram speculation of its own (--spec-type ngram-simple): measure it there (benchmarks/speculative.py)",
             "ollama": "ollama has no speculation setting"}
    return [f"not carried: {lookup}, llama-cpp-python's Llama(draft_model=...); {other.get(name, 'measure it there')}"]


def measured_on(preset: Preset) -> str:
    """The engine a preset was measured on (presets before engines were recorded: llama-cpp-python)."""
    return str((preset.provenance.get("engine") or {}).get("name", "llama-cpp-python"))


def _same_engine_lines(preset: Preset) -> list[str]:
    """What a preset says on the engine that measured it: the changes from its starting point (the
    engine's defaults, or your --baseline settings), or that none paid."""
    changes = preset.measured.get("changes")
    yours = preset.measured.get("starting_point") == "yours"
    if changes == {}:
        what = "your settings (--baseline)" if yours else "the engine's own defaults here"
        return [f"no change measurably paid: these are {what}, written out"]
    if changes:
        start = "your settings" if yours else "the defaults"
        return [f"changes from {start}, each measured to pay: " + ", ".join(f"{key} {c['from']} -> {c['to']}" for key, c in changes.items())]
    return []


def save(text: str, path: str | Path) -> Path:
    """Write exported text to ``path`` (parent folders created).

    Raises:
        OutputError: the path cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror}", "choose a writable --out path") from exc
    return path


FORMATS: dict[str, Callable[[Preset], str]] = {
    "yaml": to_yaml,
    "json": to_server_config,
    "llama-server": to_llama_server,
    "ollama": to_modelfile,
}


# ---------------------------------------------------------------------------------------------
# Helpers


def _values(preset: Preset) -> dict[str, Any]:
    """The settings the preset sets, validated and typed (KV types as ggml ids); unset (None) left out."""
    config = preset.config()
    keys = [key for key in [*preset.engine, *preset.sampling] if key not in DRAFT_ENGINE]  # logits_all goes with the draft
    return {key: getattr(config, key) for key in keys if getattr(config, key) is not None}


def _target_values(preset: Preset, name: str) -> dict[str, Any]:
    """The settings an export for target ``name`` writes: those not already its default here, and
    not left to its own defaults (a minimal preset's unchanged llama-cpp-python defaults)."""
    values = _values(preset)
    kept = targets_own(preset.measured, values, name)
    skip = left_out(values, name, kept).keys() | kept.keys()
    return {key: value for key, value in values.items() if key not in skip}


def _modelfile_header(preset: Preset) -> list[str]:
    prov = preset.provenance
    origin = f"study '{prov['study']}', trial #{prov['trial']}" if "study" in prov else "a hand-written preset"
    lines = [f"# Modelfile from llama-tuner: {origin}"]
    lines += [f"# {line}" for line in claim_lines(preset, "ollama")]
    return lines


def measured_lines(preset: Preset) -> list[str]:
    """What the preset's figures say, leading with the confirmed ones (a header or a note)."""
    prov, measured = preset.provenance, preset.measured
    decode = measured.get("decode_tok_s") or {}
    if "median" not in decode:
        return []
    machine = (prov.get("machine") or {}).get("summary", "this machine")
    version = prov.get("llama_cpp_version", "?")
    metric = measured.get("objective", "decode_tok_s")
    source = "confirmed by re-measurement" if measured.get("confirmed") else "the trial's own reading, not confirmed"
    lines = []
    if metric != "decode_tok_s" and metric in measured:
        lines.append(f"measured {measured[metric]['median']} ± {measured[metric].get('iqr', '?')} {UNITS.get(metric, metric)} on the "
                     f"{(measured.get('workload') or {}).get('name', '?')} workload ({source})")
    engine = measured_on(preset)
    if engine == "llama-server":
        version = (prov.get("engine") or {}).get("version", "?")
    lines.append(f"measured {decode['median']} ± {decode.get('iqr', '?')} decode tok/s (median ± IQR) with {engine} {version} on {machine}")
    ratio = measured.get("vs_yours") if measured.get("starting_point") == "yours" else measured.get("vs_defaults")
    if ratio is not None:
        lines.append(f"{ratio}x {baseline_words(measured, engine)} on this machine ({source})")
    if measured.get("speculation"):  # decided afterwards on the workload's text (tuner.study.speculation)
        lines.append(f"speculation on your requests' text: {measured['speculation']['why']}")
    return lines


def _all_layers(model: str, n_layers: int | None) -> tuple[int, str]:
    """num_gpu for "every layer": ollama's -1 means "decide for me", not "all"."""
    if n_layers is None:
        from tuner.gguf import read_gguf_info

        try:
            n_layers = read_gguf_info(model).n_layers + 1  # llama.cpp offloads the output layer as one more
        except (ModelError, OSError):  # the model moved, or is not on this machine
            n_layers = None
    if n_layers is None:
        return ALL_LAYERS_FALLBACK, "the model's layer count is unknown, so a number above any model's"
    return n_layers, "ollama's -1 means 'decide for me', so the model's layer count (output layer included)"


def _ollama_unsupported(values: dict[str, Any]) -> list[str]:
    """Comment lines for settings a Modelfile cannot carry."""
    lines = []
    if "n_ubatch" in values:
        lines.append(f"# n_ubatch {values['n_ubatch']}: ollama has no Modelfile parameter for the physical batch size")
    if "n_threads_batch" in values and values["n_threads_batch"] != values.get("n_threads"):
        lines.append(f"# n_threads_batch {values['n_threads_batch']}: ollama uses num_thread for prompt processing too")
    if "flash_attn" in values or "type_k" in values or "type_v" in values:
        lines.append("# flash attention and the KV-cache type are server-wide in ollama; start it with:")
        lines.append(f"#   {_ollama_env(values)} ollama serve")
        k, v = values.get("type_k", KV_TYPES["f16"]), values.get("type_v", KV_TYPES["f16"])
        if k != v:
            lines.append(f"# (K {KV_TYPE_NAMES[k]} / V {KV_TYPE_NAMES[v]}: ollama has one type for both; K's is used above)")
    if values.get("use_mlock"):
        lines.append("# use_mlock: current ollama has no such parameter")
    if values.get("offload_kqv") is False or values.get("split_mode", 1) != 1:
        lines.append("# offload_kqv / split_mode: not settable in ollama; the preset's values differ from the defaults")
    lines += [f"# {line}" for line in _not_settable(values, "ollama")]
    return lines



def _not_settable(values: dict[str, Any], name: str) -> list[str]:
    """One line for each setting the preset turns off that target ``name`` cannot carry."""
    return [
        f"{key} false: {'ollama' if name == 'ollama' else 'the llama-cpp-python server'} has no such setting and runs llama.cpp's default (true)"
        for key in NOT_SETTABLE.get(name, ()) if values.get(key) is False
    ]


def _ollama_env(values: dict[str, Any]) -> str:
    flash = "1" if values.get("flash_attn") else "0"
    kv = KV_TYPE_NAMES[values.get("type_k", KV_TYPES["f16"])]
    return f"OLLAMA_FLASH_ATTENTION={flash} OLLAMA_KV_CACHE_TYPE={kv}"


def _one_line(path: str) -> str:
    if "\n" in path or "\r" in path:
        raise OutputError(f"model path {path!r} contains a line break", "move the model to a path without one")
    return path


def _modelfile_path(path: str) -> str:
    """Quote the FROM value the way ollama's own parser writes it (only with edge spaces)."""
    path = _one_line(path)
    if path != path.strip():
        if '"' in path:
            raise OutputError(f"model path {path!r} has edge spaces and a double quote", "rename the model file")
        return f'"{path}"'
    return path
