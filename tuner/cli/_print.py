"""How the `tune` commands print: tables, progress lines, summaries, confirmation, importances.

Every function here takes library objects (a study, a summary, a progress event) and writes text
with :func:`say` (lines a terminal does not wrap); none of them measures or changes anything.
"""

from __future__ import annotations

import textwrap
from typing import Any, Optional

import typer

from tuner.config import AUTO_SLOT_COUNT, AUTO_SLOTS
from tuner.stats import UNITS, duration

__all__ = [
    "duration",
    "print_confirmation",
    "print_guide_audit",
    "print_importances",
    "print_knob_effects",
    "print_pareto",
    "print_progress",
    "progress_line",
    "print_ablation",
    "print_speculation",
    "print_requirement",
    "print_shapes",
    "print_workload",
    "print_summary",
    "print_time",
    "settings",
    "table",
]


LINE_WIDTH = 160  # progress lines a terminal does not wrap; the full reasons are in `tune show`
MIN_LAST_COLUMN = 24  # a table's last column wraps to at least this width, however wide the rest


def say(text: str = "") -> None:
    """Print ``text`` with each line longer than LINE_WIDTH folded at spaces onto indented lines."""
    lines = []
    for line in text.split("\n"):
        if len(line) <= LINE_WIDTH:
            lines.append(line)
        else:
            lines += textwrap.wrap(line, LINE_WIDTH, subsequent_indent="  ", break_on_hyphens=False, break_long_words=False)
    typer.echo("\n".join(lines))


def print_progress(p: Any) -> None:
    """One line per finished trial: the objective in its unit, decode and prompt speed, quality,
    the best so far and the ETA; an infeasible trial's line gives its reason instead of its decode
    and prompt speeds, and a reason (infeasible, stopped, failed) is cut to fit LINE_WIDTH."""
    say(progress_line(p))


def progress_line(p: Any) -> str:
    """The progress line of one finished trial (see :func:`print_progress`)."""
    eta = duration(p.eta_s) if p.eta_s is not None else "?"
    head = f"[{p.done:>3}/{p.target}] trial #{p.number:<3} {p.label:<10}"
    best = f"best {p.best_value:6.1f} (#{p.best_number})" if p.best_value is not None else "best -"
    tail = f"  {best}  ETA {eta}"
    if p.state == "COMPLETE":
        unit = UNITS.get(p.objective, p.objective)
        speeds = f"  decode {p.decode_tok_s:5.1f}  prompt {p.prompt_tok_s:5.0f} tok/s" if p.decode_tok_s is not None and p.objective != "decode_tok_s" else ""
        quality = f"  kld {p.kld:.4f} acc {p.accuracy:.2f}" if p.kld is not None else ""
        value = f"{head} {p.value:6.1f} ± {p.iqr or 0:4.1f} {unit}"
        if p.feasible and getattr(p, "offload", ""):  # not placed as labelled: that, before its speeds
            return _fit(value + quality, f"  ({p.offload})", tail)
        if p.feasible:
            return value + speeds + quality + tail
        return _fit(value + quality + "  INFEASIBLE", f" ({p.reason})" if p.reason else "", tail)
    return _fit(f"{head} {p.state}", f": {p.reason or 'see tune show'}", tail)


def _fit(start: str, reason: str, end: str) -> str:
    """``start + reason + end`` within LINE_WIDTH characters, the reason cut (with …) if need be."""
    room = LINE_WIDTH - len(start) - len(end)
    if len(reason) > room:
        reason = reason[: max(room - 1, 0)] + "…"
    return start + reason + end


def print_workload(workload: Any, lacks: Optional[dict[str, Any]] = None) -> None:
    """The workload a study or a bench measures: its shapes, their weights, where they come from;
    ``lacks``: what the engine has no flag for (a llama-server without --kv-unified: no sharing)."""
    say(f"workload: {workload.name} — {len(workload.shapes)} request shape(s), {workload.repeats} timed requests each per trial (after a short warm-up pass)")
    for shape, weight in zip(workload.shapes, workload.weights):
        say(f"  {weight:4.0%}  {shape.describe()}")
    if workload.concurrency > 1:
        say(f"  {workload.concurrency} users at once, each with its own conversation: requests/min is what the server completes, TTFT the slowest user's")
        own = "each with n_ctx of its own" + ("" if "kv_unified" in (lacks or {}) else " or sharing them (--kv-unified)")
        say(f"  slots (-np) searched 1-{workload.concurrency}, {own}, and auto ({AUTO_SLOT_COUNT} slots sharing n_ctx)")
    if workload.source.get("kind") == "jsonl":
        say(f"  from {workload.source['path']} (sha256 {workload.source['sha256'][:12]}…): {workload.source['sampling']}")


def print_summary(study_obj: Any, storage: Optional[str], export_hint: bool = True) -> None:
    """The best trial against the baselines (overall and per request shape), the noise floor,
    the confirmation and the failures."""
    from tuner.study import summarize

    summary = summarize(study_obj)
    unit = UNITS.get(summary.metric, summary.metric)
    say(f"\n{summary.complete} completed, {summary.failed} failed of target {summary.target}")
    changes = summary.minimal is not None and bool(summary.ablation.steps)  # else the minimal preset is the best row
    shown = ([summary.minimal] if changes else []) + ([summary.best] if summary.best else []) + list(summary.baselines.values())
    with_yours = "yours" in summary.baselines
    rows = []
    for row in shown:
        ratio = f"{row.ratio_vs_defaults:.2f}x" if row.ratio_vs_defaults is not None else "-"
        if summary.ties_defaults(row):
            ratio += " (tie: within noise)"
        mine = [f"{row.ratio_vs_yours:.2f}x" if row.ratio_vs_yours is not None else "-"] if with_yours else []
        rows.append(
            [
                row.label,
                "-" if row.source == "ablation" else f"#{row.number}",
                f"{row.speed.median:.1f} ± {row.speed.iqr:.1f}",
                ratio,
                *mine,
                f"{row.decode.median:.1f} ± {row.decode.iqr:.1f}",
                f"{row.prompt.median:.0f} ± {row.prompt.iqr:.0f}",
                f"{row.ttft.median:.0f}",
                quality_cell(row),
                telemetry_cell(row.telemetry),
            ]
        )
    if rows:
        header = ["config", "trial", f"{unit} (median ± IQR)", "vs defaults", *(["vs yours"] if with_yours else []), "decode tok/s", "prompt tok/s", "TTFT ms", "quality", "memory"]
        if summary.metric == "decode_tok_s":  # a study made before workloads: one column says it all
            header, rows = header[:4] + header[5:], [r[:4] + r[5:] for r in rows]
        say(table(header, rows))
        say(table(["config", "settings"], [[row.label, settings(row.config)] for row in shown]))
        if summary.confirmation is not None:
            say(
                f"(confirmed figures: medians and IQR of {summary.confirmation.rounds} interleaved re-measurement rounds, "
                "ratios paired round by round; each trial's own reading is in the confirmation table)"
            )
        else:
            n = study_obj.user_attrs.get("workload", {}).get("repeats", "?")
            say(f"(each trial's own reading: median and interquartile range over {n} repetitions after a warm-up pass)")
        print_shapes(shown)
    if summary.best is None and summary.infeasible:
        say(f"no trial is feasible ({summary.infeasible} completed trials miss the quality floor or a latency target)")
    elif summary.start_unchanged and summary.infeasible:
        say(f"best = the starting point, unchanged: no searched trial is feasible ({summary.infeasible} outside the quality floor or the latency targets)")
    elif summary.best is not None and summary.infeasible:
        picked = "confirmed by re-measurement" if summary.confirmation else "fastest"
        say(f"best = {picked} of {summary.feasible} feasible trials ({summary.infeasible} outside the quality floor or the latency targets)")
    if summary.noise:
        say(f"noise floor: ±{summary.noise:.1%} between readings side by side (closer differences are ties)")
        if summary.drift.readings:
            say(f"drift: {summary.drift.describe(UNITS.get(summary.metric, summary.metric))}; single readings minutes apart ±{summary.reading_noise:.1%}")
    elif summary.noise_error:
        say(f"noise floor: not measured ({summary.noise_error}); ties rest on the rounds' own spread")
    print_confirmation(summary)
    print_ablation(summary)
    print_speculation(study_obj)
    print_time(summary)
    if summary.quality_note:
        say(summary.quality_note)
    for number, reason in summary.failures[:5]:
        say(f"failed trial #{number}: {reason}")
    if export_hint and summary.best:
        say(f"\nexport the preset: tune export {summary.name}" + (f" --storage '{redacted(storage)}'" if storage else "") + " --out preset.yaml")


def print_time(summary: Any) -> None:
    """Where the study's time went, and what racing and the quality cache saved it."""
    for i, line in enumerate(summary.time_lines):
        say(f"time: {line}" if i == 0 else f"  {line}")


def print_shapes(rows: list[Any]) -> None:
    """Per request shape: each configuration's decode and prompt speed, TTFT and request time."""
    from tuner.study import SHAPE_COLUMNS, by_shape

    cells = []
    for shape, figures in by_shape(rows):
        label = f"{shape['name']} (depth {shape['depth']} + {shape['prompt']} -> {shape['gen']})"
        for row, values in figures:
            cells.append([label, row.label, *values])
            label = ""  # the shape is named on its first line only
    if cells:
        say("per request shape (medians):")
        say(table(["shape", "config", *SHAPE_COLUMNS], cells))


def print_confirmation(summary: Any) -> None:
    """The re-measurement that picked the winner: trial reading vs confirmed figures."""
    confirmation = summary.confirmation
    if confirmation is None:
        if summary.unconfirmed_note:
            say(summary.unconfirmed_note)
        return
    d = confirmation.defaults.value
    rows = [["defaults", "-", f"{d.median:.1f} ± {d.iqr:.1f}", "1.00x", "-"]]
    for c in sorted(confirmation.candidates, key=lambda c: -(c.value.median if c.rounds else 0)):
        if c.error or not c.rounds:
            rows.append([c.label + (" (winner)" if c.trial == confirmation.winner else ""), f"{c.trial_value:.1f}", f"failed: {c.error}", "-", "-"])
            continue
        r = c.ratio
        rows.append(
            [
                c.label + (" (winner)" if c.trial == confirmation.winner else "") + (f" (dropped after round {len(c.rounds)})" if c.dropped else ""),
                f"{c.trial_value:.1f}",
                f"{c.value.median:.1f} ± {c.value.iqr:.1f}",
                f"{r.median:.2f}x ({min(r.samples):.2f}-{max(r.samples):.2f})",
                f"{c.kld_mean:.4f}" if c.kld_mean is not None else "-",
            ]
        )
    unit = UNITS.get(confirmation.metric, confirmation.metric)
    say(f"\nconfirmation ({confirmation.rounds} interleaved rounds, speed only):")
    say(table(["config", "trial read", f"confirmed {unit} (median ± IQR)", "vs defaults (range)", "mean KLD"], rows))
    say(f"winner: {confirmation.why}")


def print_engine(record: dict[str, Any], defaults: Any) -> None:
    """The engine that measures, and its own defaults here (the study's "defaults" baseline)."""
    say(f"engine: {record['name']} {record.get('version', '')} ({record.get('path', '')}), one server process per configuration")
    shown = ("n_batch", "n_ubatch", "n_threads", "n_threads_batch", "flash_attn", "swa_full")
    slots = f"auto ({AUTO_SLOT_COUNT} slots sharing one cache)" if defaults.n_parallel == AUTO_SLOTS else str(defaults.n_parallel)
    say("its defaults here: " + ", ".join(f"{key} {str(getattr(defaults, key)).lower()}" for key in shown) + f", -np {slots}")


def print_lacks(record: dict[str, Any]) -> None:
    """The settings a llama-server study does not search: its binary has no flag for them."""
    if record.get("lacks"):
        from tuner.server_flags import lacking_words

        say(f"  not searched, this llama-server has no flag for: {lacking_words(record['lacks'])}")


def print_requirement(requirement: Any, space: Any, yours: Any | None, engine: str = "llama-cpp-python") -> None:
    """What the preset keeps: the required context, and the starting point it changes."""
    n_ctx = next((p for p in space.params if p.name == "n_ctx"), None)
    if n_ctx is None:
        searched = f"fixed at {space.fixed.get('n_ctx', requirement.n_ctx)}"
    else:
        searched = "searched: " + (", ".join(str(c) for c in n_ctx.choices) if n_ctx.choices else f"{n_ctx.low}-{n_ctx.high}")
    say(f"context: n_ctx {requirement.n_ctx} required ({requirement.why}); {searched}; the preset never carries less")
    if yours is not None:
        at = f", run at n_ctx {requirement.n_ctx} instead of its {yours.n_ctx}" if yours.n_ctx not in (None, requirement.n_ctx) else ""
        say(f"starting point: your settings from {yours.source} (measured as 'yours'{at}); the preset changes them only where a change measurably pays")
    else:
        say(f"starting point: {engine}'s defaults at n_ctx {requirement.n_ctx} (--baseline FILE: your own settings); the preset changes them only where a change measurably pays")
    from tuner.placement import placement_of, placement_words  # the space module needs yaml: not at CLI start

    placed = placement_words(placement_of(space))
    if placed:  # on a GPU: ratios compare settings on the same hardware, never a GPU with a CPU
        say(f"placement: {placed} in the defaults too, as in the candidates; 'cpu_defaults' (every layer on the CPU) is shown, never compared against")


def print_ablation(summary: Any) -> None:
    """The ablation table: each changed group, from -> to, its measured worth, kept or reverted;
    then what the minimal preset is, and any figure it loses against the starting point."""
    ablation = summary.ablation
    if ablation is None:
        return
    from tuner.study import start_words, winner_vs_minimal

    start = start_words(ablation.start)
    if not ablation.steps:
        say(f"\nablation: the confirmed winner is {start} itself; the preset changes nothing")
        return
    say(
        f"\nablation (what each change from {start} to the winner #{ablation.winner} is worth: the winner over the winner "
        f"with that change reverted, paired round by round):"
    )
    # from -> to last: a sampling change names several values and wraps there
    rows = [[step.group, step.worth_text, "kept" if step.kept else "reverted", step.change_text] for step in ablation.steps]
    if rows:
        say(table(["group", "worth (range)", "verdict", "from -> to"], rows))
        for step in ablation.steps:
            say(f"  {step.group}: {step.why}")
    kept = ", ".join(step.group for step in ablation.kept) or "nothing"
    line = f"minimal preset: {start} + {kept}"
    minimal = summary.minimal
    if minimal is not None and minimal.ratio_vs_defaults is not None:
        line += f": {minimal.speed.median:.1f} {UNITS.get(summary.metric, summary.metric)}, {minimal.ratio_vs_defaults:.2f}x the defaults"
    if minimal is not None and minimal.ratio_vs_yours is not None:
        line += f", {minimal.ratio_vs_yours:.2f}x yours"
    versus = winner_vs_minimal(ablation)
    say(line + f", {ablation.rounds} interleaved rounds")
    if versus:
        say(f"  {versus}")
    if ablation.note:
        say(f"note: {ablation.note}")
    for worse in ablation.worse:
        say(f"note: {worse}")


def print_speculation(study: Any) -> None:
    """The speculation stage: each candidate's worth against none on the workload's text, on how
    many requests it is faster and slower, its TTFT, acceptance, same answers; the decision."""
    from tuner.study import stored_speculation

    result = stored_speculation(study)
    if result is None:
        return
    say(f"\nspeculation on your requests' text ({result.engine}, none and each candidate at the preset's settings, {result.rounds} interleaved rounds):")
    rows = []
    for row in result.table():
        worth = row["worth"]
        accepted = "-" if row["acceptance"] is None else f"{row['acceptance']:.0%}"
        n = row.get("requests")  # requests faster/slower than none beyond the noise, their own ratios' range
        requests = f"{n['faster']}/{n['slower']} of {n['of']} ({n['low']:.2f}-{n['high']:.2f}x)" if n else "-"
        rows.append([row["candidate"], f"{worth['median']:.3f}x ({worth['low']:.2f}-{worth['high']:.2f})", requests,
                     f"{row['ttft_vs_none']:.2f}x", accepted, row["identical_answers"], "kept" if row["kept"] else "-"])
    say(table(["candidate", "worth vs none (range)", "requests faster/slower", "TTFT vs none", "accepted", "same answers", "verdict"], rows))
    say(f"  {result.why}")


def print_importances(scores: dict[str, dict[str, float]], completed: int) -> None:
    """One bar table per objective: which knobs explain the variation between trials."""
    from tuner.study.explain import MIN_TRIALS_FOR_IMPORTANCE

    for objective, knobs in scores.items():
        say(f"\nimportance for {objective} (optuna PED-ANOVA over the effective settings of {completed} completed searched trials):")
        if not knobs:
            say(f"  needs at least {MIN_TRIALS_FOR_IMPORTANCE} completed trials with differing settings")
            continue
        rows = [[knob, f"{score:.3f}", "#" * round(score * 40)] for knob, score in knobs.items() if score > 0]
        say(table(["knob", "importance", ""], rows))


def print_knob_effects(effects: list[Any], metric: str) -> None:
    if not effects:
        return
    rows = [
        [e.knob, e.group, e.trials, f"{e.speed_median:.1f}", f"{e.kld_median:.4f}" if e.kld_median is not None else "-"]
        for e in effects
    ]
    say("\nper-knob effect (trials grouped by the value that ran; knobs move together, so these are hints):")
    say(table(["knob", "value", "trials", f"median {UNITS.get(metric, metric)}", "median KLD"], rows))


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
    say(f"\nthe guide's claims, measured here (AFTER / BEFORE on llama-cpp-python's defaults, {stored['rounds']} interleaved rounds):")
    say(table(["guide says", "decode ratio (range)", "prompt ratio (range)", "verdict"], rows))


def print_pareto(study_obj: Any) -> None:
    """The feasible trials that no other trial beats on both speed and KLD."""
    from tuner.study import summarize

    summary = summarize(study_obj)
    front = summary.pareto
    if not front or front[0].quality is None:
        return
    rows = []
    for row in front:
        q = row.quality
        rows.append(
            [
                f"#{row.number}",
                f"{row.speed.median:.1f} ± {row.speed.iqr:.1f}",
                f"{q['kld_mean']:.4f}",
                f"{q['kld_p99']:.3f}",
                f"{q['top1_agreement']:.1%}",
                f"{q['task_accuracy']:.2f}",
                f"{q['gen_nll']:.2f}",
                settings(row.config),
            ]
        )
    say("\nPareto front (feasible; faster or closer to the reference than every other trial):")
    say(table(["trial", UNITS.get(summary.metric, summary.metric), "mean KLD", "p99 KLD", "top-1", "accuracy", "gen NLL", "settings"], rows))


def settings(cfg: dict[str, Any]) -> str:
    """A configuration in one short cell: threads, context, batch sizes, layers offloaded (-1:
    all), attention and KV cache, sampling, llama-server's slots (when not one; auto: its default)."""
    layers, slots = cfg.get("n_gpu_layers", 0), cfg.get("n_parallel", 1)
    return (
        f"t={cfg['n_threads']}/{cfg['n_threads_batch']} ctx={cfg['n_ctx']} b={cfg['n_batch']}/{cfg['n_ubatch']} "
        f"ngl={'all' if layers == -1 else layers} fa={'on' if cfg['flash_attn'] else 'off'} kv={kv(cfg)} "
        f"T={cfg['temperature']:.2f} top_k={cfg['top_k']}" + (f" np={'auto' if slots == AUTO_SLOTS else slots}{' shared' if cfg.get('kv_unified') else ''}" if slots != 1 else "")
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


def table(header: list[str], rows: list[list[Any]], width: int = LINE_WIDTH) -> str:
    """Columns padded to their widest cell. A row that would pass ``width`` carries its last cell
    on indented lines (split at spaces), so a terminal wraps no table."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    indent = sum(w + 2 for w in widths[:-1])
    widths[-1] = min(widths[-1], max(width - indent, MIN_LAST_COLUMN))
    lines = []
    for row in cells:
        head = "".join(c.ljust(w + 2) for c, w in zip(row[:-1], widths))
        parts = textwrap.wrap(row[-1], widths[-1], break_on_hyphens=False) or [""]
        lines.append((head + parts[0]).rstrip())
        lines += [" " * indent + part for part in parts[1:]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


