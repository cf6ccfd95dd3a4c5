"""Fitting a search space to the machine: which space a study searches by default (the CPU one,
or the GPU one scaled to the free VRAM), and refusing a space the llama.cpp build cannot run.

The space module parses and suggests; planning where layers go is this module's job (the GPU
issue grows it: llama.cpp's own device list, several devices, buffers fitted from the model's
shapes).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tuner.errors import SpaceError
from tuner.hardware import CUDA_REBUILD, offload_missing, physical_cores
from tuner.space import Param, SearchSpace, load_space, space_to_yaml

__all__ = ["GPU_RUNTIME_MIB", "VRAM_USABLE", "bound_batches", "check_offload", "choose_space", "compute_mib", "fit_gpu_space", "placement_of", "placement_words", "split_over"]

# Offload planning. The fit counts the buffers llama.cpp allocates (weights, KV cache, compute
# buffer: see compute_mib) from the model's shapes; besides them a GPU context needs its runtime
# (the CUDA context, cuBLAS workspaces, the allocator's slack), not measured on a GPU yet, and we
# plan with 90% of the free memory.
GPU_RUNTIME_MIB = 512
VRAM_USABLE = 0.9
BATCH_CAPS = (4096, 2048, 1024, 512, 256)  # the largest n_batch/n_ubatch a GPU space offers, tried in turn
# When the model does not fit whole, the compute buffer may take this share of the budget; the
# layers offloaded get the rest (a larger batch for fewer layers on the GPU rarely pays).
PARTIAL_COMPUTE_SHARE = 0.25


def choose_space(machine: Any, model: Any = None, workload: Any = None) -> tuple[SearchSpace, str]:
    """The default search space for this machine and model, and why it was chosen.

    Without GPU offload (or without a GPU) it is cpu.yaml. Otherwise rtx4090.yaml scaled to the
    GPU's free memory: n_batch capped on smaller cards, n_ctx and KV types limited to what fits
    beside the weights, and n_gpu_layers searched (0..layers that fit) when the whole model does
    not fit. The GPU is the first one llama.cpp itself lists (every backend: CUDA, Metal,
    Vulkan, ROCm), else NVML's first card.

    Args:
        machine: a :class:`tuner.hardware.Machine`.
        model: a :class:`tuner.gguf.GgufInfo` for the model, or None to skip the fit estimate.
        workload: the :class:`tuner.workload.Workload` measured, or None: on a GPU, batch sizes
            are bounded by its longest prompt (:func:`bound_batches`).
    """
    if not machine.gpu_offload:
        return load_space("cpu"), offload_missing(machine) or "this llama.cpp build has no GPU offload"
    cards = [(f"{d.description} ({d.name})", d.memory_free_mib) for d in machine.offload_devices] or [(g.name, g.vram_free_mib) for g in machine.gpus]
    if not cards:
        return load_space("cpu"), f"GPU offload is built in but neither llama.cpp nor NVML sees a GPU ({machine.nvml_status})"
    names = cards[0][0] if len(cards) == 1 else " + ".join(name for name, _ in cards)
    space, why = fit_gpu_space(load_space("rtx4090"), sum(free for _, free in cards), model, gpu_name=names, devices=len(cards))
    if len(cards) > 1:
        space, split = split_over(space, len(cards))
        why = f"{why}; {split}"
    if workload is None:
        return space, why
    space, bounded = bound_batches(space, max(shape.prompt for shape in workload.shapes))
    return space, f"{why}; {bounded}"


def split_over(space: SearchSpace, devices: int) -> tuple[SearchSpace, str]:
    """A GPU space for a model spread over ``devices`` cards: llama.cpp's split mode searched
    (layer: whole layers per card, each card in turn; row: every matrix split across the cards, all
    working at once, which pays only with a fast link between them), the first card the main one.
    The tensor split is llama.cpp's own (in proportion to each card's free memory)."""
    params = tuple(p for p in space.params if p.name != "split_mode") + (Param(name="split_mode", choices=(1, 2)),)
    fixed = {key: value for key, value in space.fixed.items() if key != "split_mode"}
    fixed["main_gpu"] = 0
    split = replace(space, params=params, fixed=fixed)
    return replace(split, text=space_to_yaml(split)), f"{devices} GPUs: split_mode searched (layer, row), the tensor split llama.cpp's own"


def bound_batches(space: SearchSpace, longest_prompt: int) -> tuple[SearchSpace, str]:
    """A GPU space's n_batch/n_ubatch bounded by the workload's longest prompt: a batch larger
    than every timed prompt computes it exactly as one just as large does, so the highest value
    searched is the power of two that holds the longest prompt (GPU kernels work in tiles of 32
    to 128 rows). When that is at most n_batch's lowest value, neither size can matter to the
    workload: both are fixed at llama-cpp-python's 512, a change nobody has to adopt."""
    cap = max(32, 1 << (max(longest_prompt, 1) - 1).bit_length())
    by_name = {p.name: p for p in space.params}
    if "n_batch" not in by_name or "n_ubatch" not in by_name:
        return space, "batch sizes as the space gives them"
    if cap <= by_name["n_batch"].low:
        params = tuple(p for p in space.params if p.name not in ("n_batch", "n_ubatch"))
        fixed = {**space.fixed, "n_batch": 512, "n_ubatch": 512}
        why = f"n_batch/n_ubatch fixed at 512: the longest prompt ({longest_prompt} tokens) runs as one batch at any size searched"
    else:
        params = tuple(replace(p, high=min(p.high, cap)) if p.name in ("n_batch", "n_ubatch") else p for p in space.params)
        fixed = dict(space.fixed)
        why = f"n_batch/n_ubatch up to {min(by_name['n_batch'].high, cap)}: the longest prompt is {longest_prompt} tokens"
    bounded = replace(space, params=params, fixed=fixed)
    return replace(bounded, text=space_to_yaml(bounded)), why


def placement_of(space: SearchSpace) -> dict[str, int]:
    """Where the candidates' layers run: what the defaults baseline, the noise floor and the
    confirmation's anchor must share with them, so that a ratio compares settings, not a GPU with
    a CPU (an 8B model's defaults on the CPU read 10-20x below its offloaded candidates).

    {} for a space that keeps every layer on the CPU; else ``n_gpu_layers`` as the space fixes it
    (-1: every layer), or the most its search offers when it searches them (the most that fit).
    """
    if not space.offloads:
        return {}
    searched = next((p for p in space.params if p.name == "n_gpu_layers"), None)
    return {"n_gpu_layers": int(searched.high if searched is not None else space.fixed["n_gpu_layers"])}


def placement_words(placement: dict[str, Any]) -> str:
    """A placement in words, for the lines that name a baseline: '' on the CPU."""
    layers = placement.get("n_gpu_layers", 0)
    if not layers:
        return ""
    return "every layer offloaded (n_gpu_layers -1)" if layers < 0 else f"{layers} layers offloaded (n_gpu_layers {layers})"


def check_offload(space: SearchSpace, machine: Any) -> None:
    """Refuse a space that offloads layers (n_gpu_layers fixed above 0, -1, or searched) on a
    llama-cpp-python build without GPU offload: its trials would run on the CPU, labelled GPU.

    Raises:
        SpaceError: the space offloads and the build cannot.
    """
    if machine.gpu_offload or not space.offloads:
        return
    raise SpaceError(
        f"space '{space.name}' offloads layers to a GPU, but this llama-cpp-python build has no GPU offload (CPU only)",
        f"rebuild it for CUDA ({CUDA_REBUILD}), or use --space cpu",
    )


def compute_mib(model: Any, n_ubatch: int, n_ctx: int, flash_attn: bool = True) -> float:
    """llama.cpp's compute buffer for batches of ``n_ubatch`` tokens, from the model's shapes.

    The buffer holds the largest set of tensors alive at once in the graph llama.cpp reserves
    (every position of the batch an output). Two moments compete: the output, where the logits
    (n_ubatch x n_vocab, f32) sit beside a few hidden-state rows, and, without flash attention,
    the attention scores (n_ubatch x n_ctx x n_head, f32, in and out of the softmax). Checked
    against what llama.cpp reports on the embedded model (tests/test_placement_fit.py)."""
    outputs = n_ubatch * (model.n_vocab + 3 * model.embedding_length) * 4
    scores = 0 if flash_attn else 2 * n_ubatch * n_ctx * model.n_head * 4
    return max(outputs, scores) / 2**20


def fit_gpu_space(space: SearchSpace, vram_free_mib: int, model: Any = None, *, gpu_name: str = "GPU", devices: int = 1) -> tuple[SearchSpace, str]:
    """Scale a GPU space to ``vram_free_mib`` of free VRAM over ``devices`` cards (see
    :func:`choose_space`): the weights, the KV cache at each context and type, and the compute
    buffer at the largest batch (:func:`compute_mib`, with flash attention: without it, the largest
    batches at the largest contexts may not fit, and such a trial fails and says so) must fit
    beside each card's runtime."""
    budget = vram_free_mib * VRAM_USABLE - GPU_RUNTIME_MIB * devices
    weights_mib = model.file_bytes / 2**20 if model is not None else 0.0
    kv_mib = {"f16": 2.0, "q8_0": 1.0625, "q4_0": 0.5625}  # bytes per element of each KV type
    by_name = {p.name: p for p in space.params}
    n_ctx_choices = (by_name["n_ctx"].choices or (by_name["n_ctx"].high,)) if "n_ctx" in by_name else (space.fixed.get("n_ctx", 4096),)
    smallest_ctx = min(n_ctx_choices)

    def kv(n_ctx: int, kind: str = "f16") -> float:
        return model.kv_bytes_per_token(kv_mib[kind]) * n_ctx / 2**20

    batch_cap = BATCH_CAPS[0]
    if model is not None:
        room = budget - weights_mib - kv(smallest_ctx)
        if room < compute_mib(model, BATCH_CAPS[-1], smallest_ctx):  # the model does not fit whole: layers share the rest
            room = budget * PARTIAL_COMPUTE_SHARE
        batch_cap = next((cap for cap in BATCH_CAPS if compute_mib(model, cap, smallest_ctx) <= room), BATCH_CAPS[-1])
    compute = compute_mib(model, batch_cap, smallest_ctx) if model is not None else 0.0
    reasons = [f"{gpu_name} with {vram_free_mib} MiB free: n_batch up to {batch_cap}" + (f" (compute buffer {compute:.0f} MiB)" if model is not None else "")]
    params = []
    max_ctx = max(n_ctx_choices)
    for p in space.params:
        if p.name in ("n_batch", "n_ubatch") and p.high is not None:
            p = replace(p, high=min(p.high, batch_cap), low=min(p.low, batch_cap))
        if model is not None and p.name == "n_ctx" and p.choices is not None:
            fits = tuple(c for c in p.choices if weights_mib + kv(c) + compute <= budget)
            p = replace(p, choices=fits or (min(p.choices),))
        if model is not None and p.name == "kv_type" and p.choices is not None:
            fits = tuple(c for c in p.choices if weights_mib + kv(max_ctx, c) + compute <= budget)
            p = replace(p, choices=fits or (p.choices[-1],))
        params.append(p)
    fixed = dict(space.fixed)
    if model is not None and weights_mib + kv(smallest_ctx) + compute > budget:
        per_layer_mib = (model.bytes_per_layer + model.kv_bytes_per_token(2.0) / max(model.n_layers, 1) * smallest_ctx) / 2**20
        # llama.cpp offloads n_layers repeating layers and then the output layer: n_layers + 1;
        # each offloaded layer brings its weights and its share of the KV cache, beside the compute buffer
        layers_fit = max(0, min(model.n_layers + 1, int((budget - compute) // per_layer_mib) if per_layer_mib else 0))
        fixed.pop("n_gpu_layers", None)
        params.insert(0, Param(name="n_gpu_layers", low=0, high=max(1, layers_fit)))
        # with layers on the CPU, llama.cpp can still run their large batched products on the GPU
        # (copying the weights over for each batch): whether that pays depends on the link and the batch
        params.append(Param(name="op_offload", choices=(True, False)))
        reasons.append(
            f"the model ({weights_mib:.0f} MiB) does not fit: n_gpu_layers searched in 0..{max(1, layers_fit)} "
            f"of {model.n_layers + 1} (the output layer counts)"
        )
    elif model is not None:
        # Every layer on the GPU: the CPU threads only feed it, so searching them is noise.
        cores = physical_cores()
        params = [p for p in params if p.name not in ("n_threads", "n_threads_batch")]
        fixed.update(n_threads=cores, n_threads_batch=cores)
        reasons.append(f"the model ({weights_mib:.0f} MiB) fits: every layer offloaded, threads fixed at the {cores} physical cores")
    scaled = replace(space, params=tuple(params), fixed=fixed)
    return replace(scaled, text=space_to_yaml(scaled)), "; ".join(reasons)
