"""Does a preset's claim hold for a plain llama-cpp-python user?

Loads the preset with ``llama_cpp.Llama(model_path=..., **engine)`` and the defaults with
``llama_cpp.Llama(model_path, n_ctx=...)`` at the preset's n_ctx (the study's required context,
as its defaults baseline runs), both in this process, and sends the preset's workload through
``create_completion(stream=True, **sampling)``: time to first token and decode rate come from the
client's side, per-token Python work (logits copy, detokenization, streaming) included. End of
text is banned by a logits processor in both (the tool's loop generates exactly ``gen`` tokens
too), so every request is as long as its shape says. For each
request shape, a priming call leaves the shape's depth in Llama's prompt cache (its longest-prefix
reuse), as a previous turn would, then the timed request sends depth + prompt tokens.

Rounds alternate the order (D P, P D, ...). Prints each configuration's requests/min, TTFT and
decode rate, the per-round ratio preset/defaults beside the ratio the preset claims, and one JSON
line.

    .venv/bin/python benchmarks/llama_parity.py --preset best.yaml [--rounds 9] [--workload chat]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.measure import WORKLOAD_TEXT, prompt_tokens  # noqa: E402
from tuner.preset import Preset  # noqa: E402
from tuner.stats import Stat  # noqa: E402
from tuner.study import baselines_for  # noqa: E402
from tuner.workload import Shape, Workload, load_profile, requests_per_min  # noqa: E402


def timed_request(llm, tokens: list[int], depth: int, shape: Shape, sampling: dict) -> tuple[float, float, int]:
    """(TTFT ms, decode ms, chunks) of one streamed request, its depth primed in the prompt cache."""
    if depth:
        llm.create_completion(tokens[:depth], max_tokens=1, **sampling)  # the previous turn: depth cached
    start = time.perf_counter()
    first = last = None
    chunks = 0
    for _ in llm.create_completion(tokens, max_tokens=shape.gen, stream=True, **sampling):
        now = time.perf_counter()
        first = first or now
        last = now
        chunks += 1
    return (first - start) * 1000, (last - first) * 1000, chunks


def no_eos(llm) -> dict:
    """create_completion keyword arguments that keep it from stopping at end of text."""
    import llama_cpp

    eos = llm.token_eos()

    def ban(_ids, scores):
        scores[eos] = -float("inf")
        return scores

    return {"logits_processor": llama_cpp.LogitsProcessorList([ban])}


def run_workload(llm, workload: Workload, text: list[int], sampling: dict) -> dict[str, list[float]]:
    """One pass over the shapes (a warm-up request each, then ``repeats`` timed); per-repetition figures."""
    figures: dict[str, list[list[float]]] = {"request_ms": [], "ttft_ms": [], "decode_tok_s": []}
    for shape in workload.shapes:
        tokens = prompt_tokens(text, shape.depth + shape.prompt)
        timed_request(llm, tokens, shape.depth, Shape(shape.depth, shape.prompt, min(shape.gen, 8)), sampling)  # warm-up
        runs = [timed_request(llm, tokens, shape.depth, shape, sampling) for _ in range(workload.repeats)]
        figures["request_ms"].append([ttft + decode for ttft, decode, _ in runs])
        figures["ttft_ms"].append([ttft for ttft, _, _ in runs])
        figures["decode_tok_s"].append([(n - 1) / decode * 1000 if decode > 0 else 0.0 for _, decode, n in runs])
    weights = workload.weights
    reps = range(workload.repeats)
    return {
        "requests_per_min": [requests_per_min([shape[r] for shape in figures["request_ms"]], weights) for r in reps],
        "ttft_ms": [sum(w * shape[r] for w, shape in zip(weights, figures["ttft_ms"])) for r in reps],
        "decode_tok_s": [sum(w * shape[r] for w, shape in zip(weights, figures["decode_tok_s"])) for r in reps],
    }


def main() -> None:
    import llama_cpp

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, help="an exported preset (tune export NAME --out FILE)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--workload", help="a workload profile or file [default: the preset's own]")
    args = parser.parse_args()

    preset = Preset.load(args.preset)
    recorded = preset.measured.get("workload")
    if args.workload:
        workload = load_profile(args.workload, quality=False)
    else:
        workload = Workload.from_dict({**recorded, "quality": False}) if recorded else load_profile("chat", quality=False)
    # like for like: the defaults at the context the preset carries (the study's requirement)
    defaults_n_ctx = baselines_for(preset.config().n_ctx)["defaults"].n_ctx
    sampling = dict(preset.sampling)
    sampling.pop("seed", None)
    llms = {
        "defaults": llama_cpp.Llama(model_path=preset.model, n_ctx=defaults_n_ctx, verbose=False),
        "preset": llama_cpp.Llama(model_path=preset.model, verbose=False, **preset.engine),
    }
    text = llms["defaults"].tokenize(WORKLOAD_TEXT.encode("utf-8"), add_bos=True, special=False)
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in llms}
    print(f"workload {workload.name}: {workload.describe()}; defaults n_ctx {defaults_n_ctx}", flush=True)
    for round_ in range(args.rounds):
        order = list(llms) if round_ % 2 == 0 else list(llms)[::-1]
        for name in order:
            # the defaults with create_completion's own sampling defaults, as the study's defaults baseline
            figures = run_workload(llms[name], workload, text, {**(sampling if name == "preset" else {}), **no_eos(llms[name])})
            for key, values in figures.items():
                samples[name].setdefault(key, []).append(Stat.of(values).median)
        print(f"round {round_ + 1}/{args.rounds}: " + "  ".join(f"{n} {samples[n]['requests_per_min'][-1]:.2f} req/min" for n in llms), flush=True)
    for llm in llms.values():
        llm.close()

    print(f"\n{'config':<9} {'requests/min':>13} {'IQR':>6} {'TTFT ms':>8} {'decode tok/s':>13}")
    for name in llms:
        s = {k: Stat.of(v) for k, v in samples[name].items()}
        print(f"{name:<9} {s['requests_per_min'].median:>13.2f} {s['requests_per_min'].iqr:>6.2f} {s['ttft_ms'].median:>8.0f} {s['decode_tok_s'].median:>13.1f}")
    ratio = Stat.of([p / d for p, d in zip(samples["preset"]["requests_per_min"], samples["defaults"]["requests_per_min"])])
    decode_ratio = Stat.of([p / d for p, d in zip(samples["preset"]["decode_tok_s"], samples["defaults"]["decode_tok_s"])])
    confirmed = preset.measured.get("confirmed") or {}
    claim = confirmed.get("vs_defaults") or {"median": preset.measured.get("vs_defaults")}
    low, high = min(ratio.samples), max(ratio.samples)
    print(f"\npreset / defaults as a Llama user sees it: {ratio.median:.3f}x (rounds {low:.2f}-{high:.2f}; decode {decode_ratio.median:.3f}x)")
    source = "confirmed" if confirmed else "trial reading"
    claim_range = f" ({claim['low']:.2f}-{claim['high']:.2f})" if "low" in claim else ""
    print(f"the preset claims ({source}): {claim['median']}x{claim_range}")
    noise = float(preset.measured.get("noise_floor") or 0.0)
    agrees = claim["median"] is not None and (
        low <= claim["median"] <= high or abs(ratio.median - claim["median"]) <= max(noise, ratio.rel_iqr) * ratio.median
    )
    print("within the noise" if agrees else "NOT within the noise: the claim does not hold for a Llama user")
    print(json.dumps({
        "llama_user_ratio": round(ratio.median, 3),
        "llama_user_ratio_low": round(low, 3),
        "llama_user_ratio_high": round(high, 3),
        "llama_user_decode_ratio": round(decode_ratio.median, 3),
        "claimed_ratio": claim["median"],
        "claim_source": source,
        "within_noise": bool(agrees),
        "workload": workload.name,
        "rounds": args.rounds,
    }))


if __name__ == "__main__":
    main()
