"""The `tune` command line: every command parses, calls the library, prints.

Errors a user can act on (:class:`tuner.errors.TunerError`) become one line on stderr,
``error: <what> — <how to fix>``, and exit code 2; the traceback only with ``--debug``.
"""

from __future__ import annotations

import json
import socket
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import typer

from tuner.errors import ConfigError, ModelError, StudyError, TunerError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Tune llama.cpp (llama-cpp-python) settings for this machine with an Optuna study.",
)

_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


# ---------------------------------------------------------------------------------------------
# Shared options

ModelOpt = typer.Option(None, "--model", "-m", help="GGUF model file (default: the embedded gemma-3-270m Q4_K_M).")
StorageOpt = typer.Option(None, "--storage", help="SQLAlchemy URL of the study storage [default: sqlite:///studies/tuner.db].")
PromptOpt = typer.Option(128, "--prompt-tokens", help="Prompt tokens per repetition.")
GenOpt = typer.Option(64, "--gen-tokens", help="Generated tokens per repetition.")
RepeatsOpt = typer.Option(3, "--repeats", help="Timed repetitions per trial (after one warm-up pass); at least 3.")
NoQualityOpt = typer.Option(False, "--no-quality", help="Skip the quality proxy (speed only; no quality floor).")


def _workload(prompt_tokens: int, gen_tokens: int, repeats: int, no_quality: bool = False) -> Any:
    from tuner.measure import Workload

    return Workload(prompt_tokens=prompt_tokens, gen_tokens=gen_tokens, repeats=repeats, quality=not no_quality)


TimeoutOpt = typer.Option(600.0, "--trial-timeout", help="Seconds a trial may take before its worker is killed and the trial fails.")
ConfirmOpt = typer.Option(
    3, "--confirm-rounds", help="Interleaved rounds re-measuring the top candidates and the defaults at the end (0: skip)."
)


def _check_rounds(rounds: int) -> None:
    if rounds < 0:
        raise ConfigError(f"--confirm-rounds {rounds} is negative", "use 0 to skip confirmation, or 3 or more rounds")
    if 0 < rounds < 3:
        raise ConfigError(f"--confirm-rounds {rounds} is too few for a median and spread", "use 3 or more rounds, or 0 to skip")


def _worker(model_path: Path, timeout_s: float) -> Any:
    """Trials run in a worker process: a llama.cpp abort or OOM fails one trial, not the study."""
    from tuner.worker import Worker

    if timeout_s <= 0:
        raise ConfigError(f"--trial-timeout {timeout_s} must be positive", "use a number of seconds, e.g. 600")
    return Worker(model_path, timeout_s=timeout_s)


# ---------------------------------------------------------------------------------------------
# Commands


@app.command()
def start(
    model: Optional[Path] = ModelOpt,
    trials: int = typer.Option(50, "--trials", "-n", help="Trials in the study, the two baselines included."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name [default: from the model file name]."),
    storage: Optional[str] = StorageOpt,
    space: Optional[str] = typer.Option(None, "--space", help="Search space: cpu, rtx4090 or a YAML file [default: from the hardware]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampler seed, for a reproducible sequence of trials."),
    prompt_tokens: int = PromptOpt,
    gen_tokens: int = GenOpt,
    repeats: int = RepeatsOpt,
    trial_timeout: float = TimeoutOpt,
    quality_budget: float = typer.Option(0.03, "--quality-budget", help="Largest mean KL divergence from the reference a feasible trial may have."),
    accuracy_floor: float = typer.Option(0.8, "--accuracy-floor", help="Task accuracy a feasible trial needs, as a fraction of greedy decoding's."),
    no_quality: bool = NoQualityOpt,
    confirm_rounds: int = ConfirmOpt,
) -> None:
    """Start a new study: noise floor, baselines, the search, then confirmation of the winner."""
    from tuner import hardware, models, space as spaces, study as studies
    from tuner.gguf import read_gguf_info

    if trials < 1:
        raise StudyError(f"--trials {trials} asks for no trial", "use --trials 1 or more")
    workload = _workload(prompt_tokens, gen_tokens, repeats, no_quality)
    budget = _budget(quality_budget, accuracy_floor)
    _check_rounds(confirm_rounds)
    model_path = models.resolve_model(model)
    machine = hardware.describe_machine()
    if space:
        search_space, why = spaces.load_space(space), "chosen with --space"
    else:
        search_space, why = spaces.choose_space(machine, read_gguf_info(model_path))
    search_space.for_workload(workload.n_ctx_needed)  # fail before creating anything
    name = study or _default_study_name(model_path)
    spec = studies.StudySpec(
        model=model_path,
        model_sha256=models.model_sha256(model_path),
        space=search_space,
        workload=workload,
        trials=trials,
        seed=seed,
        budget=budget,
    )
    with _worker(model_path, trial_timeout) as worker:
        worker.start()  # a model llama.cpp cannot load fails here, before any storage is touched
        storage_obj = studies.open_storage(storage)
        typer.echo(f"study '{name}' in {studies.redact(storage_obj.url)}: {trials} trials on {model_path.name}")
        typer.echo(f"machine: {machine.summary()} [fingerprint {machine.fingerprint}]")
        typer.echo(f"space: {search_space.name} ({search_space.source}): {why}")
        typer.echo(
            f"workload: {workload.prompt_tokens} prompt + {workload.gen_tokens} generated tokens, "
            f"1 warm-up + {workload.repeats} repetitions per trial"
        )
        if workload.quality:
            typer.echo(
                f"objectives: decode tok/s (median, maximize) and mean KLD vs the reference (minimize); feasible when "
                f"KLD <= {budget.kld_mean} and task accuracy >= {budget.accuracy_floor:.0%} of greedy"
            )
        else:
            typer.echo("objective: decode tok/s (median); no quality proxy (--no-quality)")
        result = _interruptible(
            lambda: studies.start_study(
                spec,
                name=name,
                storage=storage_obj,
                runner=worker,
                machine=machine.to_dict(),
                on_progress=_print_progress,
                on_note=typer.echo,
                confirm_rounds=confirm_rounds,
            ),
            name,
            storage,
        )
    _print_summary(result, storage)


@app.command()
def resume(
    name: str = typer.Argument(..., help="Study name (see `tune list`)."),
    trials: Optional[int] = typer.Option(None, "--trials", "-n", help="Target trial count [default: the study's own]."),
    storage: Optional[str] = StorageOpt,
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The study's model file, if it has moved."),
    allow_other_hardware: bool = typer.Option(False, "--allow-other-hardware", help="Resume on a machine with another fingerprint."),
    trial_timeout: float = TimeoutOpt,
    confirm_rounds: int = ConfirmOpt,
) -> None:
    """Continue a stopped or crashed study until it holds its target number of trials, then confirm its winner."""
    from tuner import hardware, space as spaces, study as studies

    if trials is not None and trials < 1:
        raise StudyError(f"--trials {trials} asks for no trial", "use --trials 1 or more")
    _check_rounds(confirm_rounds)
    storage_obj = studies.open_storage(storage, must_exist=True)
    study_obj = studies.load_study(name, storage_obj)
    model_path = _study_model(study_obj, model)
    machine = hardware.describe_machine()
    studies.check_machine(study_obj, machine, allow_other_hardware)
    recorded_space = study_obj.user_attrs["space"]
    search_space = spaces.parse_space(recorded_space["text"], source=recorded_space["source"])
    target = trials or int(study_obj.user_attrs["target_trials"])
    done = len(studies.counted_trials(study_obj))
    typer.echo(f"resuming study '{name}': {done}/{target} trials done")
    with _worker(model_path, trial_timeout) as worker:
        result = _interruptible(
            lambda: studies.resume_study(
                study_obj,
                runner=worker,
                space=search_space,
                trials=trials,
                machine=machine,
                allow_other_hardware=allow_other_hardware,
                on_progress=_print_progress,
                on_note=typer.echo,
                confirm_rounds=confirm_rounds,
            ),
            name,
            storage,
        )
    _print_summary(result, storage)


@app.command("list")
def list_(storage: Optional[str] = StorageOpt) -> None:
    """List the studies in the storage."""
    from tuner import study as studies

    storage_obj = studies.open_storage(storage, must_exist=True)
    summaries = studies.list_studies(storage_obj)
    if not summaries:
        typer.echo("no studies yet — start one with `tune start`")
        return
    rows = []
    for s in summaries:
        fastest = studies.fastest_feasible(studies.load_study(s.study_name, storage_obj))
        best = f"{fastest.values[0]:.1f}" if fastest else "-"
        target = s.user_attrs.get("target_trials", "?")
        rows.append([s.study_name, f"{s.n_trials}/{target}", best, Path(s.user_attrs.get("model_path", "?")).name, s.user_attrs.get("created", "")])
    typer.echo(_table(["study", "trials", "best feasible decode tok/s", "model", "created"], rows))


@app.command()
def show(name: str = typer.Argument(..., help="Study name."), storage: Optional[str] = StorageOpt) -> None:
    """Show a study: the best trial against the baselines, with medians and spread."""
    from tuner import study as studies

    study_obj = studies.load_study(name, studies.open_storage(storage, must_exist=True))
    attrs = study_obj.user_attrs
    typer.echo(f"study '{name}': model {Path(attrs['model_path']).name} (sha256 {attrs['model_sha256'][:12]}…)")
    typer.echo(f"machine: {(attrs.get('machine') or {}).get('cpu_model', '?')}; space: {attrs['space']['name']}")
    _print_summary(study_obj, storage, export_hint=True)
    _print_pareto(study_obj)


@app.command()
def export(
    name: str = typer.Argument(..., help="Study name."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the preset here [default: print it]."),
    storage: Optional[str] = StorageOpt,
    fmt: str = typer.Option(
        "yaml", "--format", help="yaml (the preset the engine loads), json (llama-cpp-python server config), llama-server or ollama."
    ),
) -> None:
    """Export the study's best configuration: a preset YAML that the engine loads, or a server's own format."""
    from tuner import export as exports, study as studies

    write = exports.writer(fmt)  # an unknown --format fails before the storage is opened
    study_obj = studies.load_study(name, studies.open_storage(storage, must_exist=True))
    preset = studies.best_preset(study_obj)
    text = write(preset)
    if out is None:
        typer.echo(text, nl=False)
        for note in exports.notes(preset, fmt):
            typer.echo(note, err=True)  # stderr: stdout stays a valid file
        return
    if fmt == exports.DEFAULT_FORMAT:
        preset.save(out)
    else:
        exports.save(text, out)
    confirmed = preset.measured.get("confirmed")
    figure = (
        f"{confirmed['decode_tok_s']['median']} decode tok/s confirmed, {confirmed['vs_defaults']['median']}x the defaults"
        if confirmed
        else f"{preset.measured['decode_tok_s']['median']} decode tok/s in its trial, not confirmed"
    )
    typer.echo(f"wrote {out} (trial #{preset.provenance['trial']}, {figure})")
    typer.echo(f"picked: {preset.measured['picked']}")
    for note in exports.notes(preset, fmt):
        typer.echo(note)


@app.command()
def report(
    name: str = typer.Argument(..., help="Study name."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for report.html and its PNG figures (created if missing)."),
    storage: Optional[str] = StorageOpt,
) -> None:
    """Write an HTML report with figures: history, Pareto front, importances, best vs baselines."""
    from tuner import study as studies
    from tuner.report import write_report

    study_obj = studies.load_study(name, studies.open_storage(storage, must_exist=True))
    files = write_report(study_obj, out)
    typer.echo(f"wrote {files.html} (self-contained: open it in any browser)")
    for image in files.images:
        typer.echo(f"wrote {image}")


@app.command()
def explain(
    name: str = typer.Argument(..., help="Study name."),
    storage: Optional[str] = StorageOpt,
    audit_guide: bool = typer.Option(
        False, "--audit-guide", help="Measure the RTX 4090 guide's per-knob claims here, interleaved (a few minutes)."
    ),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved rounds for --audit-guide (3 or more)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The study's model file, if it has moved."),
    trial_timeout: float = TimeoutOpt,
) -> None:
    """Parameter importances per objective, each knob's measured effect, and the guide audit."""
    from tuner import explain as explaining, hardware, study as studies
    from tuner.measure import Workload

    if audit_guide and rounds < 3:
        raise ConfigError(f"--rounds {rounds} is too few for a median and spread", "use 3 or more rounds")
    study_obj = studies.load_study(name, studies.open_storage(storage, must_exist=True))
    _print_importances(explaining.importances(study_obj), len(explaining.searched_trials(study_obj)))
    _print_knob_effects(explaining.knob_effects(study_obj))
    if audit_guide:
        studies.check_machine(study_obj, hardware.describe_machine())
        workload = Workload.from_dict(study_obj.user_attrs["workload"])
        typer.echo(f"\nguide audit: {len(explaining.GUIDE_CLAIMS)} claims x 2 configurations x {rounds} interleaved rounds (speed only)")
        with _worker(_study_model(study_obj, model), trial_timeout) as worker:
            results = explaining.audit_guide(worker, workload, rounds=rounds, noise=studies.noise_floor(study_obj), on_note=typer.echo)
        study_obj.set_user_attr("guide_audit", {"rounds": rounds, "claims": [r.to_dict() for r in results]})
    stored = study_obj.user_attrs.get("guide_audit")
    if stored:
        _print_guide_audit(stored)
    elif not audit_guide:
        typer.echo(f"\nthe guide's per-knob claims are not audited yet: tune explain {name} --audit-guide")


@app.command("confirm")
def confirm_(
    name: str = typer.Argument(..., help="Study name."),
    storage: Optional[str] = StorageOpt,
    rounds: int = typer.Option(3, "--rounds", help="Interleaved rounds (3 or more)."),
    candidates: int = typer.Option(3, "--candidates", help="How many of the fastest feasible trials to re-measure."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The study's model file, if it has moved."),
    trial_timeout: float = TimeoutOpt,
) -> None:
    """Re-measure the study's top candidates and the defaults, interleaved, and pick the winner."""
    from tuner import confirm as confirming, hardware, study as studies

    _check_rounds(rounds)
    if rounds == 0:
        raise ConfigError("--rounds 0 confirms nothing", "use 3 or more rounds")
    if candidates < 1:
        raise ConfigError(f"--candidates {candidates} re-measures nothing", "use 1 or more")
    storage_obj = studies.open_storage(storage, must_exist=True)
    study_obj = studies.load_study(name, storage_obj)
    studies.check_machine(study_obj, hardware.describe_machine())
    with _worker(_study_model(study_obj, model), trial_timeout) as worker:
        result = confirming.confirm(study_obj, worker, rounds=rounds, candidates=candidates, on_note=typer.echo)
    if result is None:
        raise StudyError(f"study '{name}' has no feasible trial besides the defaults to confirm", f"run more trials: tune resume {name} --trials N")
    _print_summary(study_obj, storage)


@app.command()
def bench(
    model: Optional[Path] = ModelOpt,
    preset: Optional[Path] = typer.Option(None, "--preset", "-p", help="Measure an exported preset."),
    set_: list[str] = typer.Option([], "--set", help="KEY=VALUE engine/sampling setting (repeatable), e.g. --set n_threads=2."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    prompt_tokens: int = PromptOpt,
    gen_tokens: int = GenOpt,
    repeats: int = RepeatsOpt,
    no_quality: bool = NoQualityOpt,
) -> None:
    """Measure one configuration (llama-cpp-python defaults unless --preset/--set say otherwise)."""
    from tuner import models
    from tuner.engine import Engine
    from tuner.measure import measure
    from tuner.preset import Preset
    from tuner.quality import reference_for
    from tuner.space import to_config

    workload = _workload(prompt_tokens, gen_tokens, repeats, no_quality)
    values: dict[str, Any] = {}
    model_arg: Any = model
    if preset is not None:
        loaded = Preset.load(preset)
        values.update(loaded.engine)
        values.update(loaded.sampling)
        model_arg = model or loaded.model
    values.update(_parse_sets(set_))
    config = to_config(values)
    model_path = models.resolve_model(model_arg)
    engine = Engine(model_path)
    reference = reference_for(engine, models.model_sha256(model_path)) if workload.quality else None
    result = measure(engine, config, workload, reference)
    if as_json:
        data = result.to_dict()
        data["model"] = str(model_path)
        data.update(data.pop("quality") or {})  # kld_mean, kld_p99, top1_agreement, task_accuracy, ...
        typer.echo(json.dumps(data))
        return
    rows = [[name, f"{getattr(result, name).median:.2f}", f"{getattr(result, name).iqr:.2f}", " ".join(f"{x:.1f}" for x in getattr(result, name).samples)] for name in result.METRICS]
    typer.echo(_table(["metric", "median", "IQR", "samples"], rows))
    if result.quality:
        q = result.quality
        typer.echo(
            f"quality: mean KLD {q.kld_mean:.4f} (p99 {q.kld_p99:.3f}), top-1 agreement {q.top1_agreement:.1%}, "
            f"task accuracy {q.task_accuracy:.2f} (greedy {reference.greedy_accuracy:.2f}), generated-text NLL "
            f"{q.gen_nll:.2f}, repeated 4-grams {q.repeat4:.1%} [{q.seconds:.1f} s]"
        )
    if result.clamped:
        typer.echo("clamped by llama.cpp: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in result.clamped.items()))


@app.command()
def doctor(
    model: Optional[Path] = ModelOpt,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Describe this machine as the tuner sees it: CPU, GPUs (NVML), llama.cpp build, fingerprint, space."""
    from tuner import hardware, models, space as spaces
    from tuner.gguf import read_gguf_info

    machine = hardware.describe_machine()
    model_path = models.resolve_model(model)
    info = read_gguf_info(model_path)
    space, why = spaces.choose_space(machine, info)
    report = {
        "cpu": {
            "model": machine.cpu_model,
            "physical_cores": machine.physical_cores,
            "logical_cores": machine.logical_cores,
            "ram_gib": machine.ram_gib,
        },
        "gpus": [vars(g) for g in machine.gpus],
        "nvml": machine.nvml_status,
        "gpu_offload": machine.gpu_offload,
        "llama_cpp": {"version": machine.llama_cpp_version, "system_info": machine.llama_system_info},
        "platform": machine.platform,
        "fingerprint": machine.fingerprint,
        "model": {"path": str(model_path), "architecture": info.architecture, "layers": info.n_layers, "mib": round(info.file_bytes / 2**20, 1)},
        "space": {"name": space.name, "source": space.source, "why": why},
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
    typer.echo(f"model:       {model_path.name} ({info.architecture}, {info.n_layers} layers, {report['model']['mib']} MiB)")
    typer.echo(f"fingerprint: {machine.fingerprint}")
    typer.echo(f"space:       {space.name} — {why}")


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


def _default_study_name(model_path: Path) -> str:
    return model_path.stem


def _budget(kld: float, floor: float) -> Any:
    from tuner.quality import QualityBudget

    if kld <= 0:
        raise ConfigError(f"--quality-budget {kld} must be positive", "use e.g. 0.03 (admits flash attention and q8_0 KV)")
    if not 0 <= floor <= 1:
        raise ConfigError(f"--accuracy-floor {floor} is outside [0, 1]", "use e.g. 0.8 (80% of greedy decoding's accuracy)")
    return QualityBudget(kld_mean=kld, accuracy_floor=floor)


def _study_model(study_obj: Any, override: Optional[Path]) -> Path:
    """The study's model file, checked against the sha256 the study was started with."""
    from tuner import models

    recorded = study_obj.user_attrs["model_path"]
    try:
        path = models.resolve_model(override or recorded)
    except ModelError as exc:
        raise ModelError(exc.what, f"pass the study's model file with --model (it was {recorded})") from None
    if models.model_sha256(path) != study_obj.user_attrs["model_sha256"]:
        raise StudyError(
            f"{path} is not the model study '{study_obj.study_name}' was started with (sha256 differs)",
            f"pass the original model ({Path(recorded).name}) with --model, or start a new study for this one",
        )
    return path


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


def _interruptible(run: Any, name: str, storage: Optional[str]) -> Any:
    """Run a study; on Ctrl-C say how to continue and exit 130."""
    try:
        return run()
    except KeyboardInterrupt:
        typer.echo(f"\ninterrupted — continue with: {_resume_command(name, storage)}", err=True)
        raise typer.Exit(130) from None


def _resume_command(name: str, storage: Optional[str]) -> str:
    from tuner.study import redact

    return f"tune resume {name}" + (f" --storage '{redact(storage)}'" if storage else "")


def _print_progress(p: Any) -> None:
    eta = _duration(p.eta_s) if p.eta_s is not None else "?"
    head = f"[{p.done:>3}/{p.target}] trial #{p.number:<3} {p.label:<10}"
    best = f"best {p.best_value:6.1f} (#{p.best_number})" if p.best_value is not None else "best -"
    if p.state == "COMPLETE":
        quality = ""
        if p.kld is not None:
            quality = f"  kld {p.kld:.4f} acc {p.accuracy:.2f} {'ok' if p.feasible else 'INFEASIBLE'}"
        typer.echo(f"{head} {p.value:6.1f} ± {p.iqr or 0:4.1f} tok/s{quality}   {best}   ETA {eta}")
    else:
        typer.echo(f"{head} {p.state}: {p.reason or 'see tune show'}   {best}   ETA {eta}")


def _print_summary(study_obj: Any, storage: Optional[str], export_hint: bool = True) -> None:
    from tuner.study import summarize

    summary = summarize(study_obj)
    typer.echo(f"\n{summary.complete} completed, {summary.failed} failed of target {summary.target}")
    rows = []
    for row in ([summary.best] if summary.best else []) + list(summary.baselines.values()):
        cfg = row.config
        ratio = f"{row.ratio_vs_defaults:.2f}x" if row.ratio_vs_defaults is not None else "-"
        if summary.ties_defaults(row):
            ratio += " (tie: within noise)"
        rows.append(
            [
                row.label,
                f"#{row.number}",
                f"{row.decode.median:.1f} ± {row.decode.iqr:.1f}",
                ratio,
                f"{row.prompt.median:.0f} ± {row.prompt.iqr:.0f}",
                f"{row.ttft.median:.0f}",
                _quality_cell(row),
                _telemetry_cell(row.telemetry),
                _settings(cfg),
            ]
        )
    if rows:
        typer.echo(
            _table(
                ["config", "trial", "decode tok/s (median ± IQR)", "vs defaults", "prompt tok/s", "TTFT ms", "quality", "memory", "settings"],
                rows,
            )
        )
        n = study_obj.user_attrs.get("workload", {}).get("repeats", "?")
        typer.echo(f"(median and interquartile range over {n} repetitions after a warm-up pass)")
    if summary.best is None and summary.infeasible:
        typer.echo(f"no trial is within the quality floor ({summary.infeasible} completed trials are outside it)")
    elif summary.best is not None and summary.best.quality:
        picked = "confirmed by re-measurement" if summary.confirmation else "fastest"
        typer.echo(f"best = {picked} of {summary.feasible} trials within the quality floor ({summary.infeasible} outside it)")
    if summary.noise:
        typer.echo(f"noise floor: ±{summary.noise:.1%} run to run (differences within it are ties)")
    _print_confirmation(summary)
    for number, reason in summary.failures[:5]:
        typer.echo(f"failed trial #{number}: {reason}")
    if export_hint and summary.best:
        typer.echo(f"\nexport the best: tune export {summary.name}" + (f" --storage '{_redacted(storage)}'" if storage else "") + " --out preset.yaml")


def _print_confirmation(summary: Any) -> None:
    """The re-measurement that picked the winner: trial reading vs confirmed figures."""
    confirmation = summary.confirmation
    if confirmation is None:
        if summary.best is not None and summary.best.label == "best":
            typer.echo("not confirmed by re-measurement (the study changed since, or confirmation was skipped)")
        return
    d = confirmation.defaults.decode
    rows = [["defaults", "-", f"{d.median:.1f} ± {d.iqr:.1f}", "1.00x", "-"]]
    for c in sorted(confirmation.candidates, key=lambda c: -(c.decode.median if c.rounds else 0)):
        if c.error or not c.rounds:
            rows.append([c.label + (" (winner)" if c.trial == confirmation.winner else ""), f"{c.trial_decode:.1f}", f"failed: {c.error}", "-", "-"])
            continue
        r = c.ratio
        rows.append(
            [
                c.label + (" (winner)" if c.trial == confirmation.winner else ""),
                f"{c.trial_decode:.1f}",
                f"{c.decode.median:.1f} ± {c.decode.iqr:.1f}",
                f"{r.median:.2f}x ({min(r.samples):.2f}-{max(r.samples):.2f})",
                f"{c.kld_mean:.4f}" if c.kld_mean is not None else "-",
            ]
        )
    typer.echo(f"\nconfirmation ({confirmation.rounds} interleaved rounds, speed only):")
    typer.echo(_table(["config", "trial read", "confirmed tok/s (median ± IQR)", "vs defaults (range)", "mean KLD"], rows))
    typer.echo(f"winner: {confirmation.why}")


def _print_importances(scores: dict[str, dict[str, float]], completed: int) -> None:
    """One bar table per objective: which knobs explain the variation between trials."""
    from tuner.explain import MIN_TRIALS_FOR_IMPORTANCE

    for objective, knobs in scores.items():
        typer.echo(f"\nimportance for {objective} (optuna PED-ANOVA over the effective settings of {completed} completed searched trials):")
        if not knobs:
            typer.echo(f"  needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials with differing settings")
            continue
        rows = [[knob, f"{score:.3f}", "#" * round(score * 40)] for knob, score in knobs.items() if score > 0]
        typer.echo(_table(["knob", "importance", ""], rows))


def _print_knob_effects(effects: list[Any]) -> None:
    if not effects:
        return
    rows = [
        [e.knob, e.group, e.trials, f"{e.decode_median:.1f}", f"{e.kld_median:.4f}" if e.kld_median is not None else "-"]
        for e in effects
    ]
    typer.echo("\nper-knob effect (trials grouped by the value that ran; knobs move together, so these are hints):")
    typer.echo(_table(["knob", "value", "trials", "median decode tok/s", "median KLD"], rows))


def _print_guide_audit(stored: dict[str, Any]) -> None:
    from tuner.explain import ClaimResult

    rows = []
    for data in stored["claims"]:
        claim = ClaimResult(**{**data, "claimed": tuple(data["claimed"]) if data["claimed"] else None})
        if not claim.measured:
            rows.append([claim.guide_says, "-", "-", claim.verdict])
            continue
        d, p = claim.decode_ratio, claim.prompt_ratio
        rows.append(
            [
                claim.guide_says,
                f"{d.median:.2f}x ({min(d.samples):.2f}-{max(d.samples):.2f})",
                f"{p.median:.2f}x ({min(p.samples):.2f}-{max(p.samples):.2f})",
                claim.verdict,
            ]
        )
    typer.echo(f"\nthe guide's claims, measured here (AFTER / BEFORE on llama-cpp-python's defaults, {stored['rounds']} interleaved rounds):")
    typer.echo(_table(["guide says", "decode ratio (range)", "prompt ratio (range)", "verdict"], rows))


def _print_pareto(study_obj: Any) -> None:
    """The feasible trials that no other trial beats on both decode speed and KLD."""
    from tuner.study import summarize

    front = summarize(study_obj).pareto
    if not front or front[0].quality is None:
        return
    rows = []
    for row in front:
        q = row.quality
        rows.append(
            [
                f"#{row.number}",
                f"{row.decode.median:.1f} ± {row.decode.iqr:.1f}",
                f"{q['kld_mean']:.4f}",
                f"{q['kld_p99']:.3f}",
                f"{q['top1_agreement']:.1%}",
                f"{q['task_accuracy']:.2f}",
                f"{q['gen_nll']:.2f}",
                _settings(row.config),
            ]
        )
    typer.echo("\nPareto front (feasible; faster or closer to the reference than every other trial):")
    typer.echo(_table(["trial", "decode tok/s", "mean KLD", "p99 KLD", "top-1", "accuracy", "gen NLL", "settings"], rows))


def _settings(cfg: dict[str, Any]) -> str:
    return (
        f"t={cfg['n_threads']}/{cfg['n_threads_batch']} ctx={cfg['n_ctx']} b={cfg['n_batch']}/{cfg['n_ubatch']} "
        f"fa={'on' if cfg['flash_attn'] else 'off'} kv={_kv(cfg)} T={cfg['temperature']:.2f} top_k={cfg['top_k']}"
    )


def _redacted(storage: str) -> str:
    from tuner.study import redact

    return redact(storage)


def _quality_cell(row: Any) -> str:
    if not row.quality:
        return "-"
    q = row.quality
    return f"kld {q['kld_mean']:.4f} acc {q['task_accuracy']:.2f}" + ("" if row.feasible else " INFEASIBLE")


def _telemetry_cell(telemetry: dict[str, Any]) -> str:
    """Peak RSS, plus peak VRAM and energy per token when a GPU was watched."""
    cell = f"RSS {telemetry['peak_rss_mib']:.0f} MiB" if telemetry.get("peak_rss_mib") else "-"
    gpu = telemetry.get("gpu")
    if gpu:
        cell += f", VRAM {gpu['peak_vram_used_mib']:.0f} MiB"
        if gpu.get("mean_power_w") is not None:
            cell += f", {gpu['mean_power_w']:.0f} W"
        if gpu.get("energy_per_token_j") is not None:
            cell += f", {gpu['energy_per_token_j']:.3f} J/tok"
    return cell


def _kv(cfg: dict[str, Any]) -> str:
    from tuner.engine import EngineConfig

    return EngineConfig.from_dict(cfg).kv_type


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def main() -> None:
    """Console entry point: one line per user error, exit code 2, traceback only with --debug."""
    try:
        app()
    except TunerError as exc:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug: still one line unless --debug
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc} — rerun with --debug for the traceback", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
