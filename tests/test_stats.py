"""The statistics every figure uses: medians and spread, the noise floor, ties, enough rounds."""

from __future__ import annotations

import pytest

from tuner.errors import ConfigError
from tuner.stats import NoiseFloor, Stat, beats, check_rounds, is_tie, settled

SPEED_ONLY = {"prompt_tokens": 32, "gen_tokens": 8, "repeats": 3, "warmup": 1, "quality": False}


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


def test_noise_floor_is_the_larger_of_run_to_run_range_and_within_run_spread():
    runs = [Stat.of([40.0, 41.0, 42.0]), Stat.of([44.0, 45.0, 46.0]), Stat.of([49.0, 50.0, 51.0])]
    floor = NoiseFloor.of(runs, SPEED_ONLY)
    assert floor.run_medians == [41.0, 45.0, 50.0]
    assert floor.relative == pytest.approx((50.0 - 41.0) / 45.0)  # range 9 over median 45: 20%
    steady_runs_noisy_inside = [Stat.of([30.0, 45.0, 60.0])] * 3
    assert NoiseFloor.of(steady_runs_noisy_inside, SPEED_ONLY).relative == pytest.approx(15.0 / 45.0)
    assert NoiseFloor.from_dict(floor.to_dict()) == floor


def test_differences_within_the_noise_are_ties():
    assert is_tie(50.0, 52.0, noise=0.05)  # 3.8% apart
    assert not is_tie(50.0, 60.0, noise=0.05)  # 16.7% apart
    assert is_tie(0.0, 0.0, noise=0.0)


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


def test_a_win_is_paired_rounds_beyond_the_noise_and_their_own_spread():
    assert beats([1.20, 1.22, 1.18], noise=0.05)
    assert not beats([1.03, 1.04, 1.02], noise=0.05)  # inside the noise floor
    assert not beats([1.40, 1.10, 0.95], noise=0.05)  # the median 1.10 is inside the rounds' own spread
    assert not beats([], noise=0.05)


def test_rounds_that_disagree_with_the_verdict_are_not_settled():
    assert settled([1.20, 1.22, 1.18], noise=0.05)  # a win no round contradicts
    assert not settled([1.10, 1.14, 0.99], noise=0.03)  # a win one round reads as a loss
    assert settled([1.01, 0.98, 1.03], noise=0.05)  # a tie no round reads as a clear win
    assert not settled([1.01, 0.98, 1.25], noise=0.05)  # a tie one round reads as 25% faster
