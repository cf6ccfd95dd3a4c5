"""What does restoring a depth, instead of prefilling it again, save a trial, and does it change
what the trial measures?

A measurement moves between its shapes (every shape's first repetition, then the second, the
last shape first, then the rest), so with the chat profile each of its two depths was evaluated
twice a trial: 896 untimed tokens where 448 hold the cache's content. The session now saves a
depth's KV state after its first prefill and restores it on later visits
(tuner.engine.Session.enter_depth). This measures full trials both ways, in a racing study's
order of repetitions (racing on, as in `make tune`, with a bound that stops nothing) (the old way: the state
limit set to 0, every visit prefilled), interleaved in alternating order on the same loaded
model, and prints per way the median prefill seconds and trial seconds, the objective, and the
ratios with their range over the rounds; the last line is one JSON object with the raw samples.

    .venv/bin/python benchmarks/depth_restore.py [--rounds 8] [--workload chat] [--n-threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import tuner.engine  # noqa: E402
from tuner.config import EngineConfig  # noqa: E402
from tuner.engine import Engine  # noqa: E402
from tuner.measure import RaceBound, measure  # noqa: E402
from tuner.models import default_model_path  # noqa: E402
from tuner.workload import load_profile  # noqa: E402

WAYS = {"prefill again": 0, "restore": tuner.engine.DEPTH_STATE_LIMIT}
# A racing study's order of repetitions (the first of each shape, the second, then the rest), with
# a bound that stops nothing: every trial of a `make tune` study that racing does not stop runs so.
RACING_ORDER = RaceBound(below=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--workload", default="chat")
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--n-threads", type=int, default=2)
    args = parser.parse_args()
    workload = load_profile(args.workload, quality=False)
    config = EngineConfig(n_ctx=args.n_ctx, n_threads=args.n_threads, n_threads_batch=args.n_threads)
    engine = Engine(default_model_path())
    samples: dict[str, dict[str, list[float]]] = {way: {"prefill_s": [], "trial_s": [], "requests_per_min": []} for way in WAYS}
    measure(engine, config, workload)  # untimed: the model loaded and the machine warm
    for r in range(args.rounds):
        for way in list(WAYS) if r % 2 == 0 else list(WAYS)[::-1]:  # neither always first
            tuner.engine.DEPTH_STATE_LIMIT = WAYS[way]
            start = time.perf_counter()
            result = measure(engine, config, workload, race=RACING_ORDER)
            samples[way]["trial_s"].append(time.perf_counter() - start)
            samples[way]["prefill_s"].append(result.seconds["prefill"])
            samples[way]["requests_per_min"].append(result.requests_per_min.median)
    for way, figures in samples.items():
        print(f"{way:>13}: " + "  ".join(f"{name} {statistics.median(values):.2f}" for name, values in figures.items()))
    for name in ("prefill_s", "trial_s", "requests_per_min"):
        ratios = [new / old for new, old in zip(samples["restore"][name], samples["prefill again"][name])]
        print(f"restore / prefill again, {name}: {statistics.median(ratios):.3f}x (range {min(ratios):.3f}-{max(ratios):.3f}, {len(ratios)} rounds)")
    print(json.dumps({"workload": args.workload, "config": config.to_dict(), "samples": samples}))


if __name__ == "__main__":
    main()
