"""Each export target's defaults, and what a preset's claim means there."""

from __future__ import annotations

import pytest

from tuner.hardware import physical_cores
from tuner.targets import baseline_words, carry_over, defaults_for, left_out, targets_own


def test_llama_cpp_pythons_server_table_matches_its_installed_settings():
    settings = pytest.importorskip("llama_cpp.server.settings", reason="llama-cpp-python's server extra is not installed")
    table = defaults_for("json")
    fields = settings.ModelSettings.model_fields
    for key in ("n_ctx", "n_batch", "n_ubatch", "n_threads", "n_threads_batch", "n_gpu_layers", "flash_attn", "offload_kqv",
                "split_mode", "main_gpu", "use_mmap", "use_mlock"):
        assert table[key] == fields[key].default, key
    assert fields["type_k"].default is None and table["type_k"] == 1  # unset: llama.cpp's f16
    assert "op_offload" not in fields and "swa_full" not in fields  # not settable there: llama.cpp's defaults
    assert table["op_offload"] is table["swa_full"] is True


def test_llama_server_runs_every_physical_core_for_prompts_and_generation():
    table = defaults_for("llama-server")
    assert table["n_threads"] == table["n_threads_batch"] == physical_cores()
    assert "n_ctx" not in table and "flash_attn" not in table  # decided by the server (training context, auto)


def test_what_equals_a_targets_default_is_left_out():
    assert left_out({"n_batch": 512, "top_p": 0.9, "n_ctx": 4096}, "ollama") == {"n_batch": 512, "top_p": 0.9}
    assert left_out({"temperature": 0.8000000001}, "llama-server") == {"temperature": 0.8000000001}  # the same float


def test_the_baseline_is_named_with_the_values_the_preset_changes():
    measured = {"starting_point": "defaults", "changes": {"n_threads": {"from": 1, "to": 2}}}
    assert baseline_words(measured) == "llama-cpp-python's defaults (n_threads 1)"
    assert baseline_words({"starting_point": "yours"}) == "your settings (--baseline)"


def test_a_change_the_target_already_has_or_whose_baseline_differs_is_said():
    cores = physical_cores()
    gained = {"changes": {"n_threads": {"from": 1, "to": cores}}}
    assert carry_over(gained, "llama-server") == [f"llama-server defaults to n_threads {cores} here: this gain is already yours there (left out)"]
    batch = {"changes": {"n_batch": {"from": 512, "to": 256}}}
    assert carry_over(batch, "llama-server") == ["llama-server defaults to n_batch 2048, not the 512 measured against: the ratio does not carry over"]
    assert carry_over(batch, "ollama") == []  # ollama's default is the baseline's: the worth may carry over


def test_a_gpu_studys_placement_is_written_like_the_required_context():
    """The defaults of a GPU study offloaded as its candidates did: a minimal preset from them
    writes n_gpu_layers (llama-cpp-python's own default is 0), and its ratio names the placement."""
    measured = {"starting_point": "defaults", "changes": {"n_batch": {"from": 512, "to": 1024}}, "placement": {"n_gpu_layers": -1}}
    values = {"n_ctx": 4096, "n_gpu_layers": -1, "n_batch": 1024, "n_threads": 8, "top_k": 40}
    assert targets_own(measured, values, "json") == {"n_threads": 8, "top_k": 40}
    assert baseline_words(measured) == "llama-cpp-python's defaults with n_gpu_layers -1 (n_batch 512)"
    assert "n_gpu_layers" in targets_own({**measured, "placement": {}}, values, "json")  # on the CPU: left to the target
