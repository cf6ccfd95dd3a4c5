"""How the `tune` commands print: tables, progress lines, summaries, confirmation, importances.

Every function here takes library objects (a study, a summary, a progress event) and writes text
with ``typer.echo``; none of them measures or changes anything.
"""

from __future__ import annotations

from typing import Any, Optional

import typer

__all__ = [
    "duration",
    "print_confirmation",
    "print_guide_audit",
    "print_importances",
    "print_knob_effects",
    "print_pareto",
    "print_progress",
    "print_summary",
    "settings",
    "table",
]


def print_progress(p: Any) -> None:
    eta = duration(p.eta_s) if p.eta_s is not None else "?"
    head = f"[{p.done:>3}/{p.target}] trial #{p.number:<3} {p.label:<10}"
    best = f"best {p.best_value:6.1f} (#{p.best_number})" if p.best_value is not None else "best -"
    if p.state == "COMPLETE":
        quality = ""
        if p.kld is not None:
            quality = f"  kld {p.kld:.4f} acc {p.accuracy:.2f} {'ok' if p.feasible else 'INFEASIBLE'}"
        typer.echo(f"{head} {p.value:6.1f} ± {p.iqr or 0:4.1f} tok/s{quality}   {best}   ETA {eta}")
    else:
        typer.echo(f"{head} {p.state}: {p.reason or 'see tune show'}   {best}   ETA {eta}")


def print_summary(study_obj: Any, storage: Optional[str], export_hint: bool = True) -> None:
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
                quality_cell(row),
                telemetry_cell(row.telemetry),
                settings(cfg),
            ]
        )
    if rows:
        typer.echo(
            table(
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
    print_confirmation(summary)
    for number, reason in summary.failures[:5]:
        typer.echo(f"failed trial #{number}: {reason}")
    if export_hint and summary.best:
        typer.echo(f"\nexport the best: tune export {summary.name}" + (f" --storage '{redacted(storage)}'" if storage else "") + " --out preset.yaml")


def print_confirmation(summary: Any) -> None:
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
    typer.echo(table(["config", "trial read", "confirmed tok/s (median ± IQR)", "vs defaults (range)", "mean KLD"], rows))
    typer.echo(f"winner: {confirmation.why}")


def print_importances(scores: dict[str, dict[str, float]], completed: int) -> None:
    """One bar table per objective: which knobs explain the variation between trials."""
    from tuner.study.explain import MIN_TRIALS_FOR_IMPORTANCE

    for objective, knobs in scores.items():
        typer.echo(f"\nimportance for {objective} (optuna PED-ANOVA over the effective settings of {completed} completed searched trials):")
        if not knobs:
            typer.echo(f"  needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials with differing settings")
            continue
        rows = [[knob, f"{score:.3f}", "#" * round(score * 40)] for knob, score in knobs.items() if score > 0]
        typer.echo(table(["knob", "importance", ""], rows))


def print_knob_effects(effects: list[Any]) -> None:
    if not effects:
        return
    rows = [
        [e.knob, e.group, e.trials, f"{e.decode_median:.1f}", f"{e.kld_median:.4f}" if e.kld_median is not None else "-"]
        for e in effects
    ]
    typer.echo("\nper-knob effect (trials grouped by the value that ran; knobs move together, so these are hints):")
    typer.echo(table(["knob", "value", "trials", "median decode tok/s", "median KLD"], rows))


def print_guide_audit(stored: dict[str, Any]) -> None:
    from tuner.study.explain import ClaimResult

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
    typer.echo(table(["guide says", "decode ratio (range)", "prompt ratio (range)", "verdict"], rows))


def print_pareto(study_obj: Any) -> None:
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
                settings(row.config),
            ]
        )
    typer.echo("\nPareto front (feasible; faster or closer to the reference than every other trial):")
    typer.echo(table(["trial", "decode tok/s", "mean KLD", "p99 KLD", "top-1", "accuracy", "gen NLL", "settings"], rows))


def settings(cfg: dict[str, Any]) -> str:
    return (
        f"t={cfg['n_threads']}/{cfg['n_threads_batch']} ctx={cfg['n_ctx']} b={cfg['n_batch']}/{cfg['n_ubatch']} "
        f"fa={'on' if cfg['flash_attn'] else 'off'} kv={kv(cfg)} T={cfg['temperature']:.2f} top_k={cfg['top_k']}"
    )


def redacted(storage: str) -> str:
    from tuner.study import redact

    return redact(storage)


def quality_cell(row: Any) -> str:
    if not row.quality:
        return "-"
    q = row.quality
    return f"kld {q['kld_mean']:.4f} acc {q['task_accuracy']:.2f}" + ("" if row.feasible else " INFEASIBLE")


def telemetry_cell(telemetry: dict[str, Any]) -> str:
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


def kv(cfg: dict[str, Any]) -> str:
    from tuner.config import EngineConfig

    return EngineConfig.from_dict(cfg).kv_type


def table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
