"""Preset files: validated on load, unknown keys and wrong types refused."""

from __future__ import annotations

import pytest

from tuner.config import AUTO_SLOTS, EngineConfig
from tuner.errors import PresetError
from tuner.preset import Preset


def test_roundtrip(tmp_path):
    preset = Preset.from_config("/m.gguf", EngineConfig(n_threads=2, flash_attn=True, type_k=8, type_v=8))
    loaded = Preset.load(preset.save(tmp_path / "p.yaml"))
    assert loaded.engine == preset.engine and loaded.sampling == preset.sampling
    assert loaded.config().effective() == EngineConfig(n_threads=2, flash_attn=True, type_k=8, type_v=8).effective()
    assert "seed" not in loaded.sampling  # None is left out: create_completion picks a random seed


def test_llama_servers_slots_have_a_section_of_their_own_written_only_when_not_one(tmp_path):
    one = Preset.from_config("/m.gguf", EngineConfig(n_ctx=2048))
    assert "server" not in one.save(tmp_path / "one.yaml").read_text()
    two = Preset.load(Preset.from_config("/m.gguf", EngineConfig(n_ctx=2048, n_parallel=2)).save(tmp_path / "two.yaml"))
    assert two.server == {"n_parallel": 2} and "n_parallel" not in two.engine  # llama_cpp.Llama(**engine) has no slots
    assert two.config().n_parallel == 2 and two.config().n_ctx == 2048
    auto = Preset.load(Preset.from_config("/m.gguf", EngineConfig(n_ctx=2048, n_parallel=AUTO_SLOTS)).save(tmp_path / "auto.yaml"))
    assert auto.server == {"n_parallel": -1} and auto.config().n_parallel == AUTO_SLOTS  # llama-server's default, kept as measured


def test_a_draft_has_a_section_of_its_own_and_the_engine_asks_for_logits_all(tmp_path):
    """What a Llama user passes: Llama(**engine, draft_model=LlamaPromptLookupDecoding(**draft)),
    written only when speculation earned its keep."""
    assert "draft" not in Preset.from_config("/m.gguf", EngineConfig()).save(tmp_path / "none.yaml").read_text()
    assert "logits_all" not in Preset.from_config("/m.gguf", EngineConfig()).engine
    drafted = Preset.load(Preset.from_config("/m.gguf", EngineConfig(draft_tokens=4, draft_ngram=3)).save(tmp_path / "draft.yaml"))
    assert drafted.draft == {"num_pred_tokens": 4, "max_ngram_size": 3}
    assert drafted.engine["logits_all"] is True
    assert drafted.config().draft_tokens == 4 and drafted.config().draft_ngram == 3


def test_llama_servers_speculation_is_in_its_server_section(tmp_path):
    spec = Preset.load(Preset.from_config("/m.gguf", EngineConfig(spec_type="ngram-simple")).save(tmp_path / "spec.yaml"))
    assert spec.server == {"spec_type": "ngram-simple"} and not spec.draft and "spec_type" not in spec.engine
    assert spec.config().spec_type == "ngram-simple"


@pytest.mark.parametrize("engine_extra, draft", [("", "draft: {num_pred_tokens: 10, max_ngram_size: 2}\n"), ("  logits_all: true\n", "")])
def test_a_draft_without_logits_all_or_the_reverse_is_refused(tmp_path, engine_extra, draft):
    path = tmp_path / "p.yaml"
    path.write_text(f"model: /m.gguf\nengine:\n  n_ctx: 2048\n{engine_extra}{draft}")
    with pytest.raises(PresetError, match="a draft section and engine logits_all: true go together"):
        Preset.load(path)


def test_llama_from_preset_builds_the_draft_model_a_user_would(tmp_path, model_path):
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    from tuner.preset import llama_from_preset

    path = Preset.from_config(model_path, EngineConfig(n_ctx=1024, draft_tokens=4)).save(tmp_path / "draft.yaml")
    llm = llama_from_preset(path)
    try:
        assert isinstance(llm.draft_model, LlamaPromptLookupDecoding) and llm.draft_model.num_pred_tokens == 4
        assert llm.scores.shape[0] == llm.n_ctx() == 1024  # rows for every position: no failure past n_batch
    finally:
        llm.close()


def test_a_value_shared_between_sections_is_written_out_in_full_not_as_an_alias(tmp_path):
    shape = {"name": "first-turn", "depth": 64, "prompt": 32, "gen": 48}
    measured = {"workload": {"shapes": [shape]}, "shapes": [{"shape": shape, "ttft_ms": 68.0}]}
    preset = Preset.from_config("/m.gguf", EngineConfig(n_threads=2), measured=measured)
    text = preset.save(tmp_path / "p.yaml").read_text()
    assert "&id" not in text and "*id" not in text
    assert text.count("name: first-turn") == 2 and Preset.load(tmp_path / "p.yaml").measured == measured


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: m.gguf\nengine: {n_ctx: 512, tfs_z: 1.0}\n", "unknown engine key 'tfs_z'"),
        ("model: m.gguf\nsampling: {temp: 0.5}\n", "unknown sampling key 'temp'"),
        ("model: m.gguf\nengine: {n_ctx: big}\n", "n_ctx='big' has the wrong type"),
        ("model: m.gguf\nextras: 1\n", "unknown top-level key 'extras'"),
        ("model: m.gguf\nserver: {slots: 2}\n", "unknown server key 'slots'"),
        ("model: m.gguf\nserver: {n_parallel: 0}\n", "n_parallel=0 must be -1 (auto) or at least 1"),
        ("engine: {}\n", "'model' must be"),
        ("model: m.gguf\nengine: [1, 2]\n", "'engine' must be a mapping"),
        ("model: m.gguf\nengine: {n_ctx: 512\n", "YAML syntax error"),
        ("model: m.gguf\nengine: {type_v: 8, flash_attn: false}\n", "needs flash_attn"),
        ("model: m.gguf\nserver: {spec_type: ngram}\n", "spec_type='ngram' is not a llama-server speculation type"),
        ("model: m.gguf\nengine: {logits_all: true}\ndraft: {num_pred_tokens: -1}\n", "draft_tokens=-1 is negative"),
        ("model: m.gguf\nengine: {logits_all: true}\ndraft: {max_ngram_size: 0}\n", "draft_ngram=0 must be at least 1"),
        ("model: m.gguf\nengine: {logits_all: true}\ndraft: {ngram: 2}\n", "unknown draft key 'ngram'"),
    ],
)
def test_bad_presets(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PresetError) as err:
        Preset.load(path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_preset(tmp_path):
    with pytest.raises(PresetError, match="does not exist"):
        Preset.load(tmp_path / "none.yaml")
