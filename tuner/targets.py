"""What each export target does by default on this machine, and what a preset's claim means there.

A preset's ratio is measured against a baseline in llama-cpp-python (its defaults, or the user's
own settings with ``--baseline``). Another target has defaults of its own: llama-server already
runs every physical core, so a preset whose gain is ``n_threads 1 -> 2`` is no gain there. So
each export (1) leaves out the settings equal to the target's default here (they change nothing),
(2) leaves a minimal preset's *unchanged* llama-cpp-python defaults to the target's own (writing
``-t 1``, llama-cpp-python's default on 2 cores, would make llama-server slower than its own
default: a user of the target starts from the target's defaults, not from llama-cpp-python's),
(3) names its baseline in words, and (4) says, for each change the preset makes, whether the
target's default already has it, matches the baseline (the worth may carry over), or differs
(the ratio does not carry over).

Each table below is read from the target's own source or documentation, named beside it. A
setting a target decides for itself (flash attention "auto", ollama's context and thread count,
which depend on its version and machine) is absent from its table: always written, never
claimed to match.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from tuner.config import KV_TYPE_NAMES, KV_TYPES
from tuner.hardware import physical_cores
from tuner.server_flags import SPLIT_MODES

__all__ = ["TARGETS", "Target", "baseline_words", "carry_over", "defaults_for", "left_out", "target", "targets_own", "value_text"]

# Written to every target even when the preset leaves it as the starting point had it: the
# context the application requires, and (in a preset's ``placement``) the layers the study's
# defaults offloaded as its candidates did.
REQUIRED = ("n_ctx",)

F16 = KV_TYPES["f16"]


@dataclass(frozen=True)
class Target:
    """An export target: its ``--format`` name, its name in words, and where its defaults come from."""

    name: str
    words: str
    source: str


TARGETS = {
    "llama-server": Target("llama-server", "llama-server", "llama.cpp common/common.h and tools/server/server.cpp"),
    "ollama": Target("ollama", "ollama", "ollama api/types.go DefaultOptions"),
    "json": Target("json", "llama-cpp-python's server", "llama_cpp/server/settings.py ModelSettings and server/types.py"),
}


def target(name: str) -> Target:
    return TARGETS[name]


def defaults_for(name: str, values: dict[str, Any] | None = None, own: Collection[str] = ()) -> dict[str, Any]:
    """The target's default for each preset key it has one for, on this machine.

    Args:
        values, own: the preset's values and the keys an export leaves to the target
            (:func:`targets_own`): llama-server's prompt threads default to the generation
            threads it is given (``-tb`` follows ``-t``), so that default depends on them.
    """
    if name == "llama-server":
        # common_params: n_batch 2048, n_ubatch 512, threads common_cpu_get_num_math() (the
        # physical cores on a non-hybrid x86 CPU), prompt threads = the generation threads
        # (cpuparams_batch copies cpuparams), KV f16, sampling temp 0.80, top_k 40, top_p 0.95,
        # min_p 0.05, penalty_repeat 1.00; n_ctx 0 = the training context, -fa auto, -ngl auto.
        cores = physical_cores()
        given = (values or {}).get("n_threads") if "n_threads" not in own else None
        return {
            "n_batch": 2048, "n_ubatch": 512, "n_threads": cores, "n_threads_batch": given or cores,
            "type_k": F16, "type_v": F16, "offload_kqv": True, "use_mmap": True, "use_mlock": False,
            "op_offload": True, "swa_full": False,  # common_params: no_op_offload false, swa_full false
            "split_mode": 1, "main_gpu": 0,
            "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0,
        }
    if name == "ollama":
        # DefaultOptions: num_batch 512, temperature 0.8, top_k 40, top_p 0.9, repeat_penalty 1.1,
        # min_p 0 (unset); num_ctx and num_thread depend on the version and the machine.
        return {"n_batch": 512, "temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.1, "main_gpu": 0,
                "op_offload": True, "swa_full": True}  # not settable: llama.cpp's context defaults
    if name == "json":
        # ModelSettings: n_ctx 2048, n_batch 512, n_ubatch 512, n_threads cpu_count // 2,
        # n_threads_batch cpu_count, n_gpu_layers 0, flash_attn false, offload_kqv true, mmap and
        # mlock where supported (mlock: unlike Llama's default), type_k/type_v unset (f16); the
        # request defaults: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1.1.
        import llama_cpp

        cpus = multiprocessing.cpu_count()
        return {
            "n_ctx": 2048, "n_batch": 512, "n_ubatch": 512, "n_threads": max(cpus // 2, 1), "n_threads_batch": max(cpus, 1),
            "n_gpu_layers": 0, "flash_attn": False, "offload_kqv": True, "split_mode": 1, "main_gpu": 0,
            "use_mmap": bool(llama_cpp.llama_supports_mmap()), "use_mlock": bool(llama_cpp.llama_supports_mlock()),
            "type_k": F16, "type_v": F16, "op_offload": True, "swa_full": True,  # not settable: llama.cpp's context defaults
            "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.1,
        }
    return {}


def left_out(values: dict[str, Any], name: str, own: Collection[str] = ()) -> dict[str, Any]:
    """The preset values equal to the target's default here: an export leaves them out."""
    defaults = defaults_for(name, values, own)
    return {key: value for key, value in values.items() if key in defaults and _same(value, defaults[key])}


def targets_own(measured: dict[str, Any], values: dict[str, Any], name: str) -> dict[str, Any]:
    """The settings of a minimal preset from llama-cpp-python's defaults that it does not change
    (and that are not the requirement): an export leaves them to the target's own defaults. A
    preset from your own settings (``--baseline``) or a full winner writes them all."""
    if measured.get("starting_point") != "defaults" or "changes" not in measured:
        return {}
    kept = set(measured["changes"]) | set(REQUIRED) | set(measured.get("placement") or {})
    return {key: value for key, value in values.items() if key not in kept}


def baseline_words(measured: dict[str, Any], engine: str = "llama-cpp-python") -> str:
    """What a preset's ratio was measured against, in words: "llama-cpp-python's defaults
    (n_threads 1)" (or the ``engine``'s that measured it), with the values the preset changes as
    the baseline had them."""
    start = measured.get("starting_point", "defaults")
    changes = measured.get("changes") or {}
    was = ", ".join(f"{key} {change['from']}" for key, change in changes.items())
    words = "your settings (--baseline)" if start == "yours" else f"{engine}'s defaults"
    layers = (measured.get("placement") or {}).get("n_gpu_layers")
    if layers and start != "yours":
        words += f" with n_gpu_layers {layers}"
    return f"{words} ({was})" if was else words


def carry_over(measured: dict[str, Any], name: str, values: dict[str, Any] | None = None, own: Collection[str] = ()) -> list[str]:
    """For each change the preset makes, whether the target's default here already has it,
    equals the baseline's value (what it is worth may carry over) or differs (it does not)."""
    defaults, who = defaults_for(name, values, own), target(name).words
    lines = []
    for key, change in (measured.get("changes") or {}).items():
        if key not in defaults:
            lines.append(f"{who} decides {key} itself: the worth of {key} {change['from']} -> {change['to']} may not carry over")
        elif _same(defaults[key], change["to"]):
            lines.append(f"{who} defaults to {key} {value_text(key, defaults[key])} here: this gain is already yours there (left out)")
        elif not _same(defaults[key], change["from"]):
            lines.append(f"{who} defaults to {key} {value_text(key, defaults[key])}, not the {change['from']} measured against: the ratio does not carry over")
    return lines


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) < 1e-9
    return a == b


def value_text(key: str, value: Any) -> str:
    """A setting's value as people write it: KV types and split modes by name, booleans lower-case."""
    if key in ("type_k", "type_v"):
        return KV_TYPE_NAMES.get(value, str(value))
    if key == "split_mode":
        return SPLIT_MODES.get(value, str(value))
    return str(value).lower() if isinstance(value, bool) else str(value)
