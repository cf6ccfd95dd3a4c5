"""llama-server as an engine: the binary, its process and what goes wrong with either.

Every fault here is real (a real binary that is not llama-server, a real port taken, a real
server killed or never ready); the engine's measurements themselves are specified, for both
engines alike, in tests/test_engines.py.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
from dataclasses import replace
from pathlib import Path

import pytest

import tuner.server as server_module
from tuner.config import AUTO_SLOTS, EngineConfig
from tuner.errors import ConfigError, EngineError, WorkerFailed
from tuner.server import ServerProcess, ServerSession
from tuner.server_binary import ServerBinary
from tuner.server_worker import ServerRunner
from tuner.user_requests import read_requests
from tuner.workload import Workload

from tests.conftest import SMALL_ARGS, run_tune, same_or_parted_at_a_near_tie

WORKLOADS = Path(__file__).resolve().parents[1] / "workloads"


def test_a_binary_that_is_not_there_or_not_llama_server_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not found") as missing:
        ServerBinary.find(str(tmp_path / "llama-server"))
    assert "--server-bin" in str(missing.value)
    with pytest.raises(ConfigError, match="is not llama-server"):
        ServerBinary.find("/bin/true")


def test_the_binary_says_its_version_and_has_every_flag_a_configuration_needs(server_binary):
    assert "commit" in server_binary.version and server_binary.build.startswith("built with")
    server_binary.check(server_module.server_args(EngineConfig(swa_full=True, offload_kqv=False)))


def test_a_flag_the_binary_lacks_is_refused_by_name_unless_its_setting_can_run_at_the_binary_value(server_binary, model_path):
    """A command line with a flag the binary lacks is refused before it starts, naming the flag.
    A study on such a binary starts when the flag is a setting's (not searched: it runs at the
    binary's own value, tests/test_cli_server.py), and is refused at start when every
    configuration needs it (-np)."""
    older = replace(server_binary, flags=server_binary.flags - {"-ctk"})
    with pytest.raises(ConfigError, match="has no -ctk"):
        ServerProcess(older, model_path, server_module.server_args(EngineConfig()))
    with ServerRunner(model_path, older) as runner:
        runner.start()
    no_slots = replace(server_binary, flags=server_binary.flags - {"-np"})
    with ServerRunner(model_path, no_slots) as runner, pytest.raises(ConfigError, match="has no -np"):
        runner.start()


def test_a_flag_the_binary_refuses_at_start_is_an_engine_error_quoting_its_log(server_binary, model_path):
    told = replace(server_binary, flags=server_binary.flags | {"--no-such-flag"})
    process = ServerProcess(told, model_path, ["--no-such-flag"])
    with pytest.raises(EngineError, match="exited at start") as refused:
        process.start()
    assert "--no-such-flag" in refused.value.fix
    process.close()


def test_a_port_taken_before_the_server_binds_it_is_retried_on_another(server_binary, model_path, monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        _starts_elsewhere_when_offered_first(taken.getsockname()[1], server_binary, model_path, monkeypatch)
    finally:
        taken.close()


def _starts_elsewhere_when_offered_first(port: int, server_binary, model_path, monkeypatch) -> None:
    """A server whose first free port is ``port`` ends up started, and on another port."""
    ports = iter([port])
    real = server_module.free_port
    monkeypatch.setattr(server_module, "free_port", lambda: next(ports, None) or real())
    process = ServerProcess(server_binary, model_path, ["-c", "512"])
    try:
        process.start()
        assert process.alive() and process.port != port
    finally:
        process.close()


def test_another_program_answering_health_on_the_port_is_not_taken_for_the_server(server_binary, model_path, monkeypatch):
    """A real HTTP server that holds the port and answers /health 200: ours cannot bind there and
    exits; it is retried on another port, never mistaken for the one that answered."""
    import http.server
    import threading

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"status": "ok"}')

        def log_message(self, *args):
            pass

    other = http.server.HTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        _starts_elsewhere_when_offered_first(other.server_address[1], server_binary, model_path, monkeypatch)
    finally:
        other.shutdown()
        other.server_close()


def test_a_port_that_stays_taken_is_an_engine_error_after_the_retries(server_binary, model_path, monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    monkeypatch.setattr(server_module, "free_port", lambda: taken.getsockname()[1])
    process = ServerProcess(server_binary, model_path, ["-c", "512"])
    with pytest.raises(EngineError, match="exited at start"):
        process.start()
    process.close()
    taken.close()


def test_a_server_killed_mid_session_fails_the_request_with_its_exit_code_and_log(server_binary, model_path):
    process = ServerProcess(server_binary, model_path, server_module.server_args(EngineConfig(n_ctx=512)))
    process.start()
    session = ServerSession(process, EngineConfig(n_ctx=512), timeout_s=30)
    tokens = session.tokenize("The lighthouse keeper kept a careful log.")
    os.kill(process.pid, signal.SIGKILL)
    with pytest.raises(WorkerFailed, match=r"died \(exit code -9\)") as died:
        session.generate(tokens, 4, stop_at_eos=False)
    assert died.value.log_tail  # what the server logged before it died
    process.close()


def test_a_server_that_never_gets_ready_is_killed_after_its_timeout(server_binary, model_path, tmp_path):
    """A binary that answers --help like llama-server, then hangs instead of serving."""
    hung = tmp_path / "llama-server"
    hung.write_text(f'#!/bin/sh\ncase "$1" in --help|--version) exec "{server_binary.path}" "$1";; esac\nexec sleep 600\n')
    hung.chmod(hung.stat().st_mode | stat.S_IEXEC)
    binary = ServerBinary.find(str(hung))
    process = ServerProcess(binary, model_path, ["-c", "512"], timeout_s=2)
    with pytest.raises(WorkerFailed, match="not ready after 2 s"):
        process.start()
    assert not process.alive()
    process.close()


def test_bad_engine_options_are_one_line_and_create_nothing(tmp_path):
    cases = {
        ("--engine", "llama-serve"): "unknown engine 'llama-serve'",
        ("--server-bin", "/bin/true"): "--server-bin is for --engine llama-server",
        ("--engine", "llama-server", "--server-bin", "/bin/true"): "/bin/true is not llama-server",
        ("--engine", "llama-server", "--server-bin", str(tmp_path / "none")): "not found",
    }
    for args, said in cases.items():
        result = run_tune("start", "--trials", "3", *args, *SMALL_ARGS, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], (args, lines)
    assert not (tmp_path / "studies").exists()



def test_requests_at_once_give_each_user_a_slot_of_its_own_with_the_whole_context(server_engine):
    """Two users at once on two slots: -c is doubled so each slot holds n_ctx, read back from the
    server; a repetition is one round of both users, and requests/min is what the server
    completed in it."""
    from tuner.measure import measure

    together = Workload.single(16, 8, depth=32, repeats=3, quality=False, concurrency=2)
    result = measure(server_engine, EngineConfig(n_ctx=512, n_threads=2, n_parallel=2), together)
    assert (result.config.n_ctx, result.config.n_parallel) == (512, 2)
    assert len(result.requests_per_min.samples) == 3 and not result.flags
    shape = result.shapes[0]
    assert len(shape.request_ms.samples) == 3  # a round of two users counts once
    # requests/min: two requests completed per round; the request time is the slowest user's wait
    assert all(60_000 / rate < wait <= 2 * 60_000 / rate for rate, wait in zip(result.requests_per_min.samples, shape.request_ms.samples))


def test_auto_slots_are_four_sharing_the_context_and_read_back_as_auto(server_engine):
    """-np -1, what a user who sets only -c runs: 4 slots, each request may use all n_ctx (one
    unified cache); the measurement records auto, not -np 4 (whose slots have n_ctx each)."""
    from tuner.measure import measure

    auto = EngineConfig(n_ctx=512, n_threads=2, n_parallel=AUTO_SLOTS)
    result = measure(server_engine, auto, Workload.single(16, 8, repeats=3, quality=False))
    assert (result.config.n_ctx, result.config.n_parallel) == (512, AUTO_SLOTS)
    with server_engine.session(auto) as session:
        props = session.props()
    assert props["total_slots"] == 4 and props["default_generation_settings"]["n_ctx"] == 512
    shared = EngineConfig(n_ctx=512, n_threads=2, n_parallel=2, kv_unified=True)  # --kv-unified: 2 slots sharing -c 512
    together = Workload.single(16, 8, depth=32, repeats=3, quality=False, concurrency=2)
    assert measure(server_engine, shared, together).config == shared.effective()
    with server_engine.session(shared) as session:
        props = session.props()
    assert props["total_slots"] == 2 and props["default_generation_settings"]["n_ctx"] == 512


def test_each_user_sends_a_conversation_of_its_own():
    from tuner.measure import prompt_tokens, user_tokens

    text = list(range(1, 60))
    users = [user_tokens(text, user, 80) for user in range(3)]
    assert users[0] == prompt_tokens(text, 80)  # one user alone: the workload as it always was
    assert all(len(u) == 80 and u[0] == 1 for u in users) and len({tuple(u) for u in users}) == 3


def test_speculation_drafts_from_the_prompt_and_leaves_greedy_text_unchanged(server_binary, model_path, engine):
    """n-gram speculation (llama-server --spec-type ngram-simple) on code to rewrite: the answer
    quotes the prompt, so drafts are proposed and accepted, and under greedy sampling the text is
    the one decoding without speculation gives, or parts from it at a near-tie of the two best
    tokens (a verification batch's numerics: seen on one machine and not on another, at 0.07
    logits). benchmarks/speculative.py measures its worth."""
    requests, _ = read_requests(WORKLOADS / "code-edit.jsonl")
    answers = {}
    for label, extra in (("none", []), ("ngram-simple", ["--spec-type", "ngram-simple"])):
        process = ServerProcess(server_binary, model_path, ["-c", "2048", "-np", "1", "--temp", "0", "--top-k", "1", *extra])
        try:
            process.start()
            session = ServerSession(process, EngineConfig(n_ctx=2048), timeout_s=120)
            prompts = [session.tokenize(r.prompt) for r in requests[:2]]
            answers[label] = [session.answer(tokens, 160, r.stop, seed=0) for tokens, r in zip(prompts, requests[:2])]
        finally:
            process.close()
    identical = 0
    for tokens, plain, drafted in zip(prompts, answers["none"], answers["ngram-simple"]):
        assert plain.text.strip() and plain.drafted == 0
        assert drafted.drafted > 0 and 0 < drafted.accepted <= drafted.drafted
        identical += same_or_parted_at_a_near_tie(engine, tokens, plain.tokens, drafted.tokens)
    assert identical >= 1
