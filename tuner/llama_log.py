"""llama.cpp's log, captured: kept in memory (and in a file in a worker process) so that a failure
can quote what llama.cpp said, and echoed to stderr only when asked for.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

__all__ = ["LLAMA_LOG", "quiet_llama_logs"]

# llama.cpp's log lines, newest last: kept so a failure can say what llama.cpp said.
LLAMA_LOG: deque[str] = deque(maxlen=400)
_log_hook: dict[str, Any] = {"callback": None, "verbose": False}


def quiet_llama_logs(verbose: bool) -> None:
    """Route llama.cpp's log into :data:`LLAMA_LOG`, echoing it to stderr only when verbose.

    llama-cpp-python's own log callback maps llama.cpp's current level numbers to the wrong
    Python levels, so warnings leak to stderr even with verbose=False; this replaces it.
    """
    import ctypes
    import sys

    import llama_cpp

    _log_hook["verbose"] = verbose
    if _log_hook["callback"] is not None:
        return

    # A worker process also appends the log to a file, so its parent can quote the last lines
    # after the worker died (abort, OOM kill).
    sink_path = os.environ.get("TUNER_LLAMA_LOG")
    sink = open(sink_path, "a", encoding="utf-8", buffering=1) if sink_path else None  # noqa: SIM115

    @llama_cpp.llama_log_callback
    def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        line = text.decode("utf-8", errors="replace")
        LLAMA_LOG.append(line.rstrip("\n"))
        if sink is not None:
            sink.write(line)
        if _log_hook["verbose"]:
            print(line, end="", file=sys.stderr, flush=True)

    _log_hook["callback"] = capture  # keep a reference: llama.cpp calls it from C
    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))
