"""How many trials do TPE, random search and grid search need to find a near-best configuration?

A throughput landscape is recorded once: every point of a grid over the CPU space's speed knobs,
measured on the real engine (one full measurement each, in shuffled order so drift does not line
up with any knob) and stored as data (benchmarks/data/landscape_cpu.json). Studies are then
replayed against it, noise-free, for many seeds: each trial's value is the recorded decode tok/s
of the grid point it suggests. Reported: trials until the best-so-far reaches 97% of the grid
optimum (median and spread over seeds).

Honest limits: the grid is coarse (2-4 values per knob); flash attention and KV type form one
categorical knob here (GridSampler needs a fixed space, the tool's space makes kv_type
conditional); sampling knobs are left at their defaults (the sampler is ~1% of a token's time);
the two baselines a real study runs first are not counted.

    .venv/bin/python benchmarks/search_efficiency.py            # replay the stored landscape
    .venv/bin/python benchmarks/search_efficiency.py --record   # measure it again here (~7 min)
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LANDSCAPE = Path(__file__).with_name("data") / "landscape_cpu.json"
GRID = {
    "n_threads": [1, 2],
    "n_threads_batch": [1, 2],
    "attn": ["off/f16", "on/f16", "on/q8_0"],
    "n_ctx": [512, 2048],
    "n_batch": [64, 512],
    "n_ubatch": [32, 512],
}
TARGET = 0.97


def _config(point: dict) -> object:
    from tuner.engine import EngineConfig
    from tuner.space import to_config

    flash, kv = point["attn"].split("/")
    knobs = {k: v for k, v in point.items() if k != "attn"}
    config = to_config({**knobs, "flash_attn": flash == "on", "kv_type": kv, "n_gpu_layers": 0})
    assert isinstance(config, EngineConfig)
    return config


def record(path: Path, prompt_tokens: int, gen_tokens: int) -> None:
    from tuner.engine import Engine
    from tuner.hardware import describe_machine
    from tuner.measure import Workload, measure
    from tuner.models import default_model_path

    points = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    random.Random(0).shuffle(points)
    workload = Workload(prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, repeats=3, quality=False)
    started = time.monotonic()
    rows = []
    with Engine(default_model_path()) as engine:
        for i, point in enumerate(points, 1):
            result = measure(engine, _config(point), workload)
            rows.append({"point": point, "decode_tok_s": round(result.decode_tok_s.median, 3), "prompt_tok_s": round(result.prompt_tok_s.median, 2)})
            eta = (time.monotonic() - started) / i * (len(points) - i)
            print(f"[{i:>3}/{len(points)}] {point} decode {rows[-1]['decode_tok_s']:.1f} tok/s   ETA {eta:.0f}s", flush=True)
    machine = describe_machine()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "machine": machine.summary(),
                "fingerprint": machine.fingerprint,
                "llama_cpp_version": machine.llama_cpp_version,
                "model": default_model_path().name,
                "workload": workload.to_dict(),
                "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "grid": GRID,
                "points": rows,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {path} ({len(rows)} points)")


def trials_to_target(sampler: object, table: dict[tuple, float], threshold: float, budget: int) -> int | None:
    """Trials a study with ``sampler`` needs until its best value reaches ``threshold``."""
    import optuna

    study = optuna.create_study(direction="maximize", sampler=sampler)
    best = 0.0
    for n in range(1, budget + 1):
        trial = study.ask()
        point = tuple(trial.suggest_categorical(k, v) for k, v in GRID.items())
        value = table[point]
        study.tell(trial, value)
        best = max(best, value)
        if best >= threshold:
            return n
    return None


def samplers(seed: int) -> dict[str, object]:
    import optuna

    from tuner.study import _sampler

    return {
        "tpe": _sampler(seed),  # exactly the tool's sampler: multivariate TPE, 10 startup trials
        "random": optuna.samplers.RandomSampler(seed=seed),
        "grid": optuna.samplers.GridSampler(GRID, seed=seed),  # every point once, shuffled
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help="measure the landscape again on this machine")
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--gen-tokens", type=int, default=32)
    args = parser.parse_args()
    if args.record or not LANDSCAPE.exists():
        record(LANDSCAPE, args.prompt_tokens, args.gen_tokens)

    import optuna

    optuna.logging.set_verbosity(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    data = json.loads(LANDSCAPE.read_text())
    table = {tuple(row["point"][k] for k in GRID): row["decode_tok_s"] for row in data["points"]}
    optimum = max(table.values())
    threshold = TARGET * optimum
    near = sum(v >= threshold for v in table.values())
    print(f"landscape: {len(table)} points recorded {data['recorded']} on {data['machine']} (llama-cpp-python {data['llama_cpp_version']})")
    print(f"optimum {optimum:.1f} decode tok/s; {near} of {len(table)} points are within 97% of it (>= {threshold:.1f})")
    budget = len(table)
    needed: dict[str, list[int | None]] = {name: [] for name in ("tpe", "random", "grid")}
    for seed in range(args.seeds):
        for name, sampler in samplers(seed).items():
            needed[name].append(trials_to_target(sampler, table, threshold, budget))
    summary = {}
    print(f"\ntrials to reach 97% of the optimum over {args.seeds} seeds (budget {budget} trials):")
    for name, counts in needed.items():
        reached = [c for c in counts if c is not None]
        median = statistics.median(reached) if reached else None
        q = statistics.quantiles(reached, n=4, method="inclusive") if len(reached) > 1 else [median, median, median]
        summary[name] = median
        print(
            f"  {name:<7} median {median}  IQR {q[0]}-{q[2]}  max {max(reached) if reached else '-'}"
            f"  never within budget: {counts.count(None)}/{len(counts)}"
        )
    expected_random = (len(table) + 1) / (near + 1)  # mean of the first hit without replacement
    print(f"  (a uniform draw without replacement needs {expected_random:.1f} trials on average)")
    print(
        json.dumps(
            {
                "tpe_trials_to_97pct": summary["tpe"],
                "random_trials_to_97pct": summary["random"],
                "grid_trials_to_97pct": summary["grid"],
                "points": len(table),
                "points_within_97pct": near,
                "optimum_decode_tok_s": optimum,
                "seeds": args.seeds,
            }
        )
    )


if __name__ == "__main__":
    main()
