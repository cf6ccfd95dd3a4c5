"""Trials in a worker process, so that llama.cpp aborting or running out of memory cannot take the
study down.

The parent (which runs Optuna) sends one measurement request at a time over a pipe; the worker
keeps the model loaded across requests with the same load-time params, so isolation does not cost
a model reload per trial. A worker that dies (signal, abort, OOM) or exceeds the per-trial timeout
is reported as :class:`WorkerFailed` with the reason and the last lines of llama.cpp's log; the
next request starts a fresh worker.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import tempfile
import traceback
from pathlib import Path
from typing import Any

from tuner import errors
from tuner.config import EngineConfig
from tuner.errors import ConfigError, TunerError, WorkerFailed
from tuner.measure import Measurement, RaceBound
from tuner.quality import Quality
from tuner.workload import Workload

__all__ = ["Worker", "DEFAULT_TRIAL_TIMEOUT_S", "check_timeout"]

DEFAULT_TRIAL_TIMEOUT_S = 600.0
LOG_TAIL_LINES = 8
TRACEBACK_LINES = 6  # of an unexpected exception in the worker, passed to the trial's failure
_START_TIMEOUT_S = 120.0


def check_timeout(timeout_s: float) -> None:
    """Refuse a per-trial timeout that would kill every trial before it starts."""
    if not timeout_s > 0:
        raise ConfigError(f"trial timeout timeout_s={timeout_s} (--trial-timeout) must be positive", "use a number of seconds, e.g. 600")


class Worker:
    """A spawned process that measures configurations on one model.

    Example:
        >>> with Worker(model_path) as worker:
        ...     result = worker.measure(EngineConfig(n_threads=2), Workload())
    """

    def __init__(self, model_path: str | Path, *, timeout_s: float = DEFAULT_TRIAL_TIMEOUT_S) -> None:
        check_timeout(timeout_s)
        self.model_path = str(model_path)
        self.timeout_s = timeout_s
        self._process: Any = None
        self._conn: Any = None
        self._log_path = Path(tempfile.mkstemp(prefix="tuner-llama-", suffix=".log")[1])
        self.starts = 0
        self._reference_request: tuple[Any, ...] | None = None

    @property
    def restarts(self) -> int:
        """Fresh workers started after the first (each one replaced a dead or timed-out worker)."""
        return max(self.starts - 1, 0)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def measure(self, config: EngineConfig, workload: Workload, *, race: RaceBound | None = None, use_cache: bool = True) -> Measurement:
        """Measure ``config`` in the worker (see :func:`tuner.measure.measure` for the options).

        Raises:
            ConfigError / EngineError: the configuration was refused (the worker lives on).
            WorkerFailed: the worker died or timed out (it is gone; the next call starts another).
        """
        options = {"race": race, "use_cache": use_cache}
        return Measurement.from_dict(self._request(("measure", config.to_dict(), workload.to_dict(), options), "the trial"))

    def quality(self, config: EngineConfig) -> Quality:
        """The quality proxy alone for ``config`` (after :meth:`reference`), computed in the worker."""
        return Quality.from_dict(self._request(("quality", config.to_dict()), "the quality proxy"))

    def reference(self, model_sha256: str, *, use_cache: bool = True) -> dict[str, float]:
        """Load (or compute once, then cache) the quality reference in the worker.

        Returns:
            The greedy reference's sampling scores: ``greedy_accuracy`` and ``greedy_nll``.
        """
        scores = self._request(("reference", model_sha256, use_cache), "computing the quality reference")
        self._reference_request = ("reference", model_sha256, use_cache)  # a replacement worker loads it again
        return scores

    def _request(self, message: tuple[Any, ...], what: str) -> Any:
        """Send one request and wait for its answer, within the timeout."""
        self._ensure_started()
        try:
            self._conn.send(message)
        except (BrokenPipeError, OSError):
            raise self._failed(f"the worker process was gone before {what} started") from None
        if not self._conn.poll(self.timeout_s):
            self._kill()
            raise WorkerFailed(f"{what} timed out after {self.timeout_s:.0f} s (worker killed)", self._log_tail())
        try:
            status, payload = self._conn.recv()
        except (EOFError, OSError):
            raise self._failed(f"the worker process died during {what}") from None
        if status == "crash":  # an unexpected exception in the worker: a fresh worker takes over
            kind, message, tail = payload
            self._kill()
            raise WorkerFailed(f"{what} raised {kind} in the worker: {message}", [*self._log_tail(), *tail])
        if status != "ok":
            raise _error(*payload)
        return payload

    def start(self) -> None:
        """Start the worker and load the model now (a model llama.cpp cannot load fails here)."""
        self._ensure_started()

    def close(self) -> None:
        """Stop the worker (politely, then by force)."""
        if self._process is None:
            return
        try:
            self._conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self._process.join(timeout=5)
        self._kill()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
        self._log_path.unlink(missing_ok=True)

    # -- internals -------------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        self._kill()
        self.starts += 1
        context = multiprocessing.get_context("spawn")  # no fork: llama.cpp threads and locks
        parent, child = context.Pipe()
        self._log_path.write_text("")
        self._process = context.Process(
            target=_worker_main, args=(child, self.model_path, str(self._log_path)), name="tuner-worker", daemon=True
        )
        self._process.start()
        child.close()
        self._conn = parent
        if not parent.poll(_START_TIMEOUT_S):
            self._kill()
            raise WorkerFailed(f"the worker did not start within {_START_TIMEOUT_S:.0f} s", self._log_tail())
        try:
            status, payload = parent.recv()
        except (EOFError, OSError):
            raise self._failed("the worker died while loading the model") from None
        if status != "ready":
            self._kill()
            raise _error(*payload)
        if self._reference_request is not None:  # a fresh worker after a crash: load the reference again
            self._request(self._reference_request, "reloading the quality reference")

    def _failed(self, what: str) -> WorkerFailed:
        self._process.join(timeout=5)
        code = self._process.exitcode
        if code is None:
            how = "still running"
        elif code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = f"exit code {code}"
        self._kill()
        return WorkerFailed(f"{what} ({how})", self._log_tail())

    def _kill(self) -> None:
        if self._process is not None and self._process.is_alive():
            self._process.kill()
        if self._process is not None:
            self._process.join(timeout=10)
        if self._conn is not None:
            self._conn.close()
        self._process = None
        self._conn = None

    def _log_tail(self) -> list[str]:
        try:
            lines = self._log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [line for line in lines if line.strip()][-LOG_TAIL_LINES:]


def _error(kind: str, what: str, fix: str) -> TunerError:
    """Rebuild, in the parent, the error the worker raised (same class, same message)."""
    cls = getattr(errors, kind, TunerError)
    plain = isinstance(cls, type) and issubclass(cls, TunerError) and cls is not WorkerFailed
    return cls(what, fix) if plain else TunerError(what, fix)


def _worker_main(conn: Any, model_path: str, log_path: str) -> None:
    """The worker's loop: load the model once, then measure until told to stop."""
    # Ctrl-C is the parent's to handle; the parent then stops this process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["TUNER_LLAMA_LOG"] = log_path
    from tuner.engine import Engine
    from tuner.measure import measure
    from tuner.quality import evaluate, reference_for

    engine = Engine(model_path)
    try:
        engine.load(engine.config)
    except TunerError as exc:
        conn.send(("error", (type(exc).__name__, exc.what, exc.fix)))
        return
    conn.send(("ready", os.getpid()))
    reference = None
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # the parent is gone
        try:
            if message[0] == "stop":
                return
            if message[0] == "reference":
                reference = reference_for(engine, message[1], use_cache=message[2])
                reply: tuple[str, Any] = ("ok", {"greedy_accuracy": reference.greedy_accuracy, "greedy_nll": reference.greedy_nll})
            elif message[0] == "quality":
                if reference is None:
                    raise ConfigError("the quality proxy needs its reference", "load it first (Worker.reference)")
                reply = ("ok", evaluate(engine, EngineConfig.from_dict(message[1]), reference).to_dict())
            else:
                _, config, workload, options = message
                result = measure(engine, EngineConfig.from_dict(config), Workload.from_dict(workload), reference, **options)
                reply = ("ok", result.to_dict())
        except TunerError as exc:
            reply = ("error", (type(exc).__name__, exc.what, exc.fix))
        except Exception as exc:  # noqa: BLE001 - a bug: say what it was, then let the parent replace this worker
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"
            tail = traceback.format_exc().strip().splitlines()[-TRACEBACK_LINES:]
            reply = ("crash", (type(exc).__name__, f"{exc} ({where})", tail))
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return  # the parent died mid-trial (killed): nobody is left to answer
