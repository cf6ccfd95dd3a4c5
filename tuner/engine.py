"""The engine: a model kept loaded across trials, and one llama.cpp context per session.

This is the only module that drives llama.cpp's context (decode, sampling, logits). The settings
it runs with are :class:`tuner.config.EngineConfig`; the sampler chain mirrors
``Llama._init_sampler`` so that the sampling cost measured here is the cost a
``create_completion`` user pays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.config import EngineConfig
from tuner.errors import ConfigError, EngineError, ModelError
from tuner.llama_log import placement_read_back, quiet_llama_logs, recording
from tuner.llama_params import context_params, read_back

if TYPE_CHECKING:  # llama_cpp is imported lazily so `tune --help` stays instant
    from llama_cpp import _internals

__all__ = ["Engine", "Generation", "Session"]

# llama-cpp-python keeps this many recent tokens for the repeat penalty (Llama.last_n_tokens_size).
PENALTY_LAST_N = 64
DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: a random seed per sampler
# Host memory a session may hold in saved depth states (Session.enter_depth): a 384-token depth of
# the embedded model is about 7 MB; an 8B model's 8k-token depth is about 1 GiB, prefilled instead.
DEPTH_STATE_LIMIT = 512 * 2**20


@dataclass(frozen=True)
class Generation:
    """One prompt + generation pass with its timings.

    Timings come from llama.cpp's own counters (llama_perf_context / llama_perf_sampler);
    the wall-clock figures are kept as a cross-check.
    """

    tokens: list[int]
    text: str
    n_prompt: int
    prompt_ms: float  # llama.cpp: time spent evaluating the prompt
    n_eval: int  # llama.cpp: tokens decoded one at a time
    eval_ms: float  # llama.cpp: time spent in those decodes
    sample_ms: float  # llama.cpp: time spent in the sampler chain
    n_sample: int
    ttft_ms: float  # wall: start of the prompt -> first token sampled
    wall_prompt_ms: float
    wall_decode_ms: float  # wall: first token sampled -> last token sampled
    context_tokens: int = 0  # llama.cpp: positions in the KV cache when the first token was sampled
    # requests at once (llama-server), 0 when requests come one at a time (tuner.measure.served):
    served_ms: float = 0.0  # the server's time per request, the round's wall time over its requests
    waited_ms: float = 0.0  # the slowest user's time from sending the request to its last token
    drafted: int = 0  # llama-server's speculation: draft tokens proposed (timings.draft_n) and kept
    accepted: int = 0


class Session:
    """A llama.cpp context for one configuration. Use through :meth:`Engine.session`."""

    def __init__(self, engine: Engine, config: EngineConfig, context: _internals.LlamaContext) -> None:
        self.engine = engine
        self.config = config
        self.context = context
        self._depths: dict[tuple[int, ...], Any] = {}  # a depth's KV state, saved by enter_depth
        self.placed: dict[str, Any] = {}  # layers offloaded and buffers per device, as llama.cpp logged them
        self._depth_bytes = 0

    def tokenize(self, text: str) -> list[int]:
        return self.engine.model.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def prefill(self, tokens: list[int]) -> None:
        """Empty the KV cache, then evaluate ``tokens`` into it (no sampling, untimed): the context
        a request finds already there (a system prompt, the conversation so far)."""
        import llama_cpp

        self.context.kv_cache_clear()
        if not tokens:
            return
        batch = self._new_batch()
        try:
            self._eval(batch, tokens, past=0)
            # llama.cpp books a decode's tokens and time in its perf counters only at the next
            # synchronization, and llama_perf_context_reset does not drop what is pending: without
            # this, the next timed request's prompt counters held these tokens and their time too.
            llama_cpp.llama_synchronize(self.context.ctx)
        finally:
            batch.close()

    def enter_depth(self, tokens: list[int]) -> None:
        """Make the KV cache hold exactly ``tokens`` (a request shape's depth, untimed): restored
        from the copy this session saved when it first prefilled them, else prefilled and saved.

        Why: a measurement moves between its shapes (every shape's first repetition, then the
        second, ...), and re-evaluating a depth it already evaluated once was a fifth of a study's
        time. The restored cells are the ones the prefill wrote (llama_state_seq_get/set_data on
        sequence 0), which is the state a request finds either way. Copies are kept up to
        :data:`DEPTH_STATE_LIMIT` bytes per session; past that a depth is prefilled again."""
        import ctypes

        import llama_cpp

        saved = self._depths.get(tuple(tokens))
        if saved is not None:
            self.context.kv_cache_clear()
            if llama_cpp.llama_state_seq_set_data(self.context.ctx, saved, len(saved), 0) and self.cached_tokens() == len(tokens):
                return
        self.prefill(tokens)
        if not tokens or saved is not None:
            return
        size = llama_cpp.llama_state_seq_get_size(self.context.ctx, 0)
        if self._depth_bytes + size > DEPTH_STATE_LIMIT:
            return
        state = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(self.context.ctx, state, size, 0) == size:
            self._depths[tuple(tokens)] = state
            self._depth_bytes += size

    def cached_tokens(self) -> int:
        """Positions held in the KV cache (sequence 0), as llama.cpp's memory reports them."""
        import llama_cpp

        return int(llama_cpp.llama_memory_seq_pos_max(llama_cpp.llama_get_memory(self.context.ctx), 0)) + 1

    def generate(
        self,
        prompt: list[int],
        max_tokens: int,
        *,
        past: int = 0,
        stop_at_eos: bool = True,
        seed: int | None = None,
    ) -> Generation:
        """Evaluate ``prompt`` after the first ``past`` positions of the KV cache, then sample up to
        ``max_tokens`` tokens. Whatever the cache held beyond ``past`` is dropped first, so each
        call starts from the same state (no prefix reuse between repetitions).

        Args:
            past: positions of the cache kept (see :meth:`prefill`); 0 empties it.
            stop_at_eos: stop at an end-of-generation token. With False,
                exactly ``max_tokens`` tokens are decoded, which is what a throughput measurement needs.
            seed: sampler seed for this call (default: the config's).
        """
        import llama_cpp
        import numpy as np

        if past + len(prompt) + max_tokens > self.context.n_ctx():
            raise ConfigError(
                f"n_ctx={self.context.n_ctx()} is too small for {past} cached + {len(prompt)} prompt + {max_tokens} generated tokens",
                "raise n_ctx or shorten the workload",
            )
        ctx = self.context.ctx
        model = self.engine.model
        if past:
            self.context.kv_cache_seq_rm(0, past, -1)
        else:
            self.context.kv_cache_clear()
        sampler = self._sampler(seed)
        batch = self._new_batch()
        # Measurement: decode exactly max_tokens (max_tokens + 1 sampled); text: sample max_tokens.
        limit = max_tokens if stop_at_eos else max_tokens + 1
        n_vocab = model.n_vocab()
        scores = np.empty(n_vocab, dtype=np.single)
        pieces: list[bytes] = []

        def stops(token: int) -> bool:
            return stop_at_eos and bool(llama_cpp.llama_vocab_is_eog(model.vocab, token))

        def sample() -> int:
            # The per-token work a llama_cpp.Llama user pays too: Llama.eval keeps the new
            # position's logits in Llama.scores, and a streamed completion detokenizes each token.
            np.copyto(scores, np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)))
            token = sampler.sample(self.context, -1)
            pieces.append(model.token_to_piece(token))
            return token

        try:
            llama_cpp.llama_synchronize(ctx)  # nothing pending may reach this request's counters (see prefill)
            llama_cpp.llama_perf_context_reset(ctx)
            start = time.perf_counter()
            self._eval(batch, prompt, past)
            # llama_decode is asynchronous on a GPU: it returns when the work is queued. The wall
            # clock of the prompt must end when its work does, not when it was launched.
            llama_cpp.llama_synchronize(ctx)
            prompt_done = time.perf_counter()
            tokens = [sample()]
            first = time.perf_counter()
            context_tokens = self.cached_tokens()
            while len(tokens) < limit and not stops(tokens[-1]):
                batch.set_batch([tokens[-1]], n_past=past + len(prompt) + len(tokens) - 1, logits_all=False)
                self._decode(batch)
                tokens.append(sample())
            end = time.perf_counter()
            perf = llama_cpp.llama_perf_context(ctx)
            sampler_perf = llama_cpp.llama_perf_sampler(sampler.sampler)
        finally:
            batch.close()
            sampler.close()
        if tokens and stops(tokens[-1]):
            tokens = tokens[:-1]
        return Generation(
            tokens=tokens,
            text=model.detokenize(tokens).decode("utf-8", errors="replace"),
            n_prompt=perf.n_p_eval,
            prompt_ms=perf.t_p_eval_ms,
            n_eval=perf.n_eval,
            eval_ms=perf.t_eval_ms,
            sample_ms=sampler_perf.t_sample_ms,
            n_sample=sampler_perf.n_sample,
            ttft_ms=(first - start) * 1000,
            wall_prompt_ms=(prompt_done - start) * 1000,
            wall_decode_ms=(end - first) * 1000,
            context_tokens=context_tokens,
        )

    def logits(self, tokens: list[int]) -> Iterator[Any]:
        """Teacher-force ``tokens`` from an empty KV cache, yielding each batch's logits.

        Yields:
            numpy arrays of shape (tokens in the batch, n_vocab); row i predicts the next token.
        """
        import llama_cpp
        import numpy as np

        if len(tokens) > self.context.n_ctx():
            raise ConfigError(
                f"n_ctx={self.context.n_ctx()} is too small for the {len(tokens)}-token evaluation text",
                f"use n_ctx >= {len(tokens)}",
            )
        self.context.kv_cache_clear()
        n_vocab = self.engine.model.n_vocab()
        batch = self._new_batch()
        try:
            for offset in range(0, len(tokens), self.config.n_batch):
                chunk = tokens[offset : offset + self.config.n_batch]
                batch.set_batch(chunk, n_past=offset, logits_all=True)
                self._decode(batch)
                pointer = llama_cpp.llama_get_logits(self.context.ctx)
                yield np.ctypeslib.as_array(pointer, shape=(len(chunk), n_vocab)).copy()
        finally:
            batch.close()

    def last_logits(self, tokens: list[int]) -> Any:
        """The last position's logits (a numpy copy) of ``tokens`` evaluated from an empty cache."""
        import llama_cpp
        import numpy as np

        self.prefill(tokens)  # one output row, where logits() computes one per token
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.context.ctx, -1), shape=(self.engine.model.n_vocab(),)).copy()

    def _new_batch(self) -> _internals.LlamaBatch:
        """A batch of up to n_batch tokens in one sequence (the caller closes it)."""
        from llama_cpp import _internals

        return _internals.LlamaBatch(n_tokens=max(self.config.n_batch, 1), embd=0, n_seq_max=1, verbose=False)

    def _eval(self, batch: _internals.LlamaBatch, tokens: list[int], past: int) -> None:
        """Evaluate ``tokens`` after the first ``past`` cached positions, n_batch at a time, with
        logits for the last position only (what sampling the next token needs)."""
        for offset in range(0, len(tokens), self.config.n_batch):
            batch.set_batch(tokens[offset : offset + self.config.n_batch], n_past=past + offset, logits_all=False)
            self._decode(batch)

    def _decode(self, batch: _internals.LlamaBatch) -> None:
        try:
            self.context.decode(batch)
        except RuntimeError as exc:
            raise EngineError(f"llama_decode failed: {exc}", "try a smaller n_batch/n_ubatch or n_ctx") from exc

    def _sampler(self, seed: int | None = None) -> _SamplerChain:
        """The same chain llama-cpp-python builds in Llama._init_sampler, with perf counters on."""
        import llama_cpp

        cfg = self.config
        chain = _SamplerChain()
        n_vocab = self.engine.model.n_vocab()
        chain.add(llama_cpp.llama_sampler_init_penalties(n_vocab, PENALTY_LAST_N, cfg.repeat_penalty, 0.0, 0.0))
        if cfg.temperature == 0:
            chain.add(llama_cpp.llama_sampler_init_greedy())
        else:
            chain.add(llama_cpp.llama_sampler_init_top_k(cfg.top_k))
            chain.add(llama_cpp.llama_sampler_init_typical(1.0, 1))
            chain.add(llama_cpp.llama_sampler_init_top_p(cfg.top_p, 1))
            chain.add(llama_cpp.llama_sampler_init_min_p(cfg.min_p, 1))
            chain.add(llama_cpp.llama_sampler_init_temp(cfg.temperature))
            seed = cfg.seed if seed is None else seed
            chain.add(llama_cpp.llama_sampler_init_dist(DEFAULT_SEED if seed is None else seed))
        return chain


class _SamplerChain:
    """A llama.cpp sampler chain. llama-cpp-python's LlamaSampler creates its chain with
    no_perf=True, which leaves llama_perf_sampler at zero; this one keeps the sampler timings."""

    def __init__(self) -> None:
        import llama_cpp

        params = llama_cpp.llama_sampler_chain_default_params()
        params.no_perf = False
        self.sampler = llama_cpp.llama_sampler_chain_init(params)

    def add(self, sampler: Any) -> None:
        import llama_cpp

        llama_cpp.llama_sampler_chain_add(self.sampler, sampler)

    def sample(self, context: _internals.LlamaContext, idx: int = -1) -> int:
        import llama_cpp

        # llama_sampler_sample also accepts the token into the chain (the repeat-penalty history).
        return llama_cpp.llama_sampler_sample(self.sampler, context.ctx, idx)

    def close(self) -> None:
        import llama_cpp

        if self.sampler is not None:
            llama_cpp.llama_sampler_free(self.sampler)
            self.sampler = None


class Engine:
    """One GGUF model, kept loaded per load-time config, with a fresh context per session.

    Example:
        >>> engine = Engine("model.gguf", EngineConfig(n_threads=2))
        >>> print(engine.generate("The capital of France is", max_tokens=8))
    """

    def __init__(self, model_path: str | Path, config: EngineConfig | None = None, *, verbose: bool = False) -> None:
        self.model_path = Path(model_path)
        self.config = config or EngineConfig()
        self.verbose = verbose
        self._model: _internals.LlamaModel | None = None
        self._model_key: tuple[Any, ...] | None = None
        self._session: Session | None = None
        self.placed: dict[str, Any] = {}  # where llama.cpp put the loaded model (placement_read_back)

    @property
    def model(self) -> _internals.LlamaModel:
        if self._model is None:
            self.load(self.config)
        assert self._model is not None
        return self._model

    def load(self, config: EngineConfig) -> _internals.LlamaModel:
        """Load the model for ``config``'s load-time params; reuse it when they are unchanged."""
        key = tuple(config.load_params().values())
        if self._model is not None and key == self._model_key:
            return self._model
        self.close()
        import llama_cpp
        from llama_cpp import _internals

        quiet_llama_logs(self.verbose)
        _backend_init()
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = 0x7FFFFFFF if config.n_gpu_layers == -1 else config.n_gpu_layers
        params.main_gpu = config.main_gpu
        params.split_mode = config.split_mode
        if config.use_mmap and config.use_mlock:
            params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP_MLOCK
        elif config.use_mlock:
            params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MLOCK
        elif config.use_mmap:
            params.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP
        else:
            params.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
        try:
            with recording() as lines:
                self._model = _internals.LlamaModel(path_model=str(self.model_path), params=params, verbose=self.verbose)
            self.placed = placement_read_back(lines)
        except ValueError as exc:
            raise ModelError(
                f"llama.cpp could not load {self.model_path} ({exc})",
                "check that the file is a complete GGUF model (a truncated download fails here)",
            ) from exc
        self._model_key = key
        return self._model

    @contextmanager
    def session(self, config: EngineConfig | None = None) -> Iterator[Session]:
        """A fresh context for ``config`` (the engine's own config by default), closed on exit.

        The session's ``config`` holds what llama.cpp runs with, read back from the context
        (n_ctx padded, n_batch and n_ubatch clamped, the thread counts), not what was asked.
        """
        config = (config or self.config).effective()
        model = self.load(config)
        from llama_cpp import _internals

        try:
            with recording() as lines:
                context = _internals.LlamaContext(model=model, params=context_params(config), verbose=self.verbose)
        except ValueError as exc:
            raise EngineError(
                f"llama.cpp could not create a context for n_ctx={config.n_ctx}, kv={config.kv_type}, "
                f"flash_attn={config.flash_attn} ({exc})",
                "use a smaller n_ctx or another KV-cache type",
            ) from exc
        session = Session(self, replace(config, **read_back(context)), context)
        session.placed = {**self.placed, **placement_read_back(lines)}  # layers and weights (load), KV and compute (context)
        self._session = session
        try:
            yield session
        finally:
            # Close explicitly: the model's ExitStack would otherwise keep the KV cache alive.
            context.close()
            self._session = None

    def generate(self, prompt: str, max_tokens: int = 64) -> str:
        """Generate text for ``prompt`` with the engine's config (stops at end of generation)."""
        with self.session() as session:
            return session.generate(session.tokenize(prompt), max_tokens).text

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
        self._model = None
        self._model_key = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_backend = {"initialized": False}


def _backend_init() -> None:
    """llama_backend_init, once per process, as the first ``llama_cpp.Llama`` does."""
    import llama_cpp

    if not _backend["initialized"]:
        llama_cpp.llama_backend_init()
        _backend["initialized"] = True
