"""The Engine on the real embedded model: generation, the model kept loaded, errors llama.cpp raises."""

from __future__ import annotations

import llama_cpp
import pytest

from tuner.config import EngineConfig
from tuner.engine import Engine
from tuner.llama_params import context_params, read_back
from tuner.errors import ConfigError


def test_engine_generates_text(engine: Engine):
    with engine.session(EngineConfig(temperature=0.0, n_threads=2)) as session:
        out = session.generate(session.tokenize("Q: What is the capital of France?\nA:"), 8)
    assert out.tokens, "generated no token"
    assert "Paris" in out.text


def test_model_is_kept_loaded_across_context_configs(engine: Engine):
    engine.load(EngineConfig())
    model = engine.model
    with engine.session(EngineConfig(n_ctx=1024, n_threads=1)):
        pass
    with engine.session(EngineConfig(n_ctx=512, flash_attn=True)):
        pass
    assert engine.model is model, "a context-only change reloaded the model"


def test_greedy_output_is_deterministic_across_threads(engine: Engine):
    texts = []
    for threads in (1, 2):
        with engine.session(EngineConfig(temperature=0.0, n_threads=threads)) as session:
            texts.append(session.generate(session.tokenize("Once upon a time"), 12).text)
    assert texts[0] == texts[1]


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"n_ctx": 300, "n_batch": 4096, "n_ubatch": 4096, "n_threads": 1, "n_threads_batch": 2},
        {"n_ctx": 2048, "n_batch": 700, "n_ubatch": 90, "flash_attn": True, "type_k": 8, "type_v": 8},
    ],
)
def test_a_session_runs_with_what_llama_cpp_python_would_run(engine: Engine, model_path, settings):
    """Parity: the context params are built as llama_cpp.Llama builds them, field by field, and
    the sizes and threads llama.cpp runs with are read back from the context, equal to Llama's."""
    llm = llama_cpp.Llama(model_path=str(model_path), verbose=False, **settings)
    try:
        config = EngineConfig(**settings).effective()
        ours = context_params(config)
        for name, _ in ours._fields_:
            if isinstance(getattr(ours, name), (int, float, bool)):
                assert getattr(ours, name) == getattr(llm.context_params, name), name
        with engine.session(EngineConfig(**settings)) as session:
            ran = session.config
            assert read_back(session.context) == {
                "n_ctx": llm.n_ctx(),
                "n_batch": llama_cpp.llama_n_batch(llm.ctx),
                "n_ubatch": llama_cpp.llama_n_ubatch(llm.ctx),
                "n_threads": llama_cpp.llama_n_threads(llm.ctx),
                "n_threads_batch": llama_cpp.llama_n_threads_batch(llm.ctx),
            }
            assert (ran.n_ctx, ran.n_batch, ran.n_ubatch) == (llm.n_ctx(), llama_cpp.llama_n_batch(llm.ctx), llama_cpp.llama_n_ubatch(llm.ctx))
    finally:
        llm.close()


def test_context_too_small_for_prompt_is_a_config_error(engine: Engine):
    with engine.session(EngineConfig(n_ctx=64, n_batch=64)) as session:
        with pytest.raises(ConfigError, match="too small"):
            session.generate(list(range(1, 300)), 16)  # llama.cpp pads n_ctx 64 to 256


def test_the_prompts_wall_clock_is_read_after_its_work_is_done(engine: Engine, monkeypatch):
    """On a GPU, llama_decode returns once the work is queued: a wall clock read then times the
    launch. Faked at the boundary (no GPU here): a decode that leaves its work pending until the
    next synchronisation, which takes 0.2 s."""
    import time

    pending: list[float] = []
    real_synchronize = llama_cpp.llama_synchronize

    def synchronize(ctx):
        while pending:
            time.sleep(pending.pop())
        real_synchronize(ctx)

    with engine.session(EngineConfig(n_ctx=512, n_threads=2)) as session:
        real_decode = session.context.decode

        def launch(batch):
            real_decode(batch)
            pending.append(0.2)

        monkeypatch.setattr(session.context, "decode", launch)
        monkeypatch.setattr(llama_cpp, "llama_synchronize", synchronize)
        generation = session.generate(session.tokenize("The river"), 2, stop_at_eos=False)
    assert generation.wall_prompt_ms >= 200  # the pending work was waited for before the clock was read


DEPTH_TEXT = "The lighthouse keeper kept a careful log of the wind, the waves and the ships that passed. " * 30


@pytest.mark.parametrize("settings", [{}, {"flash_attn": True, "type_k": 8, "type_v": 8}])
def test_a_depth_entered_again_is_restored_as_it_was_prefilled(engine: Engine, settings, monkeypatch):
    """A measurement visits each shape's depth several times; the second visit restores the state
    the first prefill saved instead of evaluating the depth again. The request after it must find
    the same cache: nothing evaluated, the same positions, the same greedy continuation."""
    with engine.session(EngineConfig(n_ctx=1024, n_threads=2, temperature=0.0, **settings)) as session:
        tokens = session.tokenize(DEPTH_TEXT)[:416]
        depth, prompt = tokens[:384], tokens[384:]
        session.enter_depth(depth)
        first = session.generate(prompt, 16, past=384, stop_at_eos=False)
        session.enter_depth(tokens[:64])  # another shape's depth replaces the cache in between
        evaluated: list[list[int]] = []
        monkeypatch.setattr(session, "prefill", evaluated.append)
        session.enter_depth(depth)
        again = session.generate(prompt, 16, past=384, stop_at_eos=False)
    assert evaluated == []
    assert again.context_tokens == first.context_tokens == 416
    assert again.tokens == first.tokens


def test_depths_past_the_state_limit_are_prefilled_again(engine: Engine, monkeypatch):
    import tuner.engine

    monkeypatch.setattr(tuner.engine, "DEPTH_STATE_LIMIT", 0)
    with engine.session(EngineConfig(n_ctx=512, n_threads=2)) as session:
        depth = session.tokenize(DEPTH_TEXT)[:64]
        session.enter_depth(depth)
        real_prefill, evaluated = session.prefill, []
        monkeypatch.setattr(session, "prefill", lambda tokens: (evaluated.append(tokens), real_prefill(tokens)))
        session.enter_depth(depth)
        assert session.cached_tokens() == 64
    assert evaluated == [depth]
