#!/usr/bin/env python3
"""Make a llama-architecture GGUF of a given shape with pseudo-random weights, then quantize it.

Its speed is the speed of a real model of that shape (the same tensors, types and sizes go through
the same kernels); its output is noise, so quality figures on it mean nothing: measure it speed-only
(``tune start --no-quality``). It serves where a real model cannot be brought (the GPU machine has
no network and takes 64 MiB of files) and to see how the tool behaves on a model bigger than the
embedded one.

What it uses, all from llama.cpp's own source tree (as shipped in the llama-cpp-python sdist, or the
trimmed copy that scripts/gpu_bundle.sh makes):

* the vocabulary of ``models/ggml-vocab-llama-bpe.gguf`` (Llama 3's 128256-token BPE): its
  ``tokenizer.*`` keys are copied, so the made model tokenizes like Llama 3;
* the ``gguf`` writer from ``gguf-py``, used tensor by tensor (header, key/values and tensor infos
  first, then each tensor's data) so that only one tensor is in memory at a time;
* llama.cpp's quantizer through llama-cpp-python (``llama_model_quantize``), which picks the
  per-tensor types of the file type exactly as ``llama-quantize`` does.

The f16 intermediate is deleted after quantizing (unless --keep-f16). Weights are a fixed block of
seeded normal numbers (std 0.02) repeated at a per-tensor offset: cheap (no 8e9 random draws),
deterministic, and numerically tame. Llama 3.2's long-context rope scaling (``rope_freqs``) is left
out: it does not change the work per token.

    python scripts/make_model.py --shape 8b --out models/llama-8b-q4_k_m.gguf --llama-src DIR
    python scripts/make_model.py --layers 4 --hidden 512 --heads 8 --kv-heads 4 --ffn 1024 --out m.gguf

DIR (or $LLAMA_SRC) is the llama-cpp-python source tree (holding vendor/llama.cpp) or a llama.cpp
tree itself. Prints the shape, sizes and times; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
import zlib
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

VOCAB_FILE = "ggml-vocab-llama-bpe.gguf"
POOL_SIZE = 1_048_573  # a prime: rows of any width start at different places in the pool
WEIGHT_STD = 0.02
HEADER_BYTES = 2**26  # enough for the Llama 3 vocabulary (about 9 MiB) and any tensor table
FTYPES = {"Q4_K_M": 15, "Q4_0": 2, "Q8_0": 7, "F16": 1}  # llama_ftype values (llama.h)


@dataclass(frozen=True)
class Shape:
    """Hyperparameters of a llama-architecture model."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    rope_theta: float
    context: int
    tied: bool  # output layer shares the token embedding (Llama 3.2 1B/3B do, 3.1 8B does not)
    rms_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def params(self, vocab: int) -> int:
        """Number of weights (the token embedding counted once when tied)."""
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        layer = attn + 3 * self.hidden * self.ffn + 2 * self.hidden
        return vocab * self.hidden * (1 if self.tied else 2) + self.layers * layer + self.hidden

    def check(self) -> None:
        if min(self.layers, self.hidden, self.heads, self.kv_heads, self.ffn, self.context) < 1:
            raise SystemExit(f"make_model: every size must be positive: {self}")
        if self.hidden % self.heads or self.heads % self.kv_heads:
            raise SystemExit(f"make_model: hidden ({self.hidden}) must divide by heads ({self.heads}) and heads by kv heads ({self.kv_heads})")


# Hyperparameters of the models named (their config.json on the Hugging Face hub).
SHAPES: dict[str, Shape] = {
    "tiny": Shape(layers=2, hidden=256, heads=4, kv_heads=2, ffn=512, rope_theta=10000.0, context=8192, tied=True),
    "1b": Shape(layers=16, hidden=2048, heads=32, kv_heads=8, ffn=8192, rope_theta=500000.0, context=131072, tied=True),  # Llama-3.2-1B
    "3b": Shape(layers=28, hidden=3072, heads=24, kv_heads=8, ffn=8192, rope_theta=500000.0, context=131072, tied=True),  # Llama-3.2-3B
    "8b": Shape(layers=32, hidden=4096, heads=32, kv_heads=8, ffn=14336, rope_theta=500000.0, context=131072, tied=False),  # Llama-3.1-8B
}


def find_llama_cpp(src: str | None) -> Path:
    """The llama.cpp tree inside ``src`` (an llama-cpp-python source tree or llama.cpp itself)."""
    if not src:
        raise SystemExit(
            "make_model: say where llama.cpp's source tree is: --llama-src DIR or LLAMA_SRC=DIR\n"
            "  (e.g. pip download llama-cpp-python==0.3.36 --no-deps --no-binary :all: -d /tmp/sd && "
            "tar xzf /tmp/sd/llama_cpp_python-0.3.36.tar.gz -C /tmp/sd, then DIR=/tmp/sd/llama_cpp_python-0.3.36)"
        )
    root = Path(src).expanduser()
    for candidate in (root / "vendor" / "llama.cpp", root):
        if (candidate / "gguf-py" / "gguf").is_dir() and (candidate / "models" / VOCAB_FILE).is_file():
            return candidate
    raise SystemExit(f"make_model: {root} holds neither vendor/llama.cpp nor a llama.cpp tree with gguf-py/ and models/{VOCAB_FILE}")


def tensor_plan(shape: Shape, vocab: int) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, numpy shape, 'f16' or 'f32') of every tensor, in llama.cpp's naming and order."""
    h, d = shape.hidden, shape.head_dim
    plan: list[tuple[str, tuple[int, ...], str]] = [("token_embd.weight", (vocab, h), "f16")]
    for i in range(shape.layers):
        b = f"blk.{i}."
        plan += [
            (b + "attn_norm.weight", (h,), "f32"),
            (b + "attn_q.weight", (shape.heads * d, h), "f16"),
            (b + "attn_k.weight", (shape.kv_heads * d, h), "f16"),
            (b + "attn_v.weight", (shape.kv_heads * d, h), "f16"),
            (b + "attn_output.weight", (h, shape.heads * d), "f16"),
            (b + "ffn_norm.weight", (h,), "f32"),
            (b + "ffn_gate.weight", (shape.ffn, h), "f16"),
            (b + "ffn_up.weight", (shape.ffn, h), "f16"),
            (b + "ffn_down.weight", (h, shape.ffn), "f16"),
        ]
    plan.append(("output_norm.weight", (h,), "f32"))
    if not shape.tied:
        plan.append(("output.weight", (vocab, h), "f16"))
    return plan


def write_f16(path: Path, shape: Shape, name: str, llama_cpp_dir: Path, seed: int) -> dict[str, Any]:
    """Write the f16 model to ``path`` one tensor at a time; returns what it wrote."""
    import numpy as np

    sys.path.insert(0, str(llama_cpp_dir / "gguf-py"))
    import gguf

    started = time.perf_counter()
    keys, _ = read_gguf(llama_cpp_dir / "models" / VOCAB_FILE)
    vocab_fields = {k: v for k, v in keys.items() if k.startswith("tokenizer.")}
    vocab = len(vocab_fields["tokenizer.ggml.tokens"][1])
    read_vocab_s = time.perf_counter() - started

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(name)
    writer.add_description("random weights made by llama-tuner's scripts/make_model.py: its speed is real, its output is noise")
    writer.add_block_count(shape.layers)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.hidden)
    writer.add_feed_forward_length(shape.ffn)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_rope_freq_base(shape.rope_theta)
    writer.add_rope_dimension_count(shape.head_dim)
    writer.add_layer_norm_rms_eps(shape.rms_eps)
    writer.add_vocab_size(vocab)
    writer.add_file_type(FTYPES["F16"])
    for key, (kind, value, sub) in vocab_fields.items():
        writer.add_key_value(key, value, gguf.GGUFValueType(kind), sub_type=None if sub is None else gguf.GGUFValueType(sub))

    plan = tensor_plan(shape, vocab)
    for tname, tshape, dtype in plan:
        np_dtype = np.float16 if dtype == "f16" else np.float32
        writer.add_tensor_info(tname, tshape, np.dtype(np_dtype), int(np.prod(tshape)) * np.dtype(np_dtype).itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()

    pool = (np.random.default_rng(seed).standard_normal(POOL_SIZE, dtype=np.float32) * WEIGHT_STD).astype(np.float16)
    for tname, tshape, dtype in plan:
        n = int(np.prod(tshape))
        if dtype == "f32":  # RMS-norm gains: ones, as a freshly initialised model has
            data = np.ones(tshape, dtype=np.float32)
        else:
            offset = zlib.crc32(tname.encode()) % POOL_SIZE
            data = np.tile(pool, -(-(n + offset) // POOL_SIZE))[offset : offset + n].reshape(tshape)
        writer.write_tensor_data(data)
        del data
    writer.close()
    return {"vocab": vocab, "tensors": len(plan), "read_vocab_s": round(read_vocab_s, 2)}


def read_back(path: Path, llama_cpp_dir: Path, tied: bool) -> dict[str, Any]:
    """Tensor bytes of the written file (by gguf's table of type sizes), and what decoding one token
    reads of them.

    Decoding reads every weight once per token except the token embedding, of which it reads one
    row; a tied output layer is that same matrix, read whole.
    """
    sys.path.insert(0, str(llama_cpp_dir / "gguf-py"))
    import gguf

    types: dict[str, int] = {}
    weight = embedding = 0
    for name, dims, type_id in read_gguf(path)[1]:
        kind = gguf.GGMLQuantizationType(type_id)
        block, block_bytes = gguf.GGML_QUANT_SIZES[kind]
        n_bytes = math.prod(dims) // block * block_bytes
        weight += n_bytes
        types[kind.name] = types.get(kind.name, 0) + 1
        if name == "token_embd.weight":
            embedding = n_bytes
    return {"weight_bytes": weight, "decode_read_bytes": weight if tied else weight - embedding, "tensor_types": types}


# GGUF value type ids (gguf.md): scalar struct formats; 8 is a string, 9 an array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_gguf(path: Path) -> tuple[dict[str, tuple[int, Any, int | None]], list[tuple[str, list[int], int]]]:
    """A GGUF file's key/values ({key: (type id, value, array element type id or None)}) and its
    tensor infos ([(name, dims, type id)]). String values stay bytes, as written: the writer copies
    them back unchanged.

    Not gguf-py's GGUFReader: it makes a numpy view per array element, which took 12 s for the
    vocabulary's 408,000 strings (read once for the vocabulary and once to read the result back);
    this plain parse takes well under a second.
    """
    with path.open("rb") as handle:
        data = handle.read(HEADER_BYTES)  # key/values and tensor infos come first; weights are not needed
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def string() -> bytes:
        nonlocal pos
        length = take("<Q")
        pos += length
        return data[pos - length : pos]

    def value(kind: int) -> Any:
        return string() if kind == 8 else take(_SCALARS[kind])

    if data[:4] != b"GGUF":
        raise SystemExit(f"make_model: {path} is not a GGUF file")
    pos = 4
    take("<I")  # version: 2 and 3 share this layout (64-bit counts)
    n_tensors, n_keys = take("<Q"), take("<Q")
    keys: dict[str, tuple[int, Any, int | None]] = {}
    for _ in range(n_keys):
        key, kind = string().decode(), take("<I")
        if kind == 9:
            sub, count = take("<I"), take("<Q")
            keys[key] = (kind, [value(sub) for _ in range(count)], sub)
        else:
            keys[key] = (kind, value(kind), None)
    tensors = []
    for _ in range(n_tensors):
        name, n_dims = string().decode(), take("<I")
        dims = [take("<Q") for _ in range(n_dims)]
        tensors.append((name, dims, take("<I")))
        take("<Q")  # data offset
    return keys, tensors


def quantize(src: Path, dst: Path, ftype: str, threads: int) -> None:
    """Quantize with llama.cpp's own quantizer (the code behind llama-quantize)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[ftype]
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise SystemExit(f"make_model: llama_model_quantize({src.name} -> {dst.name}, {ftype}) returned {rc}")


def parse_shape(args: argparse.Namespace) -> tuple[str, Shape]:
    base = SHAPES[args.shape] if args.shape else None
    overrides = {
        "layers": args.layers,
        "hidden": args.hidden,
        "heads": args.heads,
        "kv_heads": args.kv_heads,
        "ffn": args.ffn,
        "rope_theta": args.rope_theta,
        "context": args.context,
        "tied": args.tied,
    }
    given = {k: v for k, v in overrides.items() if v is not None}
    if base is None:
        missing = [k for k in ("layers", "hidden", "heads", "kv_heads", "ffn") if k not in given]
        if missing:
            raise SystemExit(f"make_model: without --shape, give --{' --'.join(m.replace('_', '-') for m in missing)}")
        shape = Shape(
            **{"rope_theta": 500000.0, "context": 8192, "tied": True, **given}  # Llama 3 defaults for the rest
        )
        label = "custom"
    else:
        shape = replace(base, **given)
        label = args.shape if not given else f"{args.shape}+custom"
    shape.check()
    return label, shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), help="a named shape (explicit numbers below override its fields)")
    parser.add_argument("--layers", type=int)
    parser.add_argument("--hidden", type=int, help="embedding length")
    parser.add_argument("--heads", type=int)
    parser.add_argument("--kv-heads", type=int)
    parser.add_argument("--ffn", type=int, help="feed-forward length")
    parser.add_argument("--rope-theta", type=float)
    parser.add_argument("--context", type=int, help="training context length written into the file")
    parser.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None, help="output layer tied to the token embedding")
    parser.add_argument("--type", default="Q4_K_M", choices=sorted(FTYPES), help="file type of the result [Q4_K_M]")
    parser.add_argument("--out", required=True, type=Path, help="the .gguf to write")
    parser.add_argument("--llama-src", default=os.environ.get("LLAMA_SRC"), help="llama-cpp-python (or llama.cpp) source tree [$LLAMA_SRC]")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="quantizer threads [all cores]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep-f16", action="store_true", help="keep the f16 intermediate beside the result")
    args = parser.parse_args()

    label, shape = parse_shape(args)
    llama_cpp_dir = find_llama_cpp(args.llama_src)
    out: Path = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    f16 = out if args.type == "F16" else out.with_name(out.name + ".f16.tmp")
    print(f"shape {label}: {json.dumps(asdict(shape))} (head_dim {shape.head_dim})", flush=True)

    started = time.perf_counter()
    try:
        wrote = write_f16(f16, shape, f"llama-tuner made llama {label}", llama_cpp_dir, args.seed)
        f16_bytes = f16.stat().st_size
        write_s = time.perf_counter() - started
        print(f"wrote f16 {f16.name}: {f16_bytes / 2**20:.1f} MiB, {shape.params(wrote['vocab']) / 1e9:.3f} B params, "
              f"{wrote['tensors']} tensors in {write_s:.1f} s (vocabulary read in {wrote['read_vocab_s']} s)", flush=True)
        quantize_s = 0.0
        if args.type != "F16":
            t0 = time.perf_counter()
            quantize(f16, out, args.type, args.threads)
            quantize_s = time.perf_counter() - t0
    finally:
        if f16 != out and not args.keep_f16:
            f16.unlink(missing_ok=True)
    out_bytes = out.stat().st_size
    total_s = time.perf_counter() - started
    sizes = read_back(out, llama_cpp_dir, shape.tied)
    print(f"wrote {args.type} {out}: {out_bytes / 2**20:.1f} MiB (quantized in {quantize_s:.1f} s with {args.threads} threads); total {total_s:.1f} s")
    print(f"tensors: {sizes['tensor_types']}; decoding a token reads {sizes['decode_read_bytes'] / 2**20:.1f} MiB of weights")
    print(json.dumps({
        "shape": label,
        **asdict(shape),
        "head_dim": shape.head_dim,
        "vocab": wrote["vocab"],
        "params": shape.params(wrote["vocab"]),
        "type": args.type,
        "path": str(out),
        "f16_bytes": f16_bytes,
        "bytes": out_bytes,
        **sizes,
        "write_f16_s": round(write_s, 2),
        "quantize_s": round(quantize_s, 2),
        "total_s": round(total_s, 2),
        "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
