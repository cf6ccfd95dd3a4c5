"""The study's noise, and every decision that depends on it: the one owner.

A reader asking "why was my trial stopped?" or "why is this a tie?" reads this file.

* **The floor** (:func:`measure_noise_floor`, :func:`noise_floor`): at study start the starting
  point (your settings with ``--baseline``, else the defaults at the required context: what every
  confirmation is anchored to and what the preset changes) runs back to back a few times; the
  spread of those readings is the smallest relative difference a *paired* comparison (both sides
  measured in the same rounds) calls a win.
* **Drift** (:func:`follow_drift`, :func:`drift`): single readings taken minutes apart wander more
  than back-to-back ones. Every :data:`DRIFT_EVERY` trials the incumbent (the fastest feasible
  trial) is re-measured, speed only; how far re-readings of the same settings land from each other
  widens :func:`reading_noise`, the noise of an *unpaired* comparison (racing, and a trial's own
  reading against a baseline's). The gap between a trial's own reading and its re-reading is not
  counted there: the fastest of many readings is biased upward (the winner's curse), a selection
  effect, not noise, and counting it widened the margin until racing stopped nothing
  (benchmarks/racing_replay.py); nor is a one-time shift of the machine's speed (a `make tune`
  here read the defaults at 108 requests/min, then re-read them at 74-84 for the rest of the
  study). The racing bound takes both off instead: its base is the lowest re-reading.
* **Racing** (:func:`race_bound`): a trial is stopped early only when two repetitions both read
  below a bound set from a shrunk incumbent (its lowest repetition, or lower re-reading: the
  winner's curse taken off), never on one reading: a neighbour's burst read a trial with the
  incumbent's very settings at 0.44x on one repetition (a CI run, 2026-12-07).
* **THE tie rule** (:func:`beats`, :func:`tie`, :func:`settled`): on paired per-round ratios; an
  unpaired comparison is a single ratio. ``tune show``, confirmation, ablation, explain, export and
  the report all ask these.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tuner.config import EngineConfig
from tuner.errors import ConfigError, EngineError, WorkerFailed
from tuner.measure import RaceBound
from tuner.stats import UNITS, Stat
from tuner.study._trials import counted_trials, enqueued_baseline, fastest_feasible
from tuner.workload import Workload

__all__ = [
    "DRIFT_EVERY",
    "FAR_BELOW_AFTER_ONE",
    "NOISE_RUNS",
    "RACE_MIN_MARGIN",
    "Drift",
    "NoiseFloor",
    "beats",
    "drift",
    "drift_due",
    "follow_drift",
    "floor_config",
    "hopeless",
    "measure_noise_floor",
    "noise_floor",
    "race_base",
    "race_bound",
    "race_bound_from",
    "race_margin",
    "race_rule",
    "reading_noise",
    "round_order",
    "settled",
    "tie",
]

NOISE_RUNS = 3  # back-to-back runs of the starting point at study start
DRIFT_EVERY = 10  # trials between re-measurements of the incumbent: one speed-only pass, ~1/10 of the search
RACE_MIN_MARGIN = 0.05  # racing never stops a configuration closer than this to the incumbent
# Confirmation drops an entry after one round only below this share of the best entry's reading:
# no noise or order effect seen here comes near 2x (the worst order effect measured: 0.82x, a
# two-thread run right after a one-thread run), so one round cannot drop a contender.
FAR_BELOW_AFTER_ONE = 0.5

Note = Callable[[str], None]


# --- the floor ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoiseFloor:
    """Run-to-run noise of one configuration (the starting point) on this machine, now.

    ``relative`` is the larger of (a) the range of the run medians over their median and (b) the
    median within-run relative IQR: how far apart two readings of the *same* settings can land.
    """

    relative: float
    run_medians: list[float]
    within_run_rel_iqr: float
    workload: dict[str, Any] = field(default_factory=dict)
    metric: str = "decode_tok_s"  # the figure measured: the study's speed objective
    label: str = "defaults"  # which configuration ran: "defaults" or "yours"

    @classmethod
    def of(cls, runs: list[Stat], workload: dict[str, Any], metric: str = "requests_per_min", label: str = "defaults") -> NoiseFloor:
        medians = [run.median for run in runs]
        centre = statistics.median(medians)
        spread = (max(medians) - min(medians)) / centre if centre else float("inf")
        within = statistics.median(run.rel_iqr for run in runs)
        return cls(max(spread, within), medians, within, dict(workload), metric, label)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NoiseFloor:
        return cls(
            float(data["relative"]),
            [float(x) for x in data["run_medians"]],
            float(data["within_run_rel_iqr"]),
            dict(data.get("workload") or {}),
            str(data.get("metric", "decode_tok_s")),
            str(data.get("label", "defaults")),
        )

    def describe(self) -> str:
        runs = ", ".join(f"{x:.1f}" for x in self.run_medians)
        who = "your settings" if self.label == "yours" else "the defaults"
        return f"±{self.relative:.1%} ({who} read {runs} {UNITS.get(self.metric, self.metric)} over {len(self.run_medians)} runs)"


def floor_config(study: Any) -> tuple[str, EngineConfig]:
    """The configuration the floor is measured on: the starting point the preset changes."""
    for label in ("yours", "defaults"):
        config = enqueued_baseline(study, label)
        if config is not None:
            return label, config
    return "defaults", EngineConfig()


def measure_noise_floor(
    runner: Any,
    workload: Workload,
    runs: int = NOISE_RUNS,
    metric: str = "requests_per_min",
    config: EngineConfig | None = None,
    use_cache: bool = True,
    label: str = "defaults",
) -> tuple[NoiseFloor, Any]:
    """Measure ``config`` (the starting point) ``runs`` times back to back and return the spread
    of ``metric``, and the last run's measurement.

    The first runs are speed only; the last runs the whole workload (the quality proxy too, when it
    is on): it is exactly what that baseline's trial measures, so the study uses it as that trial's
    result instead of measuring the same thing again.
    """
    config = config or EngineConfig()
    speed_only = replace(workload, quality=False)
    results = [runner.measure(config, speed_only) for _ in range(runs - 1)]
    results.append(runner.measure(config, workload, use_cache=use_cache))
    return NoiseFloor.of([getattr(r, metric) for r in results], speed_only.to_dict(), metric, label), results[-1]


def noise_floor(study: Any) -> float:
    """The study's relative noise floor for paired comparisons (0 when it has none)."""
    stored = study.user_attrs.get("noise_floor")
    return float(stored["relative"]) if stored else 0.0


def reading_noise(study: Any) -> float:
    """The noise of one trial's reading against another's taken minutes apart: the floor, widened
    by the drift the re-measurements saw."""
    return max(noise_floor(study), drift(study).relative)


# --- drift -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    """The incumbents' re-measurements during the search (study attribute ``drift``): each entry
    is ``{"trial", "after" (counted trials then), "value" (re-read), "trial_value" (its own reading)}``."""

    readings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def relative(self) -> float:
        """The widest spread of one trial's re-readings, relative to their median: how far readings
        of the same settings minutes apart wandered (0 until a trial is re-read twice). Its own
        trial reading is left out: it was picked for being the highest (see the module docstring)."""
        spreads = []
        for number in {r["trial"] for r in self.readings}:
            values = [r["value"] for r in self.readings if r["trial"] == number]
            centre = statistics.median(values)
            spreads.append((max(values) - min(values)) / centre if len(values) > 1 and centre else 0.0)
        return max(spreads, default=0.0)

    def lowest(self, number: int) -> float | None:
        """Trial ``number``'s lowest re-reading (None if it was never re-measured)."""
        return min((r["value"] for r in self.readings if r["trial"] == number), default=None)

    def describe(self, unit: str = "requests/min") -> str:
        """The re-readings in words, for the study's output and `tune show`: each re-measured
        trial's own reading, then its re-readings."""
        if not self.readings:
            return "no re-measurement yet"
        parts = []
        for number in dict.fromkeys(r["trial"] for r in self.readings):
            mine = [r for r in self.readings if r["trial"] == number]
            parts.append(f"#{number} read {mine[0]['trial_value']:.1f}, re-read " + ", ".join(f"{r['value']:.1f}" for r in mine))
        return f"{'; '.join(parts)} {unit}"


def drift(study: Any) -> Drift:
    return Drift(list(study.user_attrs.get("drift") or []))


def drift_due(counted: int, target: int) -> bool:
    """True after every DRIFT_EVERY-th counted trial, while trials remain to be run."""
    return counted > 0 and counted % DRIFT_EVERY == 0 and counted < target


def follow_drift(study: Any, runner: Any, workload: Workload, metric: str, on_note: Note | None = None) -> None:
    """Re-measure the incumbent (speed only), record the reading on the study, say what moved."""
    best = fastest_feasible(study)
    if best is None:
        return
    try:
        result = runner.measure(EngineConfig.from_dict(best.user_attrs["measurement"]["effective"]), replace(workload, quality=False))
    except (ConfigError, EngineError, WorkerFailed):
        return  # it ran as a trial; a failure now says nothing about noise, and the search goes on
    readings = [*drift(study).readings, {"trial": best.number, "after": len(counted_trials(study)), "value": getattr(result, metric).median, "trial_value": best.values[0]}]
    study.set_user_attr("drift", readings)
    if on_note:
        now = readings[-1]
        on_note(f"drift: #{best.number} re-read {now['value']:.1f} (its trial {now['trial_value']:.1f}); single readings ±{reading_noise(study):.1%}")


# --- racing ----------------------------------------------------------------------------------


def race_margin(noise: float) -> float:
    """How far below the shrunk incumbent two readings must both fall to stop a trial: twice the
    noise of single readings (at least RACE_MIN_MARGIN)."""
    return max(RACE_MIN_MARGIN, 2 * noise)


def race_rule(noise: float) -> str:
    """The racing rule in words, said once at study start (a stopped trial's line is then short),
    in under LINE_WIDTH characters whatever the percentages."""
    margin = race_margin(noise)
    if margin >= 1:  # no reading falls 100% below anything: racing is off in effect
        return f"racing: no trial can stop early (the noise, ±{noise:.0%}, is too wide)"
    return (
        f"racing: a trial stops after 2 repetitions when both read {margin:.0%} below the incumbent's lowest repetition "
        f"(2x the noise, min {RACE_MIN_MARGIN:.0%}); never on one reading"
    )


def race_bound(study: Any, speed: str) -> RaceBound | None:
    """The bound a trial's first two repetitions must clear (None before any trial is feasible):
    the incumbent's lowest repetition (or lower re-reading), less the margin."""
    best = fastest_feasible(study)
    if best is None:
        return None
    figure = best.user_attrs["measurement"][speed]
    readings = [*(figure.get("samples") or []), figure["median"]]
    return race_bound_from(readings, drift(study).lowest(best.number), reading_noise(study))


def race_bound_from(readings: list[float], re_read: float | None, noise: float) -> RaceBound:
    """The bound from the incumbent's readings (its repetitions), its lowest re-reading (None if
    never re-measured) and the noise of single readings: the lowest of them less the margin
    (benchmarks/racing_replay.py replays this very rule)."""
    return RaceBound(below=race_base(readings, re_read) * max(1 - race_margin(noise), 0.0))


def race_base(readings: list[float], re_read: float | None) -> float:
    """What racing's bound is taken from: the incumbent's lowest reading, or its lower re-reading."""
    return min(readings) if re_read is None else min(min(readings), re_read)


def hopeless(entries: list[Any], noise: float, note: Note, seen: int = 2) -> None:
    """Confirmation's economy, after its first ``seen`` rounds: stop re-measuring an entry that
    cannot win. After round 1, only an entry reading below :data:`FAR_BELOW_AFTER_ONE` of the best
    eligible entry's round-1 reading (the guide card's 16 threads on 2 cores read 0.26-0.40x); after
    round 2 (the order rotated between them), an entry whose better round reads below the best
    eligible entry's worse round less the racing margin. The defaults (``entries[0]``: every ratio
    needs them) and your settings (the starting point) stay; a dropped entry keeps its rounds, so
    the guide card's ratio is still reported."""
    contenders = [e for e in entries if e.eligible and len(e.rounds) >= seen and not e.error]
    if not contenders:
        return
    if seen == 1:
        best = max(contenders, key=lambda e: e.rounds[0])
        bound = best.rounds[0] * FAR_BELOW_AFTER_ONE
        why = f"(half of {best.label}'s)"
    else:
        best = max(contenders, key=lambda e: min(e.rounds[:2]))
        bound = min(best.rounds[:2]) * (1 - race_margin(noise))
        why = f"(the worse round of {best.label} less {race_margin(noise):.0%})"
    for entry in entries[1:]:
        if entry.label == "yours":
            continue  # your settings are the starting point: the pick must be measured beside them
        if entry.dropped or entry.error or len(entry.rounds) < seen:
            continue  # already out, or not measured in these rounds
        better = max(entry.rounds[:seen])
        if better < bound:
            at = "in round 1" if seen == 1 else "at best in rounds 1-2"
            entry.dropped = f"{better:.1f} {at} < {bound:.1f} {why}"
            note(f"{entry.label} dropped after round {seen}: {entry.dropped}")


# --- THE tie rule ----------------------------------------------------------------------------


def beats(ratios: list[float], noise: float) -> bool:
    """True when ratios of a's figure over b's (higher is better) say a is better than b beyond
    the noise: their median exceeds 1 by more than the larger of ``noise`` and the ratios' own
    relative spread, and no round reads a as the slower. Paired ratios (both measured in the same
    round) are what comparisons use; an unpaired comparison (two trials' own readings) is one
    ratio, judged on ``noise`` alone.

    Why every round must agree: the spread of 3-5 ratios understates a noisy machine's, and the
    floor (back-to-back runs of one configuration) misses what happens between different ones.
    On this project's 2-core machine an ablation kept batch sizes that change nothing for its
    prompts at 1.13-1.21x "beyond the noise" (±6-9%) from 5 rounds; measured alone, interleaved
    over 6 rounds, they read 0.997x. A change a round contradicts is not one that pays."""
    if not ratios:
        return False
    ratio = Stat.of(ratios)
    return ratio.median - 1 > max(noise, ratio.rel_iqr) and min(ratios) >= 1


def tie(ratios: list[float], noise: float) -> bool:
    """Neither side beats the other: the one definition of "within the noise"."""
    return not beats(ratios, noise) and not beats([1 / r for r in ratios if r], noise)


def settled(ratios: list[float], noise: float) -> bool:
    """True when the rounds leave no doubt about the verdict :func:`beats` gives: a win every
    round reads beyond the noise, or no win and no round reading a clear one (beyond twice the
    noise, at least twice :data:`RACE_MIN_MARGIN`). Rounds that disagree ask for more rounds
    before a decision: `make tune` on 2026-12-03 kept batch sizes on rounds of 1.022, 1.133 and
    1.109x (floor ±8.5%), a win by :func:`beats` that its first round reads as a tie."""
    if not ratios:
        return True
    if beats(ratios, noise):
        return min(ratios) > 1 + noise
    return max(ratios) <= 1 + 2 * max(noise, RACE_MIN_MARGIN)


def round_order(items: list[Any], r: int) -> list[Any]:
    """The order in which round ``r`` of an interleaved comparison measures ``items``: the rows
    of a Williams design (a balanced Latin square: over len(items) rounds, twice that for an odd
    count, each item comes first once and follows each other item once). Rotation alone keeps
    every item behind the same neighbour, and a configuration can slow the one measured after it:
    on this project's 2-core machine a two-thread run read 0.973x in the median, 0.82x at worst,
    right after a one-thread run, and an ablation's reverted group that always followed the
    one-thread entry read 1.2x "beyond the noise" against the winner."""
    n = len(items)
    if n < 2:
        return list(items)
    base, low, high = [0], 1, n - 1  # 0, 1, n-1, 2, n-2, ...
    while len(base) < n:
        base.append(low)
        low += 1
        if len(base) < n:
            base.append(high)
            high -= 1
    k = r % (n if n % 2 == 0 else 2 * n)
    row = [(x + k) % n for x in base]
    return [items[i] for i in (row[::-1] if k >= n else row)]  # an odd count: the second n rounds mirror the first
