"""llama-tuner: find the fastest llama.cpp settings for this machine, measured honestly.

Public API (the CLI in :mod:`tuner.cli` is a thin layer over these)::

    from tuner import Engine, EngineConfig, Preset, Workload, measure, load_space, start_study

The names are resolved on first use (PEP 562), so ``import tuner`` and ``tune --help`` load
neither numpy, optuna, yaml nor llama_cpp.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it
_EXPORTS = {
    "ConfigError": "tuner.errors",
    "EngineError": "tuner.errors",
    "ModelError": "tuner.errors",
    "OutputError": "tuner.errors",
    "PresetError": "tuner.errors",
    "SpaceError": "tuner.errors",
    "StorageError": "tuner.errors",
    "StudyError": "tuner.errors",
    "TunerError": "tuner.errors",
    "WorkerFailed": "tuner.errors",
    "EngineConfig": "tuner.config",
    "Stat": "tuner.stats",
    "Engine": "tuner.engine",
    "Measurement": "tuner.measure",
    "Workload": "tuner.workload",
    "Shape": "tuner.workload",
    "LatencyTargets": "tuner.workload",
    "load_profile": "tuner.workload",
    "measure": "tuner.measure",
    "Preset": "tuner.preset",
    "engine_from_preset": "tuner.preset",
    "llama_from_preset": "tuner.preset",
    "SearchSpace": "tuner.space",
    "load_space": "tuner.space",
    "Worker": "tuner.worker",
    "BASELINES": "tuner.study",
    "StudySpec": "tuner.study",
    "best_preset": "tuner.study",
    "open_storage": "tuner.study",
    "resume_study": "tuner.study",
    "start_study": "tuner.study",
    "summarize": "tuner.study",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tuner' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
