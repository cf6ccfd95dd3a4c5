"""The report's figures, one section each: the optimization history, the Pareto front, parameter
importances per objective, and the baselines against the best trial.

matplotlib is imported lazily, and only its Agg canvas is used (no pyplot): nothing here touches
a display or matplotlib's global backend.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from tuner.report._page import Section, pm, ratio_text, settings, table
from tuner.stats import UNITS, Stat
from tuner.study import SHAPE_COLUMNS, Row, Summary, by_shape, is_feasible
from tuner.study.explain import MIN_TRIALS_FOR_IMPORTANCE, importances, searched_trials

__all__ = ["MIN_IMPORTANCE_TRIALS", "baselines", "history", "importance_sections", "pareto"]

# PED-ANOVA compares the top 10% of trials with all of them: below 20 searched trials that top is a
# single trial, so importances from 10-19 trials are rough (the page says few trials make them noisy).
MIN_IMPORTANCE_TRIALS = MIN_TRIALS_FOR_IMPORTANCE  # one threshold for `tune report` and `tune explain`

NAMES = {"defaults": "defaults", "cpu_defaults": "defaults on the CPU", "guide_card": "guide card", "best": "best"}
COLORS = {
    "feasible": "#1f77b4",
    "infeasible": "#d62728",
    "failed": "#7f7f7f",
    "defaults": "#2ca02c",
    "cpu_defaults": "#8c564b",
    "guide_card": "#ff7f0e",
    "best": "#9467bd",
    "front": "#ff7f0e",
}
MARKERS = {"defaults": "s", "cpu_defaults": "v", "guide_card": "D"}
DPI = 110


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


def _speed_stat(trial: Any, metric: str) -> Stat:
    return Stat.from_dict(trial.user_attrs["measurement"][metric])


def history(study: Any, summary: Summary, out_dir: Path) -> Section:
    title = "Optimization history"
    trials = _completed(study)
    if not trials:
        return Section(title, note="No completed trial yet: nothing to plot.")
    fig = _figure()
    ax = fig.add_subplot()
    search = [t for t in trials if "baseline" not in t.user_attrs]
    unit = UNITS.get(summary.metric, summary.metric)
    for feasible, label in ((True, "search trial (feasible)"), (False, "search trial (infeasible: quality floor or latency target)")):
        group = [t for t in search if is_feasible(t) == feasible]
        if group:
            ax.errorbar(
                [t.number for t in group],
                [t.values[0] for t in group],
                yerr=_quartile_errors([_speed_stat(t, summary.metric) for t in group]),
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
            yerr=_quartile_errors([_speed_stat(trial, summary.metric)]),
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
        ax.plot([best.number], [best.speed.median], "o", markersize=16, markerfacecolor="none", markeredgecolor=COLORS["best"], markeredgewidth=2, label=f"confirmed winner (#{best.number})")
    _integer_axis(ax.xaxis)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("trial number")
    ax.set_ylabel(f"{unit} (median of repetitions)")
    ax.set_title(f"Optimization history of '{study.study_name}': {unit} per trial")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    note = "Error bars span the interquartile range of the timed repetitions."
    return Section(title, _save(fig, out_dir / "history.png"), f"{unit} per trial with the best-so-far line", note)


def _best_so_far(trials: list[Any], last: int) -> list[tuple[int, float]]:
    """(trial number, best feasible speed objective up to it), one point per improvement, to ``last``."""
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


def pareto(study: Any, summary: Summary, out_dir: Path) -> Section:
    title = "Pareto front: speed vs quality"
    unit = UNITS.get(summary.metric, summary.metric)
    if len(study.directions) < 2:
        return Section(
            title,
            note=f"This study has no quality objective (it was started with --no-quality): {unit} is its only "
            "objective, so there is no Pareto front to plot.",
        )
    trials = _completed(study)
    if not trials:
        return Section(title, note="No completed trial yet: nothing to plot.")
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
    front = sorted(summary.pareto, key=lambda r: r.speed.median)
    if front:
        ax.plot(
            [r.speed.median for r in front],
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
    ax.set_xlabel(f"{unit} (median) — higher is better")
    ax.set_ylabel("mean KLD vs the reference (nats) — lower is better")
    ax.set_title(f"Pareto front: {unit} vs mean KLD")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    note = (
        "Each point is a completed trial. The front holds the feasible trials that no other trial beats on both "
        "speed and mean KLD."
    )
    return Section(title, _save(fig, out_dir / "pareto.png"), f"{unit} against mean KLD, Pareto front marked", note, _front_table(front, unit))


def _point_labels(front: list[Row], summary: Summary) -> dict[tuple[float, float], str]:
    """One label per plotted position for the front and the baselines: trials that share a
    position (settings that differ only in sampling share the mean KLD) share one label."""
    baselines = {row.number: NAMES.get(label, label) for label, row in summary.baselines.items()}
    rows = {r.number: r for r in [*front, *summary.baselines.values()]}
    at: dict[tuple[float, float], list[int]] = {}
    for number, row in sorted(rows.items()):
        at.setdefault((row.speed.median, row.quality["kld_mean"]), []).append(number)
    labels = {}
    for point, numbers in at.items():
        names = [f"#{n}" + (f" {baselines[n]}" if n in baselines else "") for n in numbers]
        labels[point] = ", ".join(names[:3]) + (f" +{len(names) - 3} more" if len(names) > 3 else "")
    return labels


def _front_table(front: list[Row], unit: str) -> str:
    rows = [
        [f"#{r.number}", pm(r.speed), f"{r.quality['kld_mean']:.4f}", f"{r.quality['task_accuracy']:.2f}", settings(r.config)]
        for r in sorted(front, key=lambda r: -r.speed.median)
    ]
    return table(["trial", f"{unit} (median ± IQR)", "mean KLD", "task accuracy", "settings"], rows) if rows else ""


_OBJECTIVE_NAMES = {name: UNITS[name] for name in ("requests_per_min", "decode_tok_s", "kld_mean")}


def importance_sections(study: Any, out_dir: Path) -> list[Section]:
    """One section per objective, from :func:`tuner.study.explain.importances` (what `tune explain` prints)."""
    objectives = list(study.user_attrs.get("objectives") or ["decode_tok_s", "kld_mean"][: len(study.directions)])  # old studies had none
    scores = importances(study)
    searched = len(searched_trials(study))
    return [_importance(study, searched, o, scores.get(o, {}), out_dir) for o in objectives if o in _OBJECTIVE_NAMES]


def _importance(study: Any, searched: int, objective: str, scores: dict[str, float], out_dir: Path) -> Section:
    name = _OBJECTIVE_NAMES[objective]
    title = f"Parameter importance for {name}"
    if searched < MIN_IMPORTANCE_TRIALS:
        return Section(
            title,
            note=f"Parameter importances need at least {MIN_IMPORTANCE_TRIALS} completed search trials (baselines "
            f"excluded); this study has {searched}. Run more with `tune resume {study.study_name} --trials N`.",
        )
    if not any(scores.values()):
        return Section(title, note=f"No parameter separates the best {name} trials from the rest yet.")
    fig = _figure(height=max(2.5, 0.4 * len(scores) + 1.2))
    ax = fig.add_subplot()
    ordered = list(scores.items())[::-1]  # barh draws bottom-up: the most important on top
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
    rows = table(["setting", "importance"], [[p, f"{v:.3f}"] for p, v in scores.items()])
    return Section(title, _save(fig, out_dir / f"importance_{objective}.png"), f"parameter importances for {name}", note, rows)


def baselines(summary: Summary, out_dir: Path) -> Section:
    title = "Best vs the baselines"
    rows = [*summary.baselines.values(), *([summary.best] if summary.best else [])]
    if not rows:
        return Section(title, note="No baseline or feasible trial has completed yet: nothing to compare.")
    unit = UNITS.get(summary.metric, summary.metric)
    fig = _figure(width=7.5)
    ax = fig.add_subplot()
    names = [_row_name(r, summary) for r in rows]
    bars = ax.bar(
        names,
        [r.speed.median for r in rows],
        yerr=_quartile_errors([r.speed for r in rows]),
        capsize=6,
        color=[COLORS.get(r.label, "grey") for r in rows],
    )
    for bar, row in zip(bars, rows):
        if not row.feasible:
            bar.set_hatch("//")  # outside the quality floor
    labels = [f"{r.speed.median:.1f}" + (f" ({r.ratio_vs_defaults:.2f}x)" if r.ratio_vs_defaults is not None else "") for r in rows]
    ax.bar_label(bars, labels, label_type="center", color="white", fontweight="bold")
    ax.set_ylim(bottom=0)
    ax.set_ylabel(f"{unit} (median)")
    ax.set_title(f"{unit}: best trial vs the baselines\n(bars: median; error bars: interquartile range)")
    ax.grid(axis="y", alpha=0.3)
    note = (
        ("Figures re-measured in the confirmation's interleaved rounds (ratios paired round by round). "
         if summary.confirmation is not None else "Each configuration's own trial reading. ")
        + "Ratios are against llama-cpp-python's defaults; a difference "
        "within the larger IQR or the study's noise floor is a tie."
    )
    if summary.best is None:
        note += " No trial is feasible (quality floor, latency targets), so there is no best trial to compare."
    return Section(
        title, _save(fig, out_dir / "baselines.png"), f"{unit} of defaults, guide card and best", note, _comparison_table(rows, summary) + _shape_table(rows, summary)
    )


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
                pm(row.speed),
                ratio_text(row, summary),
                pm(row.decode),
                pm(row.prompt, 0),
                f"{row.ttft.median:.0f}",
                f"{row.quality['kld_mean']:.4f}" if row.quality else "-",
                f"{row.quality['task_accuracy']:.2f}" if row.quality else "-",
                "yes" if row.feasible else "no",
                settings(row.config),
            ]
        )
    unit = UNITS.get(summary.metric, summary.metric)
    header = ["config", f"{unit} (median ± IQR)", "vs defaults", "decode tok/s", "prompt tok/s", "TTFT ms", "mean KLD", "task accuracy", "feasible", "settings"]
    return table(header, cells)


def _shape_table(rows: list[Row], summary: Summary) -> str:
    """Per request shape: each configuration's medians (studies made before workloads have none)."""
    cells = []
    for shape, figures in by_shape(rows):
        label = f"{shape['name']}: depth {shape['depth']} + prompt {shape['prompt']} -> gen {shape['gen']}"
        cells.extend([label, _row_name(row, summary), *values] for row, values in figures)
    return table(["request shape", "config", *SHAPE_COLUMNS], cells) if cells else ""
