"""llama.cpp's log, captured: kept in memory (and in a file in a worker process) so that a failure
can quote what llama.cpp said, and echoed to stderr only when asked for; and read for where
llama.cpp put a model and a context (:func:`placement_read_back`), which its API does not say.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["LLAMA_LOG", "placement_read_back", "quiet_llama_logs", "recording"]

# llama.cpp's log lines, newest last: kept so a failure can say what llama.cpp said.
LLAMA_LOG: deque[str] = deque(maxlen=400)
_log_hook: dict[str, Any] = {"callback": None, "verbose": False}
_recorders: list[list[str]] = []  # open recording() blocks

# What llama.cpp logs on loading a model and creating a context (src/llama-model.cpp,
# llama-kv-cache.cpp, llama-context.cpp): "load_tensors: offloaded 29/29 layers to GPU" (builds
# with GPU offload only), "load_tensors:        CUDA0 model buffer size =  4403.49 MiB",
# "llama_kv_cache:        CUDA0 KV buffer size =   512.00 MiB",
# "sched_reserve:        CUDA0 compute buffer size =   296.00 MiB".
_OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
_BUFFER = re.compile(r"(\S+) (model|KV|compute) buffer size = +([\d.]+) MiB")


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
        for lines in _recorders:
            lines.append(line)
        if sink is not None:
            sink.write(line)
        if _log_hook["verbose"]:
            print(line, end="", file=sys.stderr, flush=True)

    _log_hook["callback"] = capture  # keep a reference: llama.cpp calls it from C
    llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))


@contextmanager
def recording() -> Iterator[list[str]]:
    """Every llama.cpp log line emitted inside the block, in a list (LLAMA_LOG keeps only the
    newest 400, and a model load alone logs more)."""
    lines: list[str] = []
    _recorders.append(lines)
    try:
        yield lines
    finally:
        _recorders.remove(lines)


def placement_read_back(lines: list[str]) -> dict[str, Any]:
    """Where llama.cpp says it put a model or a context: ``offloaded_layers`` of ``layers`` (None
    when the build says nothing: no GPU offload), and MiB per device of the ``model``, ``kv`` and
    ``compute`` buffers ({"CUDA0": 4403.5, "CPU_Mapped": 280.0})."""
    facts: dict[str, Any] = {}
    for line in lines:
        if match := _OFFLOADED.search(line):
            facts["offloaded_layers"], facts["layers"] = int(match[1]), int(match[2])
        elif match := _BUFFER.search(line):
            buffers = facts.setdefault(f"{match[2].lower()}_mib", {})
            buffers[match[1]] = round(buffers.get(match[1], 0.0) + float(match[3]), 2)
    return facts
