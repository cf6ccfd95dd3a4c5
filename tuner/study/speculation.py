"""Speculative decoding decided on the user's own text: prompt lookup against none at the
preset's settings, on natural output, in interleaved rounds; kept only when it beats none beyond
the noise.

Why a stage of its own and not a knob every trial searches: trials time the workload's shapes, a
fixed text for exactly ``gen`` tokens with end-of-generation suppressed, which compares settings
like with like. Speculation's worth lives in the text instead, and past its natural end a small
model copies its prompt or loops, which lookup predicts perfectly (2.4-2.65x read that way here:
false). On natural output (:mod:`tuner.replay`) answers end where the model ends them, so settings
whose numerics differ (flash attention, a quantized KV cache) give answers of other lengths and
trials would not compare like with like. Here every candidate runs at one configuration (the
minimal preset's, or the winner's without an ablation), on the same requests with the same seeds,
so the answers are the same text (lossless up to near-ties, see tests/test_replay.py) and a ratio
is speed alone.

Candidates (:data:`LOOKUPS`): llama-cpp-python's default lookup, 10 draft tokens from 2-grams, and
a shorter draft, 4. Each round sends every request (the workload's texts) to each engine in
:func:`tuner.study.noise.round_order`; a round's figure is requests per minute over the texts,
weighted as the shapes are. A lookup is kept when :func:`tuner.study.noise.beats` says it beats
none against the study's noise floor; the fastest such is the preset's draft.

llama-cpp-python only, in this process (a plain ``Llama`` per candidate, as a preset user builds
it). With llama-server the study says so: benchmarks/speculative.py measures ``--spec-type`` there.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from tuner.config import EngineConfig
from tuner.errors import ConfigError, TunerError
from tuner.stats import Stat
from tuner.study._summary import summarize
from tuner.study.noise import beats, noise_floor, round_order
from tuner.workload import Workload, requests_per_min

__all__ = ["LOOKUPS", "Speculation", "kept_draft", "speculate"]

LOOKUPS = ((10, 2), (4, 2))  # (draft tokens, longest n-gram): LlamaPromptLookupDecoding's default, and shorter
SEED = 1234  # each request's seed in round r is SEED + r x requests + i, the same for every candidate
Note = Callable[[str], None]


@dataclass
class Entry:
    """One candidate's readings: requests/min per round, and what its answers were."""

    label: str
    draft_tokens: int = 0
    draft_ngram: int = 2
    rounds: list[float] = field(default_factory=list)  # requests per minute over the texts
    ttft_ms: list[float] = field(default_factory=list)  # weighted mean time to first token
    tokens: list[int] = field(default_factory=list)  # tokens answered per round
    drafted: int = 0
    accepted: int = 0
    identical: int = 0  # answers whose text is none's
    answers: int = 0
    scores_mib: float = 0.0  # the Llama's scores array (n_ctx x n_vocab float32 with a draft)


@dataclass
class Speculation:
    """The stage's result: every candidate's readings, the one kept and why."""

    config: dict[str, Any]  # the settings every candidate ran with (no draft)
    entries: list[Entry]
    kept: str  # "none" when no lookup pays
    why: str
    rounds: int
    noise: float

    def entry(self, label: str) -> Entry:
        return next(e for e in self.entries if e.label == label)

    def ratios(self, label: str) -> list[float]:
        """``label``'s requests/min over none's, round by round."""
        return [a / b for a, b in zip(self.entry(label).rounds, self.entry("none").rounds)]

    def table(self) -> list[dict[str, Any]]:
        """One row per lookup, as a preset and `tune show` carry it."""
        rows = []
        for e in self.entries[1:]:
            ratios, none = self.ratios(e.label), self.entry("none")
            rows.append({
                "draft": f"{e.draft_tokens} tokens from {e.draft_ngram}-grams",
                "worth": {"median": round(Stat.of(ratios).median, 3), "low": round(min(ratios), 3), "high": round(max(ratios), 3)},
                "ttft_vs_none": round(statistics.median(a / b for a, b in zip(e.ttft_ms, none.ttft_ms)), 3),
                "acceptance": round(e.accepted / e.drafted, 3) if e.drafted else None,
                "identical_text": f"{e.identical}/{e.answers}",
                "scores_mib": round(e.scores_mib),
                "kept": e.label == self.kept,
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "entries": [asdict(e) for e in self.entries]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Speculation:
        return cls(**{**data, "entries": [Entry(**e) for e in data["entries"]]})


def speculate(study: Any, *, rounds: int, on_note: Note | None = None) -> float:
    """Decide speculation for the study's preset on the workload's texts; record the result in the
    study (user attr ``speculation``) and return the seconds spent. Says in one note why it does
    nothing: a workload of shapes only, the llama-server engine, no preset yet."""
    note = on_note or (lambda _: None)
    workload = Workload.from_dict(study.user_attrs["workload"])
    engine = (study.user_attrs.get("engine") or {}).get("name", "llama-cpp-python")
    if not workload.texts:
        note("speculation: not measured, the workload is request shapes without text (give your requests as .jsonl, or --workload code-edit)")
        return 0.0
    if engine != "llama-cpp-python":
        note(f"speculation: not decided on {engine} by the study yet (benchmarks/speculative.py measures --spec-type on your requests)")
        return 0.0
    summary = summarize(study)
    start = summary.ablation.minimal if summary.ablation is not None else (summary.best.config if summary.best else None)
    if start is None:
        return 0.0
    clock = time.monotonic()
    config = replace(EngineConfig.from_dict(start), draft_tokens=0)
    try:
        result = measure_speculation(study.user_attrs["model_path"], config, workload, rounds=rounds, noise=noise_floor(study), note=note)
    except (TunerError, ValueError, RuntimeError) as exc:  # llama-cpp-python raises the latter two
        note(f"speculation: not decided, the measurement failed ({exc}); the preset goes without")
        return time.monotonic() - clock
    study.set_user_attr("speculation", result.to_dict())
    note(f"speculation: {result.why}")
    return time.monotonic() - clock


def measure_speculation(model: str, config: EngineConfig, workload: Workload, *, rounds: int, noise: float, note: Note) -> Speculation:
    """None and each of :data:`LOOKUPS` at ``config`` on ``workload.texts``, ``rounds`` interleaved
    rounds after one untimed request each; the decision against ``noise``."""
    from tuner.replay import open_llama, replay
    from tuner.user_requests import from_text, request_tokens
    from tuner.vocab import Vocab

    with Vocab(model) as vocab:
        requests = [from_text(text) for text in workload.texts]
        texts = [(request_tokens(r, vocab), r.max_tokens, r.stop) for r in requests]
    if max(len(tokens) + max_tokens for tokens, max_tokens, _ in texts) > config.n_ctx > 0:
        raise ConfigError(f"a request of the workload does not fit n_ctx={config.n_ctx}", "raise n_ctx to what your requests need")
    weights = [float(text.get("weight", 1.0)) for text in workload.texts]
    weights = [w / sum(weights) for w in weights]
    entries = [Entry("none"), *(Entry(f"lookup {n}x{k}", n, k) for n, k in LOOKUPS)]
    engines = {e.label: open_llama(model, replace(config, draft_tokens=e.draft_tokens, draft_ngram=e.draft_ngram)) for e in entries}
    try:
        for llm, counter in engines.values():  # the first eval on a new context reads wrong
            replay(llm, texts[0][0], 4, (), config, counter)
        for r in range(rounds):
            answers = {}
            for entry in round_order(entries, r):
                llm, counter = engines[entry.label]
                replies = [replay(llm, t, n, stop, replace(config, seed=SEED + r * len(texts) + i), counter) for i, (t, n, stop) in enumerate(texts)]
                answers[entry.label] = replies
                entry.rounds.append(requests_per_min([x.request_ms for x in replies], weights))
                entry.ttft_ms.append(sum(w * x.ttft_ms for w, x in zip(weights, replies)))
                entry.tokens.append(sum(x.tokens for x in replies))
                entry.drafted += sum(x.drafted for x in replies)
                entry.accepted += sum(x.accepted for x in replies)
            for entry in entries:
                entry.identical += sum(a.ids == b.ids for a, b in zip(answers[entry.label], answers["none"]))
                entry.answers += len(texts)
            note(f"speculation round {r + 1}/{rounds}: none {entries[0].rounds[-1]:.1f} requests/min, "
                 + ", ".join(f"{e.label} {e.rounds[-1] / entries[0].rounds[-1]:.2f}x" for e in entries[1:]))
        for entry in entries:
            entry.scores_mib = engines[entry.label][0].scores.nbytes / 2**20
    finally:
        for llm, _ in engines.values():
            llm.close()
    return decide(config, entries, rounds, noise)


def decide(config: EngineConfig, entries: list[Entry], rounds: int, noise: float) -> Speculation:
    """Keep the fastest lookup that beats none beyond the noise (:func:`beats`), else none."""
    result = Speculation(config=config.to_dict(), entries=entries, kept="none", why="", rounds=rounds, noise=noise)
    winners = [e for e in entries[1:] if beats(result.ratios(e.label), noise)]
    parts = []
    for e in entries[1:]:
        ratios = result.ratios(e.label)
        accepted = f"{e.accepted / e.drafted:.0%} of drafts accepted" if e.drafted else "nothing drafted"
        parts.append(f"{e.label} {Stat.of(ratios).median:.2f}x none ({min(ratios):.2f}-{max(ratios):.2f}, {accepted})")
    if winners:
        best = max(winners, key=lambda e: Stat.of(result.ratios(e.label)).median)
        result.kept = best.label
        result.why = f"kept {best.label} ({'; '.join(parts)}; {rounds} interleaved rounds on your requests' text)"
    else:
        result.why = f"none kept, no lookup beats none beyond the noise ±{noise:.1%} ({'; '.join(parts)})"
    return result


def kept_draft(study: Any, config: EngineConfig) -> tuple[EngineConfig, Speculation | None]:
    """``config`` with the draft the study kept, when the stage measured it at these settings
    (the draft aside); else unchanged. Also the stage's result, for the preset's figures."""
    stored = study.user_attrs.get("speculation")
    if not stored:
        return config, None
    result = Speculation.from_dict(stored)
    if EngineConfig.from_dict(result.config).effective() != replace(config, draft_tokens=0, draft_ngram=2).effective():
        return config, None  # measured at other settings (the minimal preset's, this is the full winner)
    if result.kept == "none":
        return config, result
    entry = result.entry(result.kept)
    return replace(config, draft_tokens=entry.draft_tokens, draft_ngram=entry.draft_ngram), result
