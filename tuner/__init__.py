"""llama-tuner: find the fastest llama.cpp settings for this machine, measured honestly.

Public API (the CLI in :mod:`tuner.cli` is a thin layer over these)::

    from tuner import Engine, EngineConfig, Preset, Workload, measure, load_space

Heavy dependencies (llama_cpp, optuna, pynvml) are imported lazily by the functions that need
them, so importing this package and running `tune --help` stay fast.
"""

from __future__ import annotations

from tuner.engine import Engine, EngineConfig
from tuner.errors import (
    ConfigError,
    EngineError,
    ModelError,
    OutputError,
    PresetError,
    SpaceError,
    StorageError,
    StudyError,
    TunerError,
)
from tuner.measure import Measurement, Stat, Workload, measure
from tuner.preset import Preset
from tuner.space import SearchSpace, load_space
from tuner.study import BASELINES, StudySpec, best_preset, open_storage, resume_study, start_study, summarize

__all__ = [
    "BASELINES",
    "ConfigError",
    "Engine",
    "EngineConfig",
    "EngineError",
    "Measurement",
    "ModelError",
    "OutputError",
    "Preset",
    "PresetError",
    "SearchSpace",
    "SpaceError",
    "Stat",
    "StorageError",
    "StudyError",
    "StudySpec",
    "TunerError",
    "Workload",
    "best_preset",
    "load_space",
    "measure",
    "open_storage",
    "resume_study",
    "start_study",
    "summarize",
]
