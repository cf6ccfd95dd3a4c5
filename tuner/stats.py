"""The statistics every figure uses: medians with spread (:class:`Stat`), the run-to-run noise of a
machine (:class:`NoiseFloor`), and the rule that calls two figures a tie (:func:`is_tie`).

Single runs on a shared machine are noisy, so nothing here reports one number without its spread,
and the raw samples are kept beside every median.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from tuner.errors import ConfigError

__all__ = ["MIN_ROUNDS", "RACE_MIN_MARGIN", "UNITS", "NoiseFloor", "Stat", "beats", "check_rounds", "duration", "is_tie", "race_margin", "settled"]

# How each figure is named for a reader.
UNITS = {
    "requests_per_min": "requests/min",
    "decode_tok_s": "decode tok/s",
    "prompt_tok_s": "prompt tok/s",
    "ttft_ms": "ms to first token",
    "kld_mean": "mean KLD",
}


@dataclass(frozen=True)
class Stat:
    """Median and interquartile range of repeated samples, raw samples kept."""

    median: float
    iqr: float
    samples: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, samples: list[float]) -> Stat:
        if not samples:
            raise ValueError("a Stat needs at least one sample")
        if len(samples) == 1:
            return cls(samples[0], 0.0, list(samples))
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
        return cls(statistics.median(samples), q3 - q1, list(samples))

    @property
    def rel_iqr(self) -> float:
        """IQR as a fraction of the median: the noise of this figure."""
        return self.iqr / self.median if self.median else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {"median": self.median, "iqr": self.iqr, "samples": list(self.samples)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Stat:
        return cls(float(values["median"]), float(values["iqr"]), [float(x) for x in values.get("samples", [])])


@dataclass(frozen=True)
class NoiseFloor:
    """Run-to-run noise of one configuration (the defaults) on this machine, now.

    ``relative`` is the larger of (a) the range of the run medians over their median and (b) the
    median within-run relative IQR: how far apart two readings of the *same* settings can land.
    """

    relative: float
    run_medians: list[float]
    within_run_rel_iqr: float
    workload: dict[str, Any] = field(default_factory=dict)
    metric: str = "decode_tok_s"  # the figure measured: the study's speed objective

    @classmethod
    def of(cls, runs: list[Stat], workload: dict[str, Any], metric: str = "requests_per_min") -> NoiseFloor:
        medians = [run.median for run in runs]
        centre = statistics.median(medians)
        spread = (max(medians) - min(medians)) / centre if centre else float("inf")
        within = statistics.median(run.rel_iqr for run in runs)
        return cls(max(spread, within), medians, within, dict(workload), metric)

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
        )

    def describe(self) -> str:
        runs = ", ".join(f"{x:.1f}" for x in self.run_medians)
        return f"±{self.relative:.1%} (the defaults read {runs} {UNITS.get(self.metric, self.metric)} over {len(self.run_medians)} runs)"


def beats(ratios: list[float], noise: float) -> bool:
    """True when paired per-round ratios (a's figure over b's, both measured in the same round,
    higher is better) say a is better than b beyond the noise: their median exceeds 1 by more than
    the larger of the noise floor and the ratios' own relative spread."""
    if not ratios:
        return False
    ratio = Stat.of(ratios)
    return ratio.median - 1 > max(noise, ratio.rel_iqr)


def settled(ratios: list[float], noise: float) -> bool:
    """True when every round agrees with the verdict :func:`beats` gives: a win that no round
    reads as a loss, or no win and no round reading a clear one (beyond twice the noise, at least
    twice :data:`RACE_MIN_MARGIN`). Rounds that disagree ask for more rounds before a decision."""
    if not ratios:
        return True
    if beats(ratios, noise):
        return min(ratios) > 1
    return max(ratios) <= 1 + 2 * max(noise, RACE_MIN_MARGIN)


def is_tie(a: float, b: float, noise: float) -> bool:
    """True when ``a`` and ``b`` differ by no more than the relative ``noise``: not a win."""
    top = max(abs(a), abs(b))
    return top == 0 or abs(a - b) / top <= noise


MIN_ROUNDS = 3  # the fewest repetitions that give a median and a spread
RACE_MIN_MARGIN = 0.05  # racing never stops a configuration closer than this to the best


def duration(seconds: float) -> str:
    """Seconds as people read them: 42s, 3m07s."""
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def race_margin(noise: float, rel_iqr: float) -> float:
    """How far below the best's median a single first reading must fall to be stopped early.

    One reading scatters around its configuration's median by about the within-run spread, and
    medians drift run to run by about the noise floor: twice either (and at least 5%) leaves a
    configuration that reads that low no plausible way to finish as the best.
    """
    return max(RACE_MIN_MARGIN, 2 * noise, 2 * rel_iqr)


def check_rounds(rounds: int, *, name: str = "rounds", flag: str = "--rounds", skip_allowed: bool = False) -> None:
    """Refuse a number of interleaved rounds that cannot give a median and spread.

    Args:
        name, flag: the parameter and the CLI option that carried ``rounds``, for the message.
        skip_allowed: 0 means "skip this step" (confirmation at the end of a study).

    Raises:
        ConfigError: fewer than :data:`MIN_ROUNDS` rounds (or a negative number).
    """
    skip = ", or 0 to skip" if skip_allowed else ""
    if rounds == 0 and skip_allowed:
        return
    if rounds < 0:
        raise ConfigError(f"{name}={rounds} ({flag}) is negative", f"use {MIN_ROUNDS} or more rounds{skip}")
    if rounds == 0:
        raise ConfigError(f"{name}=0 ({flag}) measures nothing", f"use {MIN_ROUNDS} or more rounds")
    if rounds < MIN_ROUNDS:
        raise ConfigError(f"{name}={rounds} ({flag}) is too few for a median and spread", f"use {MIN_ROUNDS} or more rounds{skip}")
