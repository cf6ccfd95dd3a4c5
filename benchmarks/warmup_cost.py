"""What does the warm-up on the timed paths cost a trial? The old pass vs the one measure() runs.

Every trial warms its fresh context up before timing. The old pass evaluated 8 prompt tokens and
4 decode steps; on a GPU, a batch that small takes the matrix-vector kernels, so the first timed
prompt was the context's first batched eval, and the clocks were still ramping. measure() now
evaluates a prompt as long as the workload's longest, at most n_ubatch (tuner.measure.warmup_prompt),
then WARMUP_TOKENS decode steps. This measures both passes on fresh contexts (llama-cpp-python's
defaults at --n-ctx), interleaved in alternating order, and prints medians, ranges and the raw
samples; the last line is one JSON object.

    .venv/bin/python benchmarks/warmup_cost.py [--rounds 12] [--workload chat] [--n-ctx 4096]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.config import EngineConfig  # noqa: E402
from tuner.engine import Engine  # noqa: E402
from tuner.measure import WARMUP_TOKENS, WORKLOAD_TEXT, prompt_tokens, warmup_prompt  # noqa: E402
from tuner.models import default_model_path  # noqa: E402
from tuner.workload import load_profile  # noqa: E402

OLD = (8, 4)  # prompt tokens, decode steps of the warm-up before this change


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--workload", default="chat")
    parser.add_argument("--n-ctx", type=int, default=4096)
    args = parser.parse_args()
    config = EngineConfig(n_ctx=args.n_ctx)
    engine = Engine(default_model_path())
    with engine.session(config) as session:
        new = (warmup_prompt(load_profile(args.workload), session.config), WARMUP_TOKENS)
    samples: dict[str, list[float]] = {"old": [], "new": []}
    passes = {"old": OLD, "new": new}
    for r in range(args.rounds):
        for label in ("old", "new") if r % 2 == 0 else ("new", "old"):  # neither always first
            samples[label].append(_one_pass(engine, config, *passes[label]))
    for label, values in samples.items():
        prompt, steps = passes[label]
        print(f"{label}: {prompt} prompt tokens + {steps} decode steps: median {statistics.median(values):.0f} ms "
              f"(range {min(values):.0f}-{max(values):.0f}) over {args.rounds} fresh contexts")
    extra = statistics.median(samples["new"]) - statistics.median(samples["old"])
    print(f"the new warm-up costs {extra:+.0f} ms a trial")
    print(json.dumps({"workload": args.workload, "passes": passes, "ms": samples, "extra_ms": extra}))


def _one_pass(engine: Engine, config: EngineConfig, prompt: int, steps: int) -> float:
    """Milliseconds of one warm-up pass on a fresh context."""
    with engine.session(config) as session:
        tokens = prompt_tokens(session.tokenize(WORKLOAD_TEXT), prompt)
        start = time.perf_counter()
        session.generate(tokens, steps, stop_at_eos=False)
        return (time.perf_counter() - start) * 1000


if __name__ == "__main__":
    main()
