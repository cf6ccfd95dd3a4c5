"""A stand-in for ggml's device API (the ggml_backend_dev_* functions llama-cpp-python's ggml
library exports), for devices this machine does not have: a Metal or Vulkan GPU, several CUDA
cards. Kept to that purpose: the CPU-only path is tested against the real library."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = {"cpu": 0, "gpu": 1, "igpu": 2, "accel": 3}


@dataclass
class FakeDevice:
    name: str
    description: str
    kind: str
    free_mib: int
    total_mib: int


class FakeGgml:
    def __init__(self, *devices: FakeDevice) -> None:
        self.devices = list(devices) or [FakeDevice("CPU", "Fake CPU", "cpu", 16_000, 32_000)]

    def ggml_backend_dev_count(self) -> int:
        return len(self.devices)

    def ggml_backend_dev_get(self, index: int) -> int:
        return index

    def ggml_backend_dev_name(self, device: int) -> bytes:
        return self.devices[device].name.encode()

    def ggml_backend_dev_description(self, device: int) -> bytes:
        return self.devices[device].description.encode()

    def ggml_backend_dev_type(self, device: int) -> int:
        return KINDS[self.devices[device].kind]

    def ggml_backend_dev_memory(self, device: int, free, total) -> None:
        free.contents.value = self.devices[device].free_mib * 2**20
        total.contents.value = self.devices[device].total_mib * 2**20


def metal(free_mib: int = 40_000, total_mib: int = 49_152) -> FakeGgml:
    """An Apple machine's build: the CPU and one Metal GPU (unified memory), no NVML device."""
    return FakeGgml(FakeDevice("Metal", "Apple M2 Max", "igpu", free_mib, total_mib), FakeDevice("CPU", "Apple M2 Max", "cpu", free_mib, total_mib))
