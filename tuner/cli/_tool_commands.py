"""The commands that measure or describe outside a study: bench, doctor, dashboard."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any, Optional

import typer

from tuner.cli._app import (
    DepthOpt,
    EngineOpt,
    GenOpt,
    ModelOpt,
    NoQualityOpt,
    PromptOpt,
    RepeatsOpt,
    ServerBinOpt,
    StorageOpt,
    TimeoutOpt,
    WorkloadOpt,
    app,
    check_timeout,
    worker,
    workload,
)
from tuner.cli._print import print_workload, table
from tuner.errors import ConfigError, TunerError


@app.command()
def bench(
    model: Optional[Path] = ModelOpt,
    preset: Optional[Path] = typer.Option(None, "--preset", "-p", help="Measure an exported preset."),
    set_: list[str] = typer.Option([], "--set", help="KEY=VALUE engine/sampling setting (repeatable), e.g. --set n_threads=2."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    workload_name: Optional[str] = WorkloadOpt,
    prompt_tokens: Optional[int] = PromptOpt,
    gen_tokens: Optional[int] = GenOpt,
    depth: Optional[int] = DepthOpt,
    repeats: int = RepeatsOpt,
    no_quality: bool = NoQualityOpt,
    trial_timeout: float = TimeoutOpt,
    engine: str = EngineOpt,
    server_bin: Optional[str] = ServerBinOpt,
) -> None:
    """Measure one configuration (llama-cpp-python defaults unless --preset/--set say otherwise)
    on a workload (a preset's own workload by default, else chat).

    It runs in a worker process, like a trial: a llama.cpp abort is one error line, not a crash.
    With --engine llama-server, in a llama-server started with every setting written out.
    """
    from dataclasses import replace

    from tuner import models
    from tuner.preset import Preset
    from tuner.space import to_config
    from tuner.workload import Workload

    check_timeout(trial_timeout)
    values: dict[str, Any] = {}
    model_arg: Any = model
    loaded = Preset.load(preset) if preset is not None else None
    if loaded is not None:
        values.update(loaded.engine)
        values.update(loaded.sampling)
        model_arg = model or loaded.model
    values.update(_parse_sets(set_))
    config = to_config(values)
    model_path = models.resolve_model(model_arg)
    asked = (workload_name, prompt_tokens, gen_tokens, depth) != (None, None, None, None)
    if loaded is not None and not asked and loaded.measured.get("workload"):  # what the preset was tuned for
        the_workload = replace(Workload.from_dict(loaded.measured["workload"]), repeats=repeats, quality=not no_quality)
    else:
        the_workload = workload(workload_name, prompt_tokens, gen_tokens, depth, repeats=repeats, no_quality=no_quality, model_path=model_path)
    with worker(model_path, trial_timeout, engine, server_bin) as runner:
        reference = runner.reference(models.model_sha256(model_path)) if the_workload.quality else None
        result = runner.measure(config, the_workload)
    if as_json:
        data = result.to_dict()
        data["model"] = str(model_path)
        quality = data.pop("quality") or {}  # kld_mean, kld_p99, top1_agreement, task_accuracy, ...
        if quality:
            quality["quality_seconds"] = quality.pop("seconds")  # "seconds" is the measurement's time by part
        data.update(quality)
        typer.echo(json.dumps(data))
        return
    print_workload(the_workload)
    rows = [[name, f"{getattr(result, name).median:.2f}", f"{getattr(result, name).iqr:.2f}", " ".join(f"{x:.1f}" for x in getattr(result, name).samples)] for name in result.METRICS]
    typer.echo(table(["metric", "median", "IQR", "samples"], rows))
    shapes = [
        [f.shape.describe(), f"{f.decode_tok_s.median:.1f}", f"{f.prompt_tok_s.median:.0f}", f"{f.ttft_ms.median:.0f}", f"{f.request_ms.median:.0f}", f.context_tokens]
        for f in result.shapes
    ]
    typer.echo(table(["shape", "decode tok/s", "prompt tok/s", "TTFT ms", "request ms", "cached at 1st token"], shapes))
    if result.quality and reference:
        q = result.quality
        typer.echo(
            f"quality: mean KLD {q.kld_mean:.4f} (p99 {q.kld_p99:.3f}), top-1 agreement {q.top1_agreement:.1%}, "
            f"expected task accuracy {q.task_accuracy:.2f} (greedy {reference['greedy_accuracy']:.2f}), expected NLL "
            f"{q.gen_nll:.2f}, kept mass {q.kept_mass:.2f} [{q.seconds:.1f} s{', logits cached' if q.cached else ''}]"
        )
    if result.clamped:
        typer.echo("clamped by llama.cpp: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in result.clamped.items()))


@app.command()
def doctor(
    model: Optional[Path] = ModelOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Describe this machine as the tuner sees it: CPU, GPUs (NVML), llama.cpp build and its devices, fingerprint, space."""
    from tuner import hardware, models, placement
    from tuner.gguf import read_gguf_info

    machine = hardware.describe_machine()
    model_path = models.resolve_model(model)
    info = read_gguf_info(model_path)
    space, why = placement.choose_space(machine, info)
    report = {
        "cpu": {
            "model": machine.cpu_model,
            "physical_cores": machine.physical_cores,
            "logical_cores": machine.logical_cores,
            "ram_gib": machine.ram_gib,
        },
        "gpus": [vars(g) for g in machine.gpus],
        "nvml": machine.nvml_status,
        "llama_devices": [vars(d) for d in machine.devices],
        "gpu_offload": machine.gpu_offload,
        "llama_cpp": {"version": machine.llama_cpp_version, "system_info": machine.llama_system_info},
        "platform": machine.platform,
        "fingerprint": machine.fingerprint,
        "model": {"path": str(model_path), "architecture": info.architecture, "layers": info.n_layers, "mib": round(info.file_bytes / 2**20, 1)},
        "space": {"name": space.name, "source": space.source, "why": why},
        "warning": hardware.offload_missing(machine) or None,
    }
    if as_json:
        typer.echo(json.dumps(report))
        return
    cpu = report["cpu"]
    typer.echo(f"CPU:         {cpu['model']} — {cpu['physical_cores']} physical / {cpu['logical_cores']} logical cores, {cpu['ram_gib']} GiB RAM")
    if machine.gpus:
        for g in machine.gpus:
            typer.echo(f"GPU {g.index}:       {g.name}, {g.vram_free_mib}/{g.vram_total_mib} MiB free, compute {g.compute_capability}, driver {g.driver}")
    else:
        typer.echo(f"GPU:         none ({machine.nvml_status})")
    typer.echo(f"llama.cpp:   llama-cpp-python {machine.llama_cpp_version}, GPU offload {'yes' if machine.gpu_offload else 'no'}")
    typer.echo(f"             {machine.llama_system_info}")
    devices = "; ".join(d.summary() for d in machine.devices) or f"none listed ({machine.devices_status})"
    typer.echo(f"devices:     {devices}")
    typer.echo(f"model:       {model_path.name} ({info.architecture}, {info.n_layers} layers, {report['model']['mib']} MiB)")
    typer.echo(f"fingerprint: {machine.fingerprint}")
    typer.echo(f"space:       {space.name} — {why}")
    if report["warning"]:
        typer.echo(f"warning:     {report['warning']}")


@app.command()
def dashboard(
    storage: Optional[str] = StorageOpt,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless told otherwise)."),
    port: int = typer.Option(8080, "--port", help="Port to listen on."),
) -> None:
    """Serve optuna-dashboard on the study storage."""
    from tuner import study as studies

    storage_obj = studies.open_storage(storage, must_exist=True)
    _check_port_free(host, port)
    from optuna_dashboard import run_server

    typer.echo(f"optuna-dashboard for {studies.redact(storage_obj.url)} at http://{host}:{port}/ (Ctrl-C to stop)")
    run_server(storage_obj, host=host, port=port)


# ---------------------------------------------------------------------------------------------
# Helpers


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    import yaml

    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set '{pair}' is not KEY=VALUE", "e.g. --set n_threads=2")
        try:
            values[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot read value '{raw}'", "use a number, true/false or a name") from None
    return values


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise TunerError(f"cannot listen on {host}:{port} ({exc.strerror})", "pick another --port") from None
