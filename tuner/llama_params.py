"""What a context runs with: llama.cpp context parameters built from an
:class:`tuner.config.EngineConfig` exactly as ``llama_cpp.Llama(**engine)`` builds them, and the
settings read back from a context (llama.cpp clamps and pads some of them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tuner.config import EngineConfig

if TYPE_CHECKING:  # llama_cpp is imported lazily so `tune --help` stays instant
    from llama_cpp import _internals

__all__ = ["context_params", "read_back"]


def context_params(config: EngineConfig) -> Any:
    """llama.cpp context params for ``config``, set as ``llama_cpp.Llama(**engine)`` sets them.

    llama_context_default_params() differs from what Llama builds: Llama sets the YaRN factors
    explicitly and turns the perf counters on. Every field Llama sets from its own defaults is set
    the same way here, so a figure measured here holds for a Llama user (benchmarks/llama_parity.py).
    """
    import llama_cpp

    params = llama_cpp.llama_context_default_params()
    params.n_ctx = config.n_ctx
    params.n_batch = config.n_batch
    params.n_ubatch = config.n_ubatch
    params.n_threads = config.n_threads
    params.n_threads_batch = config.n_threads_batch
    params.rope_scaling_type = llama_cpp.LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED
    params.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
    params.attention_type = llama_cpp.LLAMA_ATTENTION_TYPE_UNSPECIFIED
    params.rope_freq_base = 0.0
    params.rope_freq_scale = 0.0
    params.yarn_ext_factor = -1.0
    params.yarn_attn_factor = 1.0
    params.yarn_beta_fast = 32.0
    params.yarn_beta_slow = 1.0
    params.yarn_orig_ctx = 0
    params.embeddings = False
    params.offload_kqv = config.offload_kqv
    params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if config.flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.type_k = config.type_k
    params.type_v = config.type_v
    params.op_offload = config.op_offload
    params.swa_full = config.swa_full
    params.no_perf = False  # Llama's default; llama.cpp's (True) leaves llama_perf_context at zero
    return params


def read_back(context: _internals.LlamaContext) -> dict[str, int]:
    """The settings llama.cpp runs a context with, read from it."""
    import llama_cpp

    ctx = context.ctx
    return {
        "n_ctx": int(llama_cpp.llama_n_ctx(ctx)),
        "n_batch": int(llama_cpp.llama_n_batch(ctx)),
        "n_ubatch": int(llama_cpp.llama_n_ubatch(ctx)),
        "n_threads": int(llama_cpp.llama_n_threads(ctx)),
        "n_threads_batch": int(llama_cpp.llama_n_threads_batch(ctx)),
    }
