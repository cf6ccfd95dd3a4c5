"""The whole `tune` process killed, interrupted, or run twice at once on one study."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna

from tests.conftest import run_tune, wait_until_busy, worker_pids

# --no-racing: every trial completes, so the counts below are about recovery alone; one searched
# knob keeps the confirmation and ablation the two-resumes test runs short (70 s instead of 150)
SPACE = Path(__file__).parent / "data" / "threads_only.yaml"
ARGS = ["--prompt-tokens", "32", "--gen-tokens", "8", "--repeats", "3", "--no-quality", "--no-racing", "--space", str(SPACE)]
NO_CONFIRM = ["--confirm-rounds", "0"]  # these tests are about recovery; confirmation has its own


def _as_a_terminal_job() -> None:
    """Ctrl-C acts as in a terminal even when the tests themselves run in the background: a
    shell without job control starts background commands with SIGINT ignored, children inherit
    that, and Python then installs no KeyboardInterrupt handler (the Ctrl-C test would see none)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _spawn(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tuner.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # its own process group, like a terminal job
        preexec_fn=_as_a_terminal_job,
    )


def _wait_for_line(proc: subprocess.Popen[str], prefix: str, timeout: float = 300) -> list[str]:
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(prefix):
            return seen
    raise AssertionError(f"never saw {prefix!r}; output: {''.join(seen)} {proc.stderr.read() if proc.poll() is not None else ''}")


def _trials(cwd: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'studies' / 'tuner.db'}").get_trials()


def _wait_running(cwd: Path, name: str, timeout: float = 60) -> None:
    """Until a trial is RUNNING (the kill then lands mid-trial)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(t.state == optuna.trial.TrialState.RUNNING for t in _trials(cwd, name)):
                return
        except (KeyError, sqlite3.OperationalError):
            pass
        time.sleep(0.1)
    raise AssertionError("no trial started running")


def test_sigkill_of_the_cli_then_resume_completes_with_earlier_trials_intact(tmp_path):
    proc = _spawn("start", "--trials", "5", "--study", "killed", "--seed", "2", *ARGS, *NO_CONFIRM, cwd=tmp_path)
    _wait_for_line(proc, "[  3/5]")
    _wait_running(tmp_path, "killed")
    (worker,) = worker_pids(proc.pid)
    wait_until_busy(worker)  # the worker is measuring the running trial
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its worker, mid-trial
    proc.wait(timeout=30)
    before = {t.number: (t.state, t.value, t.params) for t in _trials(tmp_path, "killed") if t.state.is_finished()}
    assert len(before) >= 3
    assert any(t.state == optuna.trial.TrialState.RUNNING for t in _trials(tmp_path, "killed"))

    resumed = run_tune("resume", "killed", *NO_CONFIRM, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    trials = _trials(tmp_path, "killed")
    for number, finished in before.items():
        assert (trials[number].state, trials[number].value, trials[number].params) == finished
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    stale = [t for t in trials if t.state == optuna.trial.TrialState.FAIL and "fail_reason" not in t.user_attrs]
    assert len(stale) == 1, "the killed RUNNING trial was not failed by its stale heartbeat"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == stale[0].number]
    # the retry runs the killed trial's parameters (those it had drawn before the kill, and the rest)
    assert retried and stale[0].params.items() <= retried[0].params.items(), "the killed trial was not re-run"
    assert len([t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]) == 5


def test_ctrl_c_stops_cleanly_and_prints_the_resume_command(tmp_path):
    proc = _spawn("start", "--trials", "4", "--study", "interrupted", *ARGS, *NO_CONFIRM, cwd=tmp_path)
    _wait_for_line(proc, "[  1/4]")
    _wait_running(tmp_path, "interrupted")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends to the job
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "tune resume interrupted" in err
    assert "Traceback" not in err
    trials = _trials(tmp_path, "interrupted")
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1, [(t.number, t.state, t.user_attrs) for t in trials]

    resumed = run_tune("resume", "interrupted", *NO_CONFIRM, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    trials = _trials(tmp_path, "interrupted")
    assert len([t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]) == 4
    assert [t for t in trials if t.user_attrs.get("retry_of") == interrupted[0].number], "interrupted trial not re-run"
    labels = [t.user_attrs.get("baseline") for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert {"defaults", "guide_card"} <= set(labels)


def test_two_resumes_at_once_reach_the_target_without_duplicates(tmp_path):
    started = run_tune("start", "--trials", "2", "--study", "shared", *ARGS, *NO_CONFIRM, cwd=tmp_path)
    assert started.returncode == 0, started.stderr
    procs = [_spawn("resume", "shared", "--trials", "4", cwd=tmp_path) for _ in range(2)]  # speed only (--no-quality)
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (out, err)
        outputs.append(out)
    # Only the process that ran the study's last trial re-measures the winner; the other says so.
    assert sum("confirming: defaults" in out for out in outputs) == 1, outputs
    assert sum("another worker ran the study's last trial" in out for out in outputs) == 1, outputs
    trials = _trials(tmp_path, "shared")
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4, [t.state for t in trials]
    # A process that lost the race for the last slot stops before measuring: recorded, not counted.
    others = [t for t in trials if t.state != optuna.trial.TrialState.COMPLETE]
    assert all(t.state == optuna.trial.TrialState.PRUNED and t.user_attrs.get("surplus") for t in others), others
    assert all(not t.params for t in others)
