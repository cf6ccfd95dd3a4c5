"""The VRAM fit's estimates against what llama.cpp reports allocating (its load and context log,
read back), on the real embedded model: the compute buffer (tuner.placement.compute_mib) and the
KV cache (GgufInfo.kv_bytes_per_token). The CPU build's buffers are sized by the same graph
allocator a GPU build uses; on a GPU only the runtime beside them (GPU_RUNTIME_MIB) is a guess."""

from __future__ import annotations

import pytest

from tuner.config import EngineConfig
from tuner.gguf import read_gguf_info
from tuner.placement import compute_mib

CASES = [
    {"n_ctx": 512, "n_ubatch": 512, "n_batch": 512, "flash_attn": False},
    {"n_ctx": 4096, "n_ubatch": 512, "n_batch": 512, "flash_attn": True},
    {"n_ctx": 4096, "n_ubatch": 64, "n_batch": 512, "flash_attn": False},
    {"n_ctx": 2048, "n_ubatch": 2048, "n_batch": 2048, "flash_attn": True, "type_k": 8, "type_v": 8},
]


@pytest.mark.parametrize("settings", CASES, ids=lambda s: f"ctx{s['n_ctx']}-ub{s['n_ubatch']}-fa{int(s['flash_attn'])}")
def test_the_fit_estimates_the_buffers_llama_cpp_allocates(engine, model_path, settings):
    model = read_gguf_info(model_path)
    with engine.session(EngineConfig(n_threads=2, **settings)) as session:
        placed = session.placed
    reported_compute = sum(placed["compute_mib"].values())
    estimate = compute_mib(model, settings["n_ubatch"], settings["n_ctx"], settings["flash_attn"])
    assert estimate == pytest.approx(reported_compute, rel=0.15), (estimate, placed)
    bytes_per_element = 1.0625 if settings.get("type_k") == 8 else 2.0
    kv = model.kv_bytes_per_token(bytes_per_element) * settings["n_ctx"] / 2**20
    assert kv == pytest.approx(sum(placed["kv_mib"].values()), rel=0.15), (kv, placed)
