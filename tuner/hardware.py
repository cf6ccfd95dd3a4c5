"""Facts about the machine that change performance: CPU, memory, llama.cpp build and its devices
(:mod:`tuner.devices`), NVIDIA GPUs (NVML).

No NVIDIA driver (NVML library not found) is the normal CPU-only result, not an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

from tuner.devices import LlamaDevice, llama_devices

__all__ = [
    "CUDA_REBUILD",
    "GpuInfo",
    "Machine",
    "describe_machine",
    "different_machine",
    "logical_cores",
    "nvidia_gpus",
    "offload_missing",
    "physical_cores",
]


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    driver: str
    vram_total_mib: int
    vram_free_mib: int
    compute_capability: str


@dataclass(frozen=True)
class Machine:
    cpu_model: str
    physical_cores: int
    logical_cores: int
    ram_gib: float
    platform: str
    llama_cpp_version: str
    llama_system_info: str
    gpu_offload: bool
    gpus: list[GpuInfo] = field(default_factory=list)
    nvml_status: str = ""
    # llama.cpp's own devices (every backend: CUDA, Metal, Vulkan, ROCm, ...), for planning; the
    # fingerprint keeps to the build and NVML's cards, so studies recorded before them still resume.
    devices: list[LlamaDevice] = field(default_factory=list)
    devices_status: str = ""

    @property
    def offload_devices(self) -> list[LlamaDevice]:
        """The devices llama.cpp offloads layers to (GPUs, dedicated or integrated)."""
        return [d for d in self.devices if d.offloads]

    @property
    def fingerprint(self) -> str:
        """Stable hash of the facts that change performance (not free memory, not versions' text)."""
        facts = {
            "cpu": self.cpu_model,
            "physical": self.physical_cores,
            "logical": self.logical_cores,
            "ram_gib": round(self.ram_gib),
            "gpu_offload": self.gpu_offload,
            "gpus": [(g.name, g.vram_total_mib, g.compute_capability) for g in self.gpus],
            # a different llama.cpp build is a different engine: its numbers must not mix either
            "llama_cpp": self.llama_cpp_version,
            "build": self.llama_system_info,
        }
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fingerprint"] = self.fingerprint
        return data

    def summary(self) -> str:
        gpus = ", ".join(g.name for g in self.gpus) or "no NVIDIA GPU"
        return f"{self.cpu_model} ({self.logical_cores} logical cores, {self.ram_gib:.0f} GiB), {gpus}"


def logical_cores() -> int:
    """CPUs this process may run on (respects affinity / cgroup cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores from /proc/cpuinfo (core id per physical package); logical count if unknown."""
    try:
        text = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:  # pragma: no cover - not Linux
        return logical_cores()
    cores: set[tuple[str, str]] = set()
    physical = core = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "physical id":
            physical = value
        elif key == "core id":
            core = value
        elif not line.strip() and core:
            cores.add((physical, core))
            physical = core = ""
    if core:
        cores.add((physical, core))
    return len(cores) or logical_cores()


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover - not Linux
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 0.0


def nvidia_gpus(nvml: Any = None) -> tuple[list[GpuInfo], str]:
    """NVIDIA GPUs through NVML, and a status line ("ok" or why there are none).

    Args:
        nvml: the pynvml module; tests pass a stand-in to exercise the GPU-present path.
    """
    if nvml is None:
        import pynvml as nvml
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return [], f"no NVIDIA driver ({type(exc).__name__})"
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                GpuInfo(
                    index=index,
                    name=_text(nvml.nvmlDeviceGetName(handle)),
                    driver=driver,
                    vram_total_mib=memory.total // 2**20,
                    vram_free_mib=memory.free // 2**20,
                    compute_capability=f"{major}.{minor}",
                )
            )
        return gpus, "ok"
    except nvml.NVMLError as exc:
        return [], f"NVML error: {exc}"
    finally:
        nvml.nvmlShutdown()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# How to rebuild llama-cpp-python for an NVIDIA GPU in this project's virtualenv (docs/hardware.md).
CUDA_REBUILD = 'LLAMA_CMAKE_ARGS="-DGGML_CUDA=on -DLLAVA_BUILD=OFF" bash scripts/install_llama.sh .venv/bin/python'


def offload_missing(machine: Machine) -> str:
    """One line when NVML sees an NVIDIA GPU that this llama-cpp-python build cannot use (a
    CPU-only build: every trial would run on the CPU), with the rebuild command; "" otherwise."""
    if not machine.gpus or machine.gpu_offload:
        return ""
    return (
        f"{machine.gpus[0].name} found, but this llama-cpp-python build has no GPU offload (a CPU-only build): "
        f"trials run on the CPU; rebuild it for CUDA: {CUDA_REBUILD}"
    )


@lru_cache(maxsize=1)
def describe_machine() -> Machine:
    """Everything this module knows about the current machine (cached for the process)."""
    import llama_cpp

    gpus, status = nvidia_gpus()
    devices, devices_status = llama_devices()
    return Machine(
        cpu_model=_cpu_model(),
        physical_cores=physical_cores(),
        logical_cores=logical_cores(),
        ram_gib=round(_ram_gib(), 1),
        platform=f"{platform.system()} {platform.release()} {platform.machine()}",
        llama_cpp_version=llama_cpp.__version__,
        llama_system_info=llama_cpp.llama_print_system_info().decode(errors="replace").strip(),
        gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
        gpus=gpus,
        nvml_status=status,
        devices=devices,
        devices_status=devices_status,
    )


def different_machine(recorded: dict[str, Any] | None, current: Machine) -> str | None:
    """Why ``current`` is not the machine described by ``recorded`` (a Machine.to_dict()), or None."""
    if not recorded or not recorded.get("fingerprint"):
        return None
    if recorded["fingerprint"] == current.fingerprint:
        return None
    changed = [
        key
        for key in ("cpu_model", "logical_cores", "physical_cores", "gpu_offload", "llama_cpp_version", "llama_system_info")
        if recorded.get(key) != getattr(current, key)
    ]
    recorded_gpus = [g.get("name") for g in recorded.get("gpus", [])]
    if recorded_gpus != [g.name for g in current.gpus]:
        changed.append("gpus")
    detail = ", ".join(changed) or "hardware facts"
    return f"fingerprint {recorded['fingerprint']} vs this machine's {current.fingerprint} (differs in {detail})"
