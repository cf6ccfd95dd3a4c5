"""The statistics every figure uses: medians with spread (:class:`Stat`), durations, and the
fewest rounds that give a median and a spread. The machine's noise, and the one rule that calls
two figures a tie, live in :mod:`tuner.study.noise`.

Single runs on a shared machine are noisy, so nothing here reports one number without its spread,
and the raw samples are kept beside every median.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from tuner.errors import ConfigError

__all__ = ["MIN_ROUNDS", "UNITS", "Stat", "check_rounds", "duration"]

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


MIN_ROUNDS = 3  # the fewest repetitions that give a median and a spread


def duration(seconds: float) -> str:
    """Seconds as people read them: 42s, 3m07s."""
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


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
