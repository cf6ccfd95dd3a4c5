"""A study's report: figures as PNG files and one self-contained HTML page that embeds them.

The page holds five parts: the optimization history (decode tok/s per trial, feasible, infeasible
and baseline trials marked, with the best-so-far line), the Pareto front of decode tok/s against
mean KLD (studies with the quality objective), parameter importances (PED-ANOVA, per objective),
the baselines against the best trial, and the ablation table (what each change is worth). Images are embedded as base64 ``data:`` URIs and the
CSS is inline, so the page can be mailed or opened offline; the PNGs beside it are the same bytes.
The figures are made in ``_figures``, the page in ``_page``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.errors import OutputError
from tuner.report._figures import MIN_IMPORTANCE_TRIALS, baselines, history, importance_sections, pareto
from tuner.report._page import ablation_section, render_page
from tuner.study import summarize

__all__ = ["MIN_IMPORTANCE_TRIALS", "ReportFiles", "write_report"]


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    html: Path
    images: list[Path]


def write_report(study: Any, out_dir: Path) -> ReportFiles:
    """Write ``out_dir/report.html`` and one PNG per figure for ``study``.

    Raises:
        OutputError: ``out_dir`` cannot be created or written.
    """
    out_dir = Path(out_dir)
    _prepare(out_dir)
    summary = summarize(study)
    sections = [
        history(study, summary, out_dir),
        pareto(study, summary, out_dir),
        *importance_sections(study, out_dir),
        baselines(summary, out_dir),
        ablation_section(summary),
    ]
    page = out_dir / "report.html"
    page.write_text(render_page(study, summary, sections), encoding="utf-8")
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
