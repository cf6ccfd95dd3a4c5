"""Telemetry sampled on a thread while a measurement runs.

On every machine: the process's peak resident memory (RSS). With NVIDIA GPUs (NVML), every one of
them (a model split over two cards works on both): peak VRAM used, mean utilisation, mean power,
and energy per generated token from NVML's total-energy counter where the GPU supports it (else
mean power x time); summed over the cards (utilisation: their mean), and per card in ``devices``.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

__all__ = ["Telemetry"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes(pid: int | None = None) -> int:
    try:
        with open(f"/proc/{pid or 'self'}/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return 0


class Telemetry:
    """Context manager: samples every ``interval_s`` until exit; :meth:`summary` gives the figures.

    Args:
        interval_s: sampling period.
        nvml: the pynvml module (tests pass a stand-in); None imports the real one.
        pid: the process whose RSS is sampled (a llama-server's); None: this one.
    """

    def __init__(self, interval_s: float = 0.05, *, nvml: Any = None, pid: int | None = None) -> None:
        self.interval_s = interval_s
        self.pid = pid
        self._nvml = nvml
        self._gpus: list[_Gpu] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss_peak = 0
        self._started = self._ended = 0.0

    def __enter__(self) -> Telemetry:
        self._open_gpus()
        self._started = time.perf_counter()
        for gpu in self._gpus:
            gpu.read_energy(self._nvml)
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="tuner-telemetry", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self._ended = time.perf_counter()
        for gpu in self._gpus:
            gpu.read_energy(self._nvml, last=True)
        self._close_gpus()

    def summary(self, tokens: int) -> dict[str, Any]:
        """Figures for the sampled span; ``tokens`` is how many tokens were generated in it."""
        data: dict[str, Any] = {"peak_rss_mib": round(self._rss_peak / 2**20, 1)}
        if not self._gpus:
            return data
        seconds = self._ended - self._started
        devices = [gpu.figures(seconds, tokens) for gpu in self._gpus]
        energies = [d["energy_j"] for d in devices]
        powers = [d["mean_power_w"] for d in devices]
        utils = [d["mean_util_pct"] for d in devices if d["mean_util_pct"] is not None]
        energy_j = sum(energies) if None not in energies else None
        sources = {d["energy_source"] for d in devices}
        data["gpu"] = {
            "peak_vram_used_mib": round(sum(d["peak_vram_used_mib"] for d in devices), 1),  # each card's peak, summed
            "mean_util_pct": round(sum(utils) / len(utils), 1) if utils else None,
            "mean_power_w": round(sum(powers), 1) if None not in powers else None,
            "energy_j": round(energy_j, 3) if energy_j is not None else None,
            "energy_per_token_j": round(energy_j / tokens, 5) if energy_j is not None and tokens else None,
            "energy_source": sources.pop() if len(sources) == 1 else "mixed",
        }
        if len(devices) > 1:
            data["gpu"]["devices"] = devices
        return data

    # -- sampling -------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        self._rss_peak = max(self._rss_peak, _rss_bytes(self.pid))
        for gpu in self._gpus:
            gpu.sample(self._nvml)

    def _open_gpus(self) -> None:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency
                return
            self._nvml = pynvml
        try:
            self._nvml.nvmlInit()
        except self._nvml.NVMLError:
            return  # no driver: CPU-only figures
        try:
            self._gpus = [_Gpu(i, self._nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(self._nvml.nvmlDeviceGetCount())]
        except self._nvml.NVMLError:
            self._gpus = []
        if not self._gpus:
            self._close_gpus(force=True)

    def _close_gpus(self, force: bool = False) -> None:
        if self._gpus or force:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass


class _Gpu:
    """One NVML device's samples."""

    def __init__(self, index: int, handle: Any) -> None:
        self.index, self.handle = index, handle
        self.vram_peak = 0
        self.util: list[float] = []
        self.power_w: list[float] = []
        self.energy_mj: list[int] = []

    def sample(self, nvml: Any) -> None:
        try:
            self.vram_peak = max(self.vram_peak, nvml.nvmlDeviceGetMemoryInfo(self.handle).used)
            self.util.append(float(nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu))
            self.power_w.append(nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000)
        except nvml.NVMLError:
            pass  # a GPU that does not report one figure still reports the others next time

    def read_energy(self, nvml: Any, last: bool = False) -> None:
        if last and not self.energy_mj:
            return  # no first reading: the counter is not supported
        try:
            self.energy_mj.append(int(nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)))
        except nvml.NVMLError:
            pass  # not supported before Volta

    def figures(self, seconds: float, tokens: int) -> dict[str, Any]:
        mean_power = sum(self.power_w) / len(self.power_w) if self.power_w else None
        if len(self.energy_mj) == 2:
            energy_j, source = (self.energy_mj[1] - self.energy_mj[0]) / 1000, "nvml_total_energy"
        elif mean_power is not None:
            energy_j, source = mean_power * seconds, "mean_power_x_time"
        else:
            energy_j, source = None, "unavailable"
        return {
            "index": self.index,
            "peak_vram_used_mib": round(self.vram_peak / 2**20, 1),
            "mean_util_pct": round(sum(self.util) / len(self.util), 1) if self.util else None,
            "mean_power_w": round(mean_power, 1) if mean_power is not None else None,
            "energy_j": energy_j,
            "energy_source": source,
        }
