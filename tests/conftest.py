"""Shared fixtures: the real embedded model, a real engine, a small real workload."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuner.engine import Engine
from tuner.measure import Workload
from tuner.models import default_model_path

# Small enough to keep the suite quick on 2 cores, large enough to exercise batching.
SMALL = Workload(prompt_tokens=32, gen_tokens=8, repeats=3)
SMALL_ARGS = ["--prompt-tokens", "32", "--gen-tokens", "8", "--repeats", "3"]


@pytest.fixture(scope="session")
def model_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
def engine(model_path: Path):
    with Engine(model_path) as eng:
        yield eng


@pytest.fixture
def small() -> Workload:
    return SMALL


def run_tune(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the real `tune` CLI in a subprocess (exit codes and stderr exactly as a user sees them)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
