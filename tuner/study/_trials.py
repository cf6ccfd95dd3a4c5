"""Queries over a study's trials: the baselines, which trials are feasible, which count toward
the target, and the fastest feasible one.

Every module that reads a study's trials asks here, so "feasible" or "counted" means one thing.
The first two trials of every study are enqueued baselines that run exactly as written, even
outside the search space: llama-cpp-python's defaults, and the RTX 4090 guide's settings ("the
guide card").
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tuner.config import EngineConfig

__all__ = [
    "BASELINES",
    "BASELINE_LABELS",
    "baselines_for",
    "baseline_trial",
    "counted_trials",
    "fastest_feasible",
    "feasible_trials",
    "is_feasible",
    "quality_version",
    "required_context",
    "speed_objective",
    "start_label",
    "start_words",
    "unconfirmed_best",
    "study_defaults",
    "study_placement",
    "enqueued_baseline",
]

# The two baselines every study measures first. "defaults" is what llama_cpp.Llama does when a
# user passes nothing; "guide_card" is the RTX 4090 guide's settings, kept verbatim (its 16 threads
# on a 2-core machine are the point of measuring it; n_batch 4096 is clamped to n_ctx by llama.cpp).
BASELINES: dict[str, EngineConfig] = {
    "defaults": EngineConfig(),
    "guide_card": EngineConfig(
        n_ctx=2048,
        n_batch=4096,
        n_threads=16,
        n_threads_batch=16,
        top_k=10,
        top_p=0.8,
        flash_attn=True,
        offload_kqv=True,
        n_gpu_layers=-1,
    ),
}


# Every baseline label a study can hold, in the order tables show them. "yours" is the user's own
# settings (--baseline FILE), measured when given; the starting point of the minimal preset.
# "cpu_defaults" is llama-cpp-python's defaults as they are (every layer on the CPU), measured
# beside the offloaded defaults in a study whose candidates offload (see baselines_for).
BASELINE_LABELS = ("defaults", "cpu_defaults", "guide_card", "yours")


def baselines_for(
    n_ctx: int, yours: EngineConfig | None = None, placement: dict[str, int] | None = None, defaults: EngineConfig | None = None
) -> dict[str, EngineConfig]:
    """The baselines a study measures, at the context size ``n_ctx`` its application requires.

    The defaults are llama-cpp-python's with n_ctx set to the requirement (a user of the defaults
    sets n_ctx too: 512 does not hold a chat) and the candidates' ``placement``
    (:func:`tuner.placement.placement_of`: on a GPU, the layers offloaded as the candidates offload
    them), so that "vs defaults", the noise floor and the confirmation's anchor compare settings on
    the same hardware. With a placement, llama-cpp-python's defaults as they are (on the CPU: what
    a user who passes nothing gets) are measured too, as "cpu_defaults", and shown, never compared
    against. "yours" (when given) runs at the requirement, placed as your file says. The guide
    card stays as the guide wrote it (n_ctx 2048 included). ``defaults``: the engine's own when it
    is not llama-cpp-python (llama-server's, as :meth:`tuner.server.ServerEngine.own_defaults`
    reads them from the binary).
    """
    defaults = replace(defaults or BASELINES["defaults"], n_ctx=n_ctx)
    baselines = {"defaults": replace(defaults, **(placement or {}))}
    if placement:
        baselines["cpu_defaults"] = defaults
    baselines["guide_card"] = BASELINES["guide_card"]
    if yours is not None:
        baselines["yours"] = replace(yours, n_ctx=n_ctx)
    return baselines


def study_placement(study: Any) -> dict[str, int]:
    """The placement the study's defaults share with its candidates ({}: the CPU, and studies made
    before placements were recorded)."""
    return dict(study.user_attrs.get("placement") or {})


def is_feasible(trial: Any) -> bool:
    """Within the quality floor: every constraint value <= 0 (no constraints: feasible)."""
    return all(value <= 0 for value in trial.constraints.values())


def feasible_trials(study: Any) -> list[Any]:
    """Completed trials within the quality floor and the latency targets."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t)]


def fastest_feasible(study: Any) -> Any | None:
    """The fastest feasible completed trial (by the first objective: the speed objective)."""
    return max(feasible_trials(study), key=lambda t: t.values[0], default=None)


def unconfirmed_best(study: Any) -> Any | None:
    """The trial a study without a current confirmation hands over: the fastest feasible trial,
    unless no searched trial is feasible. Then only the baselines ran, each read once, and one
    reading faster than the starting point's is not a change that earned its keep (a study from
    ``--baseline`` greedy settings whose 3 trials were the baselines once handed over llama-server's
    defaults, temperature 0.8 included, on a 1.04x reading against a ±13% floor): the starting
    point is handed over as it is, when it completed within the floor (else the fastest feasible
    trial, and the summary says which)."""
    feasible = feasible_trials(study)
    if not any("baseline" not in t.user_attrs for t in feasible):
        start = baseline_trial(study, start_label(study))
        if start is not None and is_feasible(start):
            return start
    return max(feasible, key=lambda t: t.values[0], default=None)


def baseline_trial(study: Any, label: str) -> Any | None:
    """The last completed trial of baseline ``label`` ("defaults" or "guide_card"), if any."""
    from optuna.trial import TrialState

    done = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get("baseline") == label
    ]
    return done[-1] if done else None


def counted_trials(study: Any) -> list[Any]:
    """Trials that count toward the target: completed ones, failures the tuner recorded, and
    trials stopped early by racing.

    A trial failed by the heartbeat (its process died) does not count: its parameters are
    re-enqueued and run again. Nor does one pruned as surplus (another process took its slot).
    """
    from optuna.trial import TrialState

    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE
        or (t.state == TrialState.FAIL and "fail_reason" in t.user_attrs)
        or (t.state == TrialState.PRUNED and "raced" in t.user_attrs)
    ]


def quality_version(study: Any) -> int | None:
    """The quality proxy version a study's trials were measured with (None: no quality proxy;
    studies made before versions were recorded used version 1)."""
    if len(study.directions) < 2:  # speed only
        return None
    return int(study.user_attrs.get("quality_version") or 1)


def speed_objective(study: Any) -> str:
    """The name of the study's first (speed) objective: requests_per_min, or decode_tok_s for a
    study made before workloads had request shapes."""
    return (study.user_attrs.get("objectives") or ["decode_tok_s"])[0]


def required_context(study: Any) -> int:
    """The context size the study's application requires (what its defaults baseline runs with
    in a study made before requirements were recorded)."""
    requirement = study.user_attrs.get("requirement")
    return int(requirement["n_ctx"]) if requirement else study_defaults(study).n_ctx


def start_label(study: Any) -> str:
    """The starting point the study's preset changes: "yours" when the user gave their settings
    (--baseline) and they ran, else "defaults" (llama-cpp-python's, at the required context)."""
    return "yours" if baseline_trial(study, "yours") is not None else "defaults"


def start_words(label: str) -> str:
    """A starting point in words: "your settings" or "the defaults"."""
    return "your settings" if label == "yours" else "the defaults"


def study_defaults(study: Any) -> EngineConfig:
    """The defaults baseline's settings as the study enqueued them (n_ctx fitted to its workload)."""
    return enqueued_baseline(study, "defaults") or BASELINES["defaults"]


def enqueued_baseline(study: Any, label: str) -> EngineConfig | None:
    """Baseline ``label``'s settings as the study enqueued them (run or not), if it has them."""
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("baseline") == label:
            return EngineConfig.from_dict(trial.user_attrs["baseline_config"])
    return None
