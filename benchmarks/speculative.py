"""Speculative decoding on llama-server: each `--spec-type` against none, on text, side by side.

How much speculation pays depends on the text: it drafts tokens from n-grams the context already
holds, so an answer that quotes its prompt (a code edit) is where it can pay, free prose where it
can cost. So this sends real requests as written (default: workloads/code-edit.jsonl, code to
rewrite) and lets each answer end where the model ends it: greedy sampling (temperature 0, top_k
1), the request's own `stop` strings and `max_tokens`, end-of-generation *not* suppressed. (With
end-of-generation suppressed, a small model's text past its natural end is the prompt copied back
or a loop, which n-gram lookup predicts perfectly: figures from it are false.)

Servers: `llama-server -m MODEL -c N -np 1` as the baseline and the same with `--spec-type T` for
each type asked (its draft sizes at the binary's defaults), from one binary, started as a user would.
A fresh set of servers each round: ngram-mod keeps its n-gram pool across requests, and a server
that had seen a round's answers would predict them. Each round sends every request to every server,
one at a time, the servers' order rotated each round, after one untimed request per server.

Per round and server: tokens produced per second (the answers' tokens over the client's wall time
of the requests, prompt included: what the user waits for), the request time, the acceptance rate
(`timings.draft_n_accepted / draft_n`). Then each type's median ratio to none with its range over
the rounds, and whether each answer's text is identical to none's (greedy: it should be; where a
verification batch's numerics differ from one-token decoding it may not, and this says where).
Last, each request's median ratio (request time, none's over the type's) and its drafted and
accepted tokens: where a gain comes from (a small model's answer that loops is predicted perfectly).

    .venv/bin/python benchmarks/speculative.py [--requests FILE.jsonl] [--spec ngram-simple,ngram-mod] [--rounds 5]

With ``--preset P`` (a preset a llama-server study kept speculation in): does its claim hold for a
user who starts the exported command line? The servers are that line (`tune export --format
llama-server`, its last line) and the same settings without speculation, the requests the
preset's workload texts, the sampling the line's own (no sampling in the requests, a seed per
request, the same for both, as the study's speculation stage sends them). Prints the ratio beside
the one the preset claims (``measured.speculation``).

    .venv/bin/python benchmarks/speculative.py --preset code.yaml [--rounds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server_parity import post, start  # noqa: E402

from tuner.export import to_llama_server  # noqa: E402
from tuner.models import default_model_path  # noqa: E402
from tuner.preset import Preset  # noqa: E402
from tuner.server_flags import server_args  # noqa: E402
from tuner.server_binary import ServerBinary  # noqa: E402
from tuner.stats import Stat  # noqa: E402
from tuner.study.speculation import NONE, SEED  # noqa: E402
from tuner.user_requests import from_text, read_requests  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


GREEDY = {"temperature": 0.0, "top_k": 1}


def answer(port: int, prompt: str, max_tokens: int, stop: list[str], sampling: dict = GREEDY) -> dict:
    """One request (greedy unless ``sampling`` says otherwise), answered in full: its text, tokens,
    wall ms and the server's timings."""
    body = {"prompt": prompt, "n_predict": max_tokens, **sampling, "stop": stop, "cache_prompt": False, "stream": True}
    begin = time.perf_counter()
    events = [event for _, event in post(port, body)]
    timings = next((e["timings"] for e in events if e.get("timings")), {})
    return {"text": "".join(e.get("content", "") for e in events), "tokens": int(timings.get("predicted_n", 0)), "ms": (time.perf_counter() - begin) * 1000,
            "draft_n": int(timings.get("draft_n", 0)), "draft_accepted": int(timings.get("draft_n_accepted", 0))}


def one_round(commands: dict[str, list[str]], order: list[str], requests: list, seeds: list[int] | None = None) -> dict[str, list[dict]]:
    """Fresh servers, a warm-up request each, then every request to each server in ``order``
    (greedy, or the servers' own sampling with ``seeds``, one per request)."""
    servers = {label: start(commands[label]) for label in order}
    sampling = [GREEDY] * len(requests) if seeds is None else [{"seed": seed} for seed in seeds]
    try:
        for label in order:
            answer(servers[label][1], "Hello", 4, [])
        return {label: [answer(servers[label][1], r.prompt, r.max_tokens, list(r.stop), how) for r, how in zip(requests, sampling)] for label in order}
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", default=str(ROOT / "workloads" / "code-edit.jsonl"), help="JSONL of {prompt, max_tokens[, stop]}")
    parser.add_argument("--spec", default="ngram-simple,ngram-mod,ngram-map-k", help="comma-separated --spec-type values")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--server-bin", default=None)
    parser.add_argument("--preset", type=Path, default=None, help="check this preset's speculation claim instead")
    args = parser.parse_args()
    binary = ServerBinary.find(args.server_bin)
    if args.preset:
        commands, requests, claim = preset_commands(Preset.load(args.preset), binary.path)
        source = str(args.preset)
    else:
        model = str(default_model_path())
        requests, _ = read_requests(args.requests)
        base = [binary.path, "-m", model, "-c", str(args.n_ctx), "-np", "1"]
        commands = {"none": base, **{kind: [*base, "--spec-type", kind] for kind in args.spec.split(",")}}
        claim, source = None, args.requests
    if any(r.prompt is None for r in requests):
        raise SystemExit(f"{source}: this benchmark sends prompts as written; use {{prompt, max_tokens}} lines")
    rows: dict[str, list[list[dict]]] = {label: [] for label in commands}
    for number in range(args.rounds):
        labels = list(commands)
        order = labels[number % len(labels):] + labels[: number % len(labels)]
        seeds = None if claim is None else [SEED + number * len(requests) + i for i in range(len(requests))]
        for label, answers in one_round(commands, order, requests, seeds).items():
            rows[label].append(answers)
        print(f"round {number + 1}/{args.rounds} ({' '.join(order)}): " + "  ".join(
            f"{label} {tok_s(rows[label][-1]):.1f} tok/s" + (f" ({acceptance(rows[label][-1])})" if label != "none" else "")
            for label in commands), flush=True)
    summary = report(rows, commands, binary.version, source)
    if claim is not None:
        ratios = summary[list(commands)[1]]["ratios"]
        print(f"exported line / the same without speculation: {Stat.of(ratios).median:.2f}x tokens/s "
              f"(rounds {min(ratios):.2f}-{max(ratios):.2f}); the preset claims {claim['median']:.2f}x ({claim['low']:.2f}-{claim['high']:.2f})")


def preset_commands(preset: Preset, binary: str) -> tuple[dict[str, list[str]], list, dict]:
    """The exported line and the same settings without speculation; the workload's texts as
    requests; the worth the preset claims for its speculation."""
    kept = next((row for row in (preset.measured.get("speculation") or {}).get("candidates", []) if row.get("kept")), None)
    if kept is None:
        raise SystemExit("this preset keeps no speculation (measured.speculation): nothing to check")
    exported = shlex.split(to_llama_server(preset).strip().splitlines()[-1])
    without = ["-m", preset.model, *server_args(dataclasses.replace(preset.config(), **NONE))]
    texts = preset.measured["workload"].get("texts") or []
    return {"none": [binary, *without], kept["candidate"]: [binary, *exported[1:]]}, [from_text(t) for t in texts], kept["worth"]


def tok_s(answers: list[dict]) -> float:
    return sum(a["tokens"] for a in answers) / sum(a["ms"] for a in answers) * 1000


def acceptance(answers: list[dict]) -> str:
    """The share of drafted tokens accepted, in words ("nothing drafted" where none was)."""
    drafted = sum(a["draft_n"] for a in answers)
    return f"{sum(a['draft_accepted'] for a in answers) / drafted:.0%} of drafted tokens accepted" if drafted else "nothing drafted"


def report(rows: dict[str, list[list[dict]]], commands: dict[str, list[str]], version: str, source: str) -> dict[str, dict]:
    """Prints each candidate's ratio to none, per request, and the raw rounds as JSON; returns the
    per-candidate summary (its ``ratios`` round by round)."""
    none = rows["none"]
    summary = {}
    for label in commands:
        ratios = [tok_s(r) / tok_s(n) for r, n in zip(rows[label], none)]
        same = [a["text"] == b["text"] for r, n in zip(rows[label], none) for a, b in zip(r, n)]
        tokens = statistics.median(sum(a["tokens"] for a in r) for r in rows[label])
        stat = Stat.of(ratios)
        summary[label] = {"ratio": stat.median, "ratios": ratios, "identical": sum(same), "answers": len(same),
                          "drafted": sum(a["draft_n"] for a in rows[label][0]), "accepted": sum(a["draft_accepted"] for a in rows[label][0])}
        if label != "none":
            print(f"{label}: {stat.median:.2f}x none's tokens/s (rounds {min(ratios):.2f}-{max(ratios):.2f}), "
                  f"{acceptance(rows[label][0])}, "
                  f"text identical to none's in {sum(same)}/{len(same)} answers, {tokens:.0f} tokens a round")
    print(f"none: {statistics.median(tok_s(r) for r in none):.1f} tok/s median, {statistics.median(sum(a['tokens'] for a in r) for r in none):.0f} tokens a round")
    for index, first in enumerate(none[0]):  # where the gain comes from: each request's median ratio
        cells = []
        for label in list(commands)[1:]:
            ratio = statistics.median(n[index]["ms"] / r[index]["ms"] for r, n in zip(rows[label], none))
            accepted, drafted = rows[label][0][index]["draft_accepted"], rows[label][0][index]["draft_n"]
            cells.append(f"{label} {ratio:.2f}x ({accepted}/{drafted} accepted)")
        print(f"  request {index + 1}: {first['tokens']} tokens ({first['text'][:40]!r}...): " + ", ".join(cells))
    print(json.dumps({"binary": version, "requests": source, "commands": commands, "summary": summary,
                      "rounds": {label: [[{k: a[k] for k in ("tokens", "ms", "draft_n", "draft_accepted")} for a in r] for r in rows[label]] for label in rows}}))
    return summary


if __name__ == "__main__":
    main()
