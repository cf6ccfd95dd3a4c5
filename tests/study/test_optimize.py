"""Running a study on the real engine: trials recorded with their measurements, the baselines as
written, what the study tunes, resume."""

from __future__ import annotations

from dataclasses import replace

import shutil

import llama_cpp
import optuna
import pytest

from tests.conftest import SMALL
from tests.study.conftest import load
from tuner.config import EngineConfig
from tuner.errors import ConfigError, StudyError
from tuner.hardware import describe_machine
from tuner.models import model_sha256
from tuner.space import load_space
from tuner.study import BASELINES, InProcess, StudySpec, counted_trials, open_storage, resume_study, start_study
from tuner.study._storage import new_sampler


def test_three_trial_study_records_three_trials_with_measurements(study_db):
    study = load(study_db)
    trials = study.get_trials()
    assert len(trials) == 3
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert [t.user_attrs.get("baseline") for t in trials] == ["defaults", "guide_card", None]
    for t in trials:
        m = t.user_attrs["measurement"]
        assert len(m["requests_per_min"]["samples"]) == SMALL.repeats
        assert m["requests_per_min"]["median"] == pytest.approx(t.values[0])
        assert [s["shape"] for s in m["shapes"]] == [{"depth": 0, "prompt": 32, "gen": 8, "weight": 1.0, "name": "custom"}]
        assert m["shapes"][0]["context_tokens"] == 32
        assert t.values[1] == pytest.approx(m["quality"]["kld_mean"])
        assert set(t.user_attrs["constraints"]) == {"kld_mean", "task_accuracy"}
        assert {"median", "iqr", "samples"} <= set(m["prompt_tok_s"])
        assert m["effective"]["n_threads"] >= 1
        assert t.user_attrs["llama_cpp_version"] == llama_cpp.__version__
        assert len(t.user_attrs["model_sha256"]) == 64
        assert t.user_attrs["machine"]["fingerprint"] == describe_machine().fingerprint
    assert trials[2].params, "the searched trial has no params"


def test_baselines_run_exactly_as_written(study_db):
    study = load(study_db)
    guide = study.trials[1]
    effective = guide.user_attrs["measurement"]["effective"]
    # 16 threads even on a 2-core machine: measuring that is the point of the baseline
    assert effective["n_threads"] == 16 and effective["n_threads_batch"] == 16
    assert effective["flash_attn"] is True and effective["top_k"] == 10
    assert guide.user_attrs["measurement"]["clamped"]["n_batch"] == [4096, 2048]
    defaults = study.trials[0].user_attrs["measurement"]["effective"]
    # llama-cpp-python's defaults, at the context the application requires (4096 unless told)
    assert defaults["n_ctx"] == 4096 and defaults["flash_attn"] is False and defaults["n_batch"] == 512
    assert EngineConfig.from_dict(study.trials[0].user_attrs["baseline_config"]) == replace(BASELINES["defaults"], n_ctx=4096)
    assert study.user_attrs["requirement"]["n_ctx"] == 4096


def test_study_records_what_it_tunes(study_db, model_path):
    attrs = load(study_db).user_attrs
    assert attrs["model_path"] == str(model_path)
    assert attrs["model_sha256"] == model_sha256(model_path)
    assert attrs["target_trials"] == 3
    assert attrs["workload"] == SMALL.to_dict()
    assert "n_ubatch" in attrs["space"]["text"]
    assert attrs["machine"]["logical_cores"] >= 1
    assert attrs["objectives"] == ["requests_per_min", "kld_mean"]
    assert attrs["quality_budget"] == {"kld_mean": 0.03, "accuracy_floor": 0.75}
    assert attrs["quality_version"] == 2
    assert attrs["economies"] == {"racing": False, "cache": True}  # as tests/study/conftest.py asks
    assert 0 < attrs["reference"]["greedy_accuracy"] <= 1


def test_resume_reaches_its_new_target_and_keeps_earlier_trials(study_db, tmp_path, engine):
    db = tmp_path / "copy.db"
    shutil.copy(study_db, db)
    before = {t.number: (t.values, t.params) for t in load(db).trials}
    study = load(db)
    resume_study(study, runner=InProcess(engine), space=load_space("cpu"), trials=4, confirm_rounds=0)
    after = load(db)
    assert len(counted_trials(after)) == 4
    assert after.user_attrs["target_trials"] == 4
    for number, (value, params) in before.items():
        assert (after.trials[number].values, after.trials[number].params) == (value, params)


def test_resume_at_target_runs_nothing(study_db, tmp_path, engine):
    db = tmp_path / "copy.db"
    shutil.copy(study_db, db)
    resume_study(load(db), runner=InProcess(engine), space=load_space("cpu"), confirm_rounds=0)
    assert len(load(db).trials) == 3


def test_a_library_user_gets_the_same_errors_as_the_cli_user(study_db, tmp_path, model_path, engine):
    with pytest.raises(StudyError, match=r"trials=0 \(--trials\) asks for no trial"):
        StudySpec(model=model_path, model_sha256="0" * 64, space=load_space("cpu"), trials=0)
    db = tmp_path / "copy.db"
    shutil.copy(study_db, db)
    with pytest.raises(ConfigError, match=r"confirm_rounds=2 \(--confirm-rounds\) is too few"):
        resume_study(load(db), runner=InProcess(engine), space=load_space("cpu"), trials=4, confirm_rounds=2)
    assert len(load(db).trials) == 3  # refused before any trial ran


def _late_infeasible(constrained: bool) -> int:
    """A study whose objective pulls x towards 1 while x > 0.3 is infeasible: how many of the last
    30 of 50 trials the tool's sampler proposes beyond 0.3."""
    study = optuna.create_study(direction="maximize", sampler=new_sampler(0))

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        if constrained:
            trial.set_constraint("limit", x - 0.3)  # how the tool records the quality floor and latency targets
        return x

    study.optimize(objective, n_trials=50)
    return sum(t.params["x"] > 0.3 for t in study.trials[20:])


def test_the_sampler_learns_the_constraints_the_trials_set():
    """Optuna 5's TPE reads constraints set with trial.set_constraint (no constraints_func needed):
    with them it proposes far fewer infeasible settings than the same search without them."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with_constraints, without = _late_infeasible(True), _late_infeasible(False)
    assert without >= 27  # the premise: unconstrained, the search runs to the infeasible side
    assert with_constraints <= without - 8, (with_constraints, without)


class _NoReference(InProcess):
    """The quality reference never loads (its figures are reported, the engine never gets it): a
    fault that cannot be produced on demand with the real worker."""

    def reference(self, model_sha256, **options):
        return {"greedy_accuracy": 0.7, "greedy_nll": 1.0}


def test_a_trial_without_quality_figures_fails_with_its_reason_and_counts(tmp_path, model_path, engine):
    spec = StudySpec(model=model_path, model_sha256=model_sha256(model_path), space=load_space("cpu"), workload=SMALL, trials=2, seed=1)
    study = start_study(spec, name="q", storage=open_storage(f"sqlite:///{tmp_path / 'q.db'}"), runner=_NoReference(engine), machine={}, confirm_rounds=0)
    assert len(study.trials) == 2  # both counted: no re-asking the sampler for more
    assert all(t.state.name == "FAIL" and "the quality proxy gave no figures" in t.user_attrs["fail_reason"] for t in study.trials)


def test_a_gpu_study_measures_its_defaults_where_its_candidates_run(tmp_path, model_path, engine):
    """On a GPU, "vs defaults", the noise floor and the confirmation's anchor compare settings on
    the same hardware: the defaults baseline offloads as the candidates do, and llama-cpp-python's
    defaults as they are (on the CPU) are measured beside it as 'cpu_defaults', never the anchor.
    The GPU is faked at its boundary (NVML, a build that offloads); this build ignores the
    n_gpu_layers it is given, so the trials run here on the CPU."""
    from tests.fake_nvml import FakeNvml
    from tuner.gguf import read_gguf_info
    from tuner.hardware import nvidia_gpus
    from tuner.placement import choose_space
    from tuner.study import summarize
    from tuner.study._trials import baseline_trial, study_defaults

    gpus, _ = nvidia_gpus(FakeNvml())
    space, _ = choose_space(replace(describe_machine(), gpu_offload=True, gpus=gpus), read_gguf_info(model_path))
    spec = StudySpec(model=model_path, model_sha256=model_sha256(model_path), space=space, workload=replace(SMALL, quality=False), trials=3, seed=1)
    study = start_study(spec, name="gpu", storage=open_storage(f"sqlite:///{tmp_path / 'gpu.db'}"), runner=InProcess(engine), machine={}, confirm_rounds=0)
    assert study.user_attrs["placement"] == {"n_gpu_layers": -1}
    assert [t.user_attrs.get("baseline") for t in study.trials] == ["defaults", "cpu_defaults", "guide_card"]
    assert baseline_trial(study, "defaults").user_attrs["baseline_config"]["n_gpu_layers"] == -1
    assert baseline_trial(study, "cpu_defaults").user_attrs["baseline_config"]["n_gpu_layers"] == 0
    assert study_defaults(study).n_gpu_layers == -1  # what the noise floor ran
    assert study.user_attrs["noise_floor"]["label"] == "defaults"
    summary = summarize(study)
    assert summary.baselines["defaults"].ratio_vs_defaults == 1.0
    assert summary.baselines["cpu_defaults"].ratio_vs_defaults is not None  # shown against the offloaded defaults
