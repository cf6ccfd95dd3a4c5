"""Fixtures shared by the study tests: one 3-trial study on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SMALL
from tuner.hardware import describe_machine
from tuner.models import model_sha256
from tuner.space import load_space
from tuner.study import Economies, InProcess, StudySpec, load_study, open_storage, start_study


@pytest.fixture(scope="session")
def study_db(tmp_path_factory, model_path, engine) -> Path:
    """A 3-trial study (2 baselines + 1 searched trial) in a real SQLite file."""
    db = tmp_path_factory.mktemp("study") / "tuner.db"
    spec = StudySpec(
        model=model_path,
        model_sha256=model_sha256(model_path),
        space=load_space("cpu"),
        workload=SMALL,
        trials=3,
        seed=7,
        economies=Economies(racing=False),  # every trial measured fully: the tests read whole measurements (racing: test_racing.py)
    )
    progress = []
    start_study(
        spec,
        name="s3",
        storage=open_storage(f"sqlite:///{db}"),
        runner=InProcess(engine),
        machine=describe_machine().to_dict(),
        on_progress=progress.append,
        confirm_rounds=0,  # confirmation: tests/study/test_confirm.py
    )
    assert [p.done for p in progress] == [1, 2, 3]
    assert progress[-1].eta_s == 0
    return db


def load(db: Path, name: str = "s3"):
    return load_study(name, open_storage(f"sqlite:///{db}", must_exist=True))
