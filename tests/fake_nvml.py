"""A stand-in for pynvml with one GPU, for the GPU-present code paths (no GPU exists here).

Kept to that purpose: the CPU-only paths are tested against the real NVML library.
"""

from __future__ import annotations

from types import SimpleNamespace


class NVMLError(Exception):
    pass


class FakeNvml:
    NVMLError = NVMLError

    def __init__(self, *, name: str = "NVIDIA GeForce RTX 4090", total_mib: int = 24564, free_mib: int = 23000,
                 energy: bool = True, count: int = 1) -> None:
        self.name, self.total, self.free, self.energy = name, total_mib * 2**20, free_mib * 2**20, energy
        self.count = count  # identical cards
        self.energy_mj = 1_000_000
        self.initialised = False

    def nvmlInit(self) -> None:
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return "560.35.03"

    def nvmlDeviceGetCount(self) -> int:
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        return ("gpu", index)

    def nvmlDeviceGetName(self, handle: object) -> bytes:
        return self.name.encode()

    def nvmlDeviceGetMemoryInfo(self, handle: object) -> SimpleNamespace:
        return SimpleNamespace(total=self.total, free=self.free, used=self.total - self.free)

    def nvmlDeviceGetCudaComputeCapability(self, handle: object) -> tuple[int, int]:
        return (8, 9)

    def nvmlDeviceGetUtilizationRates(self, handle: object) -> SimpleNamespace:
        return SimpleNamespace(gpu=80, memory=40)

    def nvmlDeviceGetPowerUsage(self, handle: object) -> int:
        return 300_000  # mW

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:
        if not self.energy:
            raise NVMLError("not supported")
        self.energy_mj += 30_000  # 30 J between reads
        return self.energy_mj
