"""A llama-server binary: found on PATH or beside this Python, checked to be llama-server, its
version and build recorded, its flags read from its own ``--help`` (the spellings change between
versions: :mod:`tuner.server_flags` owns them, this module asks the binary which it has)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import ConfigError
from tuner.server_flags import help_flags, missing_flags

__all__ = ["DEFAULT_SERVER_BIN", "ServerBinary"]

DEFAULT_SERVER_BIN = "llama-server"


@dataclass(frozen=True)
class ServerBinary:
    """A llama-server binary: where it is, what it says its version is, the flags it has."""

    path: str
    version: str  # "0.5.0-dev (build 1, commit 0c1e570)"
    build: str  # "built with GNU 12.2.0 for Linux x86_64"
    flags: frozenset[str]

    @classmethod
    def find(cls, given: str | None = None) -> ServerBinary:
        """The binary ``given`` (a path or a name on PATH; default ``llama-server``, looked for on
        PATH, then beside this Python), checked to be llama-server.

        Raises:
            ConfigError: not found, not runnable, or not llama-server.
        """
        name = given or DEFAULT_SERVER_BIN
        beside = Path(sys.executable).parent / name
        path = shutil.which(name) or (str(beside) if given is None and os.access(beside, os.X_OK) else None)
        if path is None:
            raise ConfigError(
                f"llama-server binary '{name}' not found (--server-bin)",
                "run `make install` (it builds one into .venv/bin) or pass --server-bin PATH",
            )
        help_text = _run(path, "--help")
        flags = help_flags(help_text)
        if not {"--host", "--port", "--ctx-size"} <= flags:
            raise ConfigError(f"{path} is not llama-server: its --help lists no --host, --port and --ctx-size", "pass --server-bin the path of llama.cpp's llama-server")
        # "version: 0.5.0-dev (build 1, commit 0c1e570)" / "built with GNU 12.2.0 for Linux x86_64"
        said = [line.strip() for line in _run(path, "--version").splitlines() if line.strip()]
        version = next((line.removeprefix("version:").strip() for line in said if line.startswith("version:")), "unknown")
        build = next((line for line in said if line.startswith("built with")), "")
        return cls(path=path, version=version, build=build, flags=frozenset(flags))

    def check(self, args: list[str]) -> None:
        """Refuse ``args`` with a flag this binary does not list.

        Raises:
            ConfigError: names the flags and the binary.
        """
        missing = missing_flags(args, set(self.flags))
        if missing:
            raise ConfigError(
                f"{self.path} ({self.version}) has no {', '.join(missing)} (not in its --help)",
                "use a newer llama-server, or a search space without that setting",
            )


def _run(path: str, option: str) -> str:
    try:
        done = subprocess.run([path, option], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"cannot run {path} {option}: {exc}", "pass --server-bin the path of llama.cpp's llama-server") from None
    return done.stdout + done.stderr
