"""What a trial costs beyond the work it measures, with and without keeping the model loaded.

Two real studies (SQLite, the tool's own start/resume path, the CPU space, speed only) grow one
trial at a time, interleaved: A B A B ...

* reuse: the CLI's way — a worker process loads the model once; each trial gets a new context.
* no reuse: every trial loads the model again (what a naive `Llama(**params)` per trial does).

Per trial:  overhead ratio = trial wall time (optuna's start..complete timestamps: suggest,
context, warm-up, repetitions, records) / measured work (the timed repetitions' prompt + decode
time from llama.cpp's counters). 1.0 would mean nothing but the measured work; the warm-up pass
alone adds 1/repeats of it.

    .venv/bin/python benchmarks/overhead.py [--trials 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.engine import Engine  # noqa: E402
from tuner.hardware import describe_machine  # noqa: E402
from tuner.measure import measure  # noqa: E402
from tuner.workload import Workload  # noqa: E402
from tuner.models import default_model_path, model_sha256  # noqa: E402
from tuner.space import load_space  # noqa: E402
from tuner.stats import Stat  # noqa: E402
from tuner.study import StudySpec, counted_trials, open_storage, resume_study, start_study  # noqa: E402
from tuner.worker import Worker  # noqa: E402


class FreshLoad:
    """A runner that loads the model for every trial."""

    def __init__(self, model: Path) -> None:
        self.model = model

    def reference(self, model_sha256: str) -> dict[str, float]:
        raise NotImplementedError("speed-only benchmark")

    def measure(self, config, workload):
        with Engine(self.model) as engine:
            return measure(engine, config, workload)


def work_s(trial) -> float:
    """Seconds of measured work in a trial: timed repetitions' prompt + decode time."""
    m = trial.user_attrs["measurement"]
    total = 0.0
    for figures in m["shapes"]:
        shape = figures["shape"]
        total += sum(shape["prompt"] / x for x in figures["prompt_tok_s"]["samples"])
        total += sum(shape["gen"] / x for x in figures["decode_tok_s"]["samples"])
    return total


def ratios(study) -> list[float]:
    out = []
    for trial in counted_trials(study):
        if trial.state.name != "COMPLETE":
            continue
        wall = (trial.datetime_complete - trial.datetime_start).total_seconds()
        out.append(wall / work_s(trial))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8, help="trials per study (after the first)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--gen-tokens", type=int, default=64)
    args = parser.parse_args()

    model = default_model_path()
    workload = Workload.single(args.prompt_tokens, args.gen_tokens, repeats=3, quality=False)
    space = load_space("cpu")
    spec = StudySpec(model=model, model_sha256=model_sha256(model), space=space, workload=workload, trials=1, seed=0)
    machine = describe_machine()
    with tempfile.TemporaryDirectory() as tmp, Worker(model, timeout_s=600) as worker:
        worker.start()
        runners = {"reuse": worker, "no reuse": FreshLoad(model)}
        studies = {}
        for name, runner in runners.items():
            storage = open_storage(f"sqlite:///{tmp}/{name.replace(' ', '_')}.db")
            studies[name] = start_study(spec, name=name, storage=storage, runner=runner, machine=machine.to_dict(), confirm_rounds=0)
        for k in range(2, args.trials + 2):
            for name, runner in runners.items():  # A B A B ...
                resume_study(studies[name], runner=runner, space=space, trials=k, machine=machine, confirm_rounds=0)
            print(
                f"trial {k}/{args.trials + 1}: "
                + "  ".join(f"{name} {ratios(study)[-1]:.2f}x" for name, study in studies.items()),
                flush=True,
            )
        results = {name: Stat.of(ratios(study)) for name, study in studies.items()}
    print()
    for name, stat in results.items():
        print(f"{name:<9} wall / measured work: median {stat.median:.2f}x  IQR {stat.iqr:.2f}  "
              f"(per trial: {' '.join(f'{x:.2f}' for x in stat.samples)})")
    print(f"(1 warm-up + {workload.repeats} timed repetitions: the warm-up alone makes the floor about {1 + 1 / workload.repeats:.2f}x)")
    print(
        json.dumps(
            {
                "overhead_ratio": round(results["reuse"].median, 3),
                "overhead_ratio_iqr": round(results["reuse"].iqr, 3),
                "overhead_ratio_no_reuse": round(results["no reuse"].median, 3),
                "overhead_ratio_no_reuse_iqr": round(results["no reuse"].iqr, 3),
                "trials": len(results["reuse"].samples),
            }
        )
    )


if __name__ == "__main__":
    main()
