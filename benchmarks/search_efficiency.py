"""How many trials do TPE, random search and grid search need to find a near-best configuration?

A throughput landscape is recorded once: every point of a grid over the CPU space's speed knobs,
measured on the real engine (one full measurement each, in shuffled order so drift does not line
up with any knob) and stored as data (benchmarks/data/landscape_cpu.json). Studies are then
replayed against it, noise-free, for many seeds: each trial's value is the recorded decode tok/s
of the grid point it suggests. Reported: trials until the best-so-far reaches 97% of the grid
optimum (median and spread over seeds; a seed that never gets there counts as budget + 1), for
the tool's objective (decode tok/s) and, from the same recording, for prompt tok/s, whose
landscape has more structure (batch sizes and n_threads_batch matter there, not for decode).

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
    from tuner.config import EngineConfig
    from tuner.space import to_config

    flash, kv = point["attn"].split("/")
    knobs = {k: v for k, v in point.items() if k != "attn"}
    config = to_config({**knobs, "flash_attn": flash == "on", "kv_type": kv, "n_gpu_layers": 0})
    assert isinstance(config, EngineConfig)
    return config


def record(path: Path, prompt_tokens: int, gen_tokens: int) -> None:
    from tuner.engine import Engine
    from tuner.hardware import describe_machine
    from tuner.measure import measure
    from tuner.workload import Workload
    from tuner.models import default_model_path

    points = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    random.Random(0).shuffle(points)
    workload = Workload.single(prompt_tokens, gen_tokens, repeats=3, quality=False)
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


def trials_to_target(sampler: object, table: dict[tuple, float], threshold: float, budget: int) -> int:
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
    return budget + 1  # censored: never got there within the budget


def samplers(seed: int) -> dict[str, object]:
    import optuna

    from tuner.study._storage import new_sampler

    return {
        "tpe": new_sampler(seed),  # exactly the tool's sampler: multivariate TPE, 10 startup trials
        "random": optuna.samplers.RandomSampler(seed=seed),
        "grid": optuna.samplers.GridSampler(GRID, seed=seed),  # every point once, shuffled
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", action="store_true", help="measure the landscape again on this machine (the token counts apply only then)")
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--gen-tokens", type=int, default=32)
    args = parser.parse_args()
    if args.record or not LANDSCAPE.exists():
        record(LANDSCAPE, args.prompt_tokens, args.gen_tokens)

    import optuna

    from tuner.workload import Workload

    optuna.logging.set_verbosity(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    data = json.loads(LANDSCAPE.read_text())
    print(f"landscape: {len(data['points'])} points recorded {data['recorded']} on {data['machine']} "
          f"(llama-cpp-python {data['llama_cpp_version']}, workload {Workload.from_dict(data['workload']).describe()})")
    result: dict[str, object] = {"points": len(data["points"]), "seeds": args.seeds}
    for objective in ("decode_tok_s", "prompt_tok_s"):
        table = {tuple(row["point"][k] for k in GRID): row[objective] for row in data["points"]}
        medians = replay(table, objective, args.seeds)
        prefix = "" if objective == "decode_tok_s" else "prompt_"
        for name, median in medians.items():
            result[f"{prefix}{name}_trials_to_97pct"] = median
    print(json.dumps(result))


def replay(table: dict[tuple, float], objective: str, seeds: int) -> dict[str, float]:
    """Median trials to 97% of the optimum per sampler, printed with their spread."""
    optimum = max(table.values())
    threshold = TARGET * optimum
    near = sum(v >= threshold for v in table.values())
    budget = len(table)
    print(f"\n{objective}: optimum {optimum:.1f}; {near} of {len(table)} points are within 97% of it (>= {threshold:.1f})")
    print(f"trials to reach 97% of the optimum over {seeds} seeds (budget {budget}; never = counted as {budget + 1}):")
    medians = {}
    for name in ("tpe", "random", "grid"):
        counts = [trials_to_target(samplers(seed)[name], table, threshold, budget) for seed in range(seeds)]
        q1, median, q3 = statistics.quantiles(counts, n=4, method="inclusive")
        medians[name] = statistics.median(counts)
        never = sum(c > budget for c in counts)
        print(f"  {name:<7} median {medians[name]:g}  IQR {q1:g}-{q3:g}  max {max(counts)}  never within budget: {never}/{seeds}")
    print(f"  (a uniform draw with replacement needs {len(table) / near:.1f} trials on average)")
    return medians


if __name__ == "__main__":
    main()
