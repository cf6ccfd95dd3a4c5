"""A study on llama-server (`tune start --engine llama-server`), end to end: the real binary
`make test` builds, the real CLI, its export started as a user would start it."""

from __future__ import annotations

import http.client
import json
import os
import shlex
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import replace

import optuna
import pytest

from tests.conftest import SMALL, SMALL_ARGS, run_tune
from tuner.config import AUTO_SLOT_COUNT, AUTO_SLOTS
from tuner.models import model_sha256
from tuner.preset import Preset
from tuner.server import free_port
from tuner.server_flags import server_args
from tuner.server_worker import ServerRunner
from tuner.space import load_space
from tuner.study import StudySpec, open_storage, start_study


@pytest.fixture(scope="module")
def server_study(tmp_path_factory):
    """'srv': 12 trials on llama-server in <cwd>/studies/tuner.db. Not confirmed (--confirm-rounds
    0): confirmation and the ablation are the same code on either engine (tests/study/), and they
    would cost this suite a minute and a half (a server start per configuration and round)."""
    cwd = tmp_path_factory.mktemp("server-study")
    result = run_tune(
        "start", "--engine", "llama-server", "--trials", "12", "--study", "srv", "--seed", "1", "--confirm-rounds", "0", *SMALL_ARGS, cwd=cwd
    )
    assert result.returncode == 0, result.stderr
    return cwd, result.stdout


def _study(cwd):
    return optuna.load_study(study_name="srv", storage=f"sqlite:///{cwd / 'studies' / 'tuner.db'}")


def test_a_study_on_llama_server_records_its_engine_and_compares_with_its_defaults(server_study, server_binary):
    cwd, out = server_study
    assert "engine: llama-server " in out and "starting point: llama-server's defaults" in out
    study = _study(cwd)
    assert study.user_attrs["engine"] == {"name": "llama-server", "path": server_binary.path, "version": server_binary.version, "build": server_binary.build}
    assert len(study.trials) == 12 and all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    defaults = next(t for t in study.trials if t.user_attrs.get("baseline") == "defaults").user_attrs["baseline_config"]
    assert (defaults["n_batch"], defaults["n_ubatch"], defaults["swa_full"]) == (2048, 512, False)  # llama-server's, read from it
    assert defaults["n_parallel"] == AUTO_SLOTS  # what a user who sets only -c runs
    assert "[ 12/12]" in out


def test_the_exported_command_line_starts_the_server_that_was_measured(server_study, server_binary):
    cwd, _ = server_study
    assert run_tune("export", "srv", "--out", "preset.yaml", cwd=cwd).returncode == 0
    preset = Preset.load(cwd / "preset.yaml")
    assert preset.provenance["engine"]["name"] == "llama-server"
    exported = run_tune("export", "srv", "--format", "llama-server", cwd=cwd)
    assert exported.returncode == 0, exported.stderr
    words = shlex.split(exported.stdout.strip().splitlines()[-1])
    measured = server_args(preset.config())
    assert words[0] == "llama-server" and words[3:] == measured  # exactly the flags measured
    port = free_port()
    server = subprocess.Popen([server_binary.path, *words[1:], "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        props = _props_when_ready(port)
        assert props["default_generation_settings"]["n_ctx"] == preset.engine["n_ctx"]
        assert props["total_slots"] == _slots_started(preset.config().n_parallel)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


def _slots_started(n_parallel: int) -> int:
    """The slots a server runs with -np n_parallel: llama-server's auto (its defaults) is 4."""
    return AUTO_SLOT_COUNT if n_parallel == AUTO_SLOTS else n_parallel


def _props_when_ready(port: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/props")
            reply = conn.getresponse()
            if reply.status == 200:
                return json.loads(reply.read())
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("the exported server never became ready")


def test_resume_measures_on_the_binary_the_study_recorded(server_study):
    cwd, _ = server_study
    refused = run_tune("resume", "srv", "--server-bin", "/bin/true", cwd=cwd)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "is not llama-server" in refused.stderr
    resumed = run_tune("resume", "srv", "--trials", "13", "--confirm-rounds", "0", cwd=cwd)
    assert resumed.returncode == 0, resumed.stderr
    assert len(_study(cwd).trials) == 13


def test_a_server_binary_for_a_study_measured_in_llama_cpp_python_is_one_line(cli_study):
    refused = run_tune("resume", "guide-user", "--server-bin", "/bin/true", cwd=cli_study)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "study 'guide-user' was measured on llama-cpp-python: --server-bin does not apply" in refused.stderr


def test_a_server_killed_mid_trial_is_one_failed_trial_and_the_study_goes_on(tmp_path, model_path, server_binary):
    runner = ServerRunner(model_path, server_binary, timeout_s=60)
    sessions, started = runner.engine.session, []

    @contextmanager
    def killed_in_the_fifth(config):  # the noise floor's 3 runs, the guide card, then a search trial
        with sessions(config) as session:
            started.append(config)
            if len(started) == 5:
                os.kill(session.process.pid, signal.SIGKILL)
            yield session

    runner.engine.session = killed_in_the_fifth
    spec = StudySpec(
        model=model_path, model_sha256=model_sha256(model_path), space=load_space("cpu"), workload=replace(SMALL, quality=False),
        trials=5, seed=1, engine=runner.record(), defaults=runner.defaults(4096),
    )
    with runner:
        study = start_study(spec, name="k", storage=open_storage(f"sqlite:///{tmp_path / 'k.db'}"), runner=runner, machine={}, confirm_rounds=0)
    failed = [t for t in study.trials if t.state.name == "FAIL"]
    assert len(failed) == 1 and "llama-server died (exit code -9)" in failed[0].user_attrs["fail_reason"]
    assert failed[0].user_attrs["llama_log_tail"]
    assert len(study.trials) == 5 and sum(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials) == 4



def test_a_setting_the_binary_has_no_flag_for_is_not_searched_and_the_study_says_so(tmp_path, server_binary):
    """An older or trimmed llama-server, made here from the real one: a wrapper whose --help has
    no --min-p and which refuses it, as a build without it does. The study runs: min_p is not
    searched, every trial runs it at the binary's own value, the header says so; resume too."""
    old = tmp_path / "old-llama-server"
    old.write_text(
        "#!/bin/bash\n"
        f"real={shlex.quote(server_binary.path)}\n"
        'for arg in "$@"; do\n'
        '    if [ "$arg" = --help ]; then "$real" --help | grep -v -e --min-p; exit 0; fi\n'
        '    if [ "$arg" = --min-p ]; then echo "error: invalid argument: --min-p" >&2; exit 1; fi\n'
        "done\n"
        'exec "$real" "$@"\n'
    )
    old.chmod(0o755)
    common = ["--confirm-rounds", "0"]
    started = run_tune(
        "start", "--engine", "llama-server", "--server-bin", str(old), "--trials", "3", "--study", "old", "--seed", "1",
        "--no-racing", "--no-quality", *common, *SMALL_ARGS, cwd=tmp_path,
    )
    assert started.returncode == 0, started.stderr
    assert "not searched, this llama-server has no flag for: min_p (no --min-p: its own 0.05)" in started.stdout
    resumed = run_tune("resume", "old", "--trials", "4", *common, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    study = optuna.load_study(study_name="old", storage=f"sqlite:///{tmp_path / 'studies' / 'tuner.db'}")
    assert study.user_attrs["engine"]["lacks"] == {"min_p": 0.05}
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 4 and not any("min_p" in t.params for t in complete)
    assert {t.user_attrs["measurement"]["effective"]["min_p"] for t in complete} == {0.05}
    shown = run_tune("show", "old", cwd=tmp_path)
    assert shown.returncode == 0 and f"engine: llama-server {server_binary.version}" in shown.stdout, shown.stderr
    assert "not searched, this llama-server has no flag for: min_p (no --min-p: its own 0.05)" in shown.stdout


def test_requests_at_once_search_the_slots_and_export_them_with_a_context_each(tmp_path, server_binary):
    """--concurrency 2: the slots are searched (1, 2, shared or not, auto), the trials measure two users at once, and
    the export starts a server with the winner's slots, each with the preset's whole context."""
    result = run_tune(
        "start", "--engine", "llama-server", "--concurrency", "2", "--trials", "4", "--study", "np", "--seed", "2", "--confirm-rounds", "0",
        "--no-quality", "--depth", "32", "--trial-timeout", "120", *SMALL_ARGS, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "2 users at once" in result.stdout and "slots (-np) searched 1-2, each with n_ctx of its own or sharing them (--kv-unified), and auto" in result.stdout
    study = optuna.load_study(study_name="np", storage=f"sqlite:///{tmp_path / 'studies' / 'tuner.db'}")
    searched = [t for t in study.trials if not t.user_attrs.get("baseline")]
    assert searched and all(t.params["n_parallel"] in (AUTO_SLOTS, 1, 2) and ("kv_unified" in t.params) == (t.params["n_parallel"] == 2) for t in searched)
    assert study.user_attrs["workload"]["concurrency"] == 2
    for trial in (t for t in searched if t.state.name == "COMPLETE"):  # each slot read back with the context asked
        effective = trial.user_attrs["measurement"]["effective"]
        assert (effective["n_ctx"], effective["n_parallel"]) == (trial.params["n_ctx"], trial.params["n_parallel"])
    assert run_tune("export", "np", "--out", "preset.yaml", cwd=tmp_path).returncode == 0
    preset = Preset.load(tmp_path / "preset.yaml")
    slots = preset.config().n_parallel
    assert "n_parallel" not in preset.engine  # llama_cpp.Llama(**engine) has no slots
    exported = run_tune("export", "np", "--format", "llama-server", cwd=tmp_path).stdout.strip().splitlines()
    words = shlex.split(exported[-1])
    n_ctx = preset.engine["n_ctx"]  # 4096 required; 8192 searched
    pool = preset.config().effective().server_ctx  # n_ctx x slots, or n_ctx where they share one cache (auto, --kv-unified)
    assert pool == (n_ctx if slots == AUTO_SLOTS or preset.config().kv_unified else n_ctx * slots)
    assert words[words.index("-np") + 1] == str(slots) and words[words.index("-c") + 1] == str(pool)
    port = free_port()
    server = subprocess.Popen([server_binary.path, *words[1:], "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        props = _props_when_ready(port)
        assert props["total_slots"] == _slots_started(slots) and props["default_generation_settings"]["n_ctx"] == n_ctx
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)


def test_requests_at_once_in_llama_cpp_python_is_one_line(tmp_path):
    refused = run_tune("start", "--concurrency", "4", "--trials", "3", *SMALL_ARGS, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "--concurrency 4 needs --engine llama-server" in refused.stderr
    assert not (tmp_path / "studies").exists()  # nothing created
