"""Prompt-lookup speculation in llama-cpp-python against none, on text, side by side.

The llama-cpp-python sibling of benchmarks/speculative.py (llama-server). A plain
``llama_cpp.Llama(model_path, **engine)`` and the same with
``draft_model=LlamaPromptLookupDecoding(num_pred_tokens=N, max_ngram_size=K)`` for each lookup
asked, all loaded in this one process (:func:`tuner.replay.open_llama`). Each request of a JSONL
file is answered as written, on natural output (:func:`tuner.replay.replay`): end-of-generation not
suppressed, the request's own `stop` strings and `max_tokens`, greedy sampling (temperature 0) so
that the texts can be compared. With end-of-generation suppressed, a small model's text past its
natural end is the prompt copied back or a loop, which lookup predicts perfectly: 2.4-2.65x was
read that way on this project's machine, a false figure.

Rounds: one untimed request per engine, then every request to every engine, the engines in a
balanced order (tuner.study.noise.round_order: each first once, each after each other once). Per
round and engine: tokens produced per second of request time (prompt included: what the user
waits for), time to first token (``draft_model`` turns on logits for every prompt position,
``logits_all``: its cost shows here), the acceptance rate. Then each lookup's
median ratio to none with its range over the rounds, the TTFT ratio, whether every answer's text
is identical to none's, the scores array each Llama allocates (n_ctx x n_vocab float32 with
``logits_all``, n_batch x n_vocab without; its pages are touched as positions are used), and each
request's ratio: where a gain comes from.

    .venv/bin/python benchmarks/prompt_lookup.py [--requests FILE.jsonl] [--lookup 10x2,4x3] [--rounds 5] [--n-ctx 2048]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.config import EngineConfig  # noqa: E402
from tuner.models import default_model_path  # noqa: E402
from tuner.replay import Reply, acceptance, open_llama, replay  # noqa: E402
from tuner.stats import Stat  # noqa: E402
from tuner.study.noise import round_order  # noqa: E402
from tuner.study.speculation import tokens_per_s  # noqa: E402
from tuner.user_requests import read_requests, request_tokens  # noqa: E402
from tuner.vocab import Vocab  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def lookups(spec: str, config: EngineConfig) -> dict[str, EngineConfig]:
    """'10x2,4x3' -> {'lookup 10x2': config with 10 draft tokens from 2-grams, ...}."""
    found = {}
    for item in spec.split(","):
        tokens, _, ngram = item.partition("x")
        found[f"lookup {item}"] = replace(config, draft_tokens=int(tokens), draft_ngram=int(ngram or 2))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", default=str(ROOT / "workloads" / "code-edit.jsonl"), help="JSONL of requests (prompt or messages, max_tokens, stop)")
    parser.add_argument("--lookup", default="10x2", help="comma-separated DRAFTxNGRAM lookups (LlamaPromptLookupDecoding's num_pred_tokens x max_ngram_size)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=None, help="n_threads (default: llama-cpp-python's)")
    args = parser.parse_args()
    model = default_model_path()
    requests, _ = read_requests(args.requests)
    vocab = Vocab(model)
    texts = [(request_tokens(r, vocab), r.max_tokens, r.stop) for r in requests]
    config = EngineConfig(n_ctx=args.n_ctx, n_threads=args.threads, temperature=0.0, top_k=1)
    configs = {"none": config, **lookups(args.lookup, config)}
    engines = {label: open_llama(model, settings) for label, settings in configs.items()}
    for llm, counter in engines.values():  # the first eval on a new context reads wrong
        replay(llm, texts[0][0], 4, (), config, counter)
    rows: dict[str, list[list[Reply]]] = {label: [] for label in engines}
    for number in range(args.rounds):
        order = round_order(list(engines), number)
        for label in order:
            llm, counter = engines[label]
            rows[label].append([replay(llm, tokens, max_tokens, stop, config, counter) for tokens, max_tokens, stop in texts])
        print(f"round {number + 1}/{args.rounds} ({', '.join(order)}): " + "  ".join(f"{label} {tok_s(rows[label][-1]):.1f} tok/s" for label in engines), flush=True)
    report(rows, {label: llm.scores.nbytes for label, (llm, _) in engines.items()}, args.requests)


def tok_s(replies: list[Reply]) -> float:
    """The answers' tokens over their request time, each request counted once (the study's figure)."""
    return tokens_per_s(replies, [1.0] * len(replies))


def ttft(replies: list[Reply]) -> float:
    return statistics.mean(r.ttft_ms for r in replies)


def accepted(replies: list[Reply]) -> str:
    share = acceptance(replies)
    return "nothing drafted" if share is None else f"{share:.0%} of {sum(r.drafted for r in replies)} drafted tokens accepted"


def report(rows: dict[str, list[list[Reply]]], scores: dict[str, int], source: str) -> None:
    none = rows["none"]
    summary = {}
    print(f"none: {statistics.median(tok_s(r) for r in none):.1f} tok/s median, TTFT {statistics.median(ttft(r) for r in none):.0f} ms, "
          f"{statistics.median(sum(a.tokens for a in r) for r in none):.0f} tokens a round, scores array {scores['none'] / 2**20:.0f} MiB")
    for label in list(rows)[1:]:
        ratios = Stat.of([tok_s(r) / tok_s(n) for r, n in zip(rows[label], none)])
        ttft_ratios = Stat.of([ttft(r) / ttft(n) for r, n in zip(rows[label], none)])
        same = [a.text == b.text for r, n in zip(rows[label], none) for a, b in zip(r, n)]
        summary[label] = {"ratio": ratios.median, "ratios": ratios.samples, "ttft_ratio": ttft_ratios.median, "identical": sum(same), "answers": len(same),
                          "acceptance": acceptance(rows[label][0]), "scores_mib": scores[label] / 2**20}
        print(f"{label}: {ratios.median:.2f}x none's tokens/s (rounds {min(ratios.samples):.2f}-{max(ratios.samples):.2f}), "
              f"TTFT {ttft_ratios.median:.2f}x none's, {accepted(rows[label][0])}, text identical to none's in {sum(same)}/{len(same)} answers, "
              f"scores array {scores[label] / 2**20:.0f} MiB")
    for index, first in enumerate(none[0]):  # where the gain comes from: each request's median ratio
        cells = []
        for label in list(rows)[1:]:
            ratio = statistics.median(n[index].request_ms / r[index].request_ms for r, n in zip(rows[label], none))
            reply = rows[label][0][index]
            cells.append(f"{label} {ratio:.2f}x ({reply.accepted}/{reply.drafted} accepted)")
        print(f"  request {index + 1}: {first.tokens} tokens, {first.finish} ({first.text[:40]!r}...): " + ", ".join(cells))
    print(json.dumps({"requests": source, "summary": summary,
                      "rounds": {label: [[{"tokens": a.tokens, "ms": round(a.request_ms, 1), "ttft_ms": round(a.ttft_ms, 1), "drafted": a.drafted, "accepted": a.accepted} for a in r]
                                         for r in rows[label]] for label in rows}}))


if __name__ == "__main__":
    main()
