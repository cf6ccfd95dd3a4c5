"""Does a llama-server preset's claim hold for a user who starts the exported command line?

Starts two servers as a user would: the line `tune export NAME --format llama-server` wrote (its
last line, with --port added), and llama-server's defaults at the preset's context
(`llama-server -m MODEL -c N`, nothing else), both from the same binary. A plain HTTP client
(http.client) sends the preset's workload to each, alternately, one request at a time: for each
request shape a priming request leaves its depth in the slot's prompt cache (as a previous turn
would), then the timed request sends depth + prompt tokens, streamed, `ignore_eos` so every
request is as long as its shape says. Time to first token and the request time are the client's
wall clock. Rounds alternate the order (P D, D P, ...).

Prints each round's requests/min of both and their ratio, the median ratio and its range beside
the ratio the preset claims, and one JSON line.

    .venv/bin/python benchmarks/server_parity.py --preset srv.yaml [--rounds 7] [--server-bin PATH]
"""

from __future__ import annotations

import argparse
import http.client
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.export import to_llama_server  # noqa: E402
from tuner.measure import WORKLOAD_TEXT, prompt_tokens  # noqa: E402
from tuner.preset import Preset  # noqa: E402
from tuner.server import free_port  # noqa: E402
from tuner.server_binary import ServerBinary  # noqa: E402
from tuner.stats import Stat  # noqa: E402
from tuner.workload import Workload, requests_per_min  # noqa: E402


def post(port: int, body: dict) -> list[tuple[float, dict]]:
    """(arrival time, JSON) of each streamed event of one request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", "/completion", body=json.dumps(body), headers={"Content-Type": "application/json"})
    reply = conn.getresponse()
    events = []
    for raw in reply:
        line = raw.strip()
        if line.startswith(b"data: "):
            events.append((time.perf_counter(), json.loads(line[6:])))
    if not body.get("stream"):
        events.append((time.perf_counter(), json.loads(reply.read() or b"{}")))
    conn.close()
    return events


def start(command: list[str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{command[0]} did not become ready")


def request_ms(port: int, tokens: list[int], depth: int, gen: int) -> tuple[float, float]:
    """(TTFT ms, request ms) of one streamed request after its depth was primed."""
    if depth:
        post(port, {"prompt": tokens[:depth], "n_predict": 0})
    begin = time.perf_counter()
    events = post(port, {"prompt": tokens, "n_predict": gen, "ignore_eos": True, "stream": True})
    arrivals = [t for t, event in events if event.get("content") or event.get("tokens")]
    return (arrivals[0] - begin) * 1000, (arrivals[-1] - begin) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True, type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--server-bin", default=None)
    args = parser.parse_args()
    preset = Preset.load(args.preset)
    binary = ServerBinary.find(args.server_bin)
    exported = shlex.split(to_llama_server(preset).strip().splitlines()[-1])
    commands = {"preset": [binary.path, *exported[1:]], "defaults": [binary.path, "-m", preset.model, "-c", str(preset.engine["n_ctx"])]}
    workload = Workload.from_dict(preset.measured["workload"])
    servers = {label: start(command) for label, command in commands.items()}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", servers["preset"][1], timeout=60)
        conn.request("POST", "/tokenize", body=json.dumps({"content": WORKLOAD_TEXT, "add_special": True}))
        text = json.loads(conn.getresponse().read())["tokens"]
        for label in servers:  # warm-up: one request of each shape, untimed
            for shape in workload.shapes:
                request_ms(servers[label][1], prompt_tokens(text, shape.depth + shape.prompt), shape.depth, shape.gen)
        rates: dict[str, list[float]] = {label: [] for label in servers}
        for round_number in range(args.rounds):
            order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
            for label in order:
                times = [request_ms(servers[label][1], prompt_tokens(text, s.depth + s.prompt), s.depth, s.gen)[1] for s in workload.shapes]
                rates[label].append(requests_per_min(times, workload.weights))
            ratio = rates["preset"][-1] / rates["defaults"][-1]
            print(f"round {round_number + 1}/{args.rounds} ({' '.join(order)}): preset {rates['preset'][-1]:.1f}  defaults {rates['defaults'][-1]:.1f}  ratio {ratio:.3f}")
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=10)
    ratios = Stat.of([p / d for p, d in zip(rates["preset"], rates["defaults"])])
    claim = preset.measured.get("vs_defaults")
    print(f"preset / llama-server's defaults: {ratios.median:.3f}x (rounds {min(ratios.samples):.3f}-{max(ratios.samples):.3f}); the preset claims {claim}x")
    print(json.dumps({"binary": binary.version, "commands": commands, "requests_per_min": rates, "ratio_median": ratios.median, "ratio_samples": ratios.samples, "claimed": claim}))


if __name__ == "__main__":
    main()
