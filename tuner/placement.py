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

__all__ = ["GPU_OVERHEAD_MIB", "VRAM_USABLE", "check_offload", "choose_space", "fit_gpu_space", "placement_of", "placement_words"]

# Offload planning: what besides weights and KV cache a GPU context needs (compute buffers,
# CUDA context), and how much of the free VRAM we are willing to plan with.
GPU_OVERHEAD_MIB = 1024
VRAM_USABLE = 0.9


def choose_space(machine: Any, model: Any = None) -> tuple[SearchSpace, str]:
    """The default search space for this machine and model, and why it was chosen.

    Without GPU offload (or without a GPU) it is cpu.yaml. Otherwise rtx4090.yaml scaled to the
    GPU's free memory: n_batch capped on smaller cards, n_ctx and KV types limited to what fits
    beside the weights, and n_gpu_layers searched (0..layers that fit) when the whole model does
    not fit. The GPU is the first one llama.cpp itself lists (every backend: CUDA, Metal,
    Vulkan, ROCm), else NVML's first card.

    Args:
        machine: a :class:`tuner.hardware.Machine`.
        model: a :class:`tuner.gguf.GgufInfo` for the model, or None to skip the fit estimate.
    """
    if not machine.gpu_offload:
        return load_space("cpu"), offload_missing(machine) or "this llama.cpp build has no GPU offload"
    devices = getattr(machine, "offload_devices", [])
    if devices:
        device = devices[0]
        return fit_gpu_space(load_space("rtx4090"), device.memory_free_mib, model, gpu_name=f"{device.description} ({device.name})")
    if not machine.gpus:
        return load_space("cpu"), f"GPU offload is built in but neither llama.cpp nor NVML sees a GPU ({machine.nvml_status})"
    gpu = machine.gpus[0]
    return fit_gpu_space(load_space("rtx4090"), gpu.vram_free_mib, model, gpu_name=gpu.name)


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


def fit_gpu_space(space: SearchSpace, vram_free_mib: int, model: Any = None, *, gpu_name: str = "GPU") -> tuple[SearchSpace, str]:
    """Scale a GPU space to ``vram_free_mib`` of free VRAM (see :func:`choose_space`)."""
    budget = vram_free_mib * VRAM_USABLE - GPU_OVERHEAD_MIB
    batch_cap = 4096 if vram_free_mib >= 20_000 else 2048 if vram_free_mib >= 10_000 else 1024
    reasons = [f"{gpu_name} with {vram_free_mib} MiB free: n_batch up to {batch_cap}"]
    params = []
    weights_mib = model.file_bytes / 2**20 if model is not None else 0.0
    kv_mib = {"f16": 2.0, "q8_0": 1.0625, "q4_0": 0.5625}  # bytes per element of each KV type
    by_name = {p.name: p for p in space.params}
    max_ctx = max(by_name["n_ctx"].choices or [by_name["n_ctx"].high]) if "n_ctx" in by_name else 4096
    for p in space.params:
        if p.name in ("n_batch", "n_ubatch") and p.high is not None:
            p = replace(p, high=min(p.high, batch_cap), low=min(p.low, batch_cap))
        if model is not None and p.name == "n_ctx" and p.choices is not None:
            fits = tuple(c for c in p.choices if weights_mib + model.kv_bytes_per_token(2.0) * c / 2**20 <= budget)
            p = replace(p, choices=fits or (min(p.choices),))
        if model is not None and p.name == "kv_type" and p.choices is not None:
            fits = tuple(c for c in p.choices if weights_mib + model.kv_bytes_per_token(kv_mib[c]) * max_ctx / 2**20 <= budget)
            p = replace(p, choices=fits or (p.choices[-1],))
        params.append(p)
    fixed = dict(space.fixed)
    if model is not None and weights_mib + model.kv_bytes_per_token(2.0) * 1024 / 2**20 > budget:
        per_layer_mib = model.bytes_per_layer / 2**20
        # llama.cpp offloads n_layers repeating layers and then the output layer: n_layers + 1
        layers_fit = max(0, min(model.n_layers + 1, int(budget // per_layer_mib) if per_layer_mib else 0))
        fixed.pop("n_gpu_layers", None)
        params.insert(0, Param(name="n_gpu_layers", low=0, high=max(1, layers_fit)))
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
