"""Where studies live: storage URLs and their drivers, SQLite checks, and opening, loading and
listing studies.

Any SQLAlchemy URL Optuna's RDB storage supports works; SQLite is the default. Every storage is
opened with heartbeats, which is what lets a crashed worker's trial be failed and run again.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tuner.errors import StorageError, StudyError

__all__ = [
    "DEFAULT_STORAGE",
    "HEARTBEAT_INTERVAL_S",
    "check_new_study",
    "list_studies",
    "load_study",
    "new_sampler",
    "now",
    "open_storage",
    "quiet_experimental",
    "redact",
]

DEFAULT_STORAGE = "sqlite:///studies/tuner.db"
HEARTBEAT_INTERVAL_S = 5
GRACE_PERIOD_S = 20
_PIP_NAMES = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient"}
SUPPORTED_DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")


def redact(url: str) -> str:
    """A storage URL with its password hidden, for anything a user sees or a log keeps."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown without its credentials part
        return url.split("@")[-1] if "@" in url else url


def open_storage(url: str | None = None, *, must_exist: bool = False) -> Any:
    """An Optuna RDBStorage with heartbeats, for any SQLAlchemy URL Optuna supports.

    Args:
        url: SQLAlchemy URL; default ``sqlite:///studies/tuner.db`` relative to the working directory.
        must_exist: for read-only commands: a SQLite file that does not exist is an error instead
            of being created.

    Raises:
        StorageError: malformed or unsupported URL, missing driver, unwritable location.
    """
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    url = url or DEFAULT_STORAGE
    shown = redact(url)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(
            f"storage URL '{shown}' is not a valid SQLAlchemy URL",
            "use e.g. sqlite:///studies/tuner.db or postgresql://user@host/db",
        ) from None
    dialect = parsed.get_backend_name()
    if dialect not in SUPPORTED_DIALECTS:
        raise StorageError(
            f"storage URL '{shown}' uses '{dialect}', which Optuna's RDB storage does not support",
            "use sqlite:///FILE, postgresql://... or mysql://...",
        )
    if _wants_missing_psycopg2(parsed):
        # SQLAlchemy 2.0 reads a plain postgresql:// as psycopg2, but the [postgres] extra installs
        # psycopg 3: use the driver that is there rather than fail on one the user never chose.
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    engine_kwargs: dict[str, Any] = {}
    if dialect == "sqlite":
        _check_sqlite_path(parsed.database, shown, must_exist)
        # Wait for a lock instead of failing at once when two tune processes share the file.
        engine_kwargs["connect_args"] = {"timeout": 60}
    import optuna

    try:
        with quiet_experimental():  # heartbeats are what makes crash recovery work
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=GRACE_PERIOD_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
            )
    except ImportError as exc:
        cause = exc.__cause__ or exc.__context__  # optuna wraps the driver's own ImportError
        missing = getattr(cause, "name", None) or exc.name or "for its driver"
        raise StorageError(
            f"no database driver for '{shown}' (Python module {missing} is missing)",
            f"install it into the tool's environment: .venv/bin/pip install {_PIP_NAMES.get(missing, missing)}",
        ) from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise StorageError(
            f"SQLAlchemy has no driver '{parsed.drivername}' for '{shown}'",
            f"use a known driver, e.g. {dialect}:// or sqlite:///studies/tuner.db",
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StorageError(f"cannot open storage '{shown}': {reason}", "check the URL, the server and its credentials") from None


def _wants_missing_psycopg2(parsed: Any) -> bool:
    """A postgresql:// URL whose default driver here is psycopg2, absent, while psycopg 3 is installed."""
    import importlib.util

    if parsed.drivername != "postgresql" or parsed.get_dialect().driver != "psycopg2":
        return False
    return importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None


def _check_sqlite_path(database: str | None, shown: str, must_exist: bool) -> None:
    if not database or database == ":memory:":
        raise StorageError(f"storage URL '{shown}' has no database file", "use sqlite:///studies/tuner.db (a file keeps the study)")
    path = Path(database)
    if path.is_dir():
        raise StorageError(f"storage path {path} is a directory", "point the URL at a file, e.g. sqlite:///studies/tuner.db")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise StorageError(f"storage file {path} is not readable and writable", "fix its permissions or use another --storage")
        with path.open("rb") as handle:
            if handle.read(16) not in (b"SQLite format 3\x00", b""):
                raise StorageError(f"storage file {path} is not a SQLite database", "point --storage at a study database")
        return
    if must_exist:
        raise StudyError(f"no study storage at {path}", "start a study first with `tune start`, or pass --storage URL")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the directory {path.parent}: {exc.strerror}", "run from a writable directory or pass --storage") from None
    if not os.access(path.parent, os.W_OK):
        raise StorageError(f"the directory {path.parent} is not writable", "run from a writable directory or pass --storage")


@contextlib.contextmanager
def quiet_experimental() -> Iterator[None]:
    """Optuna flags heartbeats, grouped TPE and metric names as experimental; users need not see that."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def load_study(name: str, storage: Any) -> Any:
    """Load an existing study, or raise a StudyError that lists the ones that exist."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=new_sampler(None))
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        known = f"studies here: {', '.join(names)}" if names else "start one with `tune start`"
        raise StudyError(f"study '{name}' does not exist in {redact(storage.url)}", known) from None


def list_studies(storage: Any) -> list[Any]:
    """Summaries of every study in ``storage``, with their best trials."""
    import optuna

    return optuna.get_all_study_summaries(storage, include_best_trial=True)


def check_new_study(name: str, url: str | None = None) -> None:
    """Refuse a study name that the storage at ``url`` already holds, before anything is measured
    or printed. Creates nothing: a SQLite file that does not exist yet holds no study.

    Raises:
        StorageError: a malformed or unusable URL.
        StudyError: ``name`` exists there.
    """
    import optuna

    try:
        storage = open_storage(url, must_exist=True)
    except StudyError:
        return  # no storage file yet
    names = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    if name in names:
        raise StudyError(
            f"study '{name}' already exists in {redact(storage.url)}",
            f"continue it with `tune resume {name}`, or choose another name with --study",
        )


def new_sampler(seed: int | None) -> Any:
    """The sampler every study uses: multivariate TPE over the searched knobs."""
    import optuna

    with quiet_experimental():
        # group=True: baselines carry no searched params, and kv_type is conditional; grouping keeps
        # the multivariate model over the knobs that do appear together.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=10)


def now() -> str:
    """The time stamps stored on studies and presets: UTC, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
