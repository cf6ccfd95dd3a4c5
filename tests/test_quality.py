"""The quality proxy on the real engine and model, and the quality floor in a real study."""

from __future__ import annotations

import numpy as np
import pytest

from tuner.config import KV_TYPES, EngineConfig
from tuner.errors import ConfigError
from tuner.hardware import describe_machine
from tuner.workload import Workload
from tuner.models import model_sha256
from tuner import quality
from tuner.engine import Engine
from tuner.quality import EVAL_TOKENS, TASKS, QualityBudget, cache_dir, eval_tokens, evaluate, reference_config, reference_for, reference_key
from tuner.space import parse_space
from tuner.study import InProcess, StudySpec, best_preset, is_feasible, open_storage, start_study


@pytest.fixture(scope="module")
def reference(engine, model_path):
    return reference_for(engine, model_sha256(model_path))


def _quality(engine, reference, **settings):
    with engine.session(EngineConfig(n_ctx=1024, n_threads=2, **settings)) as session:
        session.generate(session.tokenize("warm up"), 4)
        return evaluate(session, reference)


def test_reference_shape_and_cache(engine, model_path, reference):
    assert len(reference.tokens) == EVAL_TOKENS >= 256
    assert reference.top_ids.shape == (EVAL_TOKENS - 1, 64)
    assert (reference.top_logp[:, :-1] >= reference.top_logp[:, 1:]).all()  # sorted, best first
    assert 0 < reference.greedy_accuracy <= 1 and len(TASKS) >= 24
    cached = cache_dir() / f"reference-{reference_key(model_sha256(model_path))}.npz"
    assert cached.is_file()
    # From the cache file alone: an engine whose model file does not exist could not compute it.
    again = reference_for(Engine(model_path.parent / "no-such-model.gguf"), model_sha256(model_path))
    assert (again.top_ids == reference.top_ids).all() and (again.top_logp == reference.top_logp).all()
    assert again.greedy_accuracy == reference.greedy_accuracy


def test_the_reference_key_covers_model_build_config_and_proxy(monkeypatch):
    key = reference_key("a" * 64)
    assert reference_key("b" * 64) != key
    monkeypatch.setattr(quality, "PROXY_VERSION", quality.PROXY_VERSION + 1)
    assert reference_key("a" * 64) != key
    monkeypatch.undo()
    monkeypatch.setattr(quality, "reference_config", lambda: EngineConfig(n_ctx=2048, temperature=0.0, seed=0))
    assert reference_key("a" * 64) != key


def test_reference_config_against_itself(engine, reference):
    with engine.session(reference_config()) as session:
        quality = evaluate(session, reference)
    assert quality.kld_mean == pytest.approx(0, abs=1e-6)
    assert quality.top1_agreement == 1.0
    assert quality.task_accuracy == reference.greedy_accuracy  # greedy, same seeds: same answers


def _logits(engine, **settings):
    base = {"n_ctx": 1024, "n_batch": 512, "n_ubatch": 512, "n_threads": 1, "n_threads_batch": 1}
    with engine.session(EngineConfig(**{**base, **settings})) as session:
        return np.concatenate(list(session.logits(eval_tokens(session))))


def test_threads_and_context_size_change_no_logit_flash_attention_does(engine):
    base = _logits(engine)
    for settings in ({"n_threads": 2, "n_threads_batch": 2}, {"n_ctx": 4096}, {"n_ubatch": 64}):
        assert np.array_equal(_logits(engine, **settings), base), settings  # bit for bit
    assert not np.array_equal(_logits(engine, flash_attn=True), base)


def test_budget_admits_flash_attention_and_q8_0_and_rejects_q4_0(engine, reference):
    budget = QualityBudget()
    flash = _quality(engine, reference, flash_attn=True, temperature=0.0)
    q8 = _quality(engine, reference, flash_attn=True, type_k=KV_TYPES["q8_0"], type_v=KV_TYPES["q8_0"], temperature=0.0)
    q4 = _quality(engine, reference, flash_attn=True, type_k=KV_TYPES["q4_0"], type_v=KV_TYPES["q4_0"], temperature=0.0)
    assert 0 < flash.kld_mean <= budget.kld_mean and flash.top1_agreement < 1
    assert 0 < q8.kld_mean <= budget.kld_mean
    assert q4.kld_mean > budget.kld_mean, "q4_0 K/V should be infeasible under the default budget"
    assert q4.top1_agreement < q8.top1_agreement
    assert budget.constraints(q4, reference.greedy_accuracy)["kld_mean"] > 0
    assert q4.kld_p99 > q4.kld_mean


def test_untruncated_high_temperature_scores_below_greedy(engine, reference):
    hot = _quality(engine, reference, temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)
    rescued = _quality(engine, reference, temperature=1.5, top_k=0, top_p=1.0, min_p=0.1)
    assert hot.task_accuracy < reference.greedy_accuracy
    assert hot.gen_nll > 2 * reference.greedy_nll
    assert rescued.task_accuracy > hot.task_accuracy and rescued.gen_nll < hot.gen_nll
    assert QualityBudget().constraints(hot, reference.greedy_accuracy)["task_accuracy"] > 0


FAST_BUT_LOSSY = """
name: lossy
params:
  n_ubatch: {low: 64, high: 512, log: true}
fixed: {n_ctx: 1024, n_threads: 2, n_threads_batch: 2, flash_attn: true, kv_type: q4_0, temperature: 0.0}
"""


def test_export_never_picks_an_infeasible_trial(tmp_path, engine, model_path):
    # The searched trials use 2 threads (faster than the defaults' 1) but a q4_0 KV cache
    # (outside the default KLD budget): the fastest trial is infeasible.
    spec = StudySpec(
        model=model_path, model_sha256=model_sha256(model_path), space=parse_space(FAST_BUT_LOSSY),
        workload=Workload.single(32, 16, repeats=3), trials=4, seed=5,
    )
    study = start_study(
        spec, name="lossy", storage=open_storage(f"sqlite:///{tmp_path / 'q.db'}"),
        runner=InProcess(engine), machine=describe_machine().to_dict(), confirm_rounds=0,  # feasibility alone picks here
    )
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    infeasible = [t for t in complete if not is_feasible(t)]
    assert len(infeasible) == 2 and all(t.user_attrs["kv_type"] == "q4_0" for t in infeasible)
    preset = best_preset(study)
    picked = study.trials[preset.provenance["trial"]]
    assert is_feasible(picked)
    assert max(t.values[0] for t in infeasible) > picked.values[0], "premise: an infeasible trial was faster"
    assert "within the quality floor" in preset.measured["picked"]
    assert preset.measured["quality"]["kld_mean"] <= 0.03


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kld_mean": -1}, r"kld_mean=-1 \(--quality-budget\) must be positive"),
        ({"kld_mean": 0}, r"kld_mean=0 \(--quality-budget\) must be positive"),
        ({"accuracy_floor": 1.5}, r"accuracy_floor=1.5 \(--accuracy-floor\) is outside \[0, 1\]"),
    ],
)
def test_a_library_user_gets_the_cli_users_error_for_a_bad_budget(values, message):
    with pytest.raises(ConfigError, match=message):
        QualityBudget(**values)
