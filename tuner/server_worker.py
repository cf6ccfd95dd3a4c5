"""Trials on llama-server: the study's runner when ``tune start --engine llama-server``.

Speed is measured in the server (:class:`tuner.server.ServerEngine`, one process per
configuration, by :func:`tuner.measure.measure`: the same warm-up, repetitions, racing and
figures as in-process). The quality proxy needs every position's logits, which llama-server
does not return (``n_probs`` gives the top few probabilities of the sampled positions only), so
it runs in a llama-cpp-python worker (:class:`tuner.worker.Worker`) with the same settings, on
the same llama.cpp commit: ``make install`` builds the server from the llama.cpp vendored in the
llama-cpp-python sdist it installs. A crash isolation of its own is not needed: the server is a
process already, and one that dies fails its trial (:class:`~tuner.errors.WorkerFailed`).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tuner.config import EngineConfig
from tuner.measure import Measurement, RaceBound, measure
from tuner.quality import Quality
from tuner.server import ServerEngine
from tuner.server_binary import ServerBinary
from tuner.server_flags import lacking_settings, server_args
from tuner.worker import DEFAULT_TRIAL_TIMEOUT_S, Worker, check_timeout
from tuner.workload import Workload

__all__ = ["ENGINES", "ServerRunner", "engine_record"]

ENGINES = ("llama-cpp-python", "llama-server")


class ServerRunner:
    """Measures configurations in llama-server; the quality proxy in a llama-cpp-python worker.

    Example:
        >>> with ServerRunner(model_path, ServerBinary.find()) as runner:
        ...     result = runner.measure(EngineConfig(n_threads=2), Workload())
    """

    name = "llama-server"

    def __init__(self, model_path: str | Path, binary: ServerBinary, *, timeout_s: float = DEFAULT_TRIAL_TIMEOUT_S) -> None:
        check_timeout(timeout_s)
        self.binary = binary
        self.engine = ServerEngine(model_path, binary, timeout_s=timeout_s)
        self.worker = Worker(model_path, timeout_s=timeout_s)
        self._has_reference = False

    def start(self) -> None:
        """Check the binary has every flag a configuration is written with, but those of the
        settings it runs at its own default (:func:`tuner.server_flags.lacking_settings`): one
        without -np or a load flag could run no trial, and is refused now, by name. Then load the
        model in the quality worker (a model llama.cpp cannot load fails here).

        Raises:
            ConfigError: a flag the binary lacks.
        """
        every = server_args(EngineConfig(swa_full=True, offload_kqv=False, op_offload=False), lacking=lacking_settings(self.binary.flags))
        self.binary.check(every)
        self.worker.start()

    def defaults(self, n_ctx: int) -> EngineConfig:
        """llama-server's own defaults here, at the context the application requires."""
        return self.engine.own_defaults(n_ctx)

    def record(self) -> dict[str, Any]:
        """What a study records of its engine: the name, the binary and its version."""
        record = {"name": self.name, "path": self.binary.path, "version": self.binary.version, "build": self.binary.build}
        if self.engine.lacks:  # known once its defaults are read: the settings it runs at its own
            record["lacks"] = dict(self.engine.lacks)
        return record

    def reference(self, model_sha256: str, *, use_cache: bool = True) -> dict[str, float]:
        scores = self.worker.reference(model_sha256, use_cache=use_cache)
        self._has_reference = True
        return scores

    def measure(self, config: EngineConfig, workload: Workload, *, race: RaceBound | None = None, use_cache: bool = True) -> Measurement:
        """Measure ``config`` in llama-server, then (unless racing stopped it) its quality proxy
        in the worker; see :func:`tuner.measure.measure`."""
        result = measure(self.engine, config, workload, None, race=race)  # type: ignore[arg-type]
        if not (workload.quality and self._has_reference and not result.stopped):
            return result
        start = time.perf_counter()
        quality = self.worker.quality(config)
        seconds = {**result.seconds, "quality": result.seconds.get("quality", 0.0) + time.perf_counter() - start}
        return replace(result, quality=quality, seconds=seconds)

    def quality(self, config: EngineConfig) -> Quality:
        return self.worker.quality(config)

    def close(self) -> None:
        self.worker.close()

    def __enter__(self) -> ServerRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.worker.__exit__(*exc)


def engine_record(study: Any) -> dict[str, Any]:
    """The engine a study was measured on (studies before engines were recorded: llama-cpp-python)."""
    return dict(study.user_attrs.get("engine") or {"name": "llama-cpp-python"})
