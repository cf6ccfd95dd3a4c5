"""Parallel slots: N users at once on llama-server, `-np N` against `-np 1` and llama-server's default (auto), side by side.

N clients (threads) each hold a conversation of their own (the workload's text from another offset,
so no two share a prompt: tuner.measure.user_tokens, as in a study's requests at once) and send the
workload's request shapes one after another, all N starting together: each request carries its
depth + prompt tokens (what the slot it lands on still caches is not evaluated again: llama-server's
prompt cache), streamed, `ignore_eos` so each request is as long as its shape says. Time to first
token and the request time are the client's wall clock.

`-np 1 -c C` and `-np N -c N*C` give each slot the same context (llama-server splits `-c` among its
slots); `auto` is `-c C` alone, what a user who sets nothing else runs: 4 slots sharing one cache
of C cells (`-np -1`, a unified KV cache); `npN-shared` is `-np N -c C --kv-unified`, N slots
sharing C cells. Same binary, every other setting its own default,
started as a user would. Rounds alternate the order, after one untimed round on each.

Per round and server: throughput (requests / the time from the first request sent to the last
answer, per minute), goodput (the requests whose time to first token met --max-ttft-ms, per
minute: what users who give up after that wait get), TTFT median and worst. Then the median ratios
of -np N to each other server, of both, with their range over the rounds, and one JSON line.

    .venv/bin/python benchmarks/concurrency.py [--clients 4] [--rounds 5] [--max-ttft-ms 1000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from server_parity import post, start  # noqa: E402

from tuner.measure import WORKLOAD_TEXT, user_tokens  # noqa: E402
from tuner.models import default_model_path  # noqa: E402
from tuner.server_binary import ServerBinary  # noqa: E402
from tuner.stats import Stat  # noqa: E402
from tuner.workload import load_profile  # noqa: E402


def one_request(port: int, tokens: list[int], gen: int) -> tuple[float, float]:
    """(TTFT ms, request ms) of one streamed request."""
    begin = time.perf_counter()
    events = post(port, {"prompt": tokens, "n_predict": gen, "ignore_eos": True, "stream": True, "cache_prompt": True})
    arrivals = [t for t, event in events if event.get("content") or event.get("tokens")]
    return (arrivals[0] - begin) * 1000, (arrivals[-1] - begin) * 1000


def one_round(port: int, text: list[int], shapes: list, clients: int) -> tuple[float, list[float]]:
    """(seconds from the first request to the last answer, every request's TTFT ms)."""
    ttfts: list[float] = []
    lock = threading.Lock()
    gate = threading.Barrier(clients)

    def client(number: int) -> None:
        gate.wait()
        for shape in shapes:
            ttft, _ = one_request(port, user_tokens(text, number, shape.depth + shape.prompt), shape.gen)
            with lock:
                ttfts.append(ttft)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    begin = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - begin, ttfts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workload", default="chat")
    parser.add_argument("--n-ctx", type=int, default=4096, help="context each slot gets")
    parser.add_argument("--max-ttft-ms", type=float, default=1000.0)
    parser.add_argument("--server-bin", default=None)
    args = parser.parse_args()
    binary, model = ServerBinary.find(args.server_bin), str(default_model_path())
    shapes = list(load_profile(args.workload).shapes)
    n = args.clients
    commands = {
        "np1": [binary.path, "-m", model, "-c", str(args.n_ctx), "-np", "1"],
        "auto": [binary.path, "-m", model, "-c", str(args.n_ctx)],
        f"np{n}": [binary.path, "-m", model, "-c", str(args.n_ctx * n), "-np", str(n)],
        f"np{n}-shared": [binary.path, "-m", model, "-c", str(args.n_ctx), "-np", str(n), "--kv-unified"],
    }
    if n == 1:  # one slot shares nothing: -np 1 against auto
        commands.pop("np1-shared")
    servers = {label: start(command) for label, command in commands.items()}
    rows: dict[str, list[dict]] = {label: [] for label in servers}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", servers["np1"][1], timeout=60)
        conn.request("POST", "/tokenize", body=json.dumps({"content": WORKLOAD_TEXT, "add_special": True}))
        text = json.loads(conn.getresponse().read())["tokens"]
        for label in servers:  # warm-up, untimed
            one_round(servers[label][1], text, shapes, args.clients)
        for round_number in range(args.rounds):
            order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
            for label in order:
                seconds, ttfts = one_round(servers[label][1], text, shapes, args.clients)
                met = sum(t <= args.max_ttft_ms for t in ttfts)
                rows[label].append({"throughput": 60 * len(ttfts) / seconds, "goodput": 60 * met / seconds, "ttft_median": statistics.median(ttfts), "ttft_worst": max(ttfts)})
            print(f"round {round_number + 1}/{args.rounds} ({' '.join(order)}): " + "  ".join(
                f"{label} {r[-1]['throughput']:.1f} req/min, goodput {r[-1]['goodput']:.1f}, TTFT {r[-1]['ttft_median']:.0f}/{r[-1]['ttft_worst']:.0f} ms" for label, r in rows.items()))
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=10)
    many = f"np{args.clients}"
    summary = {}
    for base in (b for b in ("np1", "auto", f"{many}-shared") if b != many and b in rows):
        for figure in ("throughput", "goodput"):
            ratios = [m[figure] / o[figure] if o[figure] else float("inf") for m, o in zip(rows[many], rows[base])]
            finite = [r for r in ratios if r != float("inf")]
            stat = Stat.of(finite) if finite else None
            summary[f"{figure} vs {base}"] = ratios
            spread = f"{stat.median:.2f}x (rounds {min(finite):.2f}-{max(finite):.2f})" if stat else f"{base} met no target in any round"
            medians = {label: statistics.median(r[figure] for r in rows[label]) for label in rows}
            print(f"{figure}: -np {args.clients} / {base} = {spread}; medians {medians[many]:.1f} vs {medians[base]:.1f} requests/min")
    for label in rows:
        print(f"{label}: TTFT median {statistics.median(r['ttft_median'] for r in rows[label]):.0f} ms, worst {max(r['ttft_worst'] for r in rows[label]):.0f} ms")
    print(json.dumps({"binary": binary.version, "clients": args.clients, "max_ttft_ms": args.max_ttft_ms, "commands": commands, "rounds": rows, "ratios": summary}))


if __name__ == "__main__":
    main()
