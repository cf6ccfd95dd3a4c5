"""Speculative decoding decided on the user's own text: each kind the engine has against none,
at the preset's settings, on natural output, in interleaved rounds; kept only when it beats none
beyond the noise.

Why a stage of its own and not a knob every trial searches: trials time the workload's shapes, a
fixed text for exactly ``gen`` tokens with end-of-generation suppressed, which compares settings
like with like. Speculation's worth lives in the text instead, and past its natural end a small
model copies its prompt or loops, which lookup predicts perfectly (2.4-2.65x read that way here:
false). On natural output (:mod:`tuner.replay`) answers end where the model ends them, so settings
whose numerics differ (flash attention, a quantized KV cache) give answers of other lengths and
trials would not compare like with like. Here every candidate runs at one configuration (the
minimal preset's, or the winner's without an ablation), on the same requests with the same seeds:
greedy answers are the same text (up to near-ties, tests/test_replay.py), sampled ones the same in
distribution (speculation keeps what the model samples), so a ratio is speed.

Candidates (:func:`candidates`): in llama-cpp-python, prompt lookup (``Llama(draft_model=...)``)
with its default 10 draft tokens from 2-grams and a shorter 4, each in a plain ``Llama`` opened
once; on llama-server, ``--spec-type ngram-simple`` and ``ngram-mod`` where the binary has the
flag, each round on a fresh server (ngram-mod keeps its n-gram pool across requests and would
predict a repeated answer). Each round sends every request (the workload's texts) to each
candidate in :func:`tuner.study.noise.round_order`; a round's figure is tokens per second over the
texts (the answers' tokens over their request time, prompt included, weighted as the shapes are).
Not requests per minute: sampled answers differ in length between candidates (speculation keeps
what the model would sample in distribution, not draw for draw), and on code edits with
llama-server ngram-mod read 1.41x none in requests/min where its answers were a quarter shorter.
A candidate is kept when :func:`tuner.study.noise.beats` says it beats none against the study's
noise floor; the fastest such goes into the preset.

A round's figure pools the requests, so one request can carry it: on questions, llama-server's
ngram-mod read 1.26x none while one answer that looped to max_tokens ran 1.65x and the others
1.06x, 0.97x and 0.78x. So each request's own ratio is kept too (:meth:`Speculation.per_request`),
and the decision's line says on how many requests the kept candidate is faster and slower.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tuner.config import EngineConfig
from tuner.errors import ConfigError, TunerError
from tuner.stats import Stat
from tuner.study._summary import summarize
from tuner.study.noise import beats, noise_floor, round_order
from tuner.workload import Workload

__all__ = ["LOOKUPS", "SPEC_TYPES", "Speculation", "candidates", "kept_speculation", "speculate", "stored_speculation"]

LOOKUPS = ((10, 2), (4, 2))  # llama-cpp-python: (draft tokens, longest n-gram), LlamaPromptLookupDecoding's default and shorter
SPEC_TYPES = ("ngram-simple", "ngram-mod")  # llama-server: the n-gram kinds that draft from the request itself
SEED = 1234  # each request's seed in round r is SEED + r x requests + i, the same for every candidate
NONE = {"draft_tokens": 0, "draft_ngram": 2, "spec_type": "none"}  # the settings of no speculation
Note = Callable[[str], None]


@dataclass
class Entry:
    """One candidate's readings: tokens per second per round, and what its answers were."""

    label: str
    settings: dict[str, Any] = field(default_factory=dict)  # what it changes from none (EngineConfig fields)
    rounds: list[float] = field(default_factory=list)  # tokens per second over the texts, per round
    ttft_ms: list[float] = field(default_factory=list)  # weighted mean time to first token
    tokens: list[int] = field(default_factory=list)  # tokens answered per round
    drafted: int = 0
    accepted: int = 0
    identical: int = 0  # answers whose tokens are none's
    answers: int = 0
    scores_mib: float = 0.0  # llama-cpp-python: the Llama's scores array (n_ctx x n_vocab float32 with a draft)
    requests: list[list[float]] = field(default_factory=list)  # per round, each request's tokens per second


@dataclass
class Speculation:
    """The stage's result: every candidate's readings, the one kept and why."""

    engine: str
    config: dict[str, Any]  # the settings every candidate ran with (no speculation)
    entries: list[Entry]
    kept: str  # "none" when nothing pays
    why: str
    rounds: int
    noise: float

    def entry(self, label: str) -> Entry:
        return next(e for e in self.entries if e.label == label)

    def ratios(self, label: str) -> list[float]:
        """``label``'s tokens per second over none's, round by round."""
        return [a / b for a, b in zip(self.entry(label).rounds, self.entry("none").rounds)]

    def per_request(self, label: str) -> list[float]:
        """``label``'s tokens per second over none's on each request: the median over the rounds
        (empty for a stage recorded before requests were)."""
        mine, none = self.entry(label).requests, self.entry("none").requests
        if not mine or len(mine) != len(none):
            return []
        ratios = []
        for i in range(len(mine[0])):  # a request none answered with no token at all has no rate to compare
            rounds = [a[i] / b[i] for a, b in zip(mine, none) if b[i] > 0]
            if rounds:
                ratios.append(statistics.median(rounds))
        return ratios

    def requests_beyond_noise(self, label: str) -> dict[str, Any] | None:
        """On how many requests ``label`` is faster and slower than none beyond the noise, and the
        range of the requests' own ratios; None below two requests."""
        ratios = self.per_request(label)
        if len(ratios) < 2:
            return None
        slower = [r for r in ratios if r < 1 - self.noise]
        return {"faster": sum(r > 1 + self.noise for r in ratios), "slower": len(slower), "of": len(ratios),
                "low": round(min(ratios), 3), "high": round(max(ratios), 3)}

    def spread(self, label: str) -> str:
        """The line's words for :meth:`requests_beyond_noise`: "1 of 4 requests faster, 1 slower
        (0.78x)"; "" below two requests."""
        counts = self.requests_beyond_noise(label)
        if counts is None:
            return ""
        words = f"{counts['faster']} of {counts['of']} requests faster, "
        return words + (f"{counts['slower']} slower ({counts['low']:.2f}x)" if counts["slower"] else "none slower")

    def table(self) -> list[dict[str, Any]]:
        """One row per candidate, as a preset carries it."""
        rows = []
        for e in self.entries[1:]:
            ratios, none = self.ratios(e.label), self.entry("none")
            rows.append({
                "candidate": e.label,
                "worth": {"median": round(Stat.of(ratios).median, 3), "low": round(min(ratios), 3), "high": round(max(ratios), 3)},
                "ttft_vs_none": round(statistics.median(a / b for a, b in zip(e.ttft_ms, none.ttft_ms)), 3),
                "acceptance": round(e.accepted / e.drafted, 3) if e.drafted else None,
                "identical_answers": f"{e.identical}/{e.answers}",
                **({"scores_mib": round(e.scores_mib)} if e.scores_mib else {}),
                **({"per_request": [round(r, 3) for r in self.per_request(e.label)], "requests": self.requests_beyond_noise(e.label)} if e.requests else {}),
                "kept": e.label == self.kept,
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "entries": [asdict(e) for e in self.entries]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Speculation:
        return cls(**{**data, "entries": [Entry(**e) for e in data["entries"]]})


def candidates(engine: str, flags: Any = ()) -> list[Entry]:
    """None, then what the engine can speculate with: prompt lookups in llama-cpp-python; on
    llama-server the n-gram types, where its ``--help`` (``flags``) lists ``--spec-type``."""
    if engine == "llama-cpp-python":
        return [Entry("none"), *(Entry(f"lookup {n}x{k}", {"draft_tokens": n, "draft_ngram": k}) for n, k in LOOKUPS)]
    if "--spec-type" not in flags:
        return [Entry("none")]
    return [Entry("none"), *(Entry(kind, {"spec_type": kind}) for kind in SPEC_TYPES)]


def speculate(study: Any, *, rounds: int, on_note: Note | None = None) -> float:
    """Decide speculation for the study's preset on the workload's texts; record the result in the
    study (user attr ``speculation``) and return the seconds spent. Says in one note why it does
    nothing: a workload of shapes only, a binary without speculation, no preset yet."""
    note = on_note or (lambda _: None)
    workload = Workload.from_dict(study.user_attrs["workload"])
    record = study.user_attrs.get("engine") or {"name": "llama-cpp-python"}
    if not workload.texts:
        note("speculation: not measured, the workload is request shapes without text (give your requests as .jsonl, or --workload code-edit)")
        return 0.0
    summary = summarize(study)
    start = summary.ablation.minimal if summary.ablation is not None else (summary.best.config if summary.best else None)
    if start is None or rounds < 1:
        return 0.0
    clock = time.monotonic()
    config = replace(EngineConfig.from_dict(start), **NONE)
    try:
        open_candidate, flags = _opener(study.user_attrs["model_path"], record)
        entries = candidates(record["name"], flags)
        if len(entries) == 1:
            note(f"speculation: not measured, {record.get('path', record['name'])} has no --spec-type")
            return 0.0
        result = measure_speculation(study.user_attrs["model_path"], open_candidate, config, workload, entries, rounds=rounds, noise=noise_floor(study), note=note)
    except (TunerError, ValueError, RuntimeError) as exc:  # llama-cpp-python raises the latter two
        note(f"speculation: not decided, the measurement failed ({exc}); the preset goes without")
        return time.monotonic() - clock
    result.engine = record["name"]
    study.set_user_attr("speculation", result.to_dict())
    note(f"speculation: {result.why}")
    return time.monotonic() - clock


def _opener(model: str, record: dict[str, Any]) -> tuple[Callable[[EngineConfig], Any], Any]:
    """How a candidate is opened for a round on the study's engine, and the engine's flags."""
    if record["name"] == "llama-cpp-python":
        return (lambda config: llama_candidate(model, config)), ()
    from tuner.server import ServerEngine
    from tuner.server_binary import ServerBinary

    binary = ServerBinary.find(record.get("path"))
    engine = ServerEngine(model, binary)
    engine.lacks = dict(record.get("lacks") or {})
    return (lambda config: server_candidate(engine, config)), binary.flags


def measure_speculation(
    model: str, open_candidate: Callable[[EngineConfig], Any], config: EngineConfig, workload: Workload, entries: list[Entry], *, rounds: int, noise: float, note: Note
) -> Speculation:
    """Each of ``entries`` at ``config`` on ``workload.texts``: ``rounds`` interleaved rounds, each
    candidate opened for the round by ``open_candidate`` (a context manager yielding an
    :class:`Answerer`) and warmed up by one short untimed request; the decision against ``noise``."""
    from tuner.user_requests import from_text, request_tokens
    from tuner.vocab import Vocab

    with Vocab(model) as vocab:
        texts = [(request_tokens(r, vocab), r.max_tokens, r.stop) for r in (from_text(t) for t in workload.texts)]
    if max(len(tokens) + max_tokens for tokens, max_tokens, _ in texts) > config.n_ctx > 0:
        raise ConfigError(f"a request of the workload does not fit n_ctx={config.n_ctx}", "raise n_ctx to what your requests need")
    weights = [float(text.get("weight", 1.0)) for text in workload.texts]
    weights = [w / sum(weights) for w in weights]
    for r in range(rounds):
        answers = {}
        for entry in round_order(entries, r):
            with open_candidate(replace(config, **entry.settings)) as answer:
                answer(texts[0][0], 4, (), SEED)  # the first eval on a new context reads wrong
                replies = [answer(t, n, stop, SEED + r * len(texts) + i) for i, (t, n, stop) in enumerate(texts)]
                entry.scores_mib = getattr(answer, "scores_mib", 0.0)
            answers[entry.label] = replies
            entry.rounds.append(tokens_per_s(replies, weights))
            entry.ttft_ms.append(sum(w * x.ttft_ms for w, x in zip(weights, replies)))
            entry.tokens.append(sum(x.tokens for x in replies))
            entry.requests.append([x.tokens / x.request_ms * 1000 for x in replies])
            entry.drafted += sum(x.drafted for x in replies)
            entry.accepted += sum(x.accepted for x in replies)
        for entry in entries:
            entry.identical += sum(a.ids == b.ids for a, b in zip(answers[entry.label], answers["none"]))
            entry.answers += len(texts)
        note(f"speculation round {r + 1}/{rounds}: none {entries[0].rounds[-1]:.1f} tok/s, "
             + ", ".join(f"{e.label} {e.rounds[-1] / entries[0].rounds[-1]:.2f}x" for e in entries[1:]))
    return decide(config, entries, rounds, noise)


def tokens_per_s(replies: list[Any], weights: list[float]) -> float:
    """The answers' tokens over their request time (prompt included), each request weighted."""
    return sum(w * x.tokens for w, x in zip(weights, replies)) / sum(w * x.request_ms for w, x in zip(weights, replies)) * 1000


class Answerer:
    """A candidate opened for a round: called with (tokens, max_tokens, stop, seed), it answers one
    request on natural output (a :class:`tuner.replay.Reply`)."""

    def __init__(self, answer: Callable[[list[int], int, tuple[str, ...], int], Any], scores_mib: float = 0.0) -> None:
        self.answer, self.scores_mib = answer, scores_mib

    def __call__(self, tokens: list[int], max_tokens: int, stop: tuple[str, ...], seed: int) -> Any:
        return self.answer(tokens, max_tokens, stop, seed)


@contextmanager
def llama_candidate(model: str, config: EngineConfig) -> Iterator[Answerer]:
    """A plain ``Llama`` for ``config`` (its draft model too), as a preset user builds it."""
    from tuner.replay import open_llama, replay

    llm, counter = open_llama(model, config)
    try:
        yield Answerer(lambda t, n, stop, seed: replay(llm, t, n, stop, replace(config, seed=seed), counter), llm.scores.nbytes / 2**20)
    finally:
        llm.close()


@contextmanager
def server_candidate(engine: Any, config: EngineConfig) -> Iterator[Answerer]:
    """A fresh llama-server for ``config`` (its ``--spec-type`` too), stopped after the round."""
    from tuner.replay import replay_server

    with engine.session(config) as session:
        yield Answerer(lambda t, n, stop, seed: replay_server(session, t, n, stop, seed))


def decide(config: EngineConfig, entries: list[Entry], rounds: int, noise: float, engine: str = "llama-cpp-python") -> Speculation:
    """Keep the fastest candidate that beats none beyond the noise (:func:`beats`), else none.
    The reason is one short line; each candidate's figures are in :meth:`Speculation.table`."""
    result = Speculation(engine=engine, config=config.to_dict(), entries=entries, kept="none", why="", rounds=rounds, noise=noise)
    medians = {e.label: Stat.of(result.ratios(e.label)).median for e in entries[1:]}
    winners = [label for label in medians if beats(result.ratios(label), noise)]
    best = max(winners or medians, key=medians.__getitem__)
    entry, ratios = result.entry(best), result.ratios(best)
    accepted = f"{entry.accepted / entry.drafted:.0%} of drafts accepted" if entry.drafted else "nothing drafted"
    figures = f"{medians[best]:.2f}x none ({min(ratios):.2f}-{max(ratios):.2f}, {accepted})"
    spread = result.spread(best)
    if winners:
        result.kept = best
        result.why = f"kept {best}: {figures}, beyond the noise ±{noise:.1%} in {rounds} rounds" + (f"; {spread}" if spread else "")
    else:
        result.why = f"none kept: nothing beats none beyond the noise ±{noise:.1%} (best {best} {figures})"
    return result


def stored_speculation(study: Any) -> Speculation | None:
    """The study's speculation stage, when it ran."""
    stored = study.user_attrs.get("speculation")
    return Speculation.from_dict(stored) if stored else None


def kept_speculation(study: Any, config: EngineConfig) -> tuple[EngineConfig, Speculation | None]:
    """``config`` with the speculation the study kept, when the stage measured it at these
    settings (speculation aside); else unchanged. Also the stage's result, for the preset."""
    result = stored_speculation(study)
    if result is None:
        return config, None
    if EngineConfig.from_dict(result.config).effective() != replace(config, **NONE).effective():
        return config, None  # measured at other settings (the minimal preset's, this is the full winner)
    if result.kept == "none":
        return config, result
    return replace(config, **result.entry(result.kept).settings), result
