"""The engine specification: what every engine a study can measure on must do, run against each.

As optuna runs one storage suite against every backend, these tests run against llama-cpp-python
in this process (:class:`tuner.engine.Engine`) and against llama-server (:class:`tuner.server.
ServerEngine`, the binary `make test` builds from the same llama.cpp commit), through the one
measurement both share (:func:`tuner.measure.measure`).
"""

from __future__ import annotations

import pytest

from tuner.config import AUTO_SLOTS, KV_TYPES, EngineConfig
from tuner.errors import ConfigError, EngineError
from tuner.measure import RaceBound, measure
from tuner.targets import defaults_for
from tuner.workload import Shape, Workload

ENGINES = ("llama-cpp-python", "llama-server")
CONFIG = EngineConfig(n_ctx=512, n_threads=2)


@pytest.fixture(params=ENGINES)
def any_engine(request, engine, server_engine):
    return engine if request.param == "llama-cpp-python" else server_engine


def test_a_measurement_has_every_figure_for_every_repetition(any_engine, small):
    result = measure(any_engine, CONFIG, small)
    for name in result.METRICS:
        if name != "sample_us_per_tok":  # llama-server does not count sampling apart from decoding
            stat = getattr(result, name)
            assert len(stat.samples) == small.repeats and stat.median > 0, name
    assert result.counter_wall_gap < 0.25  # the engine's counters agree with the client's wall clock
    assert result.flags == []
    assert result.config.n_ctx == 512 and result.config.n_threads == 2  # read back from the engine


def test_each_request_evaluates_its_prompt_after_its_cached_depth(any_engine):
    """The figures hold the request alone: its prompt tokens after a depth already cached, and
    exactly the generated tokens asked for, every repetition (no prefix of the previous
    repetition reused, nothing of the depth's evaluation counted)."""
    workload = Workload(shapes=(Shape(0, 16, 4, name="fresh"), Shape(200, 16, 4, name="deep")), repeats=3, quality=False)
    with any_engine.session(CONFIG) as session:
        tokens = session.tokenize("The lighthouse keeper kept a careful log of the wind and the waves. " * 20)
        session.enter_depth(tokens[:200])
        runs = [session.generate(tokens[200:216], 4, past=200, stop_at_eos=False) for _ in range(3)]
        session.enter_depth([])
        fresh = [session.generate(tokens[200:216], 4, stop_at_eos=False) for _ in range(2)]
    for generation in runs + fresh:
        assert generation.n_prompt == 16 and generation.n_eval == 4 and len(generation.tokens) == 5
        assert generation.ttft_ms > 0 and generation.wall_decode_ms > 0
    assert [g.context_tokens for g in runs] == [216] * 3 and [g.context_tokens for g in fresh] == [16] * 2
    result = measure(any_engine, CONFIG, workload)
    assert [s.context_tokens for s in result.shapes] == [16, 216]
    for figures in result.shapes:
        assert figures.request_ms.median > figures.ttft_ms.median


def test_racing_stops_a_measurement_after_its_second_repetition(any_engine, small):
    stopped = measure(any_engine, CONFIG, small, race=RaceBound(below=1e9))
    assert stopped.stopped.endswith("requests/min after 2 repetitions")
    assert len(stopped.requests_per_min.samples) == 2


def test_a_workload_that_does_not_fit_the_context_is_refused(any_engine):
    with pytest.raises(ConfigError, match="below the"):
        measure(any_engine, EngineConfig(n_ctx=64, n_batch=64), Workload.single(64, 8))


def test_a_configuration_llama_cpp_refuses_is_an_engine_error(any_engine, small):
    """A real refusal: a KV cache for 2^25 tokens (96 GiB for the embedded model's global layers)
    cannot be allocated. Larger sizes are refused too, but slowly and erratically: llama.cpp first
    builds its per-cell bookkeeping (2^26: 3-17 s per engine, 2^28: 51-73 s; llama-server was once
    killed for memory there), 2^25: 1-5 s."""
    with pytest.raises(EngineError) as refused:
        measure(any_engine, EngineConfig(n_ctx=2**25), small)
    said = str(refused.value)
    assert "could not create a context for n_ctx=33554432" in said or "llama-server exited at start" in said


def test_both_engines_generate_the_same_greedy_text(engine, server_engine):
    """Same llama.cpp commit, same settings: the same numerics, so greedy decoding agrees token for
    token. Without this, a figure from one engine would not describe the other's output."""
    greedy = EngineConfig(n_ctx=512, n_threads=2, temperature=0.0, top_k=1)
    texts = []
    for each in (engine, server_engine):
        with each.session(greedy) as session:
            tokens = session.tokenize("The lighthouse keeper wrote down the wind, the waves and")
            session.enter_depth([])
            texts.append(session.generate(tokens, 12, stop_at_eos=False).tokens)
    assert texts[0] == texts[1]


def test_the_server_engine_reads_its_own_defaults_from_the_binary(server_engine):
    defaults = server_engine.own_defaults(4096)
    assert defaults.n_ctx == 4096 and defaults.n_batch == 2048 and defaults.n_ubatch == 512
    assert defaults.n_parallel == AUTO_SLOTS  # started with only -c, as a user would: 4 slots sharing it
    assert server_engine.own_defaults(1024).n_batch == 1024  # llama.cpp clamps n_batch to n_ctx: read back
    assert defaults.swa_full is False and (defaults.type_k, defaults.type_v) == (KV_TYPES["f16"], KV_TYPES["f16"])
    # the table the exports compare against (tuner.targets) says the same as the binary
    table = defaults_for("llama-server")
    assert (defaults.n_threads, defaults.n_threads_batch) == (table["n_threads"], table["n_threads_batch"])
    assert (defaults.temperature, defaults.top_k, defaults.top_p, defaults.min_p) == (table["temperature"], table["top_k"], table["top_p"], table["min_p"])
