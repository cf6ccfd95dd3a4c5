"""What a study found: the summary against the baselines, and the preset it exports."""

from __future__ import annotations

from dataclasses import replace

import llama_cpp
import pytest

from tests.conftest import SMALL, simulated_measurement
from tests.study.conftest import load
from tuner.baseline import Requirement
from tuner.config import EngineConfig
from tuner.hardware import describe_machine
from tuner.models import model_sha256
from tuner.preset import Preset, engine_from_preset
from tuner.space import load_space
from tuner.study import SHAPE_COLUMNS, Economies, StudySpec, best_preset, by_shape, open_storage, start_study, summarize


def test_summary_compares_best_with_baselines(study_db):
    summary = summarize(load(study_db))
    assert summary.complete == 3 and summary.failed == 0
    assert set(summary.baselines) == {"defaults", "guide_card"}
    assert summary.baselines["defaults"].ratio_vs_defaults == pytest.approx(1.0)
    study = load(study_db)
    # Every figure of a row is its own trial's recorded measurement...
    for row in [summary.best, *summary.baselines.values()]:
        recorded = study.trials[row.number].user_attrs["measurement"]
        assert row.speed.median == recorded["requests_per_min"]["median"] and row.config == recorded["effective"]
        assert row.decode.median == recorded["decode_tok_s"]["median"] and row.prompt.median == recorded["prompt_tok_s"]["median"]
    # ...and the ratios are against the defaults trial's.
    defaults = study.trials[summary.baselines["defaults"].number].user_attrs["measurement"]["requests_per_min"]["median"]
    assert summary.best.ratio_vs_defaults == pytest.approx(summary.best.speed.median / defaults)
    # The Pareto front: feasible trials no other feasible trial beats on both objectives.
    feasible = [t for t in study.trials if t.state.name == "COMPLETE" and all(v <= 0 for v in t.constraints.values())]
    for row in summary.pareto:
        trial = study.trials[row.number]
        assert not [o for o in feasible if o.values[0] > trial.values[0] and o.values[1] < trial.values[1]]


def test_export_loads_in_engine_and_in_llama_cpp(study_db, tmp_path):
    preset = best_preset(load(study_db))
    path = preset.save(tmp_path / "best.yaml")
    loaded = Preset.load(path)
    assert loaded.provenance["study"] == "s3"
    assert loaded.measured["decode_tok_s"]["median"] > 0
    assert "vs_defaults" in loaded.measured and "vs_guide_card" in loaded.measured

    with engine_from_preset(path) as eng:
        assert eng.generate("The capital of France is", max_tokens=8).strip()

    llm = llama_cpp.Llama(model_path=loaded.model, verbose=False, **loaded.engine)
    try:
        out = llm.create_completion("The capital of France is", max_tokens=8, **loaded.sampling)
        assert out["choices"][0]["text"].strip()
    finally:
        llm.close()


def test_the_per_shape_table_holds_every_rows_medians_shape_by_shape(study_db):
    summary = summarize(load(study_db))
    rows = [summary.best, *summary.baselines.values()]
    groups = by_shape(rows)
    assert groups  # the study's workload has request shapes
    assert [shape for shape, _ in groups] == [figures["shape"] for figures in summary.best.shapes]
    for index, (_, figures) in enumerate(groups):
        assert [row for row, _ in figures] == rows
        for row, cells in figures:
            medians = row.shapes[index]
            assert len(cells) == len(SHAPE_COLUMNS) == 4
            assert cells == [f"{medians['decode_tok_s']:.1f}", f"{medians['prompt_tok_s']:.0f}", f"{medians['ttft_ms']:.0f}", f"{medians['request_ms']:.0f}"]
    # a row without per-shape figures (a study made before workloads) leaves the table out
    assert by_shape([*rows, replace(rows[0], shapes=[])]) == [] and by_shape([]) == []


def test_where_the_time_went_is_said_in_lines_a_terminal_does_not_wrap():
    from tuner.study._summary import STUDY_PARTS, TRIAL_PARTS, Summary

    # Every part recorded, each over an hour: the longest text the time lines can take.
    seconds = {key: 3599.0 + i for i, (key, _label) in enumerate(TRIAL_PARTS + STUDY_PARTS)}
    summary = Summary(name="s", target=50, complete=50, failed=0, best=None, baselines={}, failures=[], seconds=seconds, raced=49, cached_quality=50)
    lines = summary.time_lines
    assert all(len("time: " + line) <= 160 for line in lines), [len(line) for line in lines]
    assert lines[1].startswith("trials: setup ") and lines[2].startswith("study: reference ")
    assert "49 trial(s) stopped early by racing" in lines[-1]
    assert summary.time_text == "; ".join(lines)
    assert Summary(name="s", target=1, complete=0, failed=0, best=None, baselines={}, failures=[]).time_lines == []


class SamplingReadsFaster:
    """A simulated machine on which every configuration sampling at a temperature above 0 reads
    1.04x one that decodes greedily: a single reading's margin, as a noisy machine gives one
    baseline over another (one llama-server study read the defaults 1.04x greedy settings, floor
    ±13%). Readings chosen on cue cannot be produced on a real machine; the pick is tested."""

    def reference(self, model_sha256: str, **options):
        return {"greedy_accuracy": 0.7, "greedy_nll": 1.0}

    def measure(self, config, workload, **options):
        effective = config.effective()
        return simulated_measurement(effective, workload, 104.0 if effective.temperature > 0 else 100.0)


def test_a_study_of_the_baselines_alone_hands_over_your_settings_unchanged(tmp_path, model_path):
    """With no searched trial, nothing was re-measured, so no change earned its keep: the preset is
    the starting point, not the baseline whose one reading was the fastest."""
    greedy = EngineConfig(n_ctx=1024, temperature=0.0)
    spec = StudySpec(model=model_path, model_sha256=model_sha256(model_path), space=load_space("cpu"), workload=replace(SMALL, quality=False),
                     trials=3, seed=1, economies=Economies(racing=False), requirement=Requirement(1024, "the test's"), yours=greedy)
    study = start_study(spec, name="baselines-only", storage=open_storage(f"sqlite:///{tmp_path / 'b.db'}"), runner=SamplingReadsFaster(), machine=describe_machine().to_dict())
    summary = summarize(study)
    assert summary.searched_feasible == 0 and summary.baselines["defaults"].speed.median > summary.baselines["yours"].speed.median
    assert summary.best.number == summary.baselines["yours"].number
    assert "your settings unchanged" in summary.unconfirmed_note
    preset = best_preset(study)
    assert preset.sampling["temperature"] == 0.0  # theirs, not the defaults' 0.8
    assert preset.measured["picked"].startswith("no searched trial completed within the quality floor: your settings as they are")
