"""Many workers on one study in a real PostgreSQL server, as on several identical machines.

The session starts a private PostgreSQL cluster (Debian's postgresql package, installed by
`make test` through scripts/system_deps.sh) in a temporary directory, listening on loopback only,
and deletes it afterwards; the system's own cluster is never touched. Without the package the
tests here are skipped, with a warning saying why.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import optuna
import pytest

from tests.conftest import SMALL_ARGS, run_tune
from tuner.study import BASELINES, counted_trials

WORKLOAD = [*SMALL_ARGS, "--no-quality", "--confirm-rounds", "0"]  # trial bookkeeping is what is tested
ADMIN = "postgres"


@dataclass(frozen=True)
class Server:
    """A running private cluster: where it listens and its administrator's password."""

    port: int
    admin_password: str


@dataclass(frozen=True)
class Database:
    """A database owned by a login role that has a password, as a user would set one up."""

    port: int
    user: str
    password: str  # contains '@' and '/': the URL must percent-encode them
    name: str

    def url(self, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{self.name}"

    def secrets(self) -> list[str]:
        """Every form of the password that must never appear in output."""
        return [self.password, quote(self.password, safe="")]


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _as_cluster_owner(base: Path) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as the package's postgres user."""
    if os.geteuid() != 0:
        return []
    try:
        owner = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("PostgreSQL is installed but there is no 'postgres' system user to run a cluster as")
    os.chown(base, owner.pw_uid, owner.pw_gid)
    return ["runuser", "-u", "postgres", "--"]


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stdout}{result.stderr}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Server]:
    """A private PostgreSQL cluster on 127.0.0.1 with password (scram) authentication."""
    bindir = _bindir()
    if bindir is None:
        reason = (
            "PostgreSQL is not installed (Debian package postgresql): the many-workers tests did NOT run; "
            "`make test` installs it (scripts/system_deps.sh)"
        )
        warnings.warn(reason, stacklevel=1)
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="tuner-pg-"))  # under /tmp: the postgres user can reach it
    prefix = _as_cluster_owner(base)
    data, password = base / "data", secrets.token_hex(12)
    pwfile = base / "admin.pw"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o644)
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", ADMIN, f"--pwfile={pwfile}", "--auth=scram-sha-256", "--no-sync"]
    _run([*prefix, *initdb, "--encoding=UTF8"], cwd=base)
    pwfile.unlink()
    port = _start(prefix, bindir, data, base)
    try:
        yield Server(port=port, admin_password=password)
    finally:
        stop = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
        subprocess.run([*prefix, *stop], cwd=base, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


def _start(prefix: list[str], bindir: Path, data: Path, base: Path) -> int:
    """Start the cluster on a free loopback port (a port taken in between: try another)."""
    for attempt in range(3):
        port = _free_port()
        # fsync off: a throwaway cluster on a shared test machine, where durability buys nothing
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c synchronous_commit=off"
        try:
            pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60"]
            _run([*prefix, *pg_ctl, "-o", options, "start"], cwd=base)
            return port
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _admin(server: Server, statement: Any) -> None:
    import psycopg

    login = dict(host="127.0.0.1", port=server.port, user=ADMIN, password=server.admin_password, dbname="postgres")
    with psycopg.connect(**login, autocommit=True) as conn:  # CREATE DATABASE cannot run in a transaction
        conn.execute(statement)


@dataclass(frozen=True)
class Started:
    """A study made by `tune start --trials 1`: the first baseline measured, the second still queued."""

    db: Database
    study: str
    result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def started(postgres: Server, tmp_path_factory) -> Started:
    """One `tune start` for the module, in a database owned by a login role with a password, as a
    user would set one up; each test works on its own copy (see ``study_db``)."""
    from psycopg import sql

    db = Database(port=postgres.port, user="tuner", password=f"pw@{secrets.token_hex(8)}/x", name="started")
    _admin(postgres, sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(db.user), sql.Literal(db.password)))
    _admin(postgres, sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db.name), sql.Identifier(db.user)))
    result = run_tune("start", "--trials", "1", "--study", "shared", "--storage", db.url(), *WORKLOAD, cwd=tmp_path_factory.mktemp("pg"))
    assert result.returncode == 0, result.stderr
    return Started(db=db, study="shared", result=result)


@pytest.fixture
def study_db(postgres: Server, started: Started, request) -> Database:
    """A private copy of the started study's database (PostgreSQL copies a template database)."""
    from psycopg import sql

    db = replace(started.db, name=re.sub(r"\W", "_", request.node.name)[:60].lower())
    _admin(postgres, sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(*map(sql.Identifier, (db.name, started.db.name, db.user))))
    return db


def _spawn(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tuner.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # its own process group: the CLI and its worker stop together
    )


def _assert_hidden(passwords: list[str], *texts: str) -> None:
    for text in texts:
        for secret in passwords:
            assert secret not in text, f"the storage password was printed: {text}"


def _reported_trials(stdout: str) -> set[int]:
    """Trial numbers a worker's progress lines report as finished by it."""
    return {int(n) for n in re.findall(r"^\[\s*\d+/\d+\] trial #(\d+)", stdout, flags=re.MULTILINE)}


def test_two_workers_at_once_reach_the_target_without_duplicated_or_lost_trials(started, study_db, tmp_path):
    url = study_db.url()
    # The second baseline still waits in the queue: the workers race for it, for the search trials
    # and for the last slot.
    resume = ["resume", started.study, "--trials", "6", "--storage", url, "--confirm-rounds", "0"]
    workers = [_spawn(*resume, cwd=tmp_path) for _ in range(2)]
    try:
        outputs = [worker.communicate(timeout=240) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:  # a hung worker must not outlive the test (and the server)
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, (out, err)
    _assert_hidden(study_db.secrets(), *(text for pair in outputs for text in pair))

    study = optuna.load_study(study_name=started.study, storage=url)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(len(trials))), "trial numbers repeat or skip"
    counted = counted_trials(study)
    assert len(counted) == 6, [(t.number, t.state.name) for t in trials]
    # A worker that lost the race for the last slot stops before measuring: recorded, not counted.
    others = [t for t in trials if t.number not in {c.number for c in counted}]
    assert all(t.state == optuna.trial.TrialState.PRUNED and t.user_attrs.get("surplus") and not t.params for t in others), others
    labels = [t.user_attrs["baseline"] for t in trials if "baseline" in t.user_attrs]
    assert sorted(labels) == sorted(BASELINES), "a baseline ran twice or never"
    searched = [tuple(sorted(t.params.items())) for t in counted if "baseline" not in t.user_attrs]
    assert len(set(searched)) == len(searched) == 6 - len(BASELINES), "a search trial was measured twice"
    # Each trial after `start`'s was run by exactly one worker, and both workers ran trials.
    mine = [_reported_trials(out) for out, _ in outputs]
    assert mine[0] and mine[1], "one worker ran nothing: the two did not share the study"
    assert not mine[0] & mine[1]
    assert mine[0] | mine[1] == {t.number for t in trials} - {0}


def test_the_storage_password_is_never_printed(started, study_db, tmp_path):
    db = started.db
    assert f"{db.user}:***@127.0.0.1:{db.port}/{db.name}" in started.result.stdout  # the URL is shown, redacted
    resumed = run_tune("resume", started.study, "--storage", study_db.url(), "--confirm-rounds", "0", cwd=tmp_path)  # at target
    listed = run_tune("list", "--storage", study_db.url(driver="postgresql"), cwd=tmp_path)
    wrong = replace(study_db, password=study_db.password + "-wrong")
    refused = run_tune("list", "--storage", wrong.url(), cwd=tmp_path)
    assert resumed.returncode == 0 and listed.returncode == 0, (resumed.stderr, listed.stderr)
    assert started.study in listed.stdout
    assert refused.returncode == 2 and "password authentication failed" in refused.stderr, refused.stderr
    assert f"{db.user}:***@127.0.0.1:{db.port}" in refused.stderr  # which server refused, without the password
    for result in (started.result, resumed, listed, refused):
        _assert_hidden([*db.secrets(), *wrong.secrets()], result.stdout, result.stderr)


def test_a_worker_on_another_machine_is_refused(started, study_db, tmp_path):
    study = optuna.load_study(study_name=started.study, storage=study_db.url())
    # One machine cannot be two: record the study as started on another one, as that machine would.
    study.set_user_attr("machine", dict(study.user_attrs["machine"], fingerprint="0123456789abcdef", cpu_model="Other CPU"))
    before = [(t.number, t.state) for t in study.get_trials()]

    url = study_db.url(driver="postgresql")  # the plain form users write
    refused = run_tune("resume", started.study, "--trials", "4", "--storage", url, cwd=tmp_path)
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), refused.stderr
    assert "another machine" in lines[0] and "cpu_model" in lines[0] and "--allow-other-hardware" in lines[0]
    assert [(t.number, t.state) for t in study.get_trials()] == before, "the refused worker touched the trials"
