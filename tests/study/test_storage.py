"""Storage: URLs and their errors, SQLite checks, loading studies by name, redaction."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import SMALL
from tests.study.conftest import load
from tuner.errors import StorageError, StudyError
from tuner.models import model_sha256
from tuner.space import load_space
from tuner.study import InProcess, StudySpec, check_new_study, open_storage, redact, start_study


def test_start_refuses_an_existing_study(study_db, tmp_path, model_path, engine):
    db = tmp_path / "copy.db"
    shutil.copy(study_db, db)
    spec = StudySpec(model=model_path, model_sha256=model_sha256(model_path), space=load_space("cpu"), workload=SMALL, trials=3)
    with pytest.raises(StudyError, match="tune resume s3"):
        start_study(spec, name="s3", storage=open_storage(f"sqlite:///{db}"), runner=InProcess(engine), machine={})


def test_missing_study_names_the_existing_ones(study_db):
    with pytest.raises(StudyError, match="studies here: s3"):
        load(study_db, "nope")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a valid SQLAlchemy URL"),
        ("redis://localhost/0", "does not support"),
        ("sqlite://", "no database file"),
    ],
)
def test_bad_storage_urls(url, message):
    with pytest.raises(StorageError, match=message):
        open_storage(url)


def test_storage_that_is_not_sqlite(tmp_path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("hello, not a database")
    with pytest.raises(StorageError, match="not a SQLite database"):
        open_storage(f"sqlite:///{bogus}")
    assert bogus.read_text() == "hello, not a database"


def test_read_only_commands_do_not_create_storage(tmp_path):
    with pytest.raises(StudyError, match="no study storage"):
        open_storage(f"sqlite:///{tmp_path}/none.db", must_exist=True)
    assert not (tmp_path / "none.db").exists()


def test_passwords_are_redacted():
    assert "s3cret" not in redact("postgresql://bob:s3cret@db.example/tune")


def test_a_taken_name_is_refused_before_anything_runs(study_db, tmp_path):
    with pytest.raises(StudyError, match="study 's3' already exists"):
        check_new_study("s3", f"sqlite:///{study_db}")
    check_new_study("a-new-name", f"sqlite:///{study_db}")  # a free name passes
    check_new_study("s3", f"sqlite:///{tmp_path}/new.db")  # no storage yet: no study there...
    assert not (tmp_path / "new.db").exists()  # ...and checking creates none
