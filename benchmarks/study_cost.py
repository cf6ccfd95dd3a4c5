"""What the study's economies save, and what they cost the result.

The same study (same seed, workload, search space and trial count; quality on, confirmation on)
is run twice in this process, each through a worker process as `tune start` runs it: with the
economies off (`--no-racing --no-cache`: every trial measured fully, the quality proxy's logits
computed for every trial) and on (the default). The quality cache starts empty for both (a fresh
cache directory), as on a first `make tune`.

For each run it prints the wall time, the trials stopped early, the quality figures taken from the
cache, where the time went, the confirmed winner against the defaults, and how close the ETA
printed after trials 5, 10 and 25 came to the real end. The last line is one JSON object with
``study_time_ratio`` (off/on) and both confirmed ratios.

The two runs are sequential, not interleaved (a study is the unit); run it on a quiet machine,
and read the confirmed ratios with their round ranges: each confirmation measures the defaults
beside its winner in the same rounds, so the ratios are paired even though the runs are not.

    .venv/bin/python benchmarks/study_cost.py [--trials 50] [--seed 1] [--workload chat] [--order off-on]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def run_study(label: str, economies, args, storage_dir: Path) -> dict:
    """One study, start to confirmation, in a fresh quality cache; its figures."""
    os.environ["TUNER_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"study-cost-{label}-")  # read when a worker starts
    from tuner.hardware import describe_machine
    from tuner.models import default_model_path, model_sha256
    from tuner.placement import choose_space
    from tuner.study import StudySpec, open_storage, start_study, summarize
    from tuner.worker import Worker
    from tuner.workload import load_profile

    machine = describe_machine()
    space, _ = choose_space(machine)
    model = default_model_path()
    spec = StudySpec(
        model=model,
        model_sha256=model_sha256(model),
        space=space,
        workload=load_profile(args.workload),
        trials=args.trials,
        seed=args.seed,
        economies=economies,
    )
    predicted: dict[int, float] = {}  # trials done -> the end the ETA predicted (seconds since start)
    finished: dict[int, float] = {}  # trials done -> when (seconds since start)
    start = time.monotonic()

    def progress(p) -> None:
        elapsed = time.monotonic() - start
        finished[p.done] = elapsed
        if p.eta_s is not None:
            predicted[p.done] = elapsed + p.eta_s
        print(f"  [{label}] {p.done}/{p.target} #{p.number} {p.state}{' raced' if 'stopped early' in p.reason else ''}"
              f"  {elapsed:5.0f} s  ETA {p.eta_s or 0:4.0f} s", flush=True)

    storage = open_storage(f"sqlite:///{storage_dir / f'{label}.db'}")
    with Worker(model) as worker:
        study = start_study(
            spec, name=label, storage=storage, runner=worker, machine=machine.to_dict(), on_progress=progress,
            on_note=lambda note: print(f"  [{label}] {note}", flush=True),
        )
    wall = time.monotonic() - start
    summary = summarize(study)
    confirmation = summary.confirmation
    winner = confirmation.candidate(confirmation.winner) if confirmation and confirmation.winner is not None else None
    # (predicted end - real end) / the time that was left: within ±0.25 is "right within 25%"
    eta_error = {k: round((predicted[k] - wall) / (wall - finished[k]), 3) for k in (5, 10, 25) if k in predicted and k < args.trials}
    return {
        "wall_s": round(wall, 1),
        "trials": len(study.trials),
        "raced": summary.raced,
        "cached_quality": summary.cached_quality,
        "complete": summary.complete,
        "seconds": summary.seconds,
        "winner": confirmation.winner if confirmation else None,
        "winner_config": summary.best.config if summary.best else None,
        "confirmed_vs_defaults": round(winner.ratio.median, 3) if winner else None,
        "confirmed_range": [round(min(winner.ratio_vs_defaults), 3), round(max(winner.ratio_vs_defaults), 3)] if winner else None,
        "why": confirmation.why if confirmation else "not confirmed",
        "noise_floor": round(summary.noise, 4),
        "eta_error": eta_error,
    }


def main() -> None:
    from tuner.study import Economies

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workload", default="chat")
    parser.add_argument("--order", choices=["off-on", "on-off"], default="off-on")
    args = parser.parse_args()

    storage_dir = Path(tempfile.mkdtemp(prefix="study-cost-"))
    runs = {"off": Economies(racing=False, cache=False), "on": Economies()}
    order = args.order.split("-")
    results = {}
    for label in order:
        print(f"\n== economies {label}: {args.trials} trials, seed {args.seed}, workload {args.workload}", flush=True)
        results[label] = run_study(label, runs[label], args, storage_dir)

    print(f"\n{'':<22}{'off':>14}{'on':>14}")
    rows = [
        ("wall time", lambda r: f"{r['wall_s'] / 60:.1f} min"),
        ("trials stopped early", lambda r: str(r["raced"])),
        ("quality from cache", lambda r: str(r["cached_quality"])),
        ("completed", lambda r: str(r["complete"])),
        ("winner", lambda r: f"#{r['winner']}"),
        ("confirmed vs defaults", lambda r: f"{r['confirmed_vs_defaults']}x" if r["confirmed_vs_defaults"] else "-"),
        ("  round range", lambda r: "-".join(f"{x:.2f}" for x in r["confirmed_range"]) if r["confirmed_range"] else "-"),
        ("noise floor", lambda r: f"±{r['noise_floor']:.1%}"),
    ]
    for name, cell in rows:
        print(f"{name:<22}{cell(results['off']):>14}{cell(results['on']):>14}")
    parts = sorted(set(results["off"]["seconds"]) | set(results["on"]["seconds"]))
    print("\ntime breakdown (s):")
    for part in parts:
        print(f"  {part:<20}{results['off']['seconds'].get(part, 0):>14.1f}{results['on']['seconds'].get(part, 0):>14.1f}")
    for label in order:
        print(f"ETA error ({label}), (predicted end - real end) / time left, after trial k: {results[label]['eta_error']}")
        print(f"winner ({label}): {results[label]['why']}")
    print(json.dumps({
        "study_time_ratio": round(results["off"]["wall_s"] / results["on"]["wall_s"], 2),
        "wall_s": {k: r["wall_s"] for k, r in results.items()},
        "confirmed_vs_defaults": {k: r["confirmed_vs_defaults"] for k, r in results.items()},
        "confirmed_range": {k: r["confirmed_range"] for k, r in results.items()},
        "raced": results["on"]["raced"],
        "cached_quality": results["on"]["cached_quality"],
        "eta_error": {k: r["eta_error"] for k, r in results.items()},
        "seconds": {k: r["seconds"] for k, r in results.items()},
        "trials": args.trials,
        "seed": args.seed,
        "workload": args.workload,
    }))


if __name__ == "__main__":
    main()
