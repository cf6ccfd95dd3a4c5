"""The study's noise: the floor, drift followed, the racing bound, and the one tie rule that
show, confirm and export share."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tests.conftest import SMALL, simulated_measurement
from tuner.baseline import Requirement
from tuner.hardware import describe_machine
from tuner.space import parse_space
from tuner.stats import Stat
from tuner.study import Economies, StudySpec, best_preset, open_storage, start_study, summarize
from tuner.study.confirm import current_confirmation
from tuner.study.noise import (
    DRIFT_EVERY,
    Drift,
    NoiseFloor,
    beats,
    drift,
    race_bound,
    race_margin,
    reading_noise,
    settled,
    tie,
)

SPEED_ONLY = {"prompt_tokens": 32, "gen_tokens": 8, "repeats": 3, "warmup": 1, "quality": False}


def test_noise_floor_is_the_larger_of_run_to_run_range_and_within_run_spread():
    runs = [Stat.of([40.0, 41.0, 42.0]), Stat.of([44.0, 45.0, 46.0]), Stat.of([49.0, 50.0, 51.0])]
    floor = NoiseFloor.of(runs, SPEED_ONLY, label="yours")
    assert floor.run_medians == [41.0, 45.0, 50.0]
    assert floor.relative == pytest.approx((50.0 - 41.0) / 45.0)  # range 9 over median 45: 20%
    assert "your settings read 41.0, 45.0, 50.0" in floor.describe()
    steady_runs_noisy_inside = [Stat.of([30.0, 45.0, 60.0])] * 3
    assert NoiseFloor.of(steady_runs_noisy_inside, SPEED_ONLY).relative == pytest.approx(15.0 / 45.0)
    assert NoiseFloor.from_dict(floor.to_dict()) == floor


def test_a_win_is_paired_rounds_beyond_the_noise_and_their_own_spread():
    assert beats([1.20, 1.22, 1.18], noise=0.05)
    assert not beats([1.03, 1.04, 1.02], noise=0.05)  # inside the noise floor
    assert not beats([1.40, 1.10, 0.95], noise=0.05)  # the median 1.10 is inside the rounds' own spread
    assert not beats([1.25, 1.22, 1.30, 1.21, 0.98], noise=0.05)  # beyond noise and spread, but one round reads it slower
    assert beats([1.25, 1.22, 1.30, 1.21, 1.0], noise=0.05)  # one round even: no round contradicts it
    assert not beats([], noise=0.05)


def test_a_tie_is_neither_side_beating_the_other_and_one_reading_is_judged_on_the_noise():
    assert tie([1.03, 1.04, 1.02], noise=0.05) and tie([0.97, 0.96, 0.98], noise=0.05)
    assert not tie([1.20, 1.22, 1.18], noise=0.05) and not tie([0.80, 0.82, 0.79], noise=0.05)
    assert tie([52.0 / 50.0], noise=0.05) and not tie([60.0 / 50.0], noise=0.05)  # unpaired: two readings


def test_rounds_that_disagree_with_the_verdict_are_not_settled():
    assert settled([1.20, 1.22, 1.18], noise=0.05)  # a win no round contradicts
    assert not settled([1.022, 1.133, 1.109], noise=0.085)  # a win one round reads as a tie (make tune, 2026-12-03)
    assert not settled([1.10, 1.14, 0.99], noise=0.03)  # a win one round reads as a loss
    assert settled([1.01, 0.98, 1.03], noise=0.05)  # a tie no round reads as a clear win
    assert not settled([1.01, 0.98, 1.25], noise=0.05)  # a tie one round reads as 25% faster


def test_drift_is_the_widest_spread_of_one_settings_re_readings_not_the_winners_curse():
    readings = [
        {"trial": 7, "after": 10, "value": 45.6, "trial_value": 57.7},  # the winner's curse: not drift
        {"trial": 7, "after": 20, "value": 48.0, "trial_value": 57.7},  # drift: 45.6 -> 48.0
        {"trial": 9, "after": 30, "value": 30.0, "trial_value": 51.0},  # read once: no drift yet
    ]
    seen = Drift(readings)
    assert seen.relative == pytest.approx((48.0 - 45.6) / ((48.0 + 45.6) / 2))
    assert seen.lowest(7) == 45.6 and seen.lowest(3) is None  # the racing bound's base takes the curse off
    assert "#7 read 57.7, re-read 45.6, 48.0; #9 read 51.0, re-read 30.0 requests/min" in seen.describe() and Drift().relative == 0.0


# --- a simulated machine: what a real one cannot produce on demand ----------------------------


class Loaded:
    """A simulated machine whose load changes over time (``load(call)`` scales every reading of
    that call) and on which n_ubatch 64 is 15% faster, 16 threads 4x slower. A real machine's
    load cannot be set on demand, and the rules' arithmetic is what is tested here."""

    def __init__(self, load):
        self.load, self.calls = load, 0

    def reference(self, model_sha256: str, **options):
        return {"greedy_accuracy": 0.7, "greedy_nll": 1.0}

    def measure(self, config, workload, **options):
        effective = config.effective()
        speed = 100.0 * (1.15 if effective.n_ubatch == 64 else 1.0) / (4 if effective.n_threads > 2 else 1)
        speed *= self.load(self.calls)
        self.calls += 1
        return simulated_measurement(effective, workload, speed)


UBATCH_64 = """
name: ubatch-64
params:
  n_ubatch: {choices: [64]}
"""


def _study(tmp_path, model_path, name: str, runner, trials: int, space: str = UBATCH_64):
    spec = StudySpec(
        model=model_path,
        model_sha256="0" * 64,
        space=parse_space(space),
        workload=replace(SMALL, quality=False),
        trials=trials,
        seed=1,
        economies=Economies(racing=False),
        requirement=Requirement(512, "the test's"),
    )
    notes: list[str] = []
    url = f"sqlite:///{tmp_path / f'{name}.db'}"
    study = start_study(spec, name=name, storage=open_storage(url), runner=runner, machine=describe_machine().to_dict(), on_note=notes.append)
    return study, notes


# The machine's load, call by call: steady through the floor (3 calls) and the trials (guide card,
# the searched trial: the defaults reuse the floor's last run), then, in the confirmation's three
# rounds (defaults, guide card, #2: three calls each), 1.0, 0.55 and 0.8; steady after.
CONFIRMATION_STARTS = 5
ROUND_LOADS = (1.0, 0.55, 0.8)


def _round_load(call: int) -> float:
    index = (call - CONFIRMATION_STARTS) // 3
    return ROUND_LOADS[index] if 0 <= index < len(ROUND_LOADS) else 1.0


def test_show_confirm_and_export_agree_where_todays_median_rule_called_a_tie(tmp_path, model_path):
    study, notes = _study(tmp_path, model_path, "one-rule", Loaded(_round_load), trials=3)
    confirmation = current_confirmation(study)
    searched = confirmation.candidate(2)
    defaults = confirmation.defaults
    # Premise: every round reads #2 1.15x the defaults, while the load swings the rounds' medians
    # so far apart that the rule of medians (within the larger of the floor and their own IQRs)
    # called it a tie.
    assert searched.ratios_to(defaults) == pytest.approx([1.15] * 3), notes
    spread = max(confirmation.noise, searched.value.rel_iqr, defaults.value.rel_iqr)
    assert abs(searched.value.median - defaults.value.median) / searched.value.median <= spread, "premise: the old rule's tie"
    # The one rule: confirm picks #2, show says it is no tie, and the export carries its change.
    assert confirmation.winner == 2, confirmation.why
    summary = summarize(study)
    assert summary.best.number == 2 and not summary.ties_defaults(summary.best)
    assert summary.to_dict()["best"]["ties_defaults"] is False
    preset = best_preset(study)
    assert preset.config().n_ubatch == 64 and preset.measured["vs_defaults"] == pytest.approx(1.15, abs=0.01)


def test_the_floor_widens_with_the_drift_the_incumbents_re_measurements_see(tmp_path, model_path):
    # Every reading 1% slower than the one before: two re-readings of the incumbent, DRIFT_EVERY
    # trials apart (one call a trial), differ by a known amount, and the noise of single readings
    # reports it.
    study, notes = _study(tmp_path, model_path, "drifting", Loaded(lambda call: 0.99**call), trials=2 * DRIFT_EVERY + 2)
    seen = drift(study)
    first, second = seen.readings  # after the DRIFT_EVERY-th and 2 x DRIFT_EVERY-th counted trials
    assert first["trial"] == second["trial"]  # the incumbent stayed: every searched trial is the same, slower each call
    calls_between = DRIFT_EVERY + 1  # the trials between the checks, and the first check itself
    assert second["value"] / first["value"] == pytest.approx(0.99**calls_between, rel=1e-6)
    assert seen.relative == pytest.approx((first["value"] - second["value"]) / ((first["value"] + second["value"]) / 2))
    assert reading_noise(study) == pytest.approx(max(seen.relative, study.user_attrs["noise_floor"]["relative"]))
    assert reading_noise(study) > study.user_attrs["noise_floor"]["relative"]  # the floor alone did not see it
    assert any(n.startswith(f"drift: #{first['trial']} re-read ") for n in notes)
    assert summarize(study).to_dict()["noise_floor"]["single_readings"] == pytest.approx(reading_noise(study))


def test_the_racing_bound_comes_from_the_incumbents_lowest_reading(tmp_path, model_path):
    study, _ = _study(tmp_path, model_path, "bound", Loaded(lambda call: 1.0), trials=3)
    best = max((t for t in study.trials if t.values), key=lambda t: t.values[0])
    low = min(best.user_attrs["measurement"]["requests_per_min"]["samples"])
    assert low < best.values[0]  # its lowest repetition, not its median: the winner's curse shrunk
    margin = race_margin(reading_noise(study))
    assert race_bound(study, "requests_per_min").below == pytest.approx(low * (1 - margin))
    study.set_user_attr("drift", [{"trial": best.number, "after": 3, "value": 0.5 * low, "trial_value": best.values[0]}])
    assert race_bound(study, "requests_per_min").below == pytest.approx(0.5 * low * (1 - margin))  # a lower re-reading is the base
    again = {"trial": best.number, "after": 4, "value": low, "trial_value": best.values[0]}
    study.set_user_attr("drift", [*study.user_attrs["drift"], again])  # re-readings 0.5 x low and low: drift ±67%
    assert race_bound(study, "requests_per_min").below == 0.0  # that much drift (margin 133%): no reading can stop a trial


class YoursFail(Loaded):
    """The simulated machine on which your settings (3 threads) fail: a failure a real engine
    cannot be made to produce for one configuration on demand."""

    def measure(self, config, workload, **options):
        if config.effective().n_threads == 3:
            from tuner.errors import EngineError

            raise EngineError("llama.cpp refused the context (simulated)", "change the settings")
        return super().measure(config, workload, **options)


def test_when_your_settings_fail_the_floor_is_measured_on_the_defaults(tmp_path, model_path):
    from tuner.config import EngineConfig

    spec = StudySpec(
        model=model_path,
        model_sha256="0" * 64,
        space=parse_space(UBATCH_64),
        workload=replace(SMALL, quality=False),
        trials=4,
        seed=1,
        economies=Economies(racing=False),
        requirement=Requirement(512, "the test's"),
        yours=EngineConfig(n_threads=3, n_threads_batch=3),
    )
    notes: list[str] = []
    study = start_study(spec, name="yours-fail", storage=open_storage(f"sqlite:///{tmp_path / 'y.db'}"), runner=YoursFail(lambda call: 1.0),
                        machine=describe_machine().to_dict(), on_note=notes.append)
    assert study.user_attrs["noise_floor"]["label"] == "defaults" and study.user_attrs.get("noise_floor_error") is None
    assert notes[0].startswith("noise floor: ±") and "the defaults read" in notes[0]


def test_the_racing_rule_never_stops_on_one_reading_and_never_promises_a_stop_below_zero():
    """Two readings must both fall a margin below; at a noise of 50% or more the margin is the
    whole reading, and the rule says racing can stop nothing instead of '110% below'."""
    from tuner.study.noise import race_rule

    quiet = race_rule(0.02)
    assert "after 2 repetitions when both read 5% below" in quiet and "never on one reading" in quiet  # the 5% minimum margin
    assert "after 2 repetitions when both read 37% below" in race_rule(0.183)
    wide = race_rule(0.55)
    assert "no trial can stop early" in wide and "110%" not in wide


def test_no_entry_always_follows_the_same_one_in_interleaved_rounds():
    """A run can slow the one after it (a two-thread run read down to 0.82x right after a
    one-thread run here): over a full cycle of rounds each entry comes first once and follows
    each other entry once (a Williams design), for an even and an odd number of entries."""
    from tuner.study.noise import round_order

    for entries, cycle in ((["winner", "without threads", "without batch sizes", "without sampling"], 4), (["defaults", "yours", "#3"], 6)):
        orders = [round_order(entries, r) for r in range(cycle)]
        assert all(sorted(order) == sorted(entries) for order in orders)
        pairs = [(o[i - 1], o[i]) for o in orders for i in range(1, len(o))]
        every_pair = [(a, b) for a in entries for b in entries if a != b]
        assert sorted(pairs) == sorted(every_pair * (len(pairs) // len(every_pair)))  # every ordered pair, equally often
        assert {o[0] for o in orders} == set(entries)
        assert round_order(entries, cycle) == orders[0]  # extra rounds continue the cycle
    assert round_order([], 3) == [] and round_order(["only"], 1) == ["only"]
