"""Studies on real SQLite files with the real engine: baselines, records, resume, export."""

from __future__ import annotations

import shutil
from pathlib import Path

import llama_cpp
import optuna
import pytest

from tuner.engine import Engine, EngineConfig
from tuner.errors import StorageError, StudyError
from tuner.hardware import describe_machine
from tuner.models import model_sha256
from tuner.preset import Preset
from tuner.space import load_space
from tuner.study import (
    BASELINES,
    InProcess,
    StudySpec,
    best_preset,
    counted_trials,
    load_study,
    open_storage,
    redact,
    resume_study,
    start_study,
    summarize,
)
from tests.conftest import SMALL


@pytest.fixture(scope="module")
def study_db(tmp_path_factory, model_path, engine) -> Path:
    """A 3-trial study (2 baselines + 1 searched trial) in a real SQLite file."""
    db = tmp_path_factory.mktemp("study") / "tuner.db"
    spec = StudySpec(
        model=model_path, model_sha256=model_sha256(model_path), space=load_space("cpu"), workload=SMALL, trials=3, seed=7
    )
    progress = []
    start_study(
        spec,
        name="s3",
        storage=open_storage(f"sqlite:///{db}"),
        runner=InProcess(engine),
        machine=describe_machine().to_dict(),
        on_progress=progress.append,
        confirm_rounds=0,  # confirmation: tests/test_confirm.py
    )
    assert [p.done for p in progress] == [1, 2, 3]
    assert progress[-1].eta_s == 0
    return db


def _load(db: Path, name: str = "s3"):
    return load_study(name, open_storage(f"sqlite:///{db}", must_exist=True))


def test_three_trial_study_records_three_trials_with_measurements(study_db):
    study = _load(study_db)
    trials = study.get_trials()
    assert len(trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert [t.user_attrs.get("baseline") for t in trials] == ["defaults", "guide_card", None]
    for t in trials:
        m = t.user_attrs["measurement"]
        assert len(m["decode_tok_s"]["samples"]) == SMALL.repeats
        assert m["decode_tok_s"]["median"] == pytest.approx(t.values[0])
        assert t.values[1] == pytest.approx(m["quality"]["kld_mean"])
        assert set(t.user_attrs["constraints"]) == {"kld_mean", "task_accuracy"}
        assert {"median", "iqr", "samples"} <= set(m["prompt_tok_s"])
        assert m["effective"]["n_threads"] >= 1
        assert t.user_attrs["llama_cpp_version"] == llama_cpp.__version__
        assert len(t.user_attrs["model_sha256"]) == 64
        assert t.user_attrs["machine"]["fingerprint"] == describe_machine().fingerprint
    assert trials[2].params, "the searched trial has no params"


def test_baselines_run_exactly_as_written(study_db):
    study = _load(study_db)
    guide = study.trials[1]
    effective = guide.user_attrs["measurement"]["effective"]
    # 16 threads even on a 2-core machine: measuring that is the point of the baseline
    assert effective["n_threads"] == 16 and effective["n_threads_batch"] == 16
    assert effective["flash_attn"] is True and effective["top_k"] == 10
    assert guide.user_attrs["measurement"]["clamped"]["n_batch"] == [4096, 2048]
    defaults = study.trials[0].user_attrs["measurement"]["effective"]
    assert defaults["n_ctx"] == 512 and defaults["flash_attn"] is False
    assert EngineConfig.from_dict(study.trials[0].user_attrs["baseline_config"]) == BASELINES["defaults"]


def test_study_records_what_it_tunes(study_db, model_path):
    attrs = _load(study_db).user_attrs
    assert attrs["model_path"] == str(model_path)
    assert attrs["model_sha256"] == model_sha256(model_path)
    assert attrs["target_trials"] == 3
    assert attrs["workload"] == SMALL.to_dict()
    assert "n_ubatch" in attrs["space"]["text"]
    assert attrs["machine"]["logical_cores"] >= 1
    assert attrs["objectives"] == ["decode_tok_s", "kld_mean"]
    assert attrs["quality_budget"] == {"kld_mean": 0.03, "accuracy_floor": 0.8}
    assert 0 < attrs["reference"]["greedy_accuracy"] <= 1


def test_summary_compares_best_with_baselines(study_db):
    summary = summarize(_load(study_db))
    assert summary.complete == 3 and summary.failed == 0
    assert set(summary.baselines) == {"defaults", "guide_card"}
    assert summary.baselines["defaults"].ratio_vs_defaults == pytest.approx(1.0)
    assert summary.best.feasible
    assert summary.best.decode.median >= max(r.decode.median for r in summary.baselines.values() if r.feasible)
    assert summary.pareto and all(r.feasible for r in summary.pareto)


def test_resume_reaches_its_new_target_and_keeps_earlier_trials(study_db, tmp_path, engine):
    db = tmp_path / "copy.db"
    shutil.copy(study_db, db)
    before = {t.number: (t.values, t.params) for t in _load(db).trials}
    study = _load(db)
    resume_study(study, runner=InProcess(engine), space=load_space("cpu"), trials=4, confirm_rounds=0)
    after = _load(db)
    assert len(counted_trials(after)) == 4
    assert after.user_attrs["target_trials"] == 4
    for number, (value, params) in before.items():
        assert (after.trials[number].values, after.trials[number].params) == (value, params)


def test_resume_at_target_runs_nothing(study_db, tmp_path, engine):
    db = tmp_path / "copy.db"
    shutil.copy(study_db, db)
    resume_study(_load(db), runner=InProcess(engine), space=load_space("cpu"), confirm_rounds=0)
    assert len(_load(db).trials) == 3


def test_export_loads_in_engine_and_in_llama_cpp(study_db, tmp_path):
    preset = best_preset(_load(study_db))
    path = preset.save(tmp_path / "best.yaml")
    loaded = Preset.load(path)
    assert loaded.provenance["study"] == "s3"
    assert loaded.measured["decode_tok_s"]["median"] > 0
    assert "vs_defaults" in loaded.measured and "vs_guide_card" in loaded.measured

    with Engine.from_preset(path) as eng:
        assert eng.generate("The capital of France is", max_tokens=8).strip()

    llm = llama_cpp.Llama(model_path=loaded.model, verbose=False, **loaded.engine)
    try:
        out = llm.create_completion("The capital of France is", max_tokens=8, **loaded.sampling)
        assert out["choices"][0]["text"].strip()
    finally:
        llm.close()


def test_start_refuses_an_existing_study(study_db, tmp_path, model_path, engine):
    db = tmp_path / "copy.db"
    shutil.copy(study_db, db)
    spec = StudySpec(model=model_path, model_sha256=model_sha256(model_path), space=load_space("cpu"), workload=SMALL, trials=3)
    with pytest.raises(StudyError, match="tune resume s3"):
        start_study(spec, name="s3", storage=open_storage(f"sqlite:///{db}"), runner=InProcess(engine), machine={})


def test_missing_study_names_the_existing_ones(study_db):
    with pytest.raises(StudyError, match="studies here: s3"):
        _load(study_db, "nope")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a valid SQLAlchemy URL"),
        ("redis://localhost/0", "does not support"),
        ("sqlite://", "no database file"),
    ],
)
def test_bad_storage_urls(url, message):
    with pytest.raises(StorageError, match=message):
        open_storage(url)


def test_storage_that_is_not_sqlite(tmp_path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("hello, not a database")
    with pytest.raises(StorageError, match="not a SQLite database"):
        open_storage(f"sqlite:///{bogus}")
    assert bogus.read_text() == "hello, not a database"


def test_read_only_commands_do_not_create_storage(tmp_path):
    with pytest.raises(StudyError, match="no study storage"):
        open_storage(f"sqlite:///{tmp_path}/none.db", must_exist=True)
    assert not (tmp_path / "none.db").exists()


def test_passwords_are_redacted():
    assert "s3cret" not in redact("postgresql://bob:s3cret@db.example/tune")
