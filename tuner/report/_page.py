"""The report's HTML page: one self-contained file (inline CSS, figures embedded as base64
``data:`` URIs) made of sections, plus the small formatting helpers the sections share.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tuner.config import EngineConfig
from tuner.stats import UNITS, Stat
from tuner.study import Row, Summary
from tuner.workload import Workload

__all__ = ["Section", "pm", "ratio_text", "render_page", "settings", "table"]


@dataclass(frozen=True)
class Section:
    """One part of the page: a figure (or the reason there is none), a note and a table."""

    title: str
    image: Path | None = None
    alt: str = ""
    note: str = ""
    table: str = ""  # HTML, already escaped


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


def render_page(study: Any, summary: Summary, sections: list[Section]) -> str:
    """The whole page: the summary table, then each section's figure (or why none), note and table."""
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
        ["workload", _workload_text(workload)],
        [
            "trials",
            f"{summary.complete} completed ({summary.feasible} feasible, {summary.infeasible} infeasible), "
            f"{summary.failed} failed; target {summary.target}",
        ],
    ]
    best = summary.best
    if best is None:
        rows.append(["best config", "none yet (no feasible completed trial: quality floor, latency targets)"])
    else:
        rows.append(["best config", f"trial #{best.number}: {settings(best.config)}"])
        rows.append([f"best {UNITS.get(summary.metric, summary.metric)}", f"{pm(best.speed)} (median ± IQR; decode {pm(best.decode)} tok/s, prompt {pm(best.prompt, 0)} tok/s)"])
        source = "confirmed by re-measurement" if best.source == "confirmed" else "trial reading"
        rows.append(["best vs defaults", f"{source}: {ratio_text(best, summary)}"])
        if best.source == "confirmed":
            reading = summary.trial_readings["best"]
            rows.append(["best, its trial's reading", f"{pm(reading.speed)} {UNITS.get(summary.metric, summary.metric)} (before re-measurement)"])
    if summary.noise:
        rows.append(["noise floor", f"±{summary.noise:.1%} between readings side by side (closer results are ties)"])
        if summary.drift.readings:
            rows.append(["drift", f"{summary.drift.describe(UNITS.get(summary.metric, summary.metric))}; single readings minutes apart ±{summary.reading_noise:.1%}"])
    elif summary.noise_error:
        rows.append(["noise floor", f"not measured: {summary.noise_error}; ties rest on the rounds' own spread"])
    if summary.quality_note:
        rows.append(["quality proxy", summary.quality_note])
    if summary.time_text:
        rows.append(["time", summary.time_text])
    if summary.confirmation is not None:
        rows.append(["confirmation", f"{summary.confirmation.rounds} interleaved rounds: {summary.confirmation.why}"])
    elif summary.unconfirmed_note:
        rows.append(["confirmation", summary.unconfirmed_note])
    if summary.minimal is not None:
        kept = ", ".join(step.group for step in summary.ablation.kept) or "nothing"
        rows.append(["minimal preset (exported)", f"{summary.start} + {kept}: {settings(summary.minimal.config)}; {ratio_text(summary.minimal, summary)} the defaults"])
        rows.extend(["figure it loses", line] for line in summary.ablation.worse)
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="summary">{body}</table>'


def ablation_section(summary: Summary) -> Section:
    """The ablation table: each change from the starting point to the winner, its measured worth,
    kept or reverted (no figure: the table is the result)."""
    title = "Ablation: what each change is worth"
    ablation = summary.ablation
    if ablation is None:
        return Section(title, note="No ablation: the study has no current confirmation (or was confirmed before ablations existed).")
    from tuner.study import start_words

    rows = [[step.group, step.change_text, step.worth_text, step.why] for step in ablation.steps]
    start = start_words(ablation.start)
    note = (
        f"The winner #{ablation.winner} over the winner with each group set back to {start}, paired over "
        f"{ablation.rounds} interleaved rounds; a change within the noise (±{ablation.noise:.1%}) is reverted."
    )
    if not rows:
        note = f"The confirmed winner is {start} itself: nothing changes."
    # an explanation, not a missing figure: it goes above the table, not in the "missing" style
    text = f'<p class="note">{html.escape(note)}</p>' + (table(["group", "from -> to", "worth (range)", "verdict"], rows) if rows else "")
    return Section(title, table=text)


def _workload_text(data: dict[str, Any]) -> str:
    """The workload in words: its shapes and weights (or a study's old single prompt + generation)."""
    if not data:
        return "?"
    workload = Workload.from_dict(data)
    text = f"{workload.name}: {workload.describe()}; {workload.repeats} timed repetitions after a warm-up pass"
    return text + (", quality proxy on" if workload.quality else ", no quality proxy")


def _machine(machine: dict[str, Any]) -> str:
    if not machine:
        return "?"
    text = f"{machine.get('cpu_model', '?')}, {machine.get('logical_cores', '?')} logical cores, {machine.get('ram_gib', '?')} GiB RAM"
    gpus = machine.get("gpus") or []
    text += "; " + (", ".join(str(g.get("name", "GPU")) for g in gpus) if gpus else "no GPU offload")
    return text + f" [fingerprint {machine.get('fingerprint', '?')}]"


def settings(cfg: dict[str, Any]) -> str:
    kv = EngineConfig.from_dict(cfg).kv_type
    return (
        f"threads {cfg['n_threads']}/{cfg['n_threads_batch']}, n_ctx {cfg['n_ctx']}, batch {cfg['n_batch']}/{cfg['n_ubatch']}, "
        f"flash_attn {'on' if cfg['flash_attn'] else 'off'}, kv {kv}, gpu layers {cfg.get('n_gpu_layers', 0)}, "
        f"temperature {cfg['temperature']:.2f}, top_k {cfg['top_k']}, top_p {cfg['top_p']:.2f}, "
        f"min_p {cfg['min_p']:.3f}, repeat_penalty {cfg['repeat_penalty']:.2f}"
    )


def pm(stat: Stat, digits: int = 1) -> str:
    return f"{stat.median:.{digits}f} ± {stat.iqr:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def ratio_text(row: Row, summary: Summary) -> str:
    """The trial's speed ratio vs the defaults, called a tie as `tune show` calls it."""
    if row.ratio_vs_defaults is None:
        return "-"
    text = f"{row.ratio_vs_defaults:.2f}x"
    return text + " (tie: within noise)" if summary.ties_defaults(row) else text
