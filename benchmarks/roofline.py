"""How close the tuned preset's decode comes to this machine's memory-bandwidth ceiling.

Decoding one token reads every weight of the model once (plus the KV cache so far), so on a CPU
the fastest possible decode is about   memory read bandwidth / bytes read per token.
This script measures both sides, interleaved in rounds (bandwidth, decode, bandwidth, decode, ...)
so that a busy neighbour hits both alike, and prints the fraction of the ceiling reached.

* Bandwidth: numpy sums of a 1 GiB array split across 1..cores threads (sums release the GIL and
  do one add per 8 bytes: memory-bound); best of 5 per thread count, the best thread count kept.
* Bytes per token: llama_model_size() (all weight tensors; gemma-3 ties its output layer to the
  token embedding, so the whole matrix is read for every token) + the K and V rows of the
  positions attended at the workload's mean decode position.

    .venv/bin/python benchmarks/roofline.py --preset best.yaml [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.config import EngineConfig  # noqa: E402
from tuner.engine import Engine  # noqa: E402
from tuner.measure import measure  # noqa: E402
from tuner.workload import Workload  # noqa: E402
from tuner.preset import Preset  # noqa: E402
from tuner.stats import Stat  # noqa: E402

BUFFER_BYTES = 1 << 30  # far beyond any last-level cache
KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # bytes per element, ggml block formats


def read_bandwidth(buffer: np.ndarray, threads: int, tries: int = 5) -> float:
    """Bytes per second summing ``buffer`` with ``threads`` threads (best of ``tries``)."""
    parts = np.array_split(buffer, threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(tries):
            start = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - start)
    return buffer.nbytes / best


def bytes_per_token(engine: Engine, config: EngineConfig, workload: Workload) -> tuple[float, float]:
    """(weight bytes, KV-cache bytes) read to decode one token at the workload's mean position."""
    import llama_cpp

    model = engine.load(config).model
    weights = float(llama_cpp.llama_model_size(model))
    n_layer = llama_cpp.llama_model_n_layer(model)
    n_head_kv = llama_cpp.llama_model_n_head_kv(model)
    head_dim = _meta_int(model, "attention.key_length") or llama_cpp.llama_model_n_embd(model) // llama_cpp.llama_model_n_head(model)
    position = sum(w * (s.depth + s.prompt + s.gen / 2) for s, w in zip(workload.shapes, workload.weights))
    kv = n_layer * n_head_kv * head_dim * 2 * KV_BYTES[config.kv_type] * position  # K and V
    return weights, kv


def _meta_int(model: object, key: str) -> int | None:
    import ctypes

    import llama_cpp

    def meta(name: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_model_meta_val_str(model, name.encode(), buf, len(buf))
        return buf.value.decode() if n >= 0 else None

    arch = meta("general.architecture")
    value = meta(f"{arch}.{key}") if arch else None
    return int(value) if value else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, help="an exported preset (tune export NAME --out FILE)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--gen-tokens", type=int, default=64)
    args = parser.parse_args()

    preset = Preset.load(args.preset)
    config = preset.config()
    workload = Workload.single(args.prompt_tokens, args.gen_tokens, repeats=3, quality=False)
    cores = os.cpu_count() or 1
    buffer = np.ones(BUFFER_BYTES // 8)
    bandwidths: list[float] = []
    decodes: list[float] = []
    with Engine(preset.model) as engine:
        weights, kv = bytes_per_token(engine, config.effective(), workload)
        per_token = weights + kv
        for round_ in range(args.rounds):
            by_threads = {t: read_bandwidth(buffer, t) for t in range(1, cores + 1)}
            bandwidths.append(max(by_threads.values()))
            # the engine's own decode rate (eval_tok_s: sampler time excluded, it reads no weights)
            decodes.append(measure(engine, config, workload).eval_tok_s.median)
            print(
                f"round {round_ + 1}/{args.rounds}: bandwidth "
                + " ".join(f"{t}t {bw / 1e9:.1f}" for t, bw in by_threads.items())
                + f" GB/s; tuned decode {decodes[-1]:.1f} tok/s",
                flush=True,
            )
    fractions = [d / (bw / per_token) for d, bw in zip(decodes, bandwidths)]
    bw, decode, fraction = Stat.of(bandwidths), Stat.of(decodes), Stat.of(fractions)
    ceiling = bw.median / per_token
    print(f"\nbytes read per token: {weights / 2**20:.1f} MiB weights + {kv / 2**20:.2f} MiB KV cache")
    print(f"memory read bandwidth: {bw.median / 1e9:.2f} GB/s (IQR {bw.iqr / 1e9:.2f}) -> ceiling {ceiling:.1f} tok/s")
    print(f"tuned decode (engine only, sampler excluded): {decode.median:.1f} tok/s (IQR {decode.iqr:.1f}), threads {config.effective().n_threads}")
    print(f"roofline fraction: {fraction.median:.2f} (per round: {' '.join(f'{x:.2f}' for x in fractions)})")
    print(
        json.dumps(
            {
                "roofline_fraction": round(fraction.median, 3),
                "roofline_fraction_iqr": round(fraction.iqr, 3),
                "bandwidth_gb_s": round(bw.median / 1e9, 2),
                "bytes_per_token_mib": round(per_token / 2**20, 2),
                "ceiling_tok_s": round(ceiling, 1),
                "eval_tok_s": round(decode.median, 2),
                "rounds": args.rounds,
                "cores": cores,
                "preset": str(args.preset),
            }
        )
    )


if __name__ == "__main__":
    main()
