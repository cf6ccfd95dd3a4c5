"""`tune dashboard` serves the real optuna-dashboard on the study storage."""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from tests.browser import assert_not_blank, dump_dom, needs_chromium, screenshot
from tests.conftest import run_tune


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def storage(cli_study) -> str:
    """The storage of 'guide-user', the 4-trial study the real `tune start` made (tests/conftest.py)."""
    return f"sqlite:///{cli_study / 'studies' / 'tuner.db'}"


def _get(url: str, deadline: float) -> bytes:
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@contextlib.contextmanager
def _serving(storage: str, cwd: Path) -> Iterator[int]:
    """`tune dashboard` running on a free port (its default host, 127.0.0.1); yields the port."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner.cli", "dashboard", "--storage", storage, "--port", str(port)],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_dashboard_lists_the_study(storage, tmp_path):
    with _serving(storage, tmp_path) as port:
        body = _get(f"http://127.0.0.1:{port}/api/studies", time.monotonic() + 60)
        names = [s["study_name"] for s in json.loads(body)["study_summaries"]]
        assert names == ["guide-user"]
        page = _get(f"http://127.0.0.1:{port}/dashboard/", time.monotonic() + 10)
        assert b"<html" in page.lower()


def test_dashboard_on_a_busy_port(storage, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_tune("dashboard", "--storage", storage, "--port", str(port), cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "pick another --port" in result.stderr


def test_dashboard_without_storage(tmp_path: Path):
    result = run_tune("dashboard", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "no study storage" in result.stderr
    assert not (tmp_path / "studies").exists()


def _visible_text(dom: str) -> str:
    """The text a reader sees: markup, styles and scripts dropped, one space between text nodes."""
    body = re.sub(r"<(style|script)\b.*?</\1>", " ", dom, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


@needs_chromium
def test_dashboard_shows_the_study_and_its_trials_in_a_browser(storage, tmp_path):
    """The React app, rendered by real headless Chromium, shows the study `tune start` made: its
    two objectives by name, its trials and their values."""
    profile = tmp_path / "chromium-profile"
    study = optuna.load_study(study_name="guide-user", storage=storage)
    with _serving(storage, tmp_path) as port:
        summaries = json.loads(_get(f"http://127.0.0.1:{port}/api/studies", time.monotonic() + 60))["study_summaries"]
        assert [s["study_name"] for s in summaries] == ["guide-user"]
        base = f"http://127.0.0.1:{port}/dashboard"
        study_url = f"{base}/studies/{summaries[0]['study_id']}"

        home = _visible_text(dump_dom(f"{base}/", profile, budget_ms=10000))
        assert "guide-user" in home and "MAXIMIZE" in home and "MINIMIZE" in home  # requests/min up, KLD down

        page = _visible_text(dump_dom(study_url, profile, budget_ms=10000))
        assert f"guide-user (id={summaries[0]['study_id']})" in page
        assert "requests_per_min" in page and "kld_mean" in page  # the metric names tune sets
        searched = next(t for t in study.trials if t.params)
        assert all(name in page for name in searched.params)

        trials = _visible_text(dump_dom(f"{study_url}/trials", profile, budget_ms=10000))
        assert f"{len(study.trials)} Trials" in trials
        assert all(f"Trial {t.number} Complete" in trials for t in study.trials)

        shot = screenshot(study_url, tmp_path / "dashboard-study.png", profile, size="1400,1000", budget_ms=10000)
        assert shot.size == (1400, 1000)
        assert_not_blank(shot)
