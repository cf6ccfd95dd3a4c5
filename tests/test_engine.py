"""EngineConfig validation and the Engine on the real embedded model."""

from __future__ import annotations

import llama_cpp
import pytest

from tuner.engine import CONTEXT_KEYS, KV_TYPES, LOAD_KEYS, Engine, EngineConfig
from tuner.errors import ConfigError, EngineError


def test_unknown_key_is_an_error_with_a_suggestion():
    with pytest.raises(ConfigError) as err:
        EngineConfig.from_dict({"n_thread": 2})
    assert "unknown key 'n_thread'" in str(err.value)
    assert "n_threads" in err.value.fix


def test_removed_guide_keys_are_rejected_not_ignored():
    # llama_cpp.Llama(**kwargs) would swallow these silently.
    for key in ("tfs_z", "mul_mat_q", "cont_batching"):
        with pytest.raises(ConfigError, match=f"unknown key '{key}'"):
            EngineConfig.from_dict({key: 1})


def test_wrong_types_are_rejected():
    with pytest.raises(ConfigError, match="wrong type"):
        EngineConfig(n_threads="2")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="wrong type"):
        EngineConfig(flash_attn=1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="wrong type"):
        EngineConfig(n_batch=3.5)  # type: ignore[arg-type]


def test_impossible_values_are_rejected():
    with pytest.raises(ConfigError, match="needs flash_attn"):
        EngineConfig(type_k=KV_TYPES["q8_0"], type_v=KV_TYPES["q8_0"], flash_attn=False)
    with pytest.raises(ConfigError, match="top_p"):
        EngineConfig(top_p=1.5)
    with pytest.raises(ConfigError, match="n_threads"):
        EngineConfig(n_threads=0)
    with pytest.raises(ConfigError, match="KV-cache type"):
        EngineConfig.from_dict({"type_k": "q5_9"})


def test_kv_type_names_map_to_ggml_ids():
    cfg = EngineConfig.from_dict({"type_k": "q8_0", "type_v": "q8_0", "flash_attn": True})
    assert (cfg.type_k, cfg.type_v) == (llama_cpp.GGML_TYPE_Q8_0, llama_cpp.GGML_TYPE_Q8_0)
    assert cfg.kv_type == "q8_0"


def test_our_names_exist_in_llama_cpp_structs():
    # ctypes structs accept misspelled attributes silently: check each name we set is real.
    context_fields = {name for name, _ in llama_cpp.llama_context_params._fields_}
    model_fields = {name for name, _ in llama_cpp.llama_model_params._fields_}
    renamed = {"flash_attn": "flash_attn_type"}
    for key in CONTEXT_KEYS:
        assert renamed.get(key, key) in context_fields, key
    for key in LOAD_KEYS:
        assert {"use_mmap": "load_mode", "use_mlock": "load_mode"}.get(key, key) in model_fields, key


def test_effective_clamps_like_llama_cpp():
    cfg = EngineConfig(n_ctx=2048, n_batch=4096, n_ubatch=4096)
    eff = cfg.effective()
    assert (eff.n_batch, eff.n_ubatch) == (2048, 2048)
    assert cfg.clamped() == {"n_batch": (4096, 2048), "n_ubatch": (4096, 2048)}
    assert eff.n_threads >= 1 and eff.n_threads_batch >= 1


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


def test_context_too_small_for_prompt_is_a_config_error(engine: Engine):
    with engine.session(EngineConfig(n_ctx=64, n_batch=64)) as session:
        with pytest.raises(ConfigError, match="too small"):
            session.generate(list(range(1, 300)), 16)  # llama.cpp pads n_ctx 64 to 256


def test_context_llama_cpp_refuses_is_an_engine_error(engine: Engine):
    # A real refusal: a KV cache for 2^26 tokens cannot be allocated.
    with pytest.raises(EngineError, match="could not create a context for n_ctx=67108864"):
        with engine.session(EngineConfig(n_ctx=2**26)):
            pass
