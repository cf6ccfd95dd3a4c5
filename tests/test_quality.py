"""The quality proxy (version 2) on the real engine and model: computed from logits, cached per
arithmetic, deterministic; and the quality floor in a real study."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from tests.conftest import simulated_measurement
from tuner import quality
from tuner.baseline import Requirement
from tuner.config import KV_TYPES, EngineConfig
from tuner.engine import Engine
from tuner.errors import ConfigError
from tuner.hardware import describe_machine
from tuner.models import model_sha256
from tuner.quality import (
    EVAL_TOKENS,
    NUMERICS_KEYS,
    Quality,
    TASKS,
    QualityBudget,
    cache_dir,
    compute_logits,
    evaluate,
    numerics_key,
    reference_config,
    reference_for,
)
from tuner.space import parse_space
from tuner.study import Economies, InProcess, StudySpec, best_preset, is_feasible, open_storage, start_study
from tuner.workload import Workload

BASE = EngineConfig(n_ctx=1024, n_threads=2, n_threads_batch=2)


@pytest.fixture(scope="module")
def reference(engine, model_path):
    return reference_for(engine, model_sha256(model_path))


def _arrays(logits) -> dict[str, np.ndarray]:
    return {k: v for k, v in vars(logits).items() if isinstance(v, np.ndarray)}


def test_reference_is_cached_on_disk_and_read_back_without_the_model(engine, model_path, reference):
    sha = model_sha256(model_path)
    assert reference.logits.eval_tokens.shape == (EVAL_TOKENS,) and len(TASKS) >= 24
    assert 0 < reference.greedy_accuracy <= 1
    cached = cache_dir() / f"logits-{numerics_key(reference_config(), sha)}.npz"
    assert cached.is_file()
    quality._memory.clear()  # only the file is left
    # An engine whose model file does not exist could not compute it: it comes from the file.
    again = reference_for(Engine(model_path.parent / "no-such-model.gguf"), sha)
    for name, array in _arrays(reference.logits).items():
        assert np.array_equal(getattr(again.logits, name), array), name
    assert again.greedy_accuracy == reference.greedy_accuracy


def test_the_cache_key_covers_model_build_proxy_and_each_arithmetic_setting(monkeypatch):
    key = numerics_key(BASE, "a" * 64)
    assert numerics_key(BASE, "b" * 64) != key
    changed = {
        "flash_attn": True,
        "type_k": KV_TYPES["q8_0"],
        "type_v": KV_TYPES["q8_0"],
        "offload_kqv": False,
        "op_offload": False,  # other kernels (the GPU's) for a CPU layer's batched products
        "n_gpu_layers": 10,
        "main_gpu": 1,
        "split_mode": 2,
    }
    assert set(changed) == set(NUMERICS_KEYS)
    for name, value in changed.items():
        flash = {"flash_attn": True} if name == "type_v" else {}  # llama.cpp needs it for a quantized V
        other = numerics_key(replace(BASE, **{name: value, **flash}), "a" * 64)
        assert other != key and (not flash or other != numerics_key(replace(BASE, flash_attn=True), "a" * 64)), name
    # Settings measured not to change the proxy's logits share the key (and so the cache).
    same = {"n_threads": 1, "n_threads_batch": 1, "n_ctx": 4096, "n_batch": 64, "n_ubatch": 27, "temperature": 1.3, "top_k": 7}
    for name, value in same.items():
        assert numerics_key(replace(BASE, **{name: value}), "a" * 64) == key, name
    monkeypatch.setattr(quality, "PROXY_VERSION", quality.PROXY_VERSION + 1)
    assert numerics_key(BASE, "a" * 64) != key
    monkeypatch.undo()
    monkeypatch.setattr("llama_cpp.__version__", "0.0.0-other-build")
    assert numerics_key(BASE, "a" * 64) != key


def test_settings_left_out_of_the_key_do_not_change_the_logits(engine, reference):
    """The cache is only right if nothing outside :data:`NUMERICS_KEYS` moves the logits: each
    setting left out is varied here, the proxy's logits must stay bit for bit the same."""
    base = compute_logits(engine, BASE, reference.logits)
    left_out = [
        {"n_threads": 1, "n_threads_batch": 1},
        {"n_ctx": 4096},
        {"n_batch": 50, "n_ubatch": 20},  # ubatches of 20, 20, 10 rows: changes logits when a trial runs them
        {"n_ubatch": 27},
        {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.3, "seed": 9},
    ]
    for settings in left_out:
        other = compute_logits(engine, replace(BASE, **settings), reference.logits)
        for name, array in _arrays(base).items():
            assert np.array_equal(getattr(other, name), array), (settings, name)
        assert (other.kld_mean, other.kld_p99, other.top1_agreement) == (base.kld_mean, base.kld_p99, base.top1_agreement)
    flash = compute_logits(engine, replace(BASE, flash_attn=True), reference.logits)
    assert not np.array_equal(flash.eval_logits, base.eval_logits), "flash attention changes the arithmetic: it must be in the key"


def test_ubatches_of_odd_rows_change_logits_when_a_session_runs_them(engine):
    """Why the proxy evaluates with fixed batches: llama.cpp's matmul takes another path for
    ubatches whose row count is not a multiple of 4, and the logits move (measured, this file)."""

    def logits(n_ubatch: int) -> np.ndarray:
        with engine.session(replace(BASE, n_batch=512, n_ubatch=n_ubatch)) as session:
            return np.concatenate(list(session.logits(session.tokenize(quality.EVAL_TEXT)[:EVAL_TOKENS])))

    assert np.array_equal(logits(64), logits(512))  # every ubatch a multiple of 4 rows
    assert not np.array_equal(logits(27), logits(512))


def test_the_same_configuration_twice_gives_identical_quality(engine, reference):
    config = replace(BASE, flash_attn=True, temperature=0.7, top_k=20)
    first = evaluate(engine, config, reference, use_cache=False)
    second = evaluate(engine, config, reference, use_cache=False)
    cached = evaluate(engine, config, reference, use_cache=True)  # from the cache, or computed and stored
    again = evaluate(engine, config, reference, use_cache=True)  # from the cache
    figures = lambda q: {k: v for k, v in q.to_dict().items() if k not in ("seconds", "cached")}  # noqa: E731
    assert figures(first) == figures(second) == figures(cached) == figures(again)
    assert (first.cached, second.cached, again.cached) == (False, False, True)
    assert first.version == quality.PROXY_VERSION == 2


def test_reference_config_against_itself(engine, reference):
    greedy = evaluate(engine, replace(reference_config(), n_threads=2), reference)
    assert greedy.kld_mean == 0 and greedy.kld_p99 == 0 and greedy.top1_agreement == 1.0
    assert greedy.task_accuracy == reference.greedy_accuracy
    assert greedy.gen_nll == reference.greedy_nll


def test_budget_admits_flash_attention_and_q8_0_and_rejects_q4_0(engine, reference):
    budget = QualityBudget()
    flash = evaluate(engine, replace(BASE, flash_attn=True, temperature=0.0), reference)
    q8 = evaluate(engine, replace(BASE, flash_attn=True, type_k=KV_TYPES["q8_0"], type_v=KV_TYPES["q8_0"], temperature=0.0), reference)
    q4 = evaluate(engine, replace(BASE, flash_attn=True, type_k=KV_TYPES["q4_0"], type_v=KV_TYPES["q4_0"], temperature=0.0), reference)
    assert 0 < flash.kld_mean <= budget.kld_mean and flash.top1_agreement < 1
    assert 0 < q8.kld_mean <= budget.kld_mean
    assert q4.kld_mean > budget.kld_mean, "q4_0 K/V should be infeasible under the default budget"
    assert q4.top1_agreement < q8.top1_agreement
    assert budget.constraints(q4, reference.greedy_accuracy)["kld_mean"] > 0
    assert q4.kld_p99 > q4.kld_mean


def test_the_accuracy_floor_admits_default_sampling_and_rejects_an_untruncated_hot_chain(engine, reference):
    budget = QualityBudget()
    defaults = evaluate(engine, BASE, reference)  # llama-cpp-python's sampling defaults
    defaults_flash = evaluate(engine, replace(BASE, flash_attn=True), reference)
    hot = evaluate(engine, replace(BASE, temperature=1.5, top_k=0, top_p=1.0, min_p=0.0), reference)
    rescued = evaluate(engine, replace(BASE, temperature=1.5, top_k=0, top_p=1.0, min_p=0.1), reference)
    for q in (defaults, defaults_flash):
        assert budget.constraints(q, reference.greedy_accuracy)["task_accuracy"] <= 0
    assert hot.task_accuracy < defaults.task_accuracy < reference.greedy_accuracy
    assert hot.gen_nll > 2 * reference.greedy_nll
    assert hot.kept_mass > defaults.kept_mass > evaluate(engine, replace(BASE, temperature=0.0), reference).kept_mass
    assert rescued.task_accuracy > hot.task_accuracy and rescued.gen_nll < hot.gen_nll
    assert budget.constraints(hot, reference.greedy_accuracy)["task_accuracy"] > 0


FAST_BUT_LOSSY = """
name: lossy
params:
  n_ubatch: {low: 64, high: 512, log: true}
fixed: {n_ctx: 1024, n_threads: 2, n_threads_batch: 2, flash_attn: true, kv_type: q4_0, temperature: 0.0}
"""


class FastButLossy:
    """A simulated machine on which the q4_0 KV cache doubles the speed and costs a KLD of 0.08:
    the fastest trial is outside the quality floor. Whether q4_0 is faster on a real 2-core CPU
    depends on the machine (a tie on the AMD EPYC one), and what is tested here is the pick."""

    def reference(self, model_sha256: str, **options):
        return {"greedy_accuracy": 0.7, "greedy_nll": 1.0}

    def quality(self, config):
        kld = 0.08 if config.effective().type_k == KV_TYPES["q4_0"] else 0.0
        return Quality(kld, 3 * kld, 0.9, 0.7, 1.0, kept_mass=0.9, version=2)

    def measure(self, config, workload, **options):
        effective = config.effective()
        speed = 100.0 * (2 if effective.type_k == KV_TYPES["q4_0"] else 1) / (4 if effective.n_threads > 2 else 1)
        return simulated_measurement(effective, workload, speed, self.quality(effective) if workload.quality else None)


def test_export_never_picks_an_infeasible_trial(tmp_path, model_path):
    spec = StudySpec(
        model=model_path, model_sha256=model_sha256(model_path), space=parse_space(FAST_BUT_LOSSY),
        workload=Workload.single(32, 16, repeats=3), trials=4, seed=5, requirement=Requirement(1024, "the space's fixed n_ctx"),
        economies=Economies(racing=False),  # every searched trial measured fully: the test reads them all
    )
    study = start_study(
        spec, name="lossy", storage=open_storage(f"sqlite:///{tmp_path / 'q.db'}"),
        runner=FastButLossy(), machine=describe_machine().to_dict(), confirm_rounds=0,  # feasibility alone picks here
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


def test_trials_of_one_arithmetic_share_their_logits(tmp_path, engine, model_path):
    # Two q4_0 trials on the real engine: the second's logits come from the first's (never computed twice).
    spec = StudySpec(
        model=model_path, model_sha256=model_sha256(model_path), space=parse_space(FAST_BUT_LOSSY),
        workload=Workload.single(32, 16, repeats=3), trials=4, seed=5, requirement=Requirement(1024, "the space's fixed n_ctx"),
        economies=Economies(racing=False),
    )
    study = start_study(
        spec, name="cache", storage=open_storage(f"sqlite:///{tmp_path / 'c.db'}"),
        runner=InProcess(engine), machine=describe_machine().to_dict(), confirm_rounds=0,
    )
    searched = [t for t in study.trials if t.state.name == "COMPLETE" and "baseline" not in t.user_attrs]
    assert len(searched) == 2 and all(t.user_attrs["kv_type"] == "q4_0" for t in searched)
    assert searched[1].user_attrs["cached"] is True


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


def test_the_cli_default_floor_is_the_librarys():
    import inspect

    from tuner.cli._study_commands import start

    assert inspect.signature(start).parameters["accuracy_floor"].default.default == quality.DEFAULT_ACCURACY_FLOOR
