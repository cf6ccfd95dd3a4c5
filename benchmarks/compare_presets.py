"""Defaults vs the RTX 4090 guide card vs an exported preset, side by side in one process.

Interleaved A B C A B C ... for --rounds rounds, each a full measurement (each request shape's
depth, a warm-up request, 3 timed repetitions) on one loaded model, so drift on a shared machine
hits every configuration alike. The workload is the one the preset was tuned for (its
``measured.workload``) unless --workload or --prompt-tokens/--gen-tokens say otherwise. Prints
requests/min, decode and prompt speed and TTFT per configuration, the per-round ratios of the
tuned preset against the others; the last line is one JSON object.

    .venv/bin/python benchmarks/compare_presets.py --preset best.yaml [--rounds 5] [--workload rag]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.engine import Engine  # noqa: E402
from tuner.measure import measure  # noqa: E402
from tuner.preset import Preset  # noqa: E402
from tuner.stats import Stat  # noqa: E402
from tuner.study import baselines_for  # noqa: E402
from tuner.workload import Workload, load_profile  # noqa: E402

FIGURES = ("requests_per_min", "decode_tok_s", "prompt_tok_s", "ttft_ms")


def workload_for(preset: Preset, args: argparse.Namespace) -> Workload:
    """The workload to compare on: asked for, or the preset's own, or chat."""
    if args.prompt_tokens or args.gen_tokens:
        return Workload.single(args.prompt_tokens or 128, args.gen_tokens or 64, quality=False)
    if args.workload:
        return load_profile(args.workload, quality=False)
    recorded = preset.measured.get("workload")
    return Workload.from_dict({**recorded, "quality": False}) if recorded else load_profile("chat", quality=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, help="an exported preset (tune export NAME --out FILE)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workload", help="a workload profile name or file [default: the preset's own]")
    parser.add_argument("--prompt-tokens", type=int, help="instead: one request shape with this prompt")
    parser.add_argument("--gen-tokens", type=int, help="instead: one request shape generating this many tokens")
    args = parser.parse_args()

    preset = Preset.load(args.preset)
    workload = workload_for(preset, args)
    # The defaults at the preset's context and on its placement (a GPU preset's layers offloaded
    # in the defaults too): like for like.
    layers = preset.config().n_gpu_layers
    placement = preset.measured.get("placement") or ({"n_gpu_layers": layers} if layers else {})
    baselines = baselines_for(preset.config().n_ctx, placement=placement)
    configs = {"defaults": baselines["defaults"], "guide_card": baselines["guide_card"], "tuned": preset.config()}
    figures: dict[str, dict[str, list[float]]] = {name: {f: [] for f in FIGURES} for name in configs}
    print(f"workload {workload.name}: {workload.describe()}", flush=True)
    with Engine(preset.model) as engine:
        for round_ in range(args.rounds):
            for name, config in configs.items():  # A B C, every round
                result = measure(engine, config, workload)
                for figure in FIGURES:
                    figures[name][figure].append(getattr(result, figure).median)
            print(f"round {round_ + 1}/{args.rounds}: " + "  ".join(f"{n} {figures[n]['requests_per_min'][-1]:.1f} req/min" for n in configs), flush=True)

    print(f"\n{'config':<11} {'requests/min':>13} {'IQR':>6} {'decode tok/s':>13} {'prompt tok/s':>13} {'TTFT ms':>8}   samples (requests/min)")
    for name in configs:
        f = figures[name]
        stat = Stat.of(f["requests_per_min"])
        print(f"{name:<11} {stat.median:>13.2f} {stat.iqr:>6.2f} {statistics.median(f['decode_tok_s']):>13.1f} "
              f"{statistics.median(f['prompt_tok_s']):>13.0f} {statistics.median(f['ttft_ms']):>8.0f}   "
              + " ".join(f"{x:.2f}" for x in f["requests_per_min"]))
    ratios: dict[str, dict[str, Stat]] = {}
    for other in ("defaults", "guide_card"):
        ratios[other] = {f: Stat.of([t / o for t, o in zip(figures["tuned"][f], figures[other][f])]) for f in FIGURES}
        for figure in ("requests_per_min", "decode_tok_s", "prompt_tok_s"):
            per_round = ratios[other][figure]
            print(f"tuned / {other} ({figure}): median {per_round.median:.2f}x, IQR {per_round.iqr:.2f} "
                  f"(per round: {' '.join(f'{x:.2f}' for x in per_round.samples)})")
    print(json.dumps({
        "tuned_vs_defaults": round(ratios["defaults"]["requests_per_min"].median, 3),
        "tuned_vs_defaults_iqr": round(ratios["defaults"]["requests_per_min"].iqr, 3),
        "tuned_vs_guide": round(ratios["guide_card"]["requests_per_min"].median, 3),
        "tuned_vs_guide_iqr": round(ratios["guide_card"]["requests_per_min"].iqr, 3),
        "decode_vs_defaults": round(ratios["defaults"]["decode_tok_s"].median, 3),
        "prompt_vs_defaults": round(ratios["defaults"]["prompt_tok_s"].median, 3),
        "ttft_vs_defaults": round(ratios["defaults"]["ttft_ms"].median, 3),
        "medians": {name: {f: round(statistics.median(v), 2) for f, v in figures[name].items()} for name in configs},
        "workload": workload.name,
        "rounds": args.rounds,
        "preset": str(args.preset),
    }))


if __name__ == "__main__":
    main()
