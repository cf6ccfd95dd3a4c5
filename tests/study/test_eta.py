"""The ETA `tune start` prints: the remaining trials at the pace of recent searched trials, plus
the confirmation and the ablation costed entry by entry from what each one took to measure."""

from __future__ import annotations

import optuna
import pytest

from tuner.study._eta import ablation_estimate, confirmation_estimate, end_estimate, per_trial


def _study(racing: bool, guide_value: float = 1.0) -> optuna.Study:
    """A study as the loop leaves it: the defaults reused from the noise floor (no time of their
    own), the guide card 15 s, searched trials 7 s of speed work and 4 s of quality each."""
    study = optuna.create_study(directions=["maximize"])
    study.set_user_attr("economies", {"racing": racing, "cache": True})
    study.set_user_attr("seconds", {"reference": 5.0, "noise_floor": 36.0})  # 3 runs of the defaults
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}

    def add(seconds: dict[str, float], value: float = 1.0, **attrs) -> None:
        study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions=dist, values=[value], user_attrs={"seconds": seconds, **attrs}))

    add({}, baseline="defaults", reused="the noise floor's last run")
    add({"setup": 0.4, "timed": 14.6, "quality": 4.6}, guide_value, baseline="guide_card")
    for _ in range(4):
        add({"setup": 0.5, "prefill": 1.0, "timed": 5.5, "quality": 4.0})
    return study


def test_the_confirmation_is_costed_entry_by_entry():
    # 3 rounds of (defaults 36/3 s + 3 candidates x 7 s) and the guide card twice: racing drops it after round 2
    assert confirmation_estimate(_study(racing=True), rounds=3) == pytest.approx(3 * (12 + 3 * 7) + 2 * 15)


def test_a_guide_card_below_half_the_best_is_costed_once():
    # its trial read 0.3 of the best (1.0): confirmation drops it after round 1
    assert confirmation_estimate(_study(racing=True, guide_value=0.3), rounds=3) == pytest.approx(3 * (12 + 3 * 7) + 1 * 15)


def test_without_racing_the_guide_card_is_costed_every_round():
    assert confirmation_estimate(_study(racing=False), rounds=3) == pytest.approx(3 * (12 + 3 * 7) + 3 * 15)


def test_no_confirmation_rounds_cost_nothing():
    assert confirmation_estimate(_study(racing=True), rounds=0) == 0.0


def test_the_pace_of_remaining_trials_is_the_median_of_the_last_five_searched_ones():
    durations = [(40.0, True), (15.0, True)] + [(s, False) for s in (9.0, 8.0, 3.0, 3.0, 9.0, 3.0, 8.0)]
    # the baselines' 40 s and 15 s are no guide; the last five searched: 3, 3, 9, 3, 8
    assert per_trial(durations) == 3.0


def test_the_ablation_is_costed_by_the_groups_the_winner_changes():
    # no trial records its settings here, so the ablation assumes a winner changing 4 groups:
    # 3 rounds of the winner + 4 reverted configurations, then 3 rounds of minimal, winner, start
    assert ablation_estimate(_study(racing=True), rounds=3) == pytest.approx(3 * (1 + 4) * 7 + 3 * 3 * 7)
    assert end_estimate(_study(racing=True), rounds=3) == pytest.approx(3 * (12 + 3 * 7) + 2 * 15 + 3 * (1 + 4) * 7 + 3 * 3 * 7)
    assert end_estimate(_study(racing=True), rounds=0) == 0.0
