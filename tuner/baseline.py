"""The user's starting point: their own settings (``--baseline FILE``) and the context size their
application requires (``--n-ctx``).

A study hands the user a *change to their own settings*. Two things are theirs, not the tuner's:

* the **context size** is a requirement of their application (a chat that resends its history
  needs room for it), not a speed knob to minimise: llama-cpp-python's default of 512 fails a chat
  client a few turns in. The study searches n_ctx only at or above the requirement, and the preset
  never carries less (:func:`required_n_ctx`);
* their **current settings** (:func:`load_baseline`) are measured as the baseline "yours", and the
  preset is those settings plus the changes that measurably pay (see :mod:`tuner.study.ablation`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from tuner.config import EngineConfig
from tuner.errors import ConfigError

__all__ = ["DEFAULT_N_CTX", "Baseline", "Requirement", "load_baseline", "required_n_ctx"]

# The context a study keeps when the user names none: what a chat or RAG application typically
# needs, capped at the model's training context.
DEFAULT_N_CTX = 4096


@dataclass(frozen=True)
class Requirement:
    """The context size the preset must carry, and where it comes from (for the header line)."""

    n_ctx: int
    why: str


@dataclass(frozen=True)
class Baseline:
    """The user's settings as their file gives them: ``keys`` are the ones it sets (the others
    are llama-cpp-python's defaults, which their application gets by not passing them)."""

    config: EngineConfig
    keys: frozenset[str]
    source: str

    def over(self, defaults: EngineConfig) -> EngineConfig:
        """Their settings on an engine whose defaults are not llama-cpp-python's (llama-server's,
        read from the binary): what the file leaves out is what that engine runs without it."""
        return replace(defaults, **{key: getattr(self.config, key) for key in self.keys})

    @staticmethod
    def on(yours: EngineConfig | Baseline | None, defaults: EngineConfig | None) -> EngineConfig | None:
        """Your settings as the engine that measures runs them: settings as they are; a file's
        keys over that engine's ``defaults`` (None: llama-cpp-python's, already the file's)."""
        if isinstance(yours, Baseline):
            return yours.over(defaults) if defaults is not None else yours.config
        return yours

    @property
    def n_ctx(self) -> int | None:
        """The context their file sets (None: it sets none, so their application's is unknown)."""
        return self.config.n_ctx if "n_ctx" in self.keys else None


def required_n_ctx(asked: int | None, baseline_n_ctx: int | None, *, train_ctx: int, needed: int) -> Requirement:
    """The context size a study must keep.

    Args:
        asked: ``--n-ctx`` (None: not given).
        baseline_n_ctx: the n_ctx the user's settings (``--baseline``) set, their application's.
        train_ctx: the model's training context (0 when the file does not say).
        needed: tokens the workload's largest request needs.

    Raises:
        ConfigError: a size of 0 or less, above the training context, or below the workload's need.
    """
    if train_ctx and needed > train_ctx:
        raise ConfigError(
            f"the workload's largest request needs {needed} tokens, more than the model's training context ({train_ctx})",
            "shorten the workload's requests",
        )
    if asked is not None:
        if asked <= 0:
            raise ConfigError(f"--n-ctx {asked} is not a context size", f"give the context your application needs, e.g. --n-ctx {DEFAULT_N_CTX}")
        if train_ctx and asked > train_ctx:
            raise ConfigError(
                f"--n-ctx {asked} is above the model's training context ({train_ctx} tokens)",
                f"use --n-ctx {train_ctx} or less",
            )
        if asked < needed:
            raise ConfigError(
                f"--n-ctx {asked} cannot hold the workload: its largest request needs {needed} tokens",
                f"use --n-ctx {needed} or more, or a workload with shorter requests",
            )
        return Requirement(asked, "--n-ctx")
    if baseline_n_ctx == 0 and train_ctx:  # llama.cpp's "the model's training context"
        return Requirement(train_ctx, "your baseline's n_ctx 0: the model's training context")
    if baseline_n_ctx:
        if train_ctx and baseline_n_ctx > train_ctx:
            raise ConfigError(
                f"your baseline's n_ctx {baseline_n_ctx} is above the model's training context ({train_ctx} tokens)",
                f"use n_ctx {train_ctx} or less in the baseline file, or pass --n-ctx",
            )
        if baseline_n_ctx < needed:
            raise ConfigError(
                f"your baseline's n_ctx {baseline_n_ctx} cannot hold the workload: its largest request needs {needed} tokens",
                f"raise n_ctx in the baseline file, or pass --n-ctx {needed} or more",
            )
        return Requirement(baseline_n_ctx, "your baseline's n_ctx")
    cap = min(DEFAULT_N_CTX, train_ctx) if train_ctx else DEFAULT_N_CTX
    if cap >= needed:
        why = "the default" if cap == DEFAULT_N_CTX else f"the model's training context, below the default {DEFAULT_N_CTX}"
        return Requirement(cap, f"{why}; --n-ctx sets yours")
    return Requirement(needed, "what the workload's largest request needs; --n-ctx sets yours")


def load_baseline(path: str | Path) -> Baseline:
    """The user's current settings, from a preset YAML (``tune export``) or a plain YAML/JSON
    mapping of ``llama_cpp.Llama`` keywords and sampling keywords.

    Keys that are not settings the tuner knows are refused (llama-cpp-python would ignore a typo
    silently); ``model_path`` and ``verbose`` are accepted and ignored (they are not settings).

    Raises:
        ConfigError: the file is missing, unreadable, not a mapping, or has an unknown key.
    """
    path = Path(path)
    fix = "give a YAML or JSON mapping of llama_cpp.Llama keywords, e.g. {n_ctx: 4096, n_threads: 8, top_k: 20}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"baseline file {path} does not exist", "pass the file with your current settings") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read baseline file {path}: {exc}", "check the path") from None
    data = _parse(text, path)
    if not isinstance(data, dict):
        raise ConfigError(f"baseline file {path} is not a mapping of settings", fix)
    if "engine" in data or "sampling" in data:  # a preset: its engine and sampling sections
        sections = [data.get("engine") or {}, data.get("sampling") or {}]
        if not all(isinstance(s, dict) for s in sections):
            raise ConfigError(f"baseline file {path}: 'engine' and 'sampling' must be mappings", "see `tune export` output")
        data = {**sections[0], **sections[1]}
    settings = {key: value for key, value in data.items() if key not in ("model_path", "verbose")}
    config = EngineConfig.from_dict(settings, where=f"baseline file {path}")  # unknown keys: refused, with a suggestion
    return Baseline(config, frozenset(settings), str(path))


def _parse(text: str, path: Path) -> Any:
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"baseline file {path}: JSON syntax error at line {exc.lineno}", "fix the JSON syntax") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"baseline file {path}: YAML syntax error{where}", "fix the YAML syntax") from None
