"""Does the context size change speed at a given depth? n_ctx 512 vs 4096 (and more), interleaved.

The tool treats n_ctx as the application's requirement, not a knob to minimise (docs/how-a-study-works.md).
That rests on a measurable claim: in current llama.cpp, attention runs over the KV cells in use,
so a request at the same depth costs about the same in a larger context. This measures it: the
same settings (two threads, the rest llama-cpp-python's defaults) at each --n-ctx, every round
measuring each context once in a rotated order, on the chat workload's shapes (every shape fits in
the smallest context). Prints requests/min, decode and prompt speed and TTFT per context, the
per-round ratios to the first --n-ctx with their range; the last line is one JSON object.

    .venv/bin/python benchmarks/context_size.py [--rounds 7] [--n-ctx 512 4096 8192] [--workload chat]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.config import EngineConfig  # noqa: E402
from tuner.engine import Engine  # noqa: E402
from tuner.measure import measure  # noqa: E402
from tuner.models import default_model_path  # noqa: E402
from tuner.stats import Stat  # noqa: E402
from tuner.workload import load_profile  # noqa: E402

FIGURES = ("requests_per_min", "decode_tok_s", "prompt_tok_s", "ttft_ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--n-ctx", type=int, nargs="+", default=[512, 4096, 8192])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workload", default="chat")
    args = parser.parse_args()

    workload = load_profile(args.workload, quality=False)
    configs = {n: EngineConfig(n_ctx=n, n_threads=args.threads, n_threads_batch=args.threads) for n in args.n_ctx}
    figures = {n: {f: [] for f in FIGURES} for n in configs}
    print(f"workload {workload.name}: {workload.describe()}; n_ctx {', '.join(map(str, configs))}", flush=True)
    with Engine(default_model_path()) as engine:
        for round_ in range(args.rounds):
            order = list(configs)[round_ % len(configs):] + list(configs)[: round_ % len(configs)]
            for n in order:
                result = measure(engine, configs[n], workload)
                for figure in FIGURES:
                    figures[n][figure].append(getattr(result, figure).median)
            print(f"round {round_ + 1}/{args.rounds}: " + "  ".join(f"n_ctx {n} {figures[n]['requests_per_min'][-1]:.1f}" for n in configs), flush=True)

    base = args.n_ctx[0]
    print(f"\n{'n_ctx':>6} {'requests/min':>13} {'IQR':>6} {'decode':>7} {'prompt':>7} {'TTFT ms':>8}   ratio to n_ctx {base} (range)")
    ratios = {}
    for n in configs:
        s = {f: Stat.of(v) for f, v in figures[n].items()}
        ratio = Stat.of([a / b for a, b in zip(figures[n]["requests_per_min"], figures[base]["requests_per_min"])])
        ratios[n] = ratio
        print(f"{n:>6} {s['requests_per_min'].median:>13.2f} {s['requests_per_min'].iqr:>6.2f} {s['decode_tok_s'].median:>7.1f} "
              f"{s['prompt_tok_s'].median:>7.0f} {s['ttft_ms'].median:>8.0f}   {ratio.median:.3f}x ({min(ratio.samples):.3f}-{max(ratio.samples):.3f})")
    print(json.dumps({
        "workload": workload.name,
        "rounds": args.rounds,
        "threads": args.threads,
        "ratio_to_first": {str(n): {"median": round(r.median, 3), "low": round(min(r.samples), 3), "high": round(max(r.samples), 3)} for n, r in ratios.items()},
        "medians": {str(n): {f: round(Stat.of(v).median, 2) for f, v in figures[n].items()} for n in configs},
    }))


if __name__ == "__main__":
    main()
