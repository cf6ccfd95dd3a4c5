"""The statistics every figure uses: medians and spread, enough rounds (the noise and the tie rule: tests/study/test_noise.py)."""

from __future__ import annotations

import pytest

from tuner.errors import ConfigError
from tuner.stats import Stat, check_rounds

def test_stat_median_and_iqr():
    stat = Stat.of([10.0, 50.0, 52.0, 51.0, 53.0])
    assert stat.median == 51.0
    assert stat.iqr == pytest.approx(52.0 - 50.0)
    assert stat.samples == [10.0, 50.0, 52.0, 51.0, 53.0]  # raw samples kept, in order


def test_stat_is_robust_to_one_outlier():
    # The 0.7 tok/s reading seen among ~52 on a shared machine must not move the median much.
    assert Stat.of([52.0, 0.7, 51.5]).median == 51.5


def test_stat_roundtrip():
    stat = Stat.of([1.0, 2.0, 4.0])
    assert Stat.from_dict(stat.to_dict()) == stat


@pytest.mark.parametrize(
    ("rounds", "skip_allowed", "message"),
    [
        (2, False, r"rounds=2 \(--rounds\) is too few for a median and spread"),
        (0, False, r"rounds=0 \(--rounds\) measures nothing"),
        (-1, True, r"rounds=-1 \(--rounds\) is negative"),
    ],
)
def test_too_few_rounds_are_refused(rounds, skip_allowed, message):
    with pytest.raises(ConfigError, match=message):
        check_rounds(rounds, skip_allowed=skip_allowed)


def test_enough_rounds_or_an_allowed_skip_pass():
    check_rounds(3)
    check_rounds(0, skip_allowed=True)
