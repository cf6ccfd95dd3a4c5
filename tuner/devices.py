"""llama.cpp's own devices: what this llama-cpp-python build's ggml can run on (CUDA, Metal,
Vulkan, ROCm/HIP, SYCL, the CPU), with names and free memory, read through ggml's device API
(``ggml_backend_dev_count/get/name/description/type/memory``) with ctypes, from the ggml library
llama-cpp-python ships and has already loaded.

Why not NVML alone: a Metal (Apple), Vulkan or ROCm build offloads to a GPU NVML never sees, so
planning from NVML alone put those machines on the CPU space. NVML stays for what only it gives
on NVIDIA (power, clocks, utilisation, energy: :mod:`tuner.telemetry`) and for spotting an NVIDIA
card that a CPU-only build cannot use (:func:`tuner.hardware.offload_missing`).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

__all__ = ["DEVICE_KINDS", "LlamaDevice", "llama_devices"]

# enum ggml_backend_dev_type (ggml-backend.h), in its order.
DEVICE_KINDS = ("cpu", "gpu", "igpu", "accel", "meta")


@dataclass(frozen=True)
class LlamaDevice:
    """One device ggml registered: ``name`` is ggml's ("CUDA0", "Metal", "Vulkan0", "CPU"),
    ``description`` the hardware ("NVIDIA GeForce RTX 4090", "Apple M2 Max")."""

    index: int
    name: str
    description: str
    kind: str  # one of DEVICE_KINDS
    memory_free_mib: int
    memory_total_mib: int

    @property
    def offloads(self) -> bool:
        """True for a device llama.cpp offloads layers to: a GPU, dedicated or integrated."""
        return self.kind in ("gpu", "igpu")

    def summary(self) -> str:
        return f"{self.name} {self.description} ({self.kind}, {self.memory_free_mib}/{self.memory_total_mib} MiB free)"


def llama_devices(lib: Any = None) -> tuple[list[LlamaDevice], str]:
    """The devices this build's ggml registered, and a status ("ok" or why there are none).

    Args:
        lib: the ggml library (a ctypes CDLL); tests pass a stand-in with the same functions to
            exercise devices this machine does not have.
    """
    if lib is None:
        try:
            lib = _ggml_library()
        except (ImportError, OSError, AttributeError) as exc:
            return [], f"ggml's device list is not readable ({type(exc).__name__}: {exc})"
    devices = []
    for index in range(int(lib.ggml_backend_dev_count())):
        device = lib.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        lib.ggml_backend_dev_memory(device, ctypes.pointer(free), ctypes.pointer(total))
        kind = int(lib.ggml_backend_dev_type(device))
        devices.append(
            LlamaDevice(
                index=index,
                name=_text(lib.ggml_backend_dev_name(device)),
                description=_text(lib.ggml_backend_dev_description(device)),
                kind=DEVICE_KINDS[kind] if 0 <= kind < len(DEVICE_KINDS) else f"type {kind}",
                memory_free_mib=free.value // 2**20,
                memory_total_mib=total.value // 2**20,
            )
        )
    return devices, "ok"


def _ggml_library() -> Any:
    """llama-cpp-python's ggml library with the device functions' C signatures declared."""
    from llama_cpp import _ggml

    lib = _ggml.libggml
    device = ctypes.c_void_p
    lib.ggml_backend_dev_count.argtypes, lib.ggml_backend_dev_count.restype = [], ctypes.c_size_t
    lib.ggml_backend_dev_get.argtypes, lib.ggml_backend_dev_get.restype = [ctypes.c_size_t], device
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(lib, name).argtypes, getattr(lib, name).restype = [device], ctypes.c_char_p
    lib.ggml_backend_dev_type.argtypes, lib.ggml_backend_dev_type.restype = [device], ctypes.c_int
    size = ctypes.POINTER(ctypes.c_size_t)
    lib.ggml_backend_dev_memory.argtypes, lib.ggml_backend_dev_memory.restype = [device, size, size], None
    return lib


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
