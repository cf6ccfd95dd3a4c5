"""Confirming a study's winner: the top candidates re-measured beside the baselines.

A study ranks trials by single measurements (a warm-up pass and a few repetitions each). On a
shared machine a trial can read fast by luck, and the fastest of 50 noisy readings is biased
upward: the winner's curse. So when a study run ends, the top feasible candidates and the
baselines are measured again, interleaved (D A B C, A B C D, ...) in the same process, and the
winner is picked from that re-measurement, on the paired per-round ratios, by the one tie rule
(:mod:`tuner.study.noise`, which also owns the noise floor).

Confirmation re-measures speed only: the quality proxy is deterministic for a configuration (no
noise to average out), so each candidate keeps the quality figures of its trial.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tuner.config import EngineConfig
from tuner.errors import ConfigError, EngineError, WorkerFailed
from tuner.workload import Workload
from tuner.stats import UNITS, Stat, check_rounds
from tuner.study.noise import beats, hopeless, noise_floor, round_order
from tuner.study._trials import (
    baseline_trial,
    counted_trials,
    feasible_trials,
    is_feasible,
    required_context,
    speed_objective,
    start_label,
    start_words,
)

__all__ = [
    "CONFIRM_CANDIDATES",
    "CONFIRM_ROUNDS",
    "Candidate",
    "Confirmation",
    "check_request",
    "confirm",
    "current_confirmation",
    "interleave",
    "measure_into",
    "pick_candidates",
    "refresh_if_unchanged",
]

CONFIRM_ROUNDS = 3
CONFIRM_CANDIDATES = 3
# Figures kept from every round besides the speed objective, so confirmed figures can lead.
FIGURES = ("requests_per_min", "decode_tok_s", "prompt_tok_s", "ttft_ms")
# Kept for each request shape in every round: what "no figure gets worse unseen" compares.
SHAPE_FIGURES = ("ttft_ms", "decode_tok_s", "prompt_tok_s", "request_ms")

Note = Callable[[str], None]


@dataclass
class Candidate:
    """One configuration in a confirmation: a trial's settings, re-measured each round."""

    label: str  # "defaults", "guide_card" or "#<trial number>"
    trial: int | None
    config: dict[str, Any]
    trial_value: float | None  # what the trial itself measured (the confirmation's metric)
    kld_mean: float | None = None
    rounds: list[float] = field(default_factory=list)  # the metric's median in each round
    ratio_vs_defaults: list[float] = field(default_factory=list)  # per round
    error: str = ""
    figures: dict[str, list[float]] = field(default_factory=dict)  # FIGURES' medians in each round
    eligible: bool = True  # may win (the guide card is re-measured for its ratio even when infeasible)
    dropped: str = ""  # why it was not re-measured after round 1 or 2 (it could not win); its rounds stay
    shapes: list[list[dict[str, float]]] = field(default_factory=list)  # per round: each shape's SHAPE_FIGURES medians

    @property
    def value(self) -> Stat:
        """The re-measured metric over the rounds."""
        return Stat.of(self.rounds)

    def stat(self, figure: str) -> Stat | None:
        """One of FIGURES re-measured over the rounds (None in a confirmation stored before them)."""
        values = self.figures.get(figure)
        return Stat.of(values) if values else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        data = dict(data)
        if "trial_decode" in data:  # stored before confirmations named their metric
            data["trial_value"] = data.pop("trial_decode")
        return cls(**data)

    @property
    def ratio(self) -> Stat:
        return Stat.of(self.ratio_vs_defaults)

    def ratios_to(self, other: Candidate) -> list[float]:
        """This entry's metric over ``other``'s, round by round (both measured in the same rounds)."""
        return [a / b for a, b in zip(self.rounds, other.rounds)]


@dataclass(frozen=True)
class Confirmation:
    """The re-measurement that picks a study's winner (stored on the study as ``confirmation``)."""

    winner: int | None  # trial number; None when no candidate beat nothing (only defaults)
    why: str
    candidates: list[Candidate]
    defaults: Candidate
    rounds: int
    noise: float
    counted_trials: int  # how many trials the study held when confirmed (stale when it grows)
    workload: dict[str, Any]
    metric: str = "decode_tok_s"  # what was re-measured: the study's speed objective

    @property
    def guide(self) -> Candidate | None:
        """The guide card, re-measured beside the others (absent in older confirmations)."""
        return self.baseline("guide_card")

    @property
    def yours(self) -> Candidate | None:
        """The user's own settings (``--baseline``), re-measured beside the others, if the study has them."""
        return self.baseline("yours")

    def baseline(self, label: str) -> Candidate | None:
        """A re-measured baseline other than the defaults ("guide_card", "yours"), if it has rounds."""
        return next((c for c in self.candidates if c.label == label and c.rounds and not c.error), None)

    def candidate(self, number: int) -> Candidate:
        return next(c for c in [*self.candidates, self.defaults] if c.trial == number)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Confirmation:
        return cls(
            winner=data["winner"],
            why=data["why"],
            candidates=[Candidate.from_dict(c) for c in data["candidates"]],
            defaults=Candidate.from_dict(data["defaults"]),
            rounds=int(data["rounds"]),
            noise=float(data["noise"]),
            counted_trials=int(data["counted_trials"]),
            workload=dict(data["workload"]),
            metric=str(data.get("metric", "decode_tok_s")),
        )


def pick_candidates(trials: list[Any], n: int = CONFIRM_CANDIDATES) -> list[Any]:
    """The ``n`` fastest feasible trials with distinct settings, the baselines excluded (they are
    re-measured as themselves, beside the candidates).

    Not only the Pareto front: with mean KLD 0 for many settings, one trial can dominate the front
    while the runners-up, within noise of it, are exactly what confirmation must compare.
    """
    seen: set[str] = set()
    picked = []
    for trial in sorted(trials, key=lambda t: -t.values[0]):
        config = trial.user_attrs["measurement"]["effective"]
        key = repr(sorted(config.items()))
        if "baseline" in trial.user_attrs or key in seen:
            continue
        seen.add(key)
        picked.append(trial)
        if len(picked) == n:
            break
    return picked


def check_request(rounds: int, candidates: int) -> None:
    """Refuse a confirmation that cannot pick a winner: too few rounds, or no candidate."""
    check_rounds(rounds)
    if candidates < 1:
        raise ConfigError(f"candidates={candidates} (--candidates) re-measures nothing", "use 1 or more")


def confirm(
    study: Any,
    runner: Any,
    *,
    rounds: int = CONFIRM_ROUNDS,
    candidates: int = CONFIRM_CANDIDATES,
    on_note: Note | None = None,
    economize: bool = True,
) -> Confirmation | None:
    """Re-measure the top feasible trials and the defaults, interleaved; store and return the result.

    Returns None (and stores nothing) when there is nothing to compare: no feasible trial other
    than the defaults baseline, or no defaults to compare against (their baseline trial failed,
    e.g. their n_ctx 512 cannot hold the workload, or they failed when re-measured).
    """
    check_request(rounds, candidates)
    note = on_note or (lambda _msg: None)
    seen = len(counted_trials(study))  # before picking: trials added meanwhile make it stale
    top = pick_candidates(feasible_trials(study), candidates)
    baseline = baseline_trial(study, "defaults")
    if not top:
        return None
    if baseline is None:
        note("not confirmed: the defaults baseline did not complete, so there is nothing to compare against")
        return None
    workload = replace(Workload.from_dict(study.user_attrs["workload"]), quality=False)
    noise = noise_floor(study)
    metric = speed_objective(study)
    unit = UNITS.get(metric, metric)
    required = required_context(study)
    entries = [_baseline_entry("defaults", baseline, required)]
    for label in ("guide_card", "yours"):  # re-measured beside the others, so the preset's ratios to them are confirmed too
        trial = baseline_trial(study, label)
        if trial is not None:
            entries.append(_baseline_entry(label, trial, required))
    entries += [
        Candidate(f"#{t.number}", t.number, t.user_attrs["measurement"]["effective"], t.values[0], t.user_attrs.get("kld_mean"))
        for t in top
    ]
    note(f"confirming: {', '.join(c.label for c in entries)} re-measured in {rounds} interleaved rounds ({unit}, speed only)")
    drop = (lambda r: hopeless(entries, noise, note, seen=r + 1) if r < 2 and economize and rounds > r + 1 else None)
    interleave(entries, runner, workload, metric, rounds, note, after_round=drop)
    defaults, measured = entries[0], [e for e in entries[1:] if not e.error and e.rounds]
    if defaults.error:
        note(f"not confirmed: the defaults failed when re-measured ({defaults.error}); the trials' own figures stand")
        return None
    measured = [_with_ratios(e, defaults) for e in measured]
    anchor = start_label(study)
    contenders = [e for e in measured if e.eligible and not e.dropped]
    if anchor == "defaults":
        contenders.append(_with_ratios(defaults, defaults))
    winner, why = _pick_winner(contenders, noise, unit, anchor)
    why += _defaults_faster(winner, noise) if anchor != "defaults" else ""
    result = Confirmation(
        winner=winner.trial if winner else None,
        why=why,
        candidates=measured + [e for e in entries[1:] if e.error],
        defaults=_with_ratios(defaults, defaults),
        rounds=rounds,
        noise=noise,
        counted_trials=seen,
        workload=workload.to_dict(),
        metric=metric,
    )
    study.set_user_attr("confirmation", result.to_dict())
    note(why)
    return result


def _defaults_faster(winner: Candidate | None, noise: float) -> str:
    """With your settings as the start, the defaults are not a candidate (the preset is a change to
    yours), but where they beat the winner beyond the noise, the line says so rather than call it
    the fastest without qualification."""
    if winner is None or not winner.ratio_vs_defaults:
        return ""
    inverse = [1 / r for r in winner.ratio_vs_defaults]
    if not beats(inverse, noise):
        return ""
    return (f"; the engine's defaults read {Stat.of(inverse).median:.2f}x it (not a candidate: the preset"
            " is a change to your settings)")


def interleave(
    entries: list[Candidate],
    runner: Any,
    workload: Workload,
    metric: str,
    rounds: int,
    note: Note,
    after_round: Callable[[int], None] | None = None,
    first: int = 0,
) -> None:
    """Measure every entry once a round, ``rounds`` times, in :func:`tuner.study.noise.round_order`
    (rotated, reversed every other round), so drift over the minutes and what one run leaves for
    the next reach all of them alike; the paired per-round ratios are what every comparison of
    these entries uses. ``first`` numbers the first round (more rounds of entries already measured
    continue the sequence)."""
    for r in range(first, first + rounds):
        order = round_order(entries, r)
        for entry in order:
            measure_into(entry, runner, workload, metric)
        # an entry dropped in an earlier round was not measured in this one: its old reading is not shown as this round's
        note(f"round {r + 1}/{first + rounds}: " + "  ".join(f"{e.label} {e.rounds[-1]:.1f}" for e in entries if e.rounds and not e.error and not e.dropped))
        if after_round is not None:
            after_round(r)


def refresh_if_unchanged(study: Any, candidates: int = CONFIRM_CANDIDATES) -> Confirmation | None:
    """Keep a stored confirmation that went stale only because trials were added: when the study's
    top candidates are still ones it re-measured, nothing it decided has changed, so it is marked
    current again (and returned); otherwise None, and the study must be confirmed anew."""
    stored = study.user_attrs.get("confirmation")
    if not stored:
        return None
    confirmation = Confirmation.from_dict(stored)
    measured = {c.trial for c in confirmation.candidates}
    top = {t.number for t in pick_candidates(feasible_trials(study), candidates)}
    if confirmation.winner is None or not top or not top <= measured:
        return None
    confirmation = replace(confirmation, counted_trials=len(counted_trials(study)))
    study.set_user_attr("confirmation", confirmation.to_dict())
    return confirmation


def _baseline_entry(label: str, baseline: Any, required_n_ctx: int) -> Candidate:
    """A baseline. The defaults are every ratio's denominator; they and the user's own settings
    ("yours") are contenders themselves (if nothing beats the starting point beyond the noise, the
    honest pick is to change nothing). The guide card is re-measured for its ratio, and may win
    only within the quality floor and with the context the application requires."""
    config = dict(baseline.user_attrs["baseline_config"])
    keeps_context = config.get("n_ctx", 0) >= required_n_ctx
    return Candidate(
        label,
        baseline.number,
        config,
        baseline.values[0],
        baseline.user_attrs.get("kld_mean"),
        eligible=label in ("defaults", "yours") or (is_feasible(baseline) and keeps_context),
    )


def measure_into(entry: Candidate, runner: Any, workload: Workload, metric: str) -> None:
    """One round's measurement of ``entry`` (its metric, FIGURES and each shape's medians); a
    failure is recorded on it and it drops out."""
    if entry.error or entry.dropped:
        return
    try:
        result = runner.measure(EngineConfig.from_dict(entry.config), workload)
    except (ConfigError, EngineError) as exc:
        entry.error = str(exc)
        return
    except WorkerFailed as exc:
        entry.error = exc.reason
        return
    entry.rounds.append(getattr(result, metric).median)
    for figure in FIGURES:
        entry.figures.setdefault(figure, []).append(getattr(result, figure).median)
    entry.shapes.append([{name: getattr(s, name).median for name in SHAPE_FIGURES} for s in result.shapes])


def _with_ratios(entry: Candidate, defaults: Candidate) -> Candidate:
    return replace(entry, ratio_vs_defaults=entry.ratios_to(defaults))


def _pick_winner(
    measured: list[Candidate], noise: float, unit: str = "requests/min", anchor: str = "defaults"
) -> tuple[Candidate | None, str]:
    """Fastest confirmed median; among candidates it does not beat (the one tie rule on their
    paired per-round ratios), the best quality.

    ``anchor`` labels the starting point ("defaults", or "yours" with ``--baseline``): the pick
    must beat it beyond the noise, else the starting point is kept (change nothing). Ties are not
    transitive: of the candidates tied with the fastest (the starting point may be one), only
    those that beat the starting point may win, so a candidate that measurably beats it never
    loses to it through a third that ties both (make tune's confirmation test kept the defaults
    against a 1.07x, 1.05-1.11, at ±4.7%).
    """
    if not measured:
        return None, "no candidate could be re-measured; the trials' own figures stand"
    fastest = max(measured, key=lambda c: c.value.median)
    tied = [c for c in measured if c is fastest or not beats(fastest.ratios_to(c), noise)]
    start = next((c for c in measured if c.label == anchor), None)
    if start is not None:
        others = [c for c in tied if c is not start]
        beating = [c for c in others if not _no_faster_than(c, start, noise)]
        tied = beating or [*others, start]  # none beats the starting point: it is kept
    if len(tied) == 1 and tied[0] is not fastest:  # the fastest ties it but does not beat the starting point
        only = tied[0]
        return only, (
            f"{only.label} ({only.value.median:.1f} {unit}, {only.ratio.median:.2f}x the defaults) ties with {fastest.label}, "
            f"the fastest, and beats {start_words(anchor)} beyond the noise (±{noise:.1%}), which {fastest.label} does not"
        )
    if len(tied) == 1:
        return fastest, (
            f"{fastest.label} is fastest when re-measured: {fastest.value.median:.1f} {unit}, "
            f"{fastest.ratio.median:.2f}x the defaults (rounds {min(fastest.ratio_vs_defaults):.2f}-{max(fastest.ratio_vs_defaults):.2f}x)"
        )
    winner = _prefer(tied, anchor)
    others = ", ".join(c.label for c in tied if c is not winner)
    if winner.label == anchor:
        what = start_words(anchor)
        return winner, (
            f"nothing is faster than {what} beyond the noise (±{noise:.1%}): {others} tie with them "
            f"({winner.value.median:.1f} {unit} re-measured); keeping {what}"
        )
    reason = _why_preferred(winner, tied)
    return winner, (
        f"{winner.label} ({winner.value.median:.1f} {unit}, {winner.ratio.median:.2f}x the defaults) ties with {others} "
        f"within the noise (±{noise:.1%}); picked for {reason}"
    )


def _prefer(tied: list[Candidate], anchor: str = "defaults") -> Candidate:
    """Among candidates tied on speed: the closest to the reference, then changing nothing (the
    starting point ``anchor``), then the shorter wait for the first token, then the faster median."""
    return min(tied, key=lambda c: (c.kld_mean or 0.0, c.label != anchor, _ttft(c), -c.value.median))


def _ttft(candidate: Candidate) -> float:
    """The re-measured time to first token (infinite in a confirmation stored before figures)."""
    stat = candidate.stat("ttft_ms")
    return stat.median if stat else float("inf")


def _why_preferred(winner: Candidate, tied: list[Candidate]) -> str:
    """The tie-break that decided, in words."""
    others = [c for c in tied if c is not winner]
    if any((c.kld_mean or 0.0) > (winner.kld_mean or 0.0) for c in others):
        return "the lowest mean KLD"
    if any(_ttft(c) > _ttft(winner) for c in others) and _ttft(winner) != float("inf"):
        return f"the shortest time to first token ({_ttft(winner):.0f} ms)"
    return "its median"


def _no_faster_than(candidate: Candidate, defaults: Candidate, noise: float) -> bool:
    """True when ``candidate`` does not beat ``defaults`` (the starting point) beyond the noise,
    judged on the paired per-round ratios (both measured in the same round, side by side)."""
    if candidate is defaults or not candidate.rounds or not defaults.rounds:
        return False
    return not beats(candidate.ratios_to(defaults), noise)


def current_confirmation(study: Any) -> Confirmation | None:
    """The stored confirmation, if it still speaks for the study: it picked a winner, and no
    trial was added since (a resumed study must be confirmed again)."""
    stored = study.user_attrs.get("confirmation")
    if not stored:
        return None
    confirmation = Confirmation.from_dict(stored)
    if confirmation.winner is None or confirmation.counted_trials != len(counted_trials(study)):
        return None
    return confirmation
