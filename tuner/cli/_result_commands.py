"""The commands that read what studies recorded: list, show, export, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from tuner.cli._app import JsonOpt, StorageOpt, app
from tuner.cli._print import print_lacks, print_pareto, print_summary, print_workload, table
from tuner.stats import UNITS
from tuner.workload import LatencyTargets, Workload


@app.command("list")
def list_(storage: Optional[str] = StorageOpt, as_json: bool = JsonOpt) -> None:
    """List the studies in the storage."""
    from tuner import study as studies

    storage_obj = studies.open_storage(storage, must_exist=True)
    summaries = studies.list_studies(storage_obj)
    if as_json:
        typer.echo(json.dumps({"studies": [_listed(s, studies.load_study(s.study_name, storage_obj)) for s in summaries]}))
        return
    if not summaries:
        typer.echo("no studies yet — start one with `tune start`")
        return
    rows = []
    for s in summaries:
        study_obj = studies.load_study(s.study_name, storage_obj)
        fastest = studies.fastest_feasible(study_obj)
        metric = studies.speed_objective(study_obj)
        best = f"{fastest.values[0]:.1f} {UNITS.get(metric, metric)}" if fastest else "-"
        workload = (s.user_attrs.get("workload") or {}).get("name", "custom")
        target = s.user_attrs.get("target_trials", "?")
        rows.append([s.study_name, f"{s.n_trials}/{target}", best, workload, Path(s.user_attrs.get("model_path", "?")).name, s.user_attrs.get("created", "")])
    typer.echo(table(["study", "trials", "best feasible (trial reading)", "workload", "model", "created"], rows))


def _listed(summary: Any, study_obj: Any) -> dict[str, Any]:
    """One study for `tune list --json`."""
    from tuner import study as studies

    fastest = studies.fastest_feasible(study_obj)
    attrs = summary.user_attrs
    return {
        "study": summary.study_name,
        "trials": summary.n_trials,
        "target": attrs.get("target_trials"),
        "objective": studies.speed_objective(study_obj),
        "best_feasible_trial_reading": fastest.values[0] if fastest else None,
        "best_trial": fastest.number if fastest else None,
        "workload": (attrs.get("workload") or {}).get("name", "custom"),
        "model": attrs.get("model_path"),
        "created": attrs.get("created"),
    }


@app.command()
def show(name: str = typer.Argument(..., help="Study name."), storage: Optional[str] = StorageOpt, as_json: bool = JsonOpt) -> None:
    """Show a study: the best trial against the baselines, with medians and spread."""
    from tuner import study as studies

    study_obj = studies.load_study(name, studies.open_storage(storage, must_exist=True))
    if as_json:
        typer.echo(json.dumps(studies.study_json(study_obj)))
        return
    attrs = study_obj.user_attrs
    typer.echo(f"study '{name}': model {Path(attrs['model_path']).name} (sha256 {attrs['model_sha256'][:12]}…)")
    typer.echo(f"machine: {(attrs.get('machine') or {}).get('cpu_model', '?')}; space: {attrs['space']['name']}")
    engine = attrs.get("engine") or {}
    if engine.get("name") == "llama-server":  # a llama-cpp-python study says nothing: the default engine
        typer.echo(f"engine: llama-server {engine.get('version', '')} ({engine.get('path', '')})")
        print_lacks(engine)
    print_workload(Workload.from_dict(attrs["workload"]), engine.get("lacks"))
    if attrs.get("latency_targets"):
        typer.echo(f"latency targets: {LatencyTargets(**attrs['latency_targets']).describe()}")
    print_summary(study_obj, storage, export_hint=True)
    print_pareto(study_obj)


@app.command()
def export(
    name: str = typer.Argument(..., help="Study name."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the preset here (default: print it)."),
    storage: Optional[str] = StorageOpt,
    fmt: str = typer.Option(
        "yaml", "--format", help="yaml (the preset the engine loads), json (llama-cpp-python server config), llama-server or ollama."
    ),
    full: bool = typer.Option(False, "--full", help="The raw confirmed winner, every searched value kept (default: the minimal preset)."),
) -> None:
    """Export the study's preset (the minimal one: your starting point plus the changes that pay),
    as a preset YAML that the engine loads, or in a server's own format."""
    from tuner import export as exports, study as studies

    write = exports.writer(fmt)  # an unknown --format fails before the storage is opened
    study_obj = studies.load_study(name, studies.open_storage(storage, must_exist=True))
    preset = studies.best_preset(study_obj, full=full)
    text = write(preset)
    worse = [f"note: {line}" for line in preset.measured.get("worse") or []]
    if out is None:
        typer.echo(text, nl=False)
        for note in [*exports.notes(preset, fmt), *worse]:
            typer.echo(note, err=True)  # stderr: stdout stays a valid file
        return
    if fmt == exports.DEFAULT_FORMAT:
        preset.save(out)
    else:
        exports.save(text, out)
    confirmed = preset.measured.get("confirmed")
    metric = preset.measured.get("objective", "decode_tok_s")
    unit = UNITS.get(metric, metric)
    figure = (
        f"{confirmed[confirmed.get('metric', 'decode_tok_s')]['median']} {unit} confirmed, {confirmed['vs_defaults']['median']}x the defaults"
        if confirmed
        else f"{preset.measured[metric]['median']} {unit} in its trial, not confirmed"
    )
    what = "the minimal preset of" if preset.provenance.get("preset", "").startswith("minimal") else "trial"
    typer.echo(f"wrote {out} ({what} #{preset.provenance['trial']}, {figure})")
    typer.echo(f"picked: {preset.measured['picked']}")
    for line in worse:
        typer.echo(line)
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
