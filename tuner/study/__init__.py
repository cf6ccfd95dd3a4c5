"""Studies: an Optuna study per model, machine and workload, from start to the preset it exports.

The public names live here; the work lives in underscore modules, one job each:

* ``_storage``   storage URLs and drivers, SQLite checks, opening, loading and listing studies
* ``_trials``    queries over a study's trials: baselines, feasible, counted, the fastest
* ``noise``      the noise floor, drift, the racing bound and THE tie rule
* ``_objective`` one trial: suggest, measure through a runner, record
* ``_optimize``  start and resume: the noise floor, the trial loop (drift followed), confirmation
* ``_summary``   rows, the summary and Pareto front, why the pick
* ``_preset``    the preset a study exports: the minimal preset, or the full winner
* ``confirm``    the interleaved re-measurement that confirms the winner
* ``ablation``   what each change from the starting point is worth; the minimal preset
* ``speculation`` speculative decoding decided on the workload's text, at the preset's settings
* ``explain``    parameter importances, per-knob effects and the guide audit
"""

from __future__ import annotations

from tuner.study._objective import Economies, InProcess, Runner, TrialFailed
from tuner.study._optimize import Progress, StudySpec, check_machine, check_quality_version, check_trials, resume_study, start_study
from tuner.study._storage import (
    DEFAULT_STORAGE,
    check_new_study,
    list_studies,
    load_study,
    open_storage,
    redact,
)
from tuner.study._preset import ablation_table, best_preset, winner_vs_minimal
from tuner.study._summary import SHAPE_COLUMNS, Row, Summary, by_shape, study_json, summarize, why_picked
from tuner.study.noise import drift, noise_floor, reading_noise
from tuner.study.speculation import stored_speculation
from tuner.study._trials import (
    BASELINES,
    BASELINE_LABELS,
    baselines_for,
    baseline_trial,
    counted_trials,
    fastest_feasible,
    feasible_trials,
    is_feasible,
    quality_version,
    required_context,
    speed_objective,
    start_label,
    start_words,
    study_defaults,
)

__all__ = [
    "BASELINES",
    "BASELINE_LABELS",
    "DEFAULT_STORAGE",
    "Economies",
    "InProcess",
    "Progress",
    "Row",
    "Runner",
    "SHAPE_COLUMNS",
    "StudySpec",
    "Summary",
    "TrialFailed",
    "ablation_table",
    "baseline_trial",
    "baselines_for",
    "best_preset",
    "by_shape",
    "check_machine",
    "check_new_study",
    "check_quality_version",
    "check_trials",
    "counted_trials",
    "drift",
    "fastest_feasible",
    "feasible_trials",
    "is_feasible",
    "list_studies",
    "load_study",
    "noise_floor",
    "open_storage",
    "quality_version",
    "reading_noise",
    "redact",
    "resume_study",
    "required_context",
    "speed_objective",
    "start_label",
    "start_study",
    "start_words",
    "stored_speculation",
    "study_defaults",
    "study_json",
    "summarize",
    "why_picked",
    "winner_vs_minimal",
]
