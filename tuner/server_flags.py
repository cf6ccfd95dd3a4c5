"""llama-server's command-line flags for a configuration: the one owner of their spellings.

Two users: the llama-server engine (:mod:`tuner.server`) starts the binary with *every* setting
written out (:func:`server_args`), so that what is measured never depends on a default; the
export (:mod:`tuner.export`) writes only the settings a preset changes, with the same spellings
(:data:`SERVER_FLAGS`, :func:`server_value`, :func:`load_flags`). The spellings are read from
llama.cpp's common/arg.cpp; a binary's own ``--help`` decides which of them it has
(:func:`help_flags`, :func:`missing_flags`), because they change between versions.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from tuner.config import KV_TYPE_NAMES, EngineConfig
from tuner.errors import ConfigError

__all__ = [
    "SERVER_FLAGS", "SPLIT_MODES", "SWITCH_FLAGS", "check_lacking", "help_flags", "lacking_settings", "lacking_words", "load_flags", "missing_flags", "server_args", "server_value",
]

# preset key -> llama-server flag, in the order written (llama.cpp common/arg.cpp).
SERVER_FLAGS = {
    "n_ctx": "-c",
    "n_batch": "-b",
    "n_ubatch": "-ub",
    "n_threads": "-t",
    "n_threads_batch": "-tb",
    "flash_attn": "-fa",
    "n_gpu_layers": "-ngl",
    "type_k": "-ctk",
    "type_v": "-ctv",
    "temperature": "--temp",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "min_p": "--min-p",
    "repeat_penalty": "--repeat-penalty",
    "seed": "-s",
}
# switches (no value) a configuration may need; like SERVER_FLAGS, a binary without one does not search it
SWITCH_FLAGS = {"kv_unified": "--kv-unified"}
SPLIT_MODES = {0: "none", 1: "layer", 2: "row"}  # LLAMA_SPLIT_MODE_* -> llama-server's -sm names
# An option in --help: "-c,    --ctx-size N", "-fa,   --flash-attn [on|off|auto]".
_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def server_value(key: str, value: Any) -> str:
    """A setting's value as llama-server reads it."""
    if key == "flash_attn":
        return "on" if value else "off"  # current llama.cpp: -fa takes on|off|auto
    if key == "n_gpu_layers" and value == -1:
        return "all"  # current llama.cpp reads -ngl -1 as "auto"
    if key in ("type_k", "type_v"):
        return KV_TYPE_NAMES[value]
    return str(value)


def load_flags(values: dict[str, Any]) -> list[str]:
    """Flags for the load-time and switch settings in ``values`` that differ from llama.cpp's
    shared defaults (mmap on, mlock off, KV and host ops offloaded, a window-sized SWA cache,
    layer split, GPU 0)."""
    flags = []
    mmap, mlock = values.get("use_mmap", True), values.get("use_mlock", False)
    if mlock:
        flags += ["--load-mode", "mlock"]  # llama-server's mlock mode maps and locks the model
    elif not mmap:
        flags += ["--load-mode", "none"]
    if values.get("offload_kqv") is False:
        flags.append("-nkvo")
    if values.get("op_offload") is False:
        flags.append("--no-op-offload")
    if values.get("swa_full"):
        flags.append("--swa-full")  # llama-server's default is a window-sized SWA cache
    if values.get("split_mode", 1) != 1:
        flags += ["-sm", split_mode_name(values["split_mode"])]
    if values.get("main_gpu"):
        flags += ["-mg", str(values["main_gpu"])]
    return flags


def split_mode_name(mode: int) -> str:
    try:
        return SPLIT_MODES[mode]
    except KeyError:
        raise ConfigError(f"split_mode={mode} has no llama-server name", "use 0 (none), 1 (layer) or 2 (row)") from None


def server_args(config: EngineConfig, lacking: Collection[str] = ()) -> list[str]:
    """Every setting of ``config`` as llama-server flags (resolved: no "the engine decides"), its
    slots (``-np n_parallel``) and speculation (``--spec-type``, when not none). Written out whether
    or not it is llama-server's default, so a measurement runs exactly the configuration it is
    labelled with, whatever the binary's defaults are; except the settings ``lacking`` a flag in
    this binary, which run at its own default (see :func:`lacking_settings`). ``-c`` is shared by
    the slots, so it is n_ctx (what each request gets) times the slots; with ``-np -1``
    (:data:`AUTO_SLOTS`, llama-server's default) the server's 4 slots share one cache of n_ctx
    cells, as for a user who sets only ``-c``, and so do N slots with ``--kv-unified``."""
    effective = config.effective()
    values = {**effective.to_dict(), "n_ctx": effective.server_ctx}
    args = []
    for key, flag in SERVER_FLAGS.items():
        if values.get(key) is not None and key not in lacking:
            args += [flag, server_value(key, values[key])]
    spec = ["--spec-type", values["spec_type"]] if values["spec_type"] != "none" else []  # decided on text (tuner.study.speculation)
    unified = [SWITCH_FLAGS["kv_unified"]] if values["kv_unified"] and "kv_unified" not in lacking else []
    return [*args, *load_flags(values), "-np", str(values["n_parallel"]), *unified, *spec]


def lacking_settings(flags: Collection[str]) -> list[str]:
    """The settings whose flag a binary's ``--help`` (``flags``) does not list: an older or
    trimmed build. They are not searched; every configuration runs them at the binary's default."""
    known = {**SERVER_FLAGS, **SWITCH_FLAGS}
    return [key for key, flag in known.items() if flag not in flags and key != "n_ctx"]  # the context is never left out


def check_lacking(config: EngineConfig, lacks: dict[str, Any], binary: str) -> None:
    """Refuse ``config`` where it asks a setting ``binary`` has no flag for at another value than
    the binary's own (``lacks``): it would run at the binary's value, labelled with another.

    Raises:
        ConfigError: names the flag, both values and the binary.
    """
    values = config.effective().to_dict()
    for key, own in lacks.items():
        if values.get(key) is not None and values[key] != own:
            raise ConfigError(f"{binary} has no {_flag(key)}: it runs {key} at {own}, not {values[key]}", f"use a newer llama-server, or leave {key} at {own}")


def lacking_words(lacks: dict[str, Any]) -> str:
    """``lacks`` (setting -> the binary's own value) in words, for the study's header."""
    return ", ".join(f"{key} (no {_flag(key)}: its own {value})" for key, value in lacks.items())


def _flag(key: str) -> str:
    return SERVER_FLAGS.get(key) or SWITCH_FLAGS[key]


def help_flags(help_text: str) -> set[str]:
    """The flags a binary's ``--help`` lists (every spelling of each option)."""
    found: set[str] = set()
    for line in help_text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("-"):
            continue
        for part in re.split(r"\s{2,}", stripped):  # "-t," "--threads N" "number of CPU threads ..."
            if not part.startswith("-"):
                break  # the description: its words are not options
            found.update(_OPTION.findall(part))
    return found


def missing_flags(args: list[str], known: set[str]) -> list[str]:
    """The flags in ``args`` the binary does not list (values are skipped)."""
    return [word for word in args if word.startswith("-") and not _is_number(word) and word not in known]


def _is_number(word: str) -> bool:
    try:
        float(word)
    except ValueError:
        return False
    return True
