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
    big = GgufInfo(Path("big.gguf"), "llama", 32, 8192, 4096, 32, 8, 128, 128, 13 * 2**30, {}, n_vocab=128256)
    space, why = choose_space(machine, big)
    layers = {p.name: p for p in space.params}["n_gpu_layers"]
    assert "n_gpu_layers" not in space.fixed
    assert layers.low == 0 and 1 <= layers.high < 32 + 1  # up to n_layers + 1: the output layer counts
    assert {"n_threads", "n_threads_batch"} <= {p.name for p in space.params}  # layers on the CPU: threads matter
    # the compute buffer gets a quarter of (6000 x 0.9 - 512) MiB: 2048 positions x (128256 logits + 3 hidden rows) x 4 bytes
    # (1098 MiB) fit, 4096 do not
    compute = 2048 * (128256 + 3 * 4096) * 4 / 2**20
    assert {p.name: p for p in space.params}["n_batch"].high == 2048 and "compute buffer 1098 MiB" in why
    # each offloaded layer brings its weights (13 GiB / 32) and its KV share at the smallest context
    per_layer = (13 * 2**30 / 32 + big.kv_bytes_per_token() / 32 * 1024) / 2**20
    assert layers.high == int((6000 * 0.9 - 512 - compute) // per_layer)
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


def test_a_gpu_spaces_batch_sizes_are_bounded_by_the_longest_prompt(model_path):
    """A batch larger than every timed prompt computes it as one just as large does: the search
    goes up to the power of two that holds the longest prompt, and for chat-sized prompts the
    batch sizes are not searched at all (llama-cpp-python's 512 kept)."""
    from tuner.workload import Shape, Workload, load_profile

    gpus, _ = nvidia_gpus(FakeNvml())
    machine = replace(describe_machine(), gpu_offload=True, gpus=gpus)
    chat, why = choose_space(machine, read_gguf_info(model_path), load_profile("chat"))
    assert not {"n_batch", "n_ubatch"} & {p.name for p in chat.params}
    assert (chat.fixed["n_batch"], chat.fixed["n_ubatch"]) == (512, 512) and "longest prompt (32 tokens)" in why
    documents = Workload(shapes=(Shape(0, 1500, 16, name="paste"), Shape(64, 32, 48, name="turn")))
    space, why = choose_space(machine, read_gguf_info(model_path), documents)
    by_name = {p.name: p for p in space.params}
    assert by_name["n_batch"].high == by_name["n_ubatch"].high == 2048 and "up to 2048" in why
    cpu, _ = choose_space(replace(machine, gpu_offload=False), read_gguf_info(model_path), load_profile("chat"))
    assert {"n_batch", "n_ubatch"} <= {p.name for p in cpu.params}  # the CPU space is left as it was


def test_two_cards_are_planned_together_searched_for_a_split_and_both_watched(model_path):
    """An 8B-shaped model on two 12 GB cards: the fit counts both cards' free memory (each with
    its runtime), llama.cpp's split mode is searched, and telemetry reads every card."""
    from tests.fake_ggml import FakeDevice, FakeGgml

    two = FakeGgml(FakeDevice("CUDA0", "NVIDIA GeForce RTX 3060", "gpu", 11_500, 12_288), FakeDevice("CUDA1", "NVIDIA GeForce RTX 3060", "gpu", 11_500, 12_288),
                   FakeDevice("CPU", "Fake CPU", "cpu", 60_000, 64_000))
    devices, _ = llama_devices(two)
    gpus, _ = nvidia_gpus(FakeNvml(name="NVIDIA GeForce RTX 3060", total_mib=12_288, free_mib=11_500, count=2))
    machine = replace(describe_machine(), gpu_offload=True, gpus=gpus, devices=devices)
    eight_b = GgufInfo(Path("8b.gguf"), "llama", 32, 8192, 4096, 32, 8, 128, 128, int(4.6 * 2**30), {}, n_vocab=128256)
    space, why = choose_space(machine, eight_b)
    by_name = {p.name: p for p in space.params}
    assert why.startswith("NVIDIA GeForce RTX 3060 (CUDA0) + NVIDIA GeForce RTX 3060 (CUDA1) with 23000 MiB free")
    assert by_name["split_mode"].choices == (1, 2) and space.fixed["main_gpu"] == 0 and "2 GPUs: split_mode searched" in why
    assert space.fixed["n_gpu_layers"] == -1  # 4.6 GiB of weights fit in the two cards together
    with Telemetry(interval_s=0.01, nvml=FakeNvml(total_mib=12_288, free_mib=11_500, count=2)) as telemetry:
        time.sleep(0.05)
    gpu = telemetry.summary(tokens=100)["gpu"]
    assert [d["index"] for d in gpu["devices"]] == [0, 1]
    assert gpu["peak_vram_used_mib"] == pytest.approx(2 * (12_288 - 11_500))
    assert gpu["mean_power_w"] == 600 and gpu["energy_j"] == pytest.approx(120)  # both cards' energy (60 J each between their reads)


# An 8B llama's shapes (32 layers, hidden 4096, 32/8 heads, 128256 tokens) at Q4_K_M and at F16.
EIGHT_B_Q4 = GgufInfo(Path("8b-q4_k_m.gguf"), "llama", 32, 8192, 4096, 32, 8, 128, 128, int(4.58 * 2**30), {}, n_vocab=128256)
EIGHT_B_F16 = replace(EIGHT_B_Q4, path=Path("8b-f16.gguf"), file_bytes=int(14.96 * 2**30))


def test_an_8b_model_on_a_24_gb_card_is_offloaded_whole_with_threads_fixed_and_batches_bounded():
    from tuner.workload import load_profile

    gpus, _ = nvidia_gpus(FakeNvml())  # RTX 4090: 23000 MiB free
    space, why = choose_space(replace(describe_machine(), gpu_offload=True, gpus=gpus), EIGHT_B_Q4, load_profile("chat"))
    assert space.fixed["n_gpu_layers"] == -1 and placement_of(space) == {"n_gpu_layers": -1}  # the defaults offload too: no CPU floor
    assert space.fixed["n_threads"] == space.fixed["n_threads_batch"] == physical_cores()
    assert (space.fixed["n_batch"], space.fixed["n_ubatch"]) == (512, 512)  # chat's 32-token prompts: one batch at any size
    assert {p.name: p for p in space.params}["n_ctx"].choices == (1024, 2048, 4096, 8192)  # 8192 x 128 KiB of f16 KV fits beside 4.6 GiB
    assert "fits: every layer offloaded" in why


def test_an_8b_f16_model_on_a_12_gb_card_searches_partial_offload_fitted_to_kv_and_compute():
    gpus, _ = nvidia_gpus(FakeNvml(name="NVIDIA GeForce RTX 3060", total_mib=12_288, free_mib=11_500))
    space, why = choose_space(replace(describe_machine(), gpu_offload=True, gpus=gpus), EIGHT_B_F16)
    by_name = {p.name: p for p in space.params}
    budget = 11_500 * 0.9 - 512
    compute = 4096 * (128256 + 3 * 4096) * 4 / 2**20  # 2196 MiB: the largest batch's buffer within a quarter of the budget
    per_layer = (EIGHT_B_F16.file_bytes / 32 + EIGHT_B_F16.kv_bytes_per_token() / 32 * 1024) / 2**20
    assert by_name["n_batch"].high == 4096 and compute <= budget / 4 and by_name["n_gpu_layers"].low == 0
    assert by_name["n_gpu_layers"].high == int((budget - compute) // per_layer) < 32 + 1  # never more than n_layers + 1
    assert by_name["op_offload"].choices == (True, False)  # layers on the CPU: their batched products may run on the GPU
    assert {"n_threads", "n_threads_batch"} <= set(by_name)
    assert "does not fit: n_gpu_layers searched in 0.." in why and "of 33 (the output layer counts)" in why
