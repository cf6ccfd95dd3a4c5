"""Racing: a trial clearly slower than the best feasible trial stops after two repetitions that
both read below the bound, recorded as PRUNED with its partial figures and the reason, and counts
toward the target; no trial is stopped on one reading (in CI a trial with the incumbent's very
settings once read 0.44x on its first repetition, a neighbour's burst, and the rule of the time
stopped it there).

Made for real: a study whose searched trials run 2 threads is resumed with a space that fixes
16 threads (on this project's 2-core machines 16 threads oversubscribe the cores and run at about
0.3x the speed of 2: clearly slower even at a noise floor of ±20%, which the AMD EPYC machine
reached; one thread, at 0.6-0.7x there, was not clearly slower at that noise).
"""

from __future__ import annotations

import os

import pytest
from optuna.trial import TrialState

from tests.conftest import SMALL
from tuner.baseline import Requirement
from tuner.hardware import describe_machine
from tuner.models import model_sha256
from tuner.space import parse_space
from tuner.study import Economies, InProcess, StudySpec, counted_trials, open_storage, resume_study, start_study
from tuner.study.noise import race_margin, reading_noise

SPACE = """
name: threads-{threads}
params:
  top_k: {{low: 39, high: 40}}
fixed: {{n_ctx: 512, n_threads: {threads}, n_threads_batch: {threads}, temperature: 0.0}}
"""


SLOW_THREADS = 16


def _fast_then_slow(tmp_path, engine, model_path, economies: Economies):
    """3 trials with the 2-thread space (defaults, guide card, one searched), one more with the
    16-thread space, then one more with the 2-thread space (as fast as the incumbent). Returns
    (study, the first 2-thread trial)."""
    assert 2 <= (os.cpu_count() or 1) < SLOW_THREADS, "premise: two cores, so 2 threads beat 16 oversubscribed ones"
    spec = StudySpec(
        model=model_path,
        model_sha256=model_sha256(model_path),
        space=parse_space(SPACE.format(threads=2)),
        workload=SMALL,
        trials=3,
        seed=1,
        economies=economies,
        requirement=Requirement(512, "the space's fixed n_ctx"),
    )
    runner = InProcess(engine)
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}")
    study = start_study(spec, name="r", storage=storage, runner=runner, machine=describe_machine().to_dict(), confirm_rounds=0)
    fast = study.trials[2]
    study = resume_study(study, runner=runner, space=parse_space(SPACE.format(threads=SLOW_THREADS)), trials=4, confirm_rounds=0)
    study = resume_study(study, runner=runner, space=parse_space(SPACE.format(threads=2)), trials=5, confirm_rounds=0)
    return study, fast


# The premise of the stop: at this noise of single readings the bound is half the incumbent's
# lowest repetition (margin 2 x 25%), and 16 threads read about 0.3x.
QUIET_ENOUGH = 0.25
ATTEMPTS = 3


@pytest.fixture(scope="module")
def raced(tmp_path_factory, engine, model_path):
    """The study, made again (at most ATTEMPTS times) while its noise is too wide to show a stop: a
    suite run once measured a floor of ±38.6% (the defaults' run medians 167, 117 and 129 with a
    neighbour busy), a margin of 77%, and the 16-thread trial at 0.24x was rightly not stopped."""
    for _ in range(ATTEMPTS):
        study, fast = _fast_then_slow(tmp_path_factory.mktemp("racing"), engine, model_path, Economies())
        if reading_noise(study) <= QUIET_ENOUGH:
            return study, fast
    pytest.fail(f"the machine was too noisy to show racing {ATTEMPTS} times (single readings ±{reading_noise(study):.0%})")


def test_a_clearly_slower_trial_is_stopped_early(raced):
    study, fast = raced
    slow = study.trials[3]
    assert fast.state == TrialState.COMPLETE and fast.user_attrs["config"]["n_threads"] == 2
    assert slow.user_attrs["config"]["n_threads"] == SLOW_THREADS
    assert slow.state == TrialState.PRUNED
    reason = slow.user_attrs["raced"]
    assert reason.startswith("stopped early: ") and reason.endswith("after 2 repetitions")
    assert len(reason) < 80  # the rule is said once, at study start
    measurement = slow.user_attrs["measurement"]  # the partial figures are kept
    assert len(measurement["requests_per_min"]["samples"]) == 2
    assert measurement["quality"] is None and "kld_mean" not in slow.user_attrs  # no quality pass
    assert slow.user_attrs["seconds"]["quality"] == 0
    assert slow in counted_trials(study) and len(counted_trials(study)) == 5


def test_the_bound_is_the_incumbents_lowest_repetition_less_the_margin(raced):
    study, _ = raced
    slow = study.trials[3]
    before = [t for t in study.trials[:3] if t.state == TrialState.COMPLETE]
    incumbent = max(before, key=lambda t: t.values[0])  # the fastest when the slow trial ran (all feasible)
    low = min(incumbent.user_attrs["measurement"]["requests_per_min"]["samples"])
    margin = race_margin(reading_noise(study))  # no drift check in 5 trials: the floor alone
    assert f"< {low * (1 - margin):.1f} requests/min after 2 repetitions" in slow.user_attrs["raced"]


def test_a_trial_as_fast_as_the_incumbent_is_never_stopped_on_one_reading(raced):
    study, fast = raced
    peer = study.trials[4]
    assert peer.user_attrs["config"]["n_threads"] == 2  # the incumbent's settings but top_k
    assert len(peer.user_attrs["measurement"]["requests_per_min"]["samples"]) >= 2, peer.user_attrs.get("raced")


def test_baselines_are_never_raced(raced):
    study, _ = raced
    guide = study.trials[1]  # 16 threads on 2 cores: far slower than the best, measured fully anyway
    assert guide.state == TrialState.COMPLETE
    assert len(guide.user_attrs["measurement"]["requests_per_min"]["samples"]) == SMALL.repeats


def test_racing_off_measures_every_repetition(tmp_path, engine, model_path):
    study, _ = _fast_then_slow(tmp_path, engine, model_path, Economies(racing=False))
    assert study.user_attrs["economies"] == {"racing": False, "cache": True}
    slow = study.trials[3]
    assert slow.user_attrs["config"]["n_threads"] == SLOW_THREADS
    assert slow.state == TrialState.COMPLETE and "raced" not in slow.user_attrs
    assert len(slow.user_attrs["measurement"]["requests_per_min"]["samples"]) == SMALL.repeats
