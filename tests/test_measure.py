"""Workloads and a real measurement on the embedded model."""

from __future__ import annotations

import pytest

from tuner.config import EngineConfig
from tuner.errors import ConfigError
from tuner.measure import Workload, measure, prompt_tokens


def test_workload_refuses_too_few_repetitions():
    with pytest.raises(ConfigError, match="repetitions"):
        Workload(repeats=2)
    with pytest.raises(ConfigError, match="warm-up"):
        Workload(warmup=0)


def test_prompt_tokens_have_exact_length():
    assert prompt_tokens([1, 5, 6, 7], 10) == [1, 5, 6, 7, 5, 6, 7, 5, 6, 7]
    assert prompt_tokens([1, 5, 6, 7], 3) == [1, 5, 6]


def test_real_measurement_has_samples_and_consistent_counters(engine, small):
    result = measure(engine, EngineConfig(n_threads=2), small)
    for name in result.METRICS:
        stat = getattr(result, name)
        assert len(stat.samples) == small.repeats, name
        assert stat.median > 0, name
    # decode rate includes the sampler time, the eval rate does not
    assert result.decode_tok_s.median <= result.eval_tok_s.median
    # llama.cpp's counters and the wall clock agree after the warm-up pass (generous: shared CPU)
    assert result.counter_wall_gap < 0.5
    assert result.config.n_threads == 2


def test_measurement_records_clamped_values(engine, small):
    result = measure(engine, EngineConfig(n_ctx=512, n_batch=4096, n_threads=2), small)
    assert result.config.n_batch == 512
    assert result.clamped["n_batch"] == (4096, 512)
    assert result.to_dict()["clamped"]["n_batch"] == [4096, 512]


def test_padded_n_ctx_is_recorded(engine, small):
    result = measure(engine, EngineConfig(n_ctx=100, n_batch=64, n_threads=2), small)
    assert result.config.n_ctx == 256
    assert result.clamped["n_ctx"] == (100, 256)


def test_workload_that_does_not_fit_n_ctx_is_refused(engine):
    with pytest.raises(ConfigError, match="below the"):
        measure(engine, EngineConfig(n_ctx=64, n_batch=64), Workload(prompt_tokens=64, gen_tokens=8))
