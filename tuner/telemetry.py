"""Telemetry sampled on a thread while a measurement runs.

On every machine: the process's peak resident memory (RSS). With an NVIDIA GPU (NVML): peak VRAM
used, mean utilisation, mean power, and energy per generated token from NVML's total-energy
counter where the GPU supports it (else mean power x time).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

__all__ = ["Telemetry"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return 0


class Telemetry:
    """Context manager: samples every ``interval_s`` until exit; :meth:`summary` gives the figures.

    Args:
        interval_s: sampling period.
        nvml: the pynvml module (tests pass a stand-in); None imports the real one.
        gpu_index: which GPU to watch.
    """

    def __init__(self, interval_s: float = 0.05, *, nvml: Any = None, gpu_index: int = 0) -> None:
        self.interval_s = interval_s
        self._nvml = nvml
        self._gpu_index = gpu_index
        self._handle: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss_peak = 0
        self._vram_peak = 0
        self._util: list[float] = []
        self._power_w: list[float] = []
        self._energy_mj: list[int] = []
        self._started = self._ended = 0.0

    def __enter__(self) -> Telemetry:
        self._open_gpu()
        self._started = time.perf_counter()
        self._energy_mj = [e for e in [self._energy()] if e is not None]
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
        end_energy = self._energy()
        if end_energy is not None and self._energy_mj:
            self._energy_mj.append(end_energy)
        self._close_gpu()

    def summary(self, tokens: int) -> dict[str, Any]:
        """Figures for the sampled span; ``tokens`` is how many tokens were generated in it."""
        data: dict[str, Any] = {"peak_rss_mib": round(self._rss_peak / 2**20, 1)}
        if self._handle is None and not self._util:
            return data
        seconds = self._ended - self._started
        mean_power = sum(self._power_w) / len(self._power_w) if self._power_w else None
        if len(self._energy_mj) == 2:
            energy_j, source = (self._energy_mj[1] - self._energy_mj[0]) / 1000, "nvml_total_energy"
        elif mean_power is not None:
            energy_j, source = mean_power * seconds, "mean_power_x_time"
        else:
            energy_j, source = None, "unavailable"
        data["gpu"] = {
            "peak_vram_used_mib": round(self._vram_peak / 2**20, 1),
            "mean_util_pct": round(sum(self._util) / len(self._util), 1) if self._util else None,
            "mean_power_w": round(mean_power, 1) if mean_power is not None else None,
            "energy_j": round(energy_j, 3) if energy_j is not None else None,
            "energy_per_token_j": round(energy_j / tokens, 5) if energy_j is not None and tokens else None,
            "energy_source": source,
        }
        return data

    # -- sampling -------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        self._rss_peak = max(self._rss_peak, _rss_bytes())
        if self._handle is None:
            return
        nvml = self._nvml
        try:
            self._vram_peak = max(self._vram_peak, nvml.nvmlDeviceGetMemoryInfo(self._handle).used)
            self._util.append(float(nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
            self._power_w.append(nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000)
        except nvml.NVMLError:
            pass  # a GPU that does not report one figure still reports the others next time

    def _energy(self) -> int | None:
        if self._handle is None:
            return None
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        except self._nvml.NVMLError:
            return None  # not supported before Volta

    def _open_gpu(self) -> None:
        if self._nvml is None:
            try:
                import pynvml
            except ImportError:  # pragma: no cover - nvidia-ml-py is a dependency
                return
            self._nvml = pynvml
        try:
            self._nvml.nvmlInit()
            self._handle = self._nvml.nvmlDeviceGetHandleByIndex(self._gpu_index)
        except self._nvml.NVMLError:
            self._handle = None  # no driver: CPU-only figures

    def _close_gpu(self) -> None:
        if self._handle is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
