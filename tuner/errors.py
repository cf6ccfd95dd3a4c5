"""One exception hierarchy for everything a user can get wrong or the engine can refuse.

Every error carries two parts: *what* is wrong and *how to fix it*. The CLI turns any
:class:`TunerError` into a single line ``error: <what> — <fix>`` and exit code 2; library code
never prints or exits.
"""

from __future__ import annotations

__all__ = [
    "TunerError",
    "ConfigError",
    "ModelError",
    "SpaceError",
    "StorageError",
    "StudyError",
    "PresetError",
    "EngineError",
    "OutputError",
    "WorkerFailed",
]


class TunerError(Exception):
    """Base class: a problem the user can act on."""

    def __init__(self, what: str, fix: str = "") -> None:
        super().__init__(what)
        self.what = what
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.what} — {self.fix}" if self.fix else self.what


class ConfigError(TunerError):
    """An engine/sampling setting is unknown, mistyped or impossible."""


class ModelError(TunerError):
    """The model file is missing, not a GGUF file, or cannot be loaded."""


class SpaceError(TunerError):
    """A search-space YAML file is invalid."""


class StorageError(TunerError):
    """The study storage URL is malformed, unsupported or not writable."""


class StudyError(TunerError):
    """A study does not exist, already exists, or cannot give what was asked."""


class PresetError(TunerError):
    """A preset YAML file is invalid."""


class EngineError(TunerError):
    """llama.cpp refused the configuration (e.g. the context could not be created)."""


class OutputError(TunerError):
    """An export or a report cannot be written: an unknown format, or an unwritable path."""


class WorkerFailed(TunerError):
    """The worker process died or timed out while measuring; ``reason`` says how.

    ``log_tail`` holds the last lines llama.cpp logged before the worker died: an abort's own
    message is usually there.
    """

    def __init__(self, reason: str, log_tail: list[str] | None = None) -> None:
        tail = [line for line in (log_tail or []) if line.strip()]
        fix = f"llama.cpp's last log line: {tail[-1].strip()}" if tail else "try smaller settings, or a longer --trial-timeout"
        super().__init__(reason, fix)
        self.reason = reason
        self.log_tail = list(log_tail or [])
