"""llama-server as an engine: the binary, one server process per configuration, and a session
that runs a workload's requests over HTTP, timed by the server's own counters.

:class:`ServerEngine` and :class:`ServerSession` have the shape :func:`tuner.measure.measure`
drives (``session(config)``; ``tokenize``, ``enter_depth``, ``generate``, ``config``, ``placed``),
so one measurement owns both engines' warm-up, repetitions, racing and figures.

* **The binary** (:class:`ServerBinary`): found on PATH or beside this Python (``make install``
  builds one into ``.venv/bin``), checked to be llama-server (its ``--help`` lists ``--host`` and
  ``--port``), its version recorded, its flags read from ``--help``. A setting whose flag it lacks
  is not searched: every configuration runs it at the binary's own default, and one that asks
  for another value is refused by name, never silently run at the default.
* **A process per configuration** (:class:`ServerProcess`): on 127.0.0.1 and a free port, every
  setting written out (:func:`tuner.server_flags.server_args`), its slots too (``-np``: one,
  N, or the defaults' auto), ready when ``/health`` says so and its log says it
  listens on that port (another program may answer there). A server that exits at
  start is an :class:`~tuner.errors.EngineError` quoting its log (a refused flag, a context that
  does not fit); a port taken between choosing and binding is retried on another.
* **Requests** (:meth:`ServerSession.generate`): the prompt as token ids to ``/completion``,
  streamed; the prompt and decode figures are the server's ``timings`` (prompt_n, prompt_ms,
  predicted_n, predicted_ms), TTFT and the request time the client's wall clock. A depth is the
  slot's prompt cache: before each timed request the slot is brought back to exactly the depth's
  tokens (untimed), so the request evaluates its prompt after a cached depth, as in-process.
  A server that dies or hangs mid-request is a :class:`~tuner.errors.WorkerFailed` with its log.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from tuner.config import AUTO_SLOT_COUNT, AUTO_SLOTS, KV_TYPES, EngineConfig
from tuner.engine import Generation
from tuner.errors import ConfigError, EngineError, WorkerFailed
from tuner.llama_log import placement_read_back
from tuner.server_binary import ServerBinary
from tuner.server_flags import check_lacking, lacking_settings, server_args

__all__ = ["ServerEngine", "ServerProcess", "ServerSession", "free_port"]

START_TIMEOUT_S = 120.0  # loading a model and warming up; a server not ready by then is hung
BIND_RETRIES = 3  # a free port can be taken by another process before the server binds it
LOG_TAIL = 20
# The log level at which llama.cpp logs the context it created (n_batch, n_ubatch, flash
# attention): read back like the in-process engine reads its context. About 20 log lines a
# request instead of 7: no measurable cost. Not a setting: an export leaves it out.
READ_BACK_ARGS = ("-lv", "4")
# What llama.cpp logs about the context it created (src/llama-context.cpp), read back like the
# in-process engine reads its context: "llama_context: n_ctx         = 4096".
# With slots, n_ctx is the shared total and n_ctx_seq what each slot (each request) gets.
_CONTEXT_LINE = re.compile(r"llama_context: +(n_ctx_seq|n_seq_max|n_batch|n_ubatch|flash_attn) += (\S+)")
_THREADS_LINE = re.compile(r"n_threads = (\d+) \(n_threads_batch = (\d+)\)")
_BIND_FAILED = ("couldn't bind", "address already in use")
# EngineConfig's sampling keys -> their names in /props' default_generation_settings.params.
_SAMPLING_PROPS = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p", "repeat_penalty": "repeat_penalty"}


class ServerProcess:
    """One llama-server process with one configuration's flags, on 127.0.0.1."""

    def __init__(self, binary: ServerBinary, model_path: str | Path, args: list[str], *, timeout_s: float = START_TIMEOUT_S) -> None:
        binary.check(args)
        self.binary = binary
        self.model_path = str(model_path)
        self.args = list(args)
        self.timeout_s = timeout_s
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        fd, name = tempfile.mkstemp(prefix="tuner-llama-server-", suffix=".log")
        os.close(fd)
        self.log_path = Path(name)

    @property
    def command(self) -> list[str]:
        """The command line as started: host, port and the read-back log level included."""
        return [self.binary.path, "-m", self.model_path, "--host", "127.0.0.1", "--port", str(self.port), *self.args, *READ_BACK_ARGS]

    def start(self) -> None:
        """Start the server and wait until ``/health`` says it is ready.

        Raises:
            EngineError: the server exited at start (its last log line says why).
            WorkerFailed: it was not ready within ``timeout_s`` (killed).
        """
        for attempt in range(BIND_RETRIES):
            self.port = free_port()
            with open(self.log_path, "wb") as log:
                self._process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            code = self._wait_ready()
            if code is None:
                return
            tail = self.log_tail()
            if attempt + 1 < BIND_RETRIES and any(words in line.lower() for line in tail for words in _BIND_FAILED):
                continue
            raise EngineError(f"llama-server exited at start (exit code {code})", f"its last log line: {_last(tail)}")

    def _wait_ready(self) -> int | None:
        """None once ready; the exit code if the process ended first."""
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            code = self._process.poll() if self._process else -1
            if code is not None:
                return code
            if _health(self.port) and self._listening():
                return None
            time.sleep(0.05)
        tail = self.log_tail()
        self.stop()
        raise WorkerFailed(f"llama-server was not ready after {self.timeout_s:.0f} s (killed)", tail)

    def _listening(self) -> bool:
        """Our process says it listens on our port. /health alone can be another program's: one
        that took the port before our server bound it (ours then exits, and is retried)."""
        return any(f"listening on http://127.0.0.1:{self.port}" in line for line in self.log_lines())

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def exit_code(self) -> int | None:
        return self._process.poll() if self._process is not None else None

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []

    def log_tail(self) -> list[str]:
        return [line for line in self.log_lines() if line.strip()][-LOG_TAIL:]

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 5 s)."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def close(self) -> None:
        self.stop()
        self.log_path.unlink(missing_ok=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _health(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health")
        ok = conn.getresponse().status == 200
        conn.close()
    except OSError:
        return False
    return ok


def _last(tail: list[str]) -> str:
    return tail[-1].strip() if tail else "(nothing logged)"


class ServerSession:
    """Requests to one running server. Use through :meth:`ServerEngine.session`."""

    def __init__(self, process: ServerProcess, config: EngineConfig, timeout_s: float) -> None:
        self.process = process
        self.timeout_s = timeout_s
        lines = process.log_lines()
        self.config = _read_back(config.effective(), lines)
        self.placed: dict[str, Any] = placement_read_back(lines)
        self.pid = process.pid  # the process whose memory a measurement reports
        self._depth: list[int] = []  # the tokens the slot's cache holds before each request

    def props(self) -> dict[str, Any]:
        """The server's ``/props``: its context size, sampling defaults, build info."""
        return self._get("/props")

    def tokenize(self, text: str) -> list[int]:
        """Token ids as the server's vocabulary makes them, BOS first (like the in-process engine)."""
        reply = self._post("/tokenize", {"content": text, "add_special": True})
        return [int(token) for token in reply["tokens"]]

    def enter_depth(self, tokens: list[int]) -> None:
        """Make the slot's cache hold exactly ``tokens`` (untimed): a request for them that
        generates nothing. With no depth the next request runs without the prompt cache."""
        self._depth = list(tokens)
        if tokens:
            self._post("/completion", {"prompt": tokens, "n_predict": 0, "id_slot": 0, "cache_prompt": True})

    def generate(self, prompt: list[int], max_tokens: int, *, past: int = 0, stop_at_eos: bool = True, seed: int | None = None) -> Generation:
        """The request ``prompt`` after the cached depth (``past`` tokens), streamed; with
        ``stop_at_eos=False`` exactly ``max_tokens`` decode steps, as in-process (the server
        samples one token more than it decodes, so ``max_tokens + 1`` are asked for)."""
        if past != len(self._depth):
            raise ConfigError(f"the session holds a depth of {len(self._depth)} tokens, not {past}", "call enter_depth first")
        if past + len(prompt) + max_tokens > self.config.n_ctx:
            raise ConfigError(
                f"n_ctx={self.config.n_ctx} is too small for {past} cached + {len(prompt)} prompt + {max_tokens} generated tokens",
                "raise n_ctx or shorten the workload",
            )
        if past:
            self.enter_depth(self._depth)  # the previous request's prompt and tokens are dropped
        body = {**_streamed([*self._depth, *prompt], max_tokens, stop_at_eos=stop_at_eos, cache_prompt=bool(past)), "id_slot": 0}
        if seed is not None:
            body["seed"] = seed
        return self._stream(body, past)

    def answer(self, tokens: list[int], max_tokens: int, stop: tuple[str, ...], seed: int) -> Generation:
        """A request as written, from an empty cache, ended where the model or a ``stop`` string
        ends it (or at ``max_tokens``): natural output, what speculation is measured on."""
        body = {**_streamed(tokens, max_tokens, stop_at_eos=True, cache_prompt=False), "stop": list(stop), "seed": seed}
        return self._stream(body, 0)

    def enter_depths(self, depths: list[list[int]]) -> None:
        """Each user's depth into a slot (untimed, one after another): its previous turn. The
        server picks the slot, as it does for any client: the least recently used one, and for a
        user's next request the one holding its conversation (prompt similarity). Where users
        share a slot, it keeps the last one's, and the others evaluate theirs again, as they would.
        (Pinned with ``id_slot``, two users on one slot with a window-sized SWA cache made this
        build spin, creating and superseding one context checkpoint, until killed; the server's
        own choice did not, and it is what users get.)"""
        for depth in depths:
            if depth:
                self._post("/completion", {"prompt": depth, "n_predict": 0, "cache_prompt": True})

    def generate_together(self, requests: list[tuple[list[int], list[int]]], max_tokens: int) -> tuple[list[Generation], float]:
        """``requests`` (each one user's depth and prompt, after :meth:`enter_depths`) sent at
        once, each exactly ``max_tokens`` long, on the slots the server picks. Returns the
        generations and the seconds from the first request sent to the last answer."""
        results: list[Generation | None] = [None] * len(requests)
        errors: list[Exception] = []

        def send(user: int) -> None:
            depth, prompt = requests[user]
            try:
                results[user] = self._stream(_streamed([*depth, *prompt], max_tokens, stop_at_eos=False, cache_prompt=True), len(depth))
            except Exception as exc:  # noqa: BLE001 -- re-raised in the caller's thread below
                errors.append(exc)

        threads = [threading.Thread(target=send, args=(user,)) for user in range(len(requests))]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return [g for g in results if g is not None], time.perf_counter() - start

    def _stream(self, body: dict[str, Any], past: int) -> Generation:
        tokens: list[int] = []
        text: list[str] = []
        start = time.perf_counter()
        first = last = start
        timings: dict[str, Any] = {}
        for chunk in self._events("/completion", body):
            if chunk.get("tokens"):
                now = time.perf_counter()
                if not tokens:
                    first = now
                last = now
                tokens += [int(t) for t in chunk["tokens"]]
                text.append(chunk.get("content", ""))
            if chunk.get("stop"):
                timings = chunk.get("timings") or {}
        if not timings or not (tokens or not body["ignore_eos"]):  # a natural answer may end at once
            raise EngineError("llama-server's reply had no tokens or no timings", f"its last log line: {_last(self.process.log_tail())}")
        return Generation(
            tokens=tokens,
            text="".join(text),
            n_prompt=int(timings["prompt_n"]),
            prompt_ms=float(timings["prompt_ms"]),
            n_eval=max(int(timings["predicted_n"]) - 1, 0),  # decodes: every sampled token but the last
            eval_ms=float(timings["predicted_ms"]),
            sample_ms=0.0,  # inside predicted_ms: the server does not count sampling apart
            n_sample=int(timings["predicted_n"]),
            ttft_ms=(first - start) * 1000,
            wall_prompt_ms=(first - start) * 1000,
            wall_decode_ms=(last - first) * 1000,
            context_tokens=int(timings.get("cache_n", 0)) + int(timings["prompt_n"]),
            drafted=int(timings.get("draft_n", 0)),
            accepted=int(timings.get("draft_n_accepted", 0)),
        )

    def _get(self, path: str) -> dict[str, Any]:
        return next(self._events(path, None), {})

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        events = list(self._events(path, body))
        return events[-1] if events else {}

    def _events(self, path: str, body: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
        """The reply's JSON objects (a GET without ``body``): one for a plain reply, one per
        ``data:`` line when streamed. The one place a request's failures are told apart."""
        conn = http.client.HTTPConnection("127.0.0.1", self.process.port, timeout=self.timeout_s)
        try:
            if body is None:
                conn.request("GET", path)
            else:
                conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            reply = conn.getresponse()
            if reply.status != 200:
                message = reply.read().decode("utf-8", errors="replace")
                raise EngineError(f"llama-server answered {path} with HTTP {reply.status}", message[:300])
            if not (body or {}).get("stream"):
                yield json.loads(reply.read())
                return
            for raw in reply:
                line = raw.strip()
                if line.startswith(b"data: ") and line != b"data: [DONE]":
                    yield json.loads(line[6:])
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise self._failed(exc) from None
        finally:
            conn.close()

    def _failed(self, exc: Exception) -> WorkerFailed:
        if isinstance(exc, socket.timeout):
            tail = self.process.log_tail()
            self.process.stop()
            return WorkerFailed(f"llama-server did not answer within {self.timeout_s:.0f} s (killed)", tail)
        time.sleep(0.2)  # a dying server: let it exit, so its exit code is known
        code = self.process.exit_code()
        state = f"died (exit code {code})" if code is not None else f"dropped the connection ({type(exc).__name__})"
        return WorkerFailed(f"llama-server {state} during a request", self.process.log_tail())


def _streamed(tokens: list[int], max_tokens: int, *, stop_at_eos: bool, cache_prompt: bool) -> dict[str, Any]:
    """A streamed /completion request for ``tokens``; with ``stop_at_eos=False`` exactly
    ``max_tokens`` decode steps (the server samples one token more than it decodes)."""
    return {"prompt": tokens, "n_predict": max_tokens if stop_at_eos else max_tokens + 1, "ignore_eos": not stop_at_eos,
            "stream": True, "return_tokens": True, "cache_prompt": cache_prompt}


def _read_back(asked: EngineConfig, lines: list[str]) -> EngineConfig:
    """The configuration the server runs with, as llama.cpp logged its context (each slot's
    n_ctx, the slots, n_batch, n_ubatch, flash attention, threads); what it does not log is taken
    as asked. Auto slots stay :data:`AUTO_SLOTS` (their 4 slots share one cache: another
    configuration than ``-np 4``, which gives each slot n_ctx of its own)."""
    found: dict[str, Any] = {}
    for line in lines:
        if match := _CONTEXT_LINE.search(line):
            key, value = match[1], match[2]
            if key == "n_seq_max" and asked.n_parallel == AUTO_SLOTS:
                continue
            if key != "flash_attn":
                found[{"n_ctx_seq": "n_ctx", "n_seq_max": "n_parallel"}.get(key, key)] = int(value)
            elif value != "auto":  # "auto" is resolved later: "Flash Attention enabled|disabled"
                found[key] = value in ("enabled", "on", "1", "true")
        elif "Flash Attention enabled" in line or "Flash Attention disabled" in line:
            found["flash_attn"] = "enabled" in line
        elif match := _THREADS_LINE.search(line):
            found["n_threads"], found["n_threads_batch"] = int(match[1]), int(match[2])
    return replace(asked, **found)


class ServerEngine:
    """Sessions on llama-server: one server process per configuration, started by
    :meth:`session` and stopped when the session ends (a context's settings are the server's
    command line; there is nothing to keep loaded between configurations)."""

    def __init__(self, model_path: str | Path, binary: ServerBinary, *, timeout_s: float = 600.0) -> None:
        self.model_path = Path(model_path)
        self.binary = binary
        self.timeout_s = timeout_s
        # setting -> the value this binary runs it at, for the settings it has no flag for; set
        # from its own defaults (:meth:`own_defaults`), or from the study that recorded them
        self.lacks: dict[str, Any] = {}

    @contextmanager
    def session(self, config: EngineConfig) -> Iterator[ServerSession]:
        """A running server with ``config``'s settings (its slots: ``-np n_parallel``), stopped at the end.

        Raises:
            ConfigError: a setting the binary has no flag for, asked at another value than its own.
            EngineError: the server refused the settings at start.
            WorkerFailed: it hung at start.
        """
        check_lacking(config, self.lacks, f"{self.binary.path} ({self.binary.version})")
        args = server_args(config, lacking=self.lacks)
        process = ServerProcess(self.binary, self.model_path, args, timeout_s=min(self.timeout_s, START_TIMEOUT_S))
        try:
            process.start()
            yield ServerSession(process, config, self.timeout_s)
        finally:
            process.close()

    def own_defaults(self, n_ctx: int) -> EngineConfig:
        """llama-server's own defaults on this machine at ``n_ctx``, as the binary resolves them:
        started with only ``-c n_ctx``, as a user who sets nothing else starts it, its log read
        back (batch sizes, threads, flash attention's "auto", the layers "-ngl auto" offloads, the
        KV types, a window-sized SWA cache, its slots: :data:`AUTO_SLOTS` where they are the 4
        sharing one cache that auto resolves to), its sampling and slot count from ``/props``.
        This is the "defaults" a study on llama-server compares against.

        Raises:
            EngineError / WorkerFailed: the binary cannot start the model.
        """
        asked = EngineConfig(n_ctx=n_ctx, n_parallel=AUTO_SLOTS)
        process = ServerProcess(self.binary, self.model_path, ["-c", str(n_ctx)], timeout_s=START_TIMEOUT_S)
        try:
            process.start()
            session = ServerSession(process, asked, self.timeout_s)
            lines, placed = process.log_lines(), session.placed
            props = session.props()
        finally:
            process.close()
        params = props.get("default_generation_settings", {}).get("params", {})
        slots, unified = int(props.get("total_slots", 1)), any("kv_unified = 'true'" in line for line in lines)
        auto = (slots, unified) == (AUTO_SLOT_COUNT, True)  # an older build runs one slot by default
        found = _read_back(replace(asked, n_parallel=AUTO_SLOTS if auto else slots, kv_unified=unified), lines)
        kv = re.search(r"K \((\w+)\).*V \((\w+)\)", "\n".join(line for line in lines if "llama_kv_cache: size" in line))
        kv_types = {"type_k": KV_TYPES.get(kv[1], 1), "type_v": KV_TYPES.get(kv[2], 1)} if kv else {}
        sampling = {key: round(float(params[name]), 4) for key, name in _SAMPLING_PROPS.items() if name in params}
        if "top_k" in sampling:
            sampling["top_k"] = int(sampling["top_k"])
        layers = placed.get("offloaded_layers") or 0  # -ngl auto: what it offloaded (nothing logged: a CPU build)
        n_gpu_layers = -1 if layers and layers == placed.get("layers") else layers
        own = replace(found, n_gpu_layers=n_gpu_layers, swa_full=False, **kv_types, **sampling)
        resolved = own.effective().to_dict()
        self.lacks = {key: resolved[key] for key in lacking_settings(self.binary.flags)}
        return own
