"""Defaults vs the RTX 4090 guide card vs an exported preset, side by side in one process.

Interleaved A B C A B C ... for --rounds rounds, each a full measurement (warm-up pass + repetitions)
on one loaded model, so drift on a shared machine hits every configuration alike. Prints medians,
IQRs and per-round ratios; the last line is one JSON object.

    .venv/bin/python benchmarks/compare_presets.py --preset best.yaml [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.engine import Engine  # noqa: E402
from tuner.measure import Workload, measure  # noqa: E402
from tuner.preset import Preset  # noqa: E402
from tuner.stats import Stat  # noqa: E402
from tuner.study import BASELINES  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, help="an exported preset (tune export NAME --out FILE)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--gen-tokens", type=int, default=64)
    args = parser.parse_args()

    preset = Preset.load(args.preset)
    configs = {"defaults": BASELINES["defaults"], "guide_card": BASELINES["guide_card"], "tuned": preset.config()}
    workload = Workload(prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens, repeats=3, quality=False)
    decode: dict[str, list[float]] = {name: [] for name in configs}
    prompt: dict[str, list[float]] = {name: [] for name in configs}
    with Engine(preset.model) as engine:
        for round_ in range(args.rounds):
            for name, config in configs.items():  # A B C, every round
                result = measure(engine, config, workload)
                decode[name].append(result.decode_tok_s.median)
                prompt[name].append(result.prompt_tok_s.median)
            print(f"round {round_ + 1}/{args.rounds}: " + "  ".join(f"{n} {decode[n][-1]:.1f}" for n in configs), flush=True)

    print(f"\n{'config':<11} {'decode tok/s median':>20} {'IQR':>6} {'prompt tok/s median':>20}   samples (decode)")
    for name in configs:
        stat = Stat.of(decode[name])
        print(f"{name:<11} {stat.median:>20.1f} {stat.iqr:>6.1f} {statistics.median(prompt[name]):>20.0f}   "
              + " ".join(f"{x:.1f}" for x in decode[name]))
    ratios = {}
    for other in ("defaults", "guide_card"):
        per_round = Stat.of([t / o for t, o in zip(decode["tuned"], decode[other])])
        ratios[other] = per_round
        print(f"tuned / {other}: median {per_round.median:.2f}x, IQR {per_round.iqr:.2f} "
              f"(per round: {' '.join(f'{x:.2f}' for x in per_round.samples)})")
    print(json.dumps({
        "tuned_vs_defaults": round(ratios["defaults"].median, 3),
        "tuned_vs_defaults_iqr": round(ratios["defaults"].iqr, 3),
        "tuned_vs_guide": round(ratios["guide_card"].median, 3),
        "tuned_vs_guide_iqr": round(ratios["guide_card"].iqr, 3),
        "decode_tok_s": {name: round(Stat.of(values).median, 2) for name, values in decode.items()},
        "rounds": args.rounds,
        "preset": str(args.preset),
    }))


if __name__ == "__main__":
    main()
