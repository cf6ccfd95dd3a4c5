"""The ETA of a running study: the remaining trials at the pace of recent searched trials, plus
what the end of the study costs (confirmation and ablation), each entry costed by what it took to
measure in this study."""

from __future__ import annotations

import statistics
from typing import Any

from tuner.config import EngineConfig
from tuner.study._trials import baseline_trial, fastest_feasible, start_label
from tuner.study.ablation import changed_groups
from tuner.study.confirm import CONFIRM_CANDIDATES
from tuner.study.noise import FAR_BELOW_AFTER_ONE, NOISE_RUNS

__all__ = ["ablation_estimate", "confirmation_estimate", "end_estimate", "per_trial"]


def end_estimate(study: Any, rounds: int) -> float:
    """Seconds the study's end will take: the confirmation, then the ablation."""
    return confirmation_estimate(study, rounds) + ablation_estimate(study, rounds)


def per_trial(durations: list[tuple[float, bool]]) -> float:
    """The time a remaining trial will take: the median of the last five searched trials run
    here (the baselines are no guide: the guide card's 16 threads are slow on a small CPU; racing
    makes trials uneven, and a median of recent ones follows the share it stops)."""
    searched = [seconds for seconds, baseline in durations if not baseline]
    return statistics.median((searched or [seconds for seconds, _ in durations])[-5:])


def confirmation_estimate(study: Any, rounds: int) -> float:
    """Seconds the confirmation will take, each entry costed by its own measured time: the
    defaults (a noise-floor run) and the candidates (the median searched trial, speed part) in
    every round -- the top candidates are usually within the noise of each other, so they stay --
    and the guide card (its baseline trial) in one round when its trial read below half the best's
    (dropped after round 1), in two when racing may drop it after round 2, every round otherwise.
    Measured on the chat workload: this predicts 123 s against 123 s spent; the older guess (one
    full trial per measurement, nine measurements) said 70 s."""
    candidate = _candidate_seconds(study)
    if rounds == 0 or candidate is None:
        return 0.0
    guide_trial = baseline_trial(study, "guide_card")  # its time costs its rounds; its reading says how many
    guide = _speed_part(guide_trial) if guide_trial is not None and guide_trial.user_attrs.get("seconds") else candidate
    noise_s = (study.user_attrs.get("seconds") or {}).get("noise_floor")
    defaults = noise_s / NOISE_RUNS if noise_s else candidate
    # the economies' racing flag, read here as study._optimize.economies_of does (it sits above this module)
    guide_rounds = min(2, rounds) if (study.user_attrs.get("economies") or {}).get("racing", True) else rounds
    best = fastest_feasible(study)
    if guide_rounds < rounds and guide_trial is not None and best is not None and guide_trial.values[0] < FAR_BELOW_AFTER_ONE * best.values[0]:
        guide_rounds = 1
    yours = defaults if baseline_trial(study, "yours") is not None else 0.0  # re-measured every round, as the defaults are
    return rounds * (defaults + yours + CONFIRM_CANDIDATES * candidate) + guide_rounds * guide


def ablation_estimate(study: Any, rounds: int) -> float:
    """Seconds the ablation will take: every round measures the winner and the winner with each
    changed group reverted (the groups the current best trial changes from the starting point),
    then the minimal preset beside the winner and the start, all at a searched trial's pace."""
    candidate = _candidate_seconds(study)
    if rounds == 0 or candidate is None:
        return 0.0
    best, start = fastest_feasible(study), baseline_trial(study, start_label(study))
    groups = 4  # what a winner typically changes (threads, batch sizes, attention, sampling)
    if best is not None and start is not None and "measurement" in best.user_attrs:
        groups = len(changed_groups(EngineConfig.from_dict(start.user_attrs["baseline_config"]), EngineConfig.from_dict(best.user_attrs["measurement"]["effective"])))
    check = 3 + (start_label(study) == "yours")  # the minimal preset, the winner, the start (and the defaults)
    return rounds * (1 + groups) * candidate + rounds * check * candidate if groups else 0.0


def _timed_trials(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get("seconds")]


def _speed_part(trial: Any) -> float:
    """A trial's measuring time without its quality pass (what a speed-only re-measurement costs)."""
    return sum(seconds for part, seconds in trial.user_attrs["seconds"].items() if part != "quality")


def _candidate_seconds(study: Any) -> float | None:
    """What one speed-only measurement of a searched configuration costs: the median of the last
    ten searched trials' speed parts (None before any searched trial completed)."""
    searched = [_speed_part(t) for t in _timed_trials(study) if "baseline" not in t.user_attrs]
    return statistics.median(searched[-10:]) if searched else None
