"""A study's report: figures as PNG files and one self-contained HTML page that embeds them.

The page holds four parts: the optimization history (decode tok/s per trial, feasible, infeasible
and baseline trials marked, with the best-so-far line), the Pareto front of decode tok/s against
mean KLD (studies with the quality objective), parameter importances (PED-ANOVA, per objective)
and the baselines against the best trial. Images are embedded as base64 ``data:`` URIs and the
CSS is inline, so the page can be mailed or opened offline; the PNGs beside it are the same bytes.

matplotlib is imported lazily, and only its Agg canvas is used (no pyplot): nothing here touches
a display or matplotlib's global backend.
"""

from __future__ import annotations

import base64
import html
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tuner.errors import OutputError
from tuner.explain import MIN_TRIALS_FOR_IMPORTANCE
from tuner.measure import Stat
from tuner.study import Row, Summary, is_feasible, summarize

__all__ = ["MIN_IMPORTANCE_TRIALS", "ReportFiles", "write_report"]

# PED-ANOVA compares the top 10% of trials with all of them: below 20 searched trials that top is a
# single trial, so importances from 10-19 trials are rough (the page says few trials make them noisy).
MIN_IMPORTANCE_TRIALS = MIN_TRIALS_FOR_IMPORTANCE  # one threshold for `tune report` and `tune explain`

NAMES = {"defaults": "defaults", "guide_card": "guide card", "best": "best"}
COLORS = {
    "feasible": "#1f77b4",
    "infeasible": "#d62728",
    "failed": "#7f7f7f",
    "defaults": "#2ca02c",
    "guide_card": "#ff7f0e",
    "best": "#9467bd",
    "front": "#ff7f0e",
}
MARKERS = {"defaults": "s", "guide_card": "D"}
DPI = 110


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    html: Path
    images: list[Path]


@dataclass(frozen=True)
class _Section:
    """One part of the page: a figure (or the reason there is none), a note and a table."""

    title: str
    image: Path | None = None
    alt: str = ""
    note: str = ""
    table: str = ""  # HTML, already escaped


def write_report(study: Any, out_dir: Path) -> ReportFiles:
    """Write ``out_dir/report.html`` and one PNG per figure for ``study``.

    Raises:
        OutputError: ``out_dir`` cannot be created or written.
    """
    out_dir = Path(out_dir)
    _prepare(out_dir)
    summary = summarize(study)
    sections = [
        _history(study, summary, out_dir),
        _pareto(study, summary, out_dir),
        *_importances(study, out_dir),
        _baselines(summary, out_dir),
    ]
    page = out_dir / "report.html"
    page.write_text(_page(study, summary, sections), encoding="utf-8")
    return ReportFiles(html=page, images=[s.image for s in sections if s.image is not None])


def _prepare(out_dir: Path) -> None:
    fix = "pass a writable directory with --out"
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"cannot write the report into {out_dir}: it is a file, not a directory", fix)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".report-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write the report into {out_dir}: {exc.strerror}", fix) from None


# ---------------------------------------------------------------------------------------------
# Figures


def _figure(width: float = 9.0, height: float = 5.0) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)  # attaches the Agg canvas: PNG rendering without pyplot or a display
    fig.savefig(path, format="png")
    return path


def _completed(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _quartile_errors(stats: list[Stat]) -> list[list[float]]:
    """Error-bar lengths (below, above the median) reaching the first and third quartiles."""
    below, above = [], []
    for stat in stats:
        if len(stat.samples) >= 2:
            q1, _, q3 = statistics.quantiles(stat.samples, n=4, method="inclusive")  # as Stat.of does
        else:
            q1, q3 = stat.median - stat.iqr / 2, stat.median + stat.iqr / 2
        below.append(max(stat.median - q1, 0.0))
        above.append(max(q3 - stat.median, 0.0))
    return [below, above]


def _decode_stat(trial: Any) -> Stat:
    return Stat.from_dict(trial.user_attrs["measurement"]["decode_tok_s"])


def _history(study: Any, summary: Summary, out_dir: Path) -> _Section:
    title = "Optimization history"
    trials = _completed(study)
    if not trials:
        return _Section(title, note="No completed trial yet: nothing to plot.")
    fig = _figure()
    ax = fig.add_subplot()
    search = [t for t in trials if "baseline" not in t.user_attrs]
    for feasible, label in ((True, "search trial (feasible)"), (False, "search trial (infeasible: outside the quality floor)")):
        group = [t for t in search if is_feasible(t) == feasible]
        if group:
            ax.errorbar(
                [t.number for t in group],
                [t.values[0] for t in group],
                yerr=_quartile_errors([_decode_stat(t) for t in group]),
                fmt="o" if feasible else "x",
                color=COLORS["feasible" if feasible else "infeasible"],
                ecolor="#bbbbbb",
                capsize=2,
                label=label,
            )
    for trial in (t for t in trials if "baseline" in t.user_attrs):
        kind = trial.user_attrs["baseline"]
        name = NAMES.get(kind, kind) + ("" if is_feasible(trial) else " (infeasible)")
        ax.errorbar(
            [trial.number],
            [trial.values[0]],
            yerr=_quartile_errors([_decode_stat(trial)]),
            fmt=MARKERS.get(kind, "^"),
            markersize=8,
            color=COLORS.get(kind, "black"),
            ecolor="#bbbbbb",
            capsize=2,
            label=f"baseline: {name}",
        )
    failed = [n for n, _ in summary.failures]
    if failed:
        ax.plot(failed, [0] * len(failed), "x", color=COLORS["failed"], clip_on=False, label="failed trial (no measurement)")
    steps = _best_so_far(trials, last=max(t.number for t in study.get_trials(deepcopy=False)))
    if steps:
        ax.step(*zip(*steps), where="post", color=COLORS["best"], linewidth=1.5, label="best so far (feasible)")
    if summary.confirmation is not None and summary.best is not None:
        # The winner is picked by re-measurement, so it need not be the top of the line.
        best = summary.best
        ax.plot([best.number], [best.decode.median], "o", markersize=16, markerfacecolor="none", markeredgecolor=COLORS["best"], markeredgewidth=2, label=f"confirmed winner (#{best.number})")
    _integer_axis(ax.xaxis)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("trial number")
    ax.set_ylabel("decode speed (tokens/s, median of repetitions)")
    ax.set_title(f"Optimization history of '{study.study_name}': decode tok/s per trial")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    note = "Error bars span the interquartile range of the timed repetitions."
    return _Section(title, _save(fig, out_dir / "history.png"), "decode tok/s per trial with the best-so-far line", note)


def _best_so_far(trials: list[Any], last: int) -> list[tuple[int, float]]:
    """(trial number, best feasible decode tok/s up to it), one point per improvement, to ``last``."""
    steps: list[tuple[int, float]] = []
    for trial in sorted(trials, key=lambda t: t.number):
        if is_feasible(trial) and (not steps or trial.values[0] > steps[-1][1]):
            steps.append((trial.number, trial.values[0]))
    if steps and last > steps[-1][0]:
        steps.append((last, steps[-1][1]))
    return steps


def _integer_axis(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _pareto(study: Any, summary: Summary, out_dir: Path) -> _Section:
    title = "Pareto front: decode speed vs quality"
    if len(study.directions) < 2:
        return _Section(
            title,
            note="This study has no quality objective (it was started with --no-quality): decode tok/s is its only "
            "objective, so there is no Pareto front to plot.",
        )
    trials = _completed(study)
    if not trials:
        return _Section(title, note="No completed trial yet: nothing to plot.")
    fig = _figure()
    ax = fig.add_subplot()
    for feasible, label in ((True, "trial (feasible)"), (False, "trial (infeasible)")):
        group = [t for t in trials if is_feasible(t) == feasible]
        if group:
            ax.plot(
                [t.values[0] for t in group],
                [t.values[1] for t in group],
                "o" if feasible else "x",
                color=COLORS["feasible" if feasible else "infeasible"],
                alpha=0.6,
                label=label,
            )
    front = sorted(summary.pareto, key=lambda r: r.decode.median)
    if front:
        ax.plot(
            [r.decode.median for r in front],
            [r.quality["kld_mean"] for r in front],
            "o-",
            color=COLORS["front"],
            markersize=9,
            markerfacecolor="none",
            markeredgewidth=2,
            label="Pareto front (feasible)",
        )
    for (x, y), text in _point_labels(front, summary).items():
        ax.annotate(text, (x, y), xytext=(6, 6), textcoords="offset points", fontsize="small")
    ax.margins(x=0.1)  # room for the labels of the rightmost points
    budget = (study.user_attrs.get("quality_budget") or {}).get("kld_mean")
    if budget is not None:
        ax.axhline(budget, linestyle="--", color=COLORS["infeasible"], linewidth=1, label=f"KLD budget ({budget})")
    ax.set_xlabel("decode speed (tokens/s, median) — higher is better")
    ax.set_ylabel("mean KLD vs the reference (nats) — lower is better")
    ax.set_title("Pareto front: decode speed vs mean KLD")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    note = (
        "Each point is a completed trial. The front holds the feasible trials that no other trial beats on both "
        "decode speed and mean KLD."
    )
    return _Section(title, _save(fig, out_dir / "pareto.png"), "decode tok/s against mean KLD, Pareto front marked", note, _front_table(front))


def _point_labels(front: list[Row], summary: Summary) -> dict[tuple[float, float], str]:
    """One label per plotted position for the front and the baselines: trials that share a
    position (settings that differ only in sampling share the mean KLD) share one label."""
    baselines = {row.number: NAMES.get(label, label) for label, row in summary.baselines.items()}
    rows = {r.number: r for r in [*front, *summary.baselines.values()]}
    at: dict[tuple[float, float], list[int]] = {}
    for number, row in sorted(rows.items()):
        at.setdefault((row.decode.median, row.quality["kld_mean"]), []).append(number)
    labels = {}
    for point, numbers in at.items():
        names = [f"#{n}" + (f" {baselines[n]}" if n in baselines else "") for n in numbers]
        labels[point] = ", ".join(names[:3]) + (f" +{len(names) - 3} more" if len(names) > 3 else "")
    return labels


def _front_table(front: list[Row]) -> str:
    rows = [
        [f"#{r.number}", _pm(r.decode), f"{r.quality['kld_mean']:.4f}", f"{r.quality['task_accuracy']:.2f}", _settings(r.config)]
        for r in sorted(front, key=lambda r: -r.decode.median)
    ]
    return _table(["trial", "decode tok/s (median ± IQR)", "mean KLD", "task accuracy", "settings"], rows) if rows else ""


_OBJECTIVE_NAMES = {"decode_tok_s": "decode tok/s", "kld_mean": "mean KLD"}


def _importances(study: Any, out_dir: Path) -> list[_Section]:
    """One section per objective, from :func:`tuner.explain.importances` (what `tune explain` prints)."""
    from tuner.explain import importances, searched_trials

    objectives = list(study.user_attrs.get("objectives") or ["decode_tok_s", "kld_mean"][: len(study.directions)])
    scores = importances(study)
    searched = len(searched_trials(study))
    return [_importance(study, searched, o, scores.get(o, {}), out_dir) for o in objectives if o in _OBJECTIVE_NAMES]


def _importance(study: Any, searched: int, objective: str, importances: dict[str, float], out_dir: Path) -> _Section:
    name = _OBJECTIVE_NAMES[objective]
    title = f"Parameter importance for {name}"
    if searched < MIN_IMPORTANCE_TRIALS:
        return _Section(
            title,
            note=f"Parameter importances need at least {MIN_IMPORTANCE_TRIALS} completed search trials (baselines "
            f"excluded); this study has {searched}. Run more with `tune resume {study.study_name} --trials N`.",
        )
    if not any(importances.values()):
        return _Section(title, note=f"No parameter separates the best {name} trials from the rest yet.")
    fig = _figure(height=max(2.5, 0.4 * len(importances) + 1.2))
    ax = fig.add_subplot()
    ordered = list(importances.items())[::-1]  # barh draws bottom-up: the most important on top
    ax.barh([p for p, _ in ordered], [v for _, v in ordered], color=COLORS["feasible"])
    ax.set_xlabel("importance (PED-ANOVA, normalized to sum to 1)")
    ax.set_ylabel("setting (as it ran, after llama.cpp's clamps)")
    ax.set_title(f"Parameter importance for {name} ({searched} search trials)")
    ax.grid(axis="x", alpha=0.3)
    note = (
        f"How much each setting's values differ between the best 10% of trials for {name} and all "
        "search trials (PED-ANOVA over the settings that actually ran); baselines are excluded. "
        "Few trials make these estimates noisy."
    )
    table = _table(["setting", "importance"], [[p, f"{v:.3f}"] for p, v in importances.items()])
    return _Section(title, _save(fig, out_dir / f"importance_{objective}.png"), f"parameter importances for {name}", note, table)


def _baselines(summary: Summary, out_dir: Path) -> _Section:
    title = "Best vs the baselines"
    rows = [*summary.baselines.values(), *([summary.best] if summary.best else [])]
    if not rows:
        return _Section(title, note="No baseline or feasible trial has completed yet: nothing to compare.")
    fig = _figure(width=7.5)
    ax = fig.add_subplot()
    names = [_row_name(r, summary) for r in rows]
    bars = ax.bar(
        names,
        [r.decode.median for r in rows],
        yerr=_quartile_errors([r.decode for r in rows]),
        capsize=6,
        color=[COLORS.get(r.label, "grey") for r in rows],
    )
    for bar, row in zip(bars, rows):
        if not row.feasible:
            bar.set_hatch("//")  # outside the quality floor
    labels = [f"{r.decode.median:.1f}" + (f" ({r.ratio_vs_defaults:.2f}x)" if r.ratio_vs_defaults is not None else "") for r in rows]
    ax.bar_label(bars, labels, label_type="center", color="white", fontweight="bold")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("decode speed (tokens/s, median)")
    ax.set_title("Decode speed: best trial vs the baselines\n(bars: median; error bars: interquartile range)")
    ax.grid(axis="y", alpha=0.3)
    note = (
        "Each configuration's own trial reading. Ratios are against llama-cpp-python's defaults; a difference "
        "within the larger IQR or the study's noise floor is a tie."
    )
    if summary.best is None:
        note += " No trial is within the quality floor, so there is no best trial to compare."
    return _Section(title, _save(fig, out_dir / "baselines.png"), "decode tok/s of defaults, guide card and best", note, _comparison_table(rows, summary))


def _row_name(row: Row, summary: Summary) -> str:
    name = f"{NAMES.get(row.label, row.label)} (#{row.number}{'' if row.feasible else ', infeasible'})"
    if row.label == "best":
        same = [NAMES.get(label, label) for label, b in summary.baselines.items() if b.number == row.number]
        name += f" = {same[0]}" if same else ""
    return name


def _comparison_table(rows: list[Row], summary: Summary) -> str:
    cells = []
    for row in rows:
        cells.append(
            [
                _row_name(row, summary),
                _pm(row.decode),
                _ratio(row, summary),
                _pm(row.prompt, 0),
                f"{row.ttft.median:.0f}",
                f"{row.quality['kld_mean']:.4f}" if row.quality else "-",
                f"{row.quality['task_accuracy']:.2f}" if row.quality else "-",
                "yes" if row.feasible else "no",
                _settings(row.config),
            ]
        )
    header = ["config", "decode tok/s (median ± IQR)", "vs defaults", "prompt tok/s", "TTFT ms", "mean KLD", "task accuracy", "feasible", "settings"]
    return _table(header, cells)


def _ratio(row: Row, summary: Summary) -> str:
    """The trial's decode ratio vs the defaults, called a tie as `tune show` calls it."""
    if row.ratio_vs_defaults is None:
        return "-"
    text = f"{row.ratio_vs_defaults:.2f}x"
    return text + " (tie: within noise)" if summary.ties_defaults(row) else text


# ---------------------------------------------------------------------------------------------
# The page


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1100px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; }
figure { margin: 0.8rem 0; } img.plot { max-width: 100%; height: auto; border: 1px solid #eee; }
p.note { color: #555; } p.missing { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5rem 0.8rem; }
.meta { color: #666; font-size: 0.85rem; }
"""

# Records, for each figure, whether the browser decoded it: a headless browser (the tests) or a
# reader's devtools can check img.dataset.loaded instead of trusting that the page looks right.
_SCRIPT = """
window.addEventListener("load", function () {
  document.querySelectorAll("img.plot").forEach(function (img) {
    img.dataset.loaded = String(img.complete && img.naturalWidth > 0);
    img.dataset.naturalWidth = String(img.naturalWidth);
  });
  document.body.dataset.figuresChecked = "true";
});
"""


def _page(study: Any, summary: Summary, sections: list[_Section]) -> str:
    name = html.escape(study.study_name)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Study {name} — llama-tuner report</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>llama-tuner report: study {name}</h1>",
        f'<p class="meta">generated {datetime.now(timezone.utc).isoformat(timespec="seconds")}</p>',
        "<h2>Summary</h2>",
        _summary_table(study, summary),
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.image is not None:
            data = base64.b64encode(section.image.read_bytes()).decode("ascii")
            parts.append(
                f'<figure><img class="plot" id="{section.image.stem}" src="data:image/png;base64,{data}" '
                f'alt="{html.escape(section.alt)}"><figcaption class="note">{html.escape(section.note)}</figcaption></figure>'
            )
        elif section.note:
            parts.append(f'<p class="missing">{html.escape(section.note)}</p>')
        parts.append(section.table)
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts) + "\n"


def _summary_table(study: Any, summary: Summary) -> str:
    attrs = study.user_attrs
    workload = attrs.get("workload") or {}
    rows = [
        ["study", study.study_name],
        ["model", f"{Path(attrs.get('model_path', '?')).name} (sha256 {str(attrs.get('model_sha256', '?'))[:12]}…)"],
        ["machine", _machine(attrs.get("machine") or {})],
        ["search space", (attrs.get("space") or {}).get("name", "?")],
        [
            "workload",
            f"{workload.get('prompt_tokens', '?')} prompt + {workload.get('gen_tokens', '?')} generated tokens, "
            f"{workload.get('repeats', '?')} timed repetitions after a warm-up"
            + (", quality proxy on" if workload.get("quality") else ", no quality proxy"),
        ],
        [
            "trials",
            f"{summary.complete} completed ({summary.feasible} feasible, {summary.infeasible} infeasible), "
            f"{summary.failed} failed; target {summary.target}",
        ],
    ]
    best = summary.best
    if best is None:
        rows.append(["best config", "none yet (no completed trial within the quality floor)"])
    else:
        rows.append(["best config", f"trial #{best.number}: {_settings(best.config)}"])
        rows.append(["best decode tok/s", f"{_pm(best.decode)} (median ± IQR)"])
        rows.append(["best vs defaults", f"trial reading: {_ratio(best, summary)}"])
    if summary.noise:
        rows.append(["noise floor", f"±{summary.noise:.1%} run to run (closer results are ties)"])
    if summary.confirmation is not None:
        rows.append(["confirmation", f"{summary.confirmation.rounds} interleaved rounds: {summary.confirmation.why}"])
    elif best is not None and best.label == "best":
        rows.append(["confirmation", "not confirmed by re-measurement (skipped, or the study changed since)"])
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="summary">{body}</table>'


def _machine(machine: dict[str, Any]) -> str:
    if not machine:
        return "?"
    text = f"{machine.get('cpu_model', '?')}, {machine.get('logical_cores', '?')} logical cores, {machine.get('ram_gib', '?')} GiB RAM"
    gpus = machine.get("gpus") or []
    text += "; " + (", ".join(str(g.get("name", "GPU")) for g in gpus) if gpus else "no GPU offload")
    return text + f" [fingerprint {machine.get('fingerprint', '?')}]"


def _settings(cfg: dict[str, Any]) -> str:
    from tuner.engine import EngineConfig

    kv = EngineConfig.from_dict(cfg).kv_type
    return (
        f"threads {cfg['n_threads']}/{cfg['n_threads_batch']}, n_ctx {cfg['n_ctx']}, batch {cfg['n_batch']}/{cfg['n_ubatch']}, "
        f"flash_attn {'on' if cfg['flash_attn'] else 'off'}, kv {kv}, gpu layers {cfg.get('n_gpu_layers', 0)}, "
        f"temperature {cfg['temperature']:.2f}, top_k {cfg['top_k']}, top_p {cfg['top_p']:.2f}, "
        f"min_p {cfg['min_p']:.3f}, repeat_penalty {cfg['repeat_penalty']:.2f}"
    )


def _pm(stat: Stat, digits: int = 1) -> str:
    return f"{stat.median:.{digits}f} ± {stat.iqr:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"
