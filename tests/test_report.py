"""`tune report`: PNG figures and a self-contained HTML page that a real browser renders.

The page and its figures come from a real study made by `tune start` on the embedded model; a
real headless Chromium opens the page and reports, through the page's own script, whether each
figure decoded. Importances need more trials than a quick real study holds, so they are checked
on a study run through the real study loop against a simulated machine.
"""

from __future__ import annotations

import base64
import html
import re
import warnings
from pathlib import Path

import optuna
import pytest
from PIL import Image

from tests.browser import assert_not_blank, dump_dom, needs_chromium, screenshot
from tests.conftest import run_tune, simulated_measurement
from tuner.config import EngineConfig
from tuner.errors import EngineError
from tuner.measure import Measurement
from tuner.workload import Workload
from tuner.models import default_model_path
from tuner.quality import Quality, QualityBudget
from tuner.report import MIN_IMPORTANCE_TRIALS, ReportFiles, write_report
from tuner.study.explain import importances
from tuner.space import load_space
from tuner.study import StudySpec, load_study, open_storage, start_study, summarize

# ---------------------------------------------------------------------------------------------
# A real study, its report


@pytest.fixture(scope="module")
def real(cli_study, tmp_path_factory) -> dict[str, Path | str]:
    """`tune report` on the shared 4-trial study (3 baselines + 1 search trial, quality proxy on,
    confirmed and ablated; tests/conftest.py)."""
    cwd = tmp_path_factory.mktemp("report")
    storage = f"sqlite:///{cli_study / 'studies' / 'tuner.db'}"
    reported = run_tune("report", "guide-user", "--out", "out", "--storage", storage, cwd=cwd)
    assert reported.returncode == 0, reported.stderr
    return {"cwd": cwd, "storage": storage, "out": cwd / "out", "stdout": reported.stdout}


def _images(page: str) -> list[dict[str, str]]:
    """The attributes of every <img> on the page."""
    return [dict(re.findall(r'([\w-]+)="([^"]*)"', tag)) for tag in re.findall(r"<img\b[^>]*>", page)]


def _summary_rows(page: str) -> dict[str, str]:
    table = re.search(r'<table class="summary">(.*?)</table>', page, re.S).group(1)
    return {html.unescape(k): v for k, v in re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", table)}


def test_report_writes_the_page_and_one_valid_png_per_figure(real):
    out = real["out"]
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["baselines.png", "history.png", "pareto.png"]  # too few trials for importances
    assert real["stdout"].splitlines() == ["wrote out/report.html (self-contained: open it in any browser)"] + [
        f"wrote out/{name}" for name in ("history.png", "pareto.png", "baselines.png")
    ]
    for name in pngs:
        with Image.open(out / name) as image:
            image.verify()  # raises on a truncated or corrupt PNG
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width >= 600 and image.height >= 300
            assert_not_blank(image)


def test_report_page_is_self_contained(real):
    page = (real["out"] / "report.html").read_text()
    images = _images(page)
    assert [img["id"] for img in images] == ["history", "pareto", "baselines"]
    for img in images:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        assert base64.b64decode(img["src"][len(prefix) :]) == (real["out"] / f"{img['id']}.png").read_bytes()
        assert img["alt"]
    # Nothing to fetch: no stylesheet link, no external script or image, no URL at all.
    assert "<link" not in page and "http://" not in page and "https://" not in page
    assert re.findall(r"<script\b[^>]*\bsrc=", page) == []


def test_report_summarizes_the_study_and_its_best(real):
    page = (real["out"] / "report.html").read_text()
    study = load_study("guide-user", open_storage(real["storage"], must_exist=True))
    summary = summarize(study)
    rows = _summary_rows(page)
    assert rows["study"] == "guide-user"
    assert rows["model"].startswith(default_model_path().name)
    assert study.user_attrs["machine"]["cpu_model"] in rows["machine"]
    assert rows["trials"].startswith(f"{summary.complete} completed") and "target 4" in rows["trials"]
    assert rows["best config"].startswith(f"trial #{summary.best.number}: threads {summary.best.config['n_threads']}/")
    # `tune start` confirmed its winner: the re-measured ratio leads, the trial's reading follows.
    assert summary.best.source == "confirmed"
    assert rows["best vs defaults"].startswith(f"confirmed by re-measurement: {summary.best.ratio_vs_defaults:.2f}x")
    assert rows["best, its trial's reading"].endswith("(before re-measurement)")
    assert rows["confirmation"].startswith("3 interleaved rounds: ")  # `tune start` confirmed its winner
    assert summary.confirmation.why in html.unescape(rows["confirmation"])
    # The baseline table names each configuration with its trial number.
    for label, row in summary.baselines.items():
        assert f"<td>{label.replace('_', ' ')} (#{row.number}" in page


def test_report_says_why_a_small_study_has_no_importances(real):
    page = (real["out"] / "report.html").read_text()
    for objective in ("requests/min", "mean KLD"):
        assert f"<h2>Parameter importance for {objective}</h2>" in page
    notes = re.findall(r'<p class="missing">(.*?)</p>', page)
    assert len(notes) == 2
    assert all(f"need at least {MIN_IMPORTANCE_TRIALS} completed search trials" in n and "this study has 1" in n for n in notes)


@needs_chromium
def test_report_renders_in_chromium(real, tmp_path):
    url = (real["out"] / "report.html").as_uri()
    dom = dump_dom(url, tmp_path / "profile")
    assert 'data-figures-checked="true"' in dom  # the page's own check ran
    images = _images(dom)
    assert len(images) == len(list(real["out"].glob("*.png"))) == 3
    for img in images:
        assert img.get("data-loaded") == "true", img["id"]
        assert int(img["data-natural-width"]) >= 600, img["id"]
    shot = screenshot(url, real["cwd"] / "report-screenshot.png", tmp_path / "profile")
    assert shot.size == (1280, 1800)
    assert_not_blank(shot)


def test_report_errors_are_one_line(real, tmp_path):
    missing = run_tune("report", "nope", "--out", "out", "--storage", real["storage"], cwd=tmp_path)
    not_a_dir = run_tune("report", "guide-user", "--out", str(real["out"] / "report.html"), "--storage", real["storage"], cwd=tmp_path)
    for result, fragment in ((missing, "study 'nope' does not exist"), (not_a_dir, "pass a writable directory with --out")):
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
        assert fragment in result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Importances: the real study loop on a simulated machine


class SimulatedMachine:
    """A Runner: decode speed grows with n_threads up to 4 cores; flash attention costs quality
    beyond the default budget (infeasible trials); an 8192-token context does not fit (failed trials)."""

    def reference(self, model_sha256: str, **options) -> dict[str, float]:
        return {"greedy_accuracy": 0.7, "greedy_nll": 1.0}

    def quality(self, config: EngineConfig) -> Quality:
        kld = 0.04 if config.effective().flash_attn else 0.001
        return Quality(kld, 3 * kld, 0.95, 0.7, 1.0, 0.0)

    def measure(self, config: EngineConfig, workload: Workload, **options) -> Measurement:  # never raced: one reading
        effective = config.effective()
        if effective.n_ctx == 8192:
            raise EngineError("llama.cpp could not create a context for n_ctx=8192 (simulated)", "use a smaller n_ctx")
        decode = 10.0 * min(effective.n_threads, 4)
        return simulated_measurement(effective, workload, decode, self.quality(effective) if workload.quality else None)


def _simulated_study(trials: int, quality: bool) -> optuna.Study:
    spec = StudySpec(
        model=default_model_path(),
        model_sha256="0" * 64,
        space=load_space("cpu", cores=4),
        workload=Workload.single(32, 8, quality=quality),
        trials=trials,
        seed=3,
        budget=QualityBudget(),
    )
    machine = {"cpu_model": "simulated CPU", "logical_cores": 4, "fingerprint": "sim"}
    return start_study(spec, name="sim", storage=optuna.storages.InMemoryStorage(), runner=SimulatedMachine(), machine=machine)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> tuple[optuna.Study, ReportFiles]:
    """36 trials on the simulated machine: about 30 completed search trials, some infeasible, some failed."""
    study = _simulated_study(trials=36, quality=True)
    return study, write_report(study, tmp_path_factory.mktemp("simulated"))


def test_the_report_shows_the_importances_tune_explain_computes_on_a_real_study(speed_study, tmp_path):
    """The shared 12-trial study on the real engine (tests/conftest.py): its report's importance
    table is tuner.study.explain.importances, knob by knob, in that order."""
    url, name, _ = speed_study
    study = load_study(name, open_storage(url, must_exist=True))
    files = write_report(study, tmp_path)
    assert [p.name for p in files.images] == ["history.png", "importance_requests_per_min.png", "baselines.png"]  # speed only
    page = files.html.read_text()
    tables = re.findall(r"<h2>Parameter importance for (.*?)</h2>.*?<table>(.*?)</table>", page, re.S)
    shown = {objective: re.findall(r"<tr><td>(\w+)</td><td>([\d.]+)</td></tr>", table) for objective, table in tables}
    computed = importances(study)["requests_per_min"]
    assert computed, "10 searched trials are enough for PED-ANOVA"
    assert shown == {"requests/min": [(knob, f"{score:.3f}") for knob, score in computed.items()]}
    searched = {p.name for p in load_space("cpu").params}
    assert set(computed) <= searched  # the baselines add no parameter of their own


def test_report_counts_infeasible_and_failed_trials_and_the_confirmation(simulated):
    study, files = simulated
    summary = summarize(study)
    assert summary.infeasible and summary.failed  # the simulated machine makes both
    page = files.html.read_text()
    rows = _summary_rows(page)
    assert rows["trials"] == (
        f"{summary.complete} completed ({summary.feasible} feasible, {summary.infeasible} infeasible), "
        f"{summary.failed} failed; target 36"
    )
    assert rows["confirmation"].startswith("3 interleaved rounds: ")  # start_study confirmed the winner
    assert rows["best config"].startswith(f"trial #{summary.best.number}: ")
    # The guide card runs flash attention, which costs the simulated model too much quality.
    guide = re.search(r"<tr><td>guide card \(#1, infeasible\)</td>(.*?)</tr>", page).group(1)
    assert "<td>no</td>" in guide  # the "feasible" column


def test_write_report_prints_nothing(simulated, tmp_path, capfd):
    """Library code never prints: not optuna's log lines, not its importance warnings."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)  # as a fresh process has it
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning that escaped would fail here
            write_report(simulated[0], tmp_path)
    finally:
        optuna.logging.set_verbosity(verbosity)
    assert capfd.readouterr() == ("", "")


def test_a_speed_only_study_says_it_has_no_pareto_front(tmp_path):
    study = _simulated_study(trials=3, quality=False)
    files = write_report(study, tmp_path)
    assert [p.name for p in files.images] == ["history.png", "baselines.png"]
    page = files.html.read_text()
    assert "no quality objective (it was started with --no-quality)" in page
    assert "<h2>Parameter importance for mean KLD</h2>" not in page
