"""The user's starting point: the context their application requires, and their own settings."""

from __future__ import annotations

import json

import pytest

from tuner.baseline import DEFAULT_N_CTX, Baseline, load_baseline, required_n_ctx
from tuner.config import EngineConfig
from tuner.errors import ConfigError


def test_the_context_is_the_users_when_given_and_4096_capped_at_the_training_context_otherwise():
    assert required_n_ctx(8192, None, train_ctx=32768, needed=500).n_ctx == 8192
    assert required_n_ctx(None, 2048, train_ctx=32768, needed=500).n_ctx == 2048  # their baseline's
    assert required_n_ctx(None, None, train_ctx=32768, needed=500).n_ctx == DEFAULT_N_CTX == 4096
    assert required_n_ctx(None, None, train_ctx=2048, needed=500).n_ctx == 2048  # a model trained on less
    assert required_n_ctx(None, None, train_ctx=0, needed=500).n_ctx == 4096  # a file that does not say
    # always at least what the workload needs
    assert required_n_ctx(None, None, train_ctx=32768, needed=6000).n_ctx == 6000


def test_a_baseline_asking_for_the_training_context_keeps_it():
    requirement = required_n_ctx(None, 0, train_ctx=32768, needed=500)  # llama.cpp's n_ctx 0
    assert requirement.n_ctx == 32768 and "training context" in requirement.why


def test_an_explicit_context_beats_the_baselines():
    requirement = required_n_ctx(4096, 2048, train_ctx=32768, needed=500)
    assert requirement.n_ctx == 4096 and requirement.why == "--n-ctx"


@pytest.mark.parametrize(
    ("asked", "baseline", "needed", "fragment"),
    [
        (0, None, 100, "--n-ctx 0 is not a context size"),
        (-5, None, 100, "--n-ctx -5 is not a context size"),
        (65536, None, 100, "above the model's training context (32768 tokens)"),
        (256, None, 500, "--n-ctx 256 cannot hold the workload: its largest request needs 500 tokens"),
        (None, 256, 500, "your baseline's n_ctx 256 cannot hold the workload"),
        (None, 65536, 500, "your baseline's n_ctx 65536 is above the model's training context (32768 tokens)"),
        (None, None, 40000, "needs 40000 tokens, more than the model's training context (32768)"),
    ],
)
def test_a_context_that_cannot_serve_is_refused(asked, baseline, needed, fragment):
    with pytest.raises(ConfigError) as error:
        required_n_ctx(asked, baseline, train_ctx=32768, needed=needed)
    assert fragment in str(error.value)


def test_a_plain_mapping_of_llama_keywords_is_a_baseline_and_says_which_keys_it_sets(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model_path: /models/x.gguf\nn_ctx: 4096\nn_batch: 2048\nn_threads: 8\ntop_k: 20\ntop_p: 0.9\ntype_k: q8_0\nflash_attn: true\n")
    baseline = load_baseline(path)
    assert baseline.config == EngineConfig(n_ctx=4096, n_batch=2048, n_threads=8, top_k=20, top_p=0.9, type_k=8, flash_attn=True)
    assert baseline.keys == {"n_ctx", "n_batch", "n_threads", "top_k", "top_p", "type_k", "flash_attn"}
    assert baseline.n_ctx == 4096


def test_on_llama_server_what_the_file_leaves_out_is_the_servers_own_default(tmp_path):
    path = tmp_path / "greedy.yaml"
    path.write_text("temperature: 0.0\n")
    server = EngineConfig(n_ctx=4096, n_batch=2048, n_threads=2, flash_attn=True, n_parallel=-1)  # as read from a binary
    assert load_baseline(path).over(server) == EngineConfig(n_ctx=4096, n_batch=2048, n_threads=2, flash_attn=True, n_parallel=-1, temperature=0.0)
    assert load_baseline(path).config.n_batch == 512  # llama-cpp-python's, which a Llama user gets
    # A study takes the file as read and lays it over the defaults of the engine that measures.
    assert Baseline.on(load_baseline(path), None).n_batch == 512
    assert Baseline.on(load_baseline(path), server) == load_baseline(path).over(server)
    assert Baseline.on(server, None) == server and Baseline.on(None, server) is None  # settings as they run


def test_a_baseline_without_n_ctx_leaves_the_context_to_the_default_rule(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"n_threads": 4}))
    baseline = load_baseline(path)
    assert baseline.n_ctx is None  # not llama-cpp-python's 512: their application's size is unknown
    assert required_n_ctx(None, baseline.n_ctx, train_ctx=32768, needed=100).n_ctx == 4096


def test_an_exported_preset_is_a_baseline(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_text("model: /m.gguf\nengine: {n_ctx: 8192, n_threads: 2}\nsampling: {temperature: 0.5}\nmeasured: {}\nprovenance: {}\n")
    baseline = load_baseline(path)
    assert (baseline.config.n_ctx, baseline.config.n_threads, baseline.config.temperature) == (8192, 2, 0.5)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- n_ctx: 4096\n", "is not a mapping of settings"),
        ("n_ctx: 4096\ncont_batching: true\n", "unknown key 'cont_batching'"),
        ("n_ctx: [4096\n", "YAML syntax error at line"),
        ("n_threads: many\n", "n_threads='many' has the wrong type"),
    ],
)
def test_a_bad_baseline_file_is_one_error(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_baseline(path)
    assert fragment in str(error.value)
