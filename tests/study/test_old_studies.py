"""A study made before the quality proxy's version 2 keeps its meaning.

tests/data/study_v1.sql is the SQL dump of a real 3-trial `tune start` (chat workload, quality on)
run by the code of commit 296e713, the last with quality proxy version 1 (answers and texts sampled
once with fixed seeds). Restored into a fresh SQLite file, it must load, show, report and export
with its trials' own quality figures, labelled version 1, and refuse to be resumed: new trials'
figures (version 2) would not compare with its own.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_tune
from tuner.errors import StudyError
from tuner.quality import PROXY_VERSION
from tuner.study import best_preset, check_quality_version, load_study, open_storage, quality_version, summarize

DUMP = Path(__file__).resolve().parents[1] / "data" / "study_v1.sql"
NAME = "v1-study"


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> tuple[Path, str]:
    """A working directory and the storage URL of the restored version-1 study."""
    workdir = tmp_path_factory.mktemp("old-study")
    db = workdir / "old.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(DUMP.read_text())
    return workdir, f"sqlite:///{db}"


def _stored_quality(study) -> dict[int, dict[str, float]]:
    """Each completed trial's quality figures, as the old code wrote them."""
    keys = ("kld_mean", "kld_p99", "top1_agreement", "task_accuracy", "gen_nll", "repeat4")
    return {t.number: {k: t.user_attrs[k] for k in keys} for t in study.trials if t.state.name == "COMPLETE"}


def test_the_dump_is_a_version_1_study():
    assert PROXY_VERSION == 2
    assert "quality_version" not in DUMP.read_text(), "premise: made before versions were recorded"


def test_it_loads_with_its_own_figures_labelled_version_1(old):
    study = load_study(NAME, open_storage(old[1], must_exist=True))
    assert quality_version(study) == 1
    summary = summarize(study)
    assert summary.quality_version == 1 and "version 1" in summary.quality_note
    stored = _stored_quality(study)
    for key, value in stored[summary.best.number].items():  # the old figures, unchanged
        assert summary.best.quality[key] == pytest.approx(value, abs=1e-6), key
    preset = best_preset(study)
    assert preset.measured["quality"]["version"] == 1
    assert preset.measured["quality"]["repeat4"] == stored[summary.best.number]["repeat4"]


def test_show_report_and_export_work_and_say_version_1(old):
    workdir, url = old
    show = run_tune("show", NAME, "--storage", url, cwd=workdir)
    assert show.returncode == 0, show.stderr
    assert "quality proxy version 1" in show.stdout
    shown = json.loads(run_tune("show", NAME, "--storage", url, "--json", cwd=workdir).stdout)
    assert shown["quality_version"] == 1
    report = run_tune("report", NAME, "--storage", url, "--out", str(workdir / "report"), cwd=workdir)
    assert report.returncode == 0, report.stderr
    assert "quality proxy version 1" in (workdir / "report" / "report.html").read_text()
    exported = run_tune("export", NAME, "--storage", url, "--out", str(workdir / "preset.yaml"), cwd=workdir)
    assert exported.returncode == 0, exported.stderr
    assert yaml.safe_load((workdir / "preset.yaml").read_text())["measured"]["quality"]["version"] == 1


def test_resuming_it_is_refused_and_changes_nothing(old):
    workdir, url = old
    db = Path(url.removeprefix("sqlite:///"))
    before = db.read_bytes()
    with pytest.raises(StudyError, match="proxy version 1"):
        check_quality_version(load_study(NAME, open_storage(url, must_exist=True)))
    result = run_tune("resume", NAME, "--storage", url, "--trials", "4", cwd=workdir)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "proxy version 1" in result.stderr and "Traceback" not in result.stderr
    assert db.read_bytes() == before
