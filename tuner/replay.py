"""The user's requests replayed as written, on the model's natural output: what speculative
decoding is measured on, in a plain ``llama_cpp.Llama`` (:func:`replay`) or on llama-server
(:func:`replay_server`).

Shapes (:mod:`tuner.measure`) time a fixed text for exactly ``gen`` tokens with end-of-generation
suppressed. That is right for throughput and wrong for speculation: past its natural end a small
model copies the prompt back or loops, which prompt lookup predicts perfectly (2.4-2.65x read on
this project's machine, a false figure). Here each request is the user's own text (its prompt, or
its conversation rendered with the model's chat template: :func:`tuner.user_requests.request_tokens`)
and its answer ends where the model ends it: an end-of-generation token, one of the request's
``stop`` strings, or ``max_tokens``.

The engine is a plain ``llama_cpp.Llama`` built from the preset's own keywords
(:func:`open_llama`): speculation in llama-cpp-python is ``Llama(draft_model=...)``, which turns on
logits for every position (``logits_all``) and a scores array of n_ctx x n_vocab floats, and a
measurement must pay what a user of the preset pays. (The preset asks for ``logits_all=True`` as
well: llama-cpp-python 0.3.36 sizes that array by the argument, and a draft without it fails on
the first request past n_batch positions: "could not broadcast input array from shape
(13107200,) into shape (0,)", ran here.) Tokens come from ``Llama.generate``, the loop
``create_completion`` runs, ended by the same rules; each token is detokenized as it comes, as a
streamed completion does.

Acceptance: :class:`CountingLookup` is llama-cpp-python's ``LlamaPromptLookupDecoding`` that
remembers what it proposed. ``Llama.generate`` evaluates each proposal with the last sampled token
in one batch and keeps the tokens up to the first one sampling disagrees with, so the tokens
produced between two proposals are one sampled token plus the accepted part of the first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tuner.config import EngineConfig
from tuner.errors import ConfigError

if TYPE_CHECKING:
    import llama_cpp

__all__ = ["CountingLookup", "Reply", "acceptance", "open_llama", "replay", "replay_server"]


@dataclass(frozen=True)
class Reply:
    """One request answered in full, as the user received it.

    ``tokens`` is the answer's length (the end-of-generation token not counted); ``finish`` is
    "stop" when the model or a stop string ended it, "length" at ``max_tokens``. ``ttft_ms`` and
    ``request_ms`` are wall clock from the call (prompt included) to the first and the last token.
    ``drafted``/``accepted``: draft tokens proposed and kept (0 without speculation).
    """

    text: str
    tokens: int
    finish: str
    ids: tuple[int, ...]  # the answer's tokens, as sampled
    prompt_tokens: int
    ttft_ms: float
    request_ms: float
    drafted: int = 0
    accepted: int = 0


class CountingLookup:
    """``LlamaPromptLookupDecoding`` that records each proposal: the history length it was made
    at and the tokens proposed (see the module docstring for how acceptance follows)."""

    def __init__(self, tokens: int, ngram: int) -> None:
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        self.lookup = LlamaPromptLookupDecoding(num_pred_tokens=tokens, max_ngram_size=ngram)
        self.proposals: list[tuple[int, int]] = []

    def __call__(self, input_ids: Any, /, **kwargs: Any) -> Any:
        drafted = self.lookup(input_ids, **kwargs)
        self.proposals.append((len(input_ids), len(drafted)))
        return drafted

    def counts(self, produced: int) -> tuple[int, int]:
        """(drafted, accepted) since the last call, ``produced`` the history length at the end
        (prompt + every token sampled). The last proposal's accepted part is what was produced
        after it, less its own sampled token; it is cut short where the answer ended."""
        proposals, self.proposals = self.proposals, []
        drafted = accepted = 0
        ends = [at for at, _ in proposals[1:]] + [produced]
        for (at, size), end in zip(proposals, ends):
            drafted += size
            accepted += max(0, min(size, end - at - 1))
        return drafted, accepted


def open_llama(model: str | Path, config: EngineConfig) -> tuple[llama_cpp.Llama, CountingLookup | None]:
    """A plain ``llama_cpp.Llama`` as a preset user builds it (the preset's engine keywords for
    ``config``, :meth:`tuner.preset.Preset.llama`), its draft model counting proposals when
    ``config`` has one (``draft_tokens`` > 0)."""
    from tuner.preset import Preset

    counter = CountingLookup(config.draft_tokens, config.draft_ngram) if config.draft_tokens else None
    return Preset.from_config(model, config).llama(draft_model=counter), counter


def replay(llm: llama_cpp.Llama, tokens: list[int], max_tokens: int, stop: tuple[str, ...], config: EngineConfig, counter: CountingLookup | None = None) -> Reply:
    """Answer one request (its ``tokens`` as the model is given them) from an empty cache, with
    ``config``'s sampling, until end-of-generation, a ``stop`` string or ``max_tokens``."""
    import llama_cpp

    if len(tokens) + max_tokens > llm.n_ctx():
        raise ConfigError(f"n_ctx={llm.n_ctx()} is too small for a {len(tokens)}-token request and {max_tokens} generated", "raise n_ctx or shorten the request")
    llm.reset()  # no prefix reuse: every repetition pays the prompt, as a new request does
    sampling = {"temp": config.temperature, "top_k": config.top_k, "top_p": config.top_p, "min_p": config.min_p, "repeat_penalty": config.repeat_penalty}
    if config.seed is not None:
        llm.set_seed(config.seed)
    vocab = llm._model.vocab
    pieces: list[bytes] = []
    ids: list[int] = []
    finish, sampled, first = "length", 0, 0.0
    start = time.perf_counter()
    stream = llm.generate(tokens, reset=True, **sampling)
    try:
        for token in stream:
            sampled += 1
            first = first or time.perf_counter()
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            ids.append(token)
            pieces.append(llm.detokenize([token], prev_tokens=None))
            text = b"".join(pieces).decode("utf-8", errors="ignore")
            if any(s in text for s in stop):
                finish = "stop"
                break
            if len(pieces) >= max_tokens:
                break
    finally:
        stream.close()
    end = time.perf_counter()
    text = b"".join(pieces).decode("utf-8", errors="replace")
    cut = min((text.index(s) for s in stop if s in text), default=len(text))
    drafted, accepted = counter.counts(len(tokens) + sampled) if counter else (0, 0)
    return Reply(
        text=text[:cut],
        tokens=len(pieces),
        finish=finish,
        ids=tuple(ids),
        prompt_tokens=len(tokens),
        ttft_ms=(first - start) * 1000,
        request_ms=(end - start) * 1000,
        drafted=drafted,
        accepted=accepted,
    )


def replay_server(session: Any, tokens: list[int], max_tokens: int, stop: tuple[str, ...], seed: int) -> Reply:
    """The same on llama-server (a :class:`tuner.server.ServerSession`): the request streamed
    from an empty cache with the server's own sampling (its command line) and ``seed``; drafted and
    accepted tokens from its ``timings`` (``draft_n``, ``draft_n_accepted``)."""
    start = time.perf_counter()
    answer = session.answer(tokens, max_tokens, stop, seed)
    request_ms = (time.perf_counter() - start) * 1000
    return Reply(
        text=answer.text,
        tokens=len(answer.tokens),
        finish="length" if answer.n_sample >= max_tokens else "stop",
        ids=tuple(answer.tokens),
        prompt_tokens=len(tokens),
        ttft_ms=answer.ttft_ms or request_ms,
        request_ms=request_ms,
        drafted=answer.drafted,
        accepted=answer.accepted,
    )


def acceptance(replies: list[Reply]) -> float | None:
    """The share of drafted tokens accepted over ``replies``; None where nothing was drafted."""
    drafted = sum(r.drafted for r in replies)
    return sum(r.accepted for r in replies) / drafted if drafted else None
