"""Does tuning for a workload matter? Two short speed-only studies, one per contrasting profile
(rag: long prompts, short answers; chat: short prompts, longer answers, some depth), then both
winners measured on both workloads, interleaved in one process (A/rag A/chat B/rag B/chat ...),
and the 2x2 table of requests/min with spread.

If tuning for the workload matters, each preset wins on its own workload (the diagonal). On a
2-core CPU the two presets may tie: the knobs that help prompt processing (n_batch, n_ubatch,
n_threads_batch) and decoding (n_threads) interact little there. The last line is one JSON object.

    .venv/bin/python benchmarks/workload_fit.py [--trials 12] [--rounds 5] [--profiles rag chat]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.engine import Engine  # noqa: E402
from tuner.hardware import describe_machine  # noqa: E402
from tuner.measure import measure  # noqa: E402
from tuner.models import default_model_path, model_sha256  # noqa: E402
from tuner.placement import choose_space  # noqa: E402
from tuner.stats import Stat  # noqa: E402
from tuner.study import InProcess, StudySpec, best_preset, open_storage, start_study  # noqa: E402
from tuner.workload import load_profile  # noqa: E402


def tune(engine: Engine, profile: str, trials: int, seed: int, storage_url: str) -> dict:
    """A short speed-only study on ``profile``; returns its confirmed (or best) preset's settings."""
    machine = describe_machine()
    space, _ = choose_space(machine)
    workload = load_profile(profile, quality=False)
    spec = StudySpec(
        model=engine.model_path, model_sha256=model_sha256(engine.model_path), space=space, workload=workload, trials=trials, seed=seed
    )
    started = time.monotonic()
    study = start_study(spec, name=f"fit-{profile}", storage=open_storage(storage_url), runner=InProcess(engine), machine=machine.to_dict())
    preset = best_preset(study)
    print(f"tuned for {profile} in {time.monotonic() - started:.0f} s: trial #{preset.provenance['trial']} "
          f"({preset.measured['picked']})", flush=True)
    return {"preset": preset, "config": preset.config()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12, help="trials per study, the two baselines included")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profiles", nargs=2, default=["rag", "chat"], metavar=("A", "B"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, Engine(default_model_path()) as engine:
        url = f"sqlite:///{Path(tmp) / 'fit.db'}"
        tuned = {p: tune(engine, p, args.trials, args.seed, url) for p in args.profiles}
        workloads = {p: load_profile(p, quality=False) for p in args.profiles}
        cells: dict[tuple[str, str], list[float]] = {(a, w): [] for a in args.profiles for w in args.profiles}
        for round_ in range(args.rounds):
            for preset_for in args.profiles:
                for measured_on in args.profiles:
                    result = measure(engine, tuned[preset_for]["config"], workloads[measured_on])
                    cells[(preset_for, measured_on)].append(result.requests_per_min.median)
            print(f"round {round_ + 1}/{args.rounds}: " + "  ".join(f"{a}/{w} {v[-1]:.2f}" for (a, w), v in cells.items()), flush=True)

    a, b = args.profiles
    print(f"\nrequests/min, median (IQR) of {args.rounds} interleaved rounds")
    print(f"{'preset tuned for':<18}" + "".join(f"{'on ' + w:>20}" for w in args.profiles))
    for preset_for in args.profiles:
        row = [Stat.of(cells[(preset_for, w)]) for w in args.profiles]
        print(f"{preset_for:<18}" + "".join(f"{s.median:>12.2f} ({s.iqr:5.2f})" for s in row))
    fit = {}
    for w in args.profiles:
        other = b if w == a else a
        ratio = Stat.of([x / y for x, y in zip(cells[(w, w)], cells[(other, w)])])
        fit[w] = ratio
        print(f"on {w}: its own preset / the {other} preset = {ratio.median:.3f}x (IQR {ratio.iqr:.3f}; rounds "
              + " ".join(f"{x:.2f}" for x in ratio.samples) + ")")
    for p in args.profiles:
        print(f"{p} preset: {tuned[p]['preset'].engine}")
    print(json.dumps({
        "own_vs_other": {w: round(fit[w].median, 3) for w in args.profiles},
        "own_vs_other_iqr": {w: round(fit[w].iqr, 3) for w in args.profiles},
        "requests_per_min": {f"{p}_preset_on_{w}": round(Stat.of(v).median, 3) for (p, w), v in cells.items()},
        "trials": args.trials,
        "rounds": args.rounds,
    }))


if __name__ == "__main__":
    main()
