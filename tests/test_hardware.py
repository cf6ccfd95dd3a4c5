"""Hardware facts, the machine fingerprint, and the GPU-aware choice of search space."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pynvml
import pytest

from tests.fake_ggml import metal
from tests.fake_nvml import FakeNvml
from tuner.devices import llama_devices
from tuner.gguf import GgufInfo, read_gguf_info
from tuner.errors import SpaceError
from tuner.hardware import CUDA_REBUILD, GpuInfo, describe_machine, different_machine, logical_cores, nvidia_gpus, offload_missing, physical_cores
from tuner.placement import check_offload, choose_space, placement_of, placement_words
from tuner.space import load_space
from tuner.telemetry import Telemetry


def _real_nvml_works() -> bool:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def test_real_nvml_without_a_driver_is_a_cpu_only_result():
    gpus, status = nvidia_gpus()
    if _real_nvml_works():  # pragma: no cover - only on a machine with an NVIDIA driver
        assert gpus and status == "ok"
    else:
        assert gpus == []
        assert status.startswith("no NVIDIA driver (NVMLError")


def test_machine_description():
    machine = describe_machine()
    assert machine.logical_cores == logical_cores() >= 1
    assert 1 <= machine.physical_cores <= machine.logical_cores
    assert machine.ram_gib > 0
    assert "CPU" in machine.llama_system_info or "AVX" in machine.llama_system_info
    assert isinstance(machine.gpu_offload, bool)


def test_fake_gpu_is_described():
    gpus, status = nvidia_gpus(FakeNvml())
    assert status == "ok"
    assert gpus == [GpuInfo(0, "NVIDIA GeForce RTX 4090", "560.35.03", 24564, 23000, "8.9")]


def test_fingerprint_is_stable_and_tracks_performance_facts():
    machine = describe_machine()
    describe_machine.cache_clear()
    assert describe_machine().fingerprint == machine.fingerprint
    assert replace(machine, cpu_model="Other CPU").fingerprint != machine.fingerprint
    assert replace(machine, logical_cores=machine.logical_cores + 2).fingerprint != machine.fingerprint
    gpu = GpuInfo(0, "NVIDIA GeForce RTX 4090", "560", 24564, 20000, "8.9")
    with_gpu = replace(machine, gpus=[gpu])
    assert with_gpu.fingerprint != machine.fingerprint
    # free VRAM changes from minute to minute; it is not part of the machine's identity
    assert replace(machine, gpus=[replace(gpu, vram_free_mib=100)]).fingerprint == with_gpu.fingerprint


def test_different_machine_says_what_differs():
    machine = describe_machine()
    assert different_machine(machine.to_dict(), machine) is None
    other = replace(machine, cpu_model="Other CPU", logical_cores=64)
    why = different_machine(other.to_dict(), machine)
    assert "cpu_model" in why and "logical_cores" in why


def test_gguf_metadata_of_the_embedded_model(model_path):
    info = read_gguf_info(model_path)
    assert (info.architecture, info.n_layers, info.context_length) == ("gemma3", 18, 32768)
    assert info.kv_bytes_per_token() > 0


def test_space_on_a_cpu_only_machine(model_path):
    machine = replace(describe_machine(), gpu_offload=False, gpus=[])
    space, why = choose_space(machine, read_gguf_info(model_path))
    assert space.name == "cpu" and "no GPU offload" in why


def test_space_on_a_24gb_gpu_offloads_everything(model_path):
    gpus, _ = nvidia_gpus(FakeNvml())
    machine = replace(describe_machine(), gpu_offload=True, gpus=gpus)
    space, why = choose_space(machine, read_gguf_info(model_path))
    assert space.name == "rtx4090"
    assert space.fixed["n_gpu_layers"] == -1
    assert {p.name: p for p in space.params}["n_batch"].high == 4096
    assert "fits" in why
    # under full offload the CPU threads only feed the GPU: fixed at the physical cores, not searched
    assert space.fixed["n_threads"] == space.fixed["n_threads_batch"] == physical_cores()
    assert not {"n_threads", "n_threads_batch"} & {p.name for p in space.params}


def test_space_when_the_model_does_not_fit_searches_gpu_layers():
    gpus, _ = nvidia_gpus(FakeNvml(name="RTX 3050", total_mib=8192, free_mib=6000))
    machine = replace(describe_machine(), gpu_offload=True, gpus=gpus)
    big = GgufInfo(Path("big.gguf"), "llama", 32, 8192, 4096, 32, 8, 128, 128, 13 * 2**30, {})
    space, why = choose_space(machine, big)
    layers = {p.name: p for p in space.params}["n_gpu_layers"]
    assert "n_gpu_layers" not in space.fixed
    assert layers.low == 0 and 1 <= layers.high < 32 + 1  # up to n_layers + 1: the output layer counts
    assert {"n_threads", "n_threads_batch"} <= {p.name for p in space.params}  # layers on the CPU: threads matter
    assert {p.name: p for p in space.params}["n_batch"].high == 1024
    assert "does not fit" in why


def test_scaled_space_survives_a_round_trip():
    from tuner.space import parse_space

    gpus, _ = nvidia_gpus(FakeNvml(total_mib=8192, free_mib=6000))
    big = GgufInfo(Path("big.gguf"), "llama", 32, 8192, 4096, 32, 8, 128, 128, 13 * 2**30, {})
    space, _ = choose_space(replace(describe_machine(), gpu_offload=True, gpus=gpus), big)
    again = parse_space(space.text, source="recorded")
    assert again.params == space.params and again.fixed == space.fixed


def test_telemetry_cpu_only_reports_peak_rss():
    with Telemetry(interval_s=0.01) as telemetry:
        block = bytearray(64 * 2**20)  # touch 64 MiB so the peak is visible
        block[:: 4096] = b"x" * len(block[:: 4096])
        time.sleep(0.05)
    summary = telemetry.summary(tokens=10)
    assert summary["peak_rss_mib"] >= 64
    if not _real_nvml_works():
        assert "gpu" not in summary


@pytest.mark.parametrize("energy_counter", [True, False])
def test_telemetry_with_a_gpu(energy_counter):
    with Telemetry(interval_s=0.01, nvml=FakeNvml(energy=energy_counter)) as telemetry:
        time.sleep(0.05)
    gpu = telemetry.summary(tokens=100)["gpu"]
    assert gpu["peak_vram_used_mib"] == pytest.approx(24564 - 23000)
    assert gpu["mean_util_pct"] == 80 and gpu["mean_power_w"] == 300
    if energy_counter:
        assert gpu["energy_source"] == "nvml_total_energy"
        assert gpu["energy_per_token_j"] == pytest.approx(30 / 100)
    else:
        assert gpu["energy_source"] == "mean_power_x_time"
        assert gpu["energy_j"] > 0


def test_an_nvidia_card_with_a_cpu_only_build_says_how_to_rebuild(model_path):
    gpus, _ = nvidia_gpus(FakeNvml())  # NVML sees the card; this llama-cpp-python cannot offload
    machine = replace(describe_machine(), gpu_offload=False, gpus=gpus)
    space, why = choose_space(machine, read_gguf_info(model_path))
    assert space.name == "cpu"
    assert why == offload_missing(machine)
    assert why.startswith("NVIDIA GeForce RTX 4090 found, but this llama-cpp-python build has no GPU offload") and CUDA_REBUILD in why
    with pytest.raises(SpaceError, match="space 'rtx4090' offloads layers to a GPU") as refused:
        check_offload(load_space("rtx4090"), machine)
    assert CUDA_REBUILD in refused.value.fix and "--space cpu" in refused.value.fix
    check_offload(load_space("cpu"), machine)  # the CPU space is fine
    assert offload_missing(replace(machine, gpu_offload=True)) == "" and offload_missing(replace(machine, gpus=[])) == ""


def test_doctor_prints_the_rebuild_line_for_a_cpu_only_build_on_an_nvidia_machine(monkeypatch, capsys):
    from tuner import hardware
    from tuner.cli._tool_commands import doctor

    gpus, _ = nvidia_gpus(FakeNvml())
    monkeypatch.setattr(hardware, "describe_machine", lambda: replace(describe_machine(), gpu_offload=False, gpus=gpus))
    doctor(model=None, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("warning:     NVIDIA GeForce RTX 4090 found, but this llama-cpp-python build has no GPU offload") for line in lines)
    assert any(line.startswith("space:       cpu — NVIDIA GeForce RTX 4090 found") for line in lines)


def test_the_placement_the_defaults_share_with_the_candidates(model_path):
    """A study's defaults baseline runs where its candidates run: nothing offloaded with the CPU
    space, every layer under full offload, the most layers that fit when they are searched."""
    assert placement_of(load_space("cpu")) == {} and placement_words({}) == ""
    gpus, _ = nvidia_gpus(FakeNvml())
    full, _ = choose_space(replace(describe_machine(), gpu_offload=True, gpus=gpus), read_gguf_info(model_path))
    assert placement_of(full) == {"n_gpu_layers": -1}
    assert placement_words(placement_of(full)) == "every layer offloaded (n_gpu_layers -1)"
    small, _ = nvidia_gpus(FakeNvml(name="RTX 3050", total_mib=8192, free_mib=6000))
    big = GgufInfo(Path("big.gguf"), "llama", 32, 8192, 4096, 32, 8, 128, 128, 13 * 2**30, {})
    partial, _ = choose_space(replace(describe_machine(), gpu_offload=True, gpus=small), big)
    layers = {p.name: p for p in partial.params}["n_gpu_layers"].high
    assert placement_of(partial) == {"n_gpu_layers": layers} and f"{layers} layers offloaded" in placement_words(placement_of(partial))


def test_llama_cpps_own_device_list_here_is_the_cpu():
    devices, status = llama_devices()
    assert status == "ok" and devices and devices[-1].kind == "cpu"
    assert describe_machine().devices == devices
    if not describe_machine().gpu_offload:
        assert describe_machine().offload_devices == []


def test_a_metal_like_device_without_nvml_gets_a_gpu_space(model_path):
    """A Metal (or Vulkan, ROCm) build offloads to a GPU NVML never sees: llama.cpp's own device
    list finds it, and the space offloads, fitted to that device's free memory."""
    devices, status = llama_devices(metal(free_mib=40_000))
    assert status == "ok"
    assert [(d.name, d.kind, d.memory_free_mib, d.offloads) for d in devices] == [("Metal", "igpu", 40_000, True), ("CPU", "cpu", 40_000, False)]
    machine = replace(describe_machine(), gpu_offload=True, gpus=[], nvml_status="no NVIDIA driver", devices=devices)
    space, why = choose_space(machine, read_gguf_info(model_path))
    assert space.name == "rtx4090" and space.fixed["n_gpu_layers"] == -1
    assert why.startswith("Apple M2 Max (Metal) with 40000 MiB free")
    assert placement_of(space) == {"n_gpu_layers": -1}
    none_seen = replace(machine, devices=devices[1:])
    space, why = choose_space(none_seen, read_gguf_info(model_path))
    assert space.name == "cpu" and "neither llama.cpp nor NVML sees a GPU" in why
