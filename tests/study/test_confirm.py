"""Confirmation: ties are not wins, and the winner is picked by re-measurement."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from tests.conftest import SMALL
from tuner.config import EngineConfig
from tuner.errors import ConfigError
from tuner.hardware import describe_machine
from tuner.models import model_sha256
from tuner.space import load_space
from tuner.stats import Stat
from tuner.study import (
    InProcess,
    StudySpec,
    best_preset,
    feasible_trials,
    load_study,
    open_storage,
    resume_study,
    start_study,
    summarize,
)
from tuner.study.confirm import (
    Candidate,
    Confirmation,
    _defaults_faster,
    _pick_winner,
    confirm,
    interleave,
    current_confirmation,
    pick_candidates,
)
from tuner.study.noise import beats, hopeless, measure_noise_floor

SPEED_ONLY = replace(SMALL, quality=False)


def _candidate(label: str, rounds: list[float], defaults: list[float], kld: float | None = None) -> Candidate:
    number = 0 if label == "defaults" else int(label.lstrip("#"))
    return Candidate(label, number, {}, None, kld, rounds, [a / d for a, d in zip(rounds, defaults)])


DEFAULTS = [30.0, 31.0, 29.0]


def test_a_clear_win_goes_to_the_fastest_re_measured_candidate():
    fast, slow = _candidate("#5", [50.0, 51.0, 49.0], DEFAULTS), _candidate("#7", [40.0, 41.0, 39.0], DEFAULTS)
    winner, why = _pick_winner([slow, fast, _candidate("defaults", DEFAULTS, DEFAULTS)], noise=0.05)
    assert winner is fast
    assert "#5 is fastest when re-measured" in why and "the defaults" in why


def test_a_winner_from_your_settings_that_the_defaults_beat_is_not_left_unqualified():
    yours = _candidate("#2", [27.0, 28.0, 26.0], DEFAULTS)  # 0.90x the defaults in every round
    assert _defaults_faster(yours, noise=0.02).startswith("; the engine's defaults read 1.11x it")
    assert _defaults_faster(_candidate("#2", [29.9, 31.2, 28.8], DEFAULTS), noise=0.02) == ""  # a tie says nothing


def test_a_tie_on_speed_goes_to_the_closer_to_reference_candidate():
    fast_lossy = _candidate("#5", [50.0, 51.0, 49.0], DEFAULTS, kld=0.02)
    almost_exact = _candidate("#7", [49.0, 50.0, 48.5], DEFAULTS, kld=0.001)
    winner, why = _pick_winner([fast_lossy, almost_exact], noise=0.05)
    assert winner is almost_exact
    assert "ties with #5" in why and "lowest mean KLD" in why


def test_a_tie_on_speed_and_quality_goes_to_the_shorter_time_to_first_token():
    slow_start = replace(_candidate("#5", [50.0, 51.0, 49.0], DEFAULTS, kld=0.0), figures={"ttft_ms": [90.0, 91.0, 89.0]})
    quick_start = replace(_candidate("#7", [49.5, 50.0, 49.0], DEFAULTS, kld=0.0), figures={"ttft_ms": [60.0, 62.0, 61.0]})
    winner, why = _pick_winner([slow_start, quick_start, _candidate("defaults", DEFAULTS, DEFAULTS)], noise=0.05)
    assert winner is quick_start
    assert "ties with #5" in why and "the shortest time to first token (61 ms)" in why


def test_a_pick_must_beat_the_defaults_and_one_that_does_is_not_lost_to_a_third_that_ties_both():
    # Ties are not transitive: #5 beats the defaults by 5%, #7 (tied with #5, closer to the
    # reference) only by 1%, within the noise of the defaults: #7 may not win, and #5, which
    # measurably beats them, does (the winner always ties or is the fastest, and beats the start).
    defaults = [50.0, 50.0, 50.0]
    fast_lossy = _candidate("#5", [52.5, 52.5, 52.5], defaults, kld=0.006)
    exact_but_slow = _candidate("#7", [50.5, 50.5, 50.5], defaults, kld=0.0)
    start = _candidate("defaults", defaults, defaults, kld=0.0)
    winner, why = _pick_winner([fast_lossy, exact_but_slow, start], noise=0.045)
    assert winner is fast_lossy and "#5 is fastest when re-measured" in why
    # without #5, nothing beats the defaults: they are kept
    winner, why = _pick_winner([exact_but_slow, start], noise=0.045)
    assert winner.label == "defaults" and "keeping the defaults" in why


def test_a_fastest_median_that_does_not_beat_the_defaults_leaves_the_win_to_the_tie_that_does():
    # #5 reads fastest in the median but one round below the defaults; #7, tied with it, beats
    # them in every round: #7 wins, and the reason does not call it the fastest.
    defaults = [50.0, 50.0, 50.0]
    erratic = _candidate("#5", [60.0, 49.0, 58.0], defaults)
    steady = _candidate("#7", [55.0, 55.0, 55.0], defaults)
    winner, why = _pick_winner([erratic, steady, _candidate("defaults", defaults, defaults)], noise=0.05)
    assert winner is steady
    assert why.startswith("#7 (55.0 requests/min, 1.10x the defaults) ties with #5, the fastest, and beats the defaults beyond the noise")


def test_a_candidate_that_only_ties_the_defaults_does_not_replace_them():
    lucky = _candidate("#5", [31.0, 30.0, 31.5], DEFAULTS)
    winner, why = _pick_winner([lucky, _candidate("defaults", DEFAULTS, DEFAULTS)], noise=0.05)
    assert winner.label == "defaults"
    assert "nothing is faster than the defaults beyond the noise" in why


def test_noise_floor_measures_the_starting_point_several_times(engine):
    floor, last = measure_noise_floor(InProcess(engine), SMALL, runs=3)
    assert len(floor.run_medians) == 3 and all(x > 0 for x in floor.run_medians)
    assert len(set(floor.run_medians)) > 1  # three separate measurements, not one copied
    assert floor.relative >= floor.within_run_rel_iqr >= 0
    assert floor.workload["quality"] is False  # the spread of speed
    # The last run measured the whole workload: the defaults baseline trial uses it as its own.
    assert last.workload == SMALL
    assert last.requests_per_min.median == floor.run_medians[-1]


def test_what_cannot_win_is_dropped_after_two_rounds_and_keeps_them():
    entries = [
        _candidate("defaults", [30.0, 31.0], [30.0, 31.0]),
        replace(_candidate("#1", [14.0, 15.0], [30.0, 31.0]), label="guide_card", eligible=False),
        _candidate("#5", [50.0, 52.0], [30.0, 31.0]),
        _candidate("#7", [44.0, 48.0], [30.0, 31.0]),  # its better round within 5% of #5's worse: may still win
        _candidate("#9", [40.0, 46.0], [30.0, 31.0]),
        replace(_candidate("#2", [20.0, 21.0], [30.0, 31.0]), label="yours"),  # the starting point: never dropped
    ]
    notes: list[str] = []
    hopeless(entries, noise=0.02, note=notes.append)  # margin max(5%, 2 x 2%) = 5%: bound 50 x 0.95 = 47.5
    assert [e.label for e in entries if e.dropped] == ["guide_card", "#9"]
    assert all(len(e.rounds) == 2 for e in entries)  # dropped ones keep their rounds (the guide's ratio)
    assert notes == [
        f"{label} dropped after round 2: {value} at best in rounds 1-2 < 47.5 (the worse round of #5 less 5%)" for label, value in (("guide_card", "15.0"), ("#9", "46.0"))
    ]


def test_only_what_reads_below_half_the_best_is_dropped_after_one_round():
    entries = [
        _candidate("defaults", [30.0], [30.0]),
        replace(_candidate("#1", [14.0], [30.0]), label="guide_card"),  # 16 threads on 2 cores: 0.28x the best
        _candidate("#5", [50.0], [30.0]),
        _candidate("#7", [41.0], [30.0]),  # 0.82x: the worst order effect measured, never dropped on one round
        _candidate("#9", [26.0], [30.0]),  # 0.52x: far below, yet not below half
        replace(_candidate("#2", [10.0], [30.0]), label="yours"),  # the starting point: never dropped
    ]
    notes: list[str] = []
    hopeless(entries, noise=0.30, note=notes.append, seen=1)  # the bound does not widen with the noise
    assert [e.label for e in entries if e.dropped] == ["guide_card"]
    assert notes == ["guide_card dropped after round 1: 14.0 in round 1 < 25.0 (half of #5's)"]
    hopeless(entries, noise=0.02, note=notes.append)  # round 2's rule leaves a dropped entry as it was
    assert entries[1].dropped.startswith("14.0 in round 1")


def test_a_round_line_shows_no_reading_for_an_entry_dropped_before_it():
    guide = replace(_candidate("#1", [14.0], [30.0]), label="guide_card", dropped="14.0 in round 1 < 25.0 (half of #5's)")
    failed = replace(_candidate("defaults", [30.0], [30.0]), error="its worker died")  # neither is measured again
    notes: list[str] = []
    interleave([failed, guide], runner=None, workload=SMALL, metric="requests_per_min", rounds=1, note=notes.append, first=1)
    assert notes == ["round 2/2: "]  # not "guide_card 14.0": that reading is round 1's


@pytest.fixture(scope="module")
def confirmed(speed_study):
    """The shared 12-trial speed-only study (tests/conftest.py) whose trial #3 read 20x too fast."""
    url, name, notes = speed_study
    return load_study(name, open_storage(url, must_exist=True)), notes


def test_the_study_stores_its_noise_floor_and_confirmation(confirmed):
    study, notes = confirmed
    assert study.user_attrs["noise_floor"]["relative"] >= 0
    assert notes[0].startswith("noise floor: ±")
    assert any(n.startswith("confirming: defaults, ") for n in notes)
    assert len([n for n in notes if n.startswith("round ")]) == 3
    stored = Confirmation.from_dict(study.user_attrs["confirmation"])
    assert stored.rounds == 3 and len(stored.defaults.rounds) == 3
    for candidate in stored.candidates:
        assert len(candidate.rounds) == 3 and len(candidate.ratio_vs_defaults) == 3
        for figure in ("decode_tok_s", "prompt_tok_s", "ttft_ms"):
            assert len(candidate.figures[figure]) == 3  # every figure re-measured, not only the objective
    assert stored.guide is not None and stored.guide.trial == 1  # the guide card, re-measured beside them
    assert any(n.startswith("confirming: defaults, guide_card, #") for n in notes)


def test_a_lucky_trial_is_caught_by_re_measurement(confirmed):
    study, _ = confirmed
    assert study.trials[3].values[0] == max(t.values[0] for t in study.trials)  # it led the study
    confirmation = current_confirmation(study)
    lucky = confirmation.candidate(3)
    assert lucky.trial_value > 5 * lucky.value.median  # its re-measured speed is the real one
    # The winner is the fastest re-measured configuration, or ties with it: never picked by the
    # lucky trial reading.
    contenders = confirmation.candidates + [confirmation.defaults]
    winner = confirmation.candidate(confirmation.winner)
    best = max(contenders, key=lambda c: c.value.median)
    assert winner is best or not beats(best.ratios_to(winner), confirmation.noise)  # the one tie rule
    assert winner.ratio.median < 5  # whatever won, its confirmed ratio is not the lucky 20x reading


def test_summary_and_export_use_the_confirmed_winner(confirmed):
    study, _ = confirmed
    confirmation = current_confirmation(study)
    assert summarize(study).best.number == confirmation.winner
    preset = best_preset(study, full=True)  # the winner itself (the minimal preset: test_ablation.py)
    assert preset.provenance["trial"] == confirmation.winner
    confirmed_figures = preset.measured["confirmed"]
    vs = confirmed_figures["vs_defaults"]
    assert vs["low"] <= vs["median"] <= vs["high"]
    assert confirmed_figures["metric"] == "requests_per_min"
    assert len(confirmed_figures["requests_per_min"]["rounds"]) == 3
    assert preset.measured["picked"].startswith("confirmed by re-measurement")


def test_confirmed_figures_lead_and_the_trial_reading_stays_labelled(confirmed):
    """The top-level figures of a confirmed preset are the re-measured ones: the lucky trial's
    20x reading never reaches them; it stays under trial_reading."""
    study, _ = confirmed
    confirmation = current_confirmation(study)
    winner, guide = confirmation.candidate(confirmation.winner), confirmation.guide
    measured = best_preset(study, full=True).measured
    assert measured["figures"].startswith("confirmed")
    assert measured["requests_per_min"]["median"] == round(winner.value.median, 2)
    assert measured["decode_tok_s"]["median"] == round(winner.stat("decode_tok_s").median, 2)
    assert measured["vs_defaults"] == round(winner.ratio.median, 3)
    assert measured["vs_guide_card"] == round(Stat.of([w / g for w, g in zip(winner.rounds, guide.rounds)]).median, 3)
    reading = study.trials[confirmation.winner].user_attrs["measurement"]["requests_per_min"]["median"]
    assert measured["trial_reading"]["requests_per_min"]["median"] == round(reading, 2)
    summary = summarize(study)
    assert summary.best.source == summary.baselines["defaults"].source == "confirmed"
    assert summary.trial_readings["best"].source == "trial"


def test_candidates_are_the_fastest_feasible_distinct_settings_without_the_baselines(confirmed):
    study, _ = confirmed
    picked = pick_candidates(feasible_trials(study), n=3)
    assert all("baseline" not in t.user_attrs for t in picked)  # the baselines are re-measured as themselves
    assert [t.values[0] for t in picked] == sorted((t.values[0] for t in picked), reverse=True)
    assert len({repr(sorted(t.user_attrs["measurement"]["effective"].items())) for t in picked}) == len(picked)


def test_a_study_that_grew_since_its_confirmation_is_not_called_confirmed(speed_study, tmp_path, engine):
    url, name, _ = speed_study
    copy = tmp_path / "grown.db"
    shutil.copy(url.removeprefix("sqlite:///"), copy)
    study = load_study(name, open_storage(f"sqlite:///{copy}", must_exist=True))
    assert current_confirmation(study) is not None
    study = resume_study(study, runner=InProcess(engine), space=load_space("cpu"), trials=13, confirm_rounds=0)
    assert current_confirmation(study) is None
    assert "confirmed" not in best_preset(study).measured
    assert not best_preset(study).measured["picked"].startswith("confirmed")
    assert summarize(study).best.number == max(
        (t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.values[0]
    ).number  # back to the trials' own figures: the lucky #3 leads again, unconfirmed


def test_confirmation_with_nothing_to_compare_stores_nothing(tmp_path, model_path, engine):
    spec = StudySpec(
        model=model_path, model_sha256=model_sha256(model_path), space=load_space("cpu"), workload=SPEED_ONLY, trials=1
    )
    storage = open_storage(f"sqlite:///{tmp_path / 'one.db'}")
    study = start_study(spec, name="one", storage=storage, runner=InProcess(engine), machine=describe_machine().to_dict())
    assert confirm(study, InProcess(engine)) is None  # only the defaults ran
    assert "confirmation" not in study.user_attrs
    assert best_preset(study).config() == EngineConfig(n_ctx=4096).effective()  # the defaults (at the required context) stand
    # one trial compares nothing: no noise floor was measured for it; a resume to more measures one
    assert "noise_floor" not in study.user_attrs
    study = resume_study(study, runner=InProcess(engine), space=load_space("cpu"), trials=2, confirm_rounds=0)
    assert study.user_attrs["noise_floor"]["label"] == "defaults" and len(study.trials) == 2


def test_a_library_confirmation_refuses_what_the_cli_refuses(confirmed, engine):
    study, _ = confirmed
    before = study.user_attrs["confirmation"]
    with pytest.raises(ConfigError, match=r"rounds=2 \(--rounds\) is too few"):
        confirm(study, InProcess(engine), rounds=2)
    with pytest.raises(ConfigError, match=r"candidates=0 \(--candidates\) re-measures nothing"):
        confirm(study, InProcess(engine), candidates=0)
    assert study.user_attrs["confirmation"] == before


ONE_THREAD = """
name: one-thread
params:
  top_k: {low: 5, high: 100, log: true}  # as the cpu space has it: one study, one distribution
fixed: {n_ctx: 4096, n_threads: 1, n_threads_batch: 1, temperature: 0.0}  # the study's required context
"""


def test_a_resume_that_leaves_the_top_unchanged_keeps_its_confirmation(speed_study, tmp_path, engine):
    """Economies on: a trial added by a resume that does not reach the top candidates changes no
    decision, so the confirmation stands without re-measuring anything."""
    from tuner.space import parse_space

    url, name, _ = speed_study
    copy = tmp_path / "economy.db"
    shutil.copy(url.removeprefix("sqlite:///"), copy)
    study = load_study(name, open_storage(f"sqlite:///{copy}", must_exist=True))
    study.set_user_attr("economies", {"racing": True, "cache": True})  # the speed study ran without them
    before = Confirmation.from_dict(study.user_attrs["confirmation"])
    notes: list[str] = []
    study = resume_study(study, runner=InProcess(engine), space=parse_space(ONE_THREAD), trials=13, on_note=notes.append)
    added = study.trials[-1]
    assert added.user_attrs["config"]["n_threads"] == 1
    assert added.number not in {t.number for t in pick_candidates(feasible_trials(study))}, "premise: 1 thread is no top candidate"
    assert any("it stands (no re-measurement)" in n for n in notes)
    assert not any(n.startswith("round ") for n in notes)
    after = current_confirmation(study)
    assert after is not None and after.counted_trials == 13
    assert replace(after, counted_trials=before.counted_trials) == before  # the same decision, the same figures
