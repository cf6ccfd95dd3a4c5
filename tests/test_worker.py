"""Trials in a worker process: real faults (SIGKILL, timeout) fail one trial, never the study."""

from __future__ import annotations

import os
import signal
import threading

import optuna
import pytest

from tests.conftest import SMALL, wait_until_busy
from tuner.config import EngineConfig
from tuner.errors import ConfigError, ModelError, WorkerFailed
from tuner.hardware import describe_machine
from tuner.workload import Workload
from tuner.models import model_sha256
from tuner.space import load_space
from tuner.study import Economies, StudySpec, counted_trials, open_storage, start_study
from tuner.study.noise import NOISE_RUNS
from tuner.worker import Worker


def test_worker_measures_and_keeps_the_model_loaded(model_path):
    with Worker(model_path) as worker:
        first = worker.measure(EngineConfig(n_threads=2), SMALL)
        pid = worker.pid
        second = worker.measure(EngineConfig(n_threads=1, n_ctx=1024), SMALL)
        assert worker.pid == pid, "a context-only change restarted the worker"
    assert first.decode_tok_s.median > 0 and second.config.n_ctx == 1024
    assert len(first.decode_tok_s.samples) == SMALL.repeats


def test_refused_config_comes_back_as_its_own_error_and_the_worker_lives_on(model_path):
    with Worker(model_path) as worker:
        worker.start()
        pid = worker.pid
        with pytest.raises(ConfigError, match="below the"):
            worker.measure(EngineConfig(n_ctx=256, n_batch=256), Workload.single(250, 16))
        assert worker.pid == pid


def test_a_model_llama_cpp_cannot_load_fails_at_start(tmp_path, model_path):
    truncated = tmp_path / "t.gguf"
    truncated.write_bytes(model_path.read_bytes()[: 1 << 20])
    with Worker(truncated) as worker, pytest.raises(ModelError, match="could not load"):
        worker.start()


def test_timeout_kills_the_worker_and_the_next_trial_gets_a_fresh_one(model_path):
    with Worker(model_path, timeout_s=0.5) as worker:
        worker.start()
        pid = worker.pid
        with pytest.raises(WorkerFailed, match="timed out after"):
            worker.measure(EngineConfig(n_threads=1, n_ctx=1024), Workload.single(256, 256))
        worker.timeout_s = 120
        assert worker.measure(EngineConfig(n_threads=2), SMALL).decode_tok_s.median > 0
        assert worker.pid != pid and worker.restarts == 1


class _KillOnce:
    """Runs trials in a real Worker; during the 3rd trial, once the worker is measuring (it has
    used 0.3 s more CPU), it SIGKILLs the worker process."""

    KILL_AT = NOISE_RUNS + 2  # the noise floor first (its last run is trial #0's), then #1, #2

    def __init__(self, worker: Worker) -> None:
        self.worker, self.calls = worker, 0

    def measure(self, config, workload, **options):
        self.calls += 1
        if self.calls == self.KILL_AT:
            pid = self.worker.pid
            threading.Thread(target=lambda: (wait_until_busy(pid), os.kill(pid, signal.SIGKILL)), daemon=True).start()
        return self.worker.measure(config, workload, **options)


def test_sigkilled_worker_fails_one_trial_and_the_study_completes(tmp_path, model_path):
    spec = StudySpec(
        model=model_path, model_sha256=model_sha256(model_path), space=load_space("cpu"),
        workload=Workload.single(32, 16, repeats=3, quality=False), trials=4, seed=3,
        economies=Economies(racing=False),  # every trial measured fully: the counts are about the kill
    )
    storage = open_storage(f"sqlite:///{tmp_path / 'k.db'}")
    with Worker(model_path) as worker:
        study = start_study(
            spec, name="k", storage=storage, runner=_KillOnce(worker), machine=describe_machine().to_dict(), confirm_rounds=0
        )
        assert worker.restarts == 1
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert len(failed) == 1
    assert "killed by SIGKILL" in failed[0].user_attrs["fail_reason"]
    assert isinstance(failed[0].user_attrs["llama_log_tail"], list)
    assert len(counted_trials(study)) == 4
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 3


@pytest.mark.parametrize("timeout", [0, -5.0])
def test_a_library_user_gets_the_cli_users_error_for_a_bad_timeout(model_path, timeout):
    with pytest.raises(ConfigError, match=r"timeout_s=.* \(--trial-timeout\) must be positive"):
        Worker(model_path, timeout_s=timeout)


def test_an_unexpected_exception_in_the_worker_fails_the_request_with_its_type_and_place(model_path):
    """A bug (here a malformed request: a workload without its fields) is not a silent death: the
    failure names the exception, its message and where it was raised, and a fresh worker serves
    the next request."""
    with Worker(model_path) as worker:
        worker.start()
        first = worker.pid
        with pytest.raises(WorkerFailed) as caught:
            worker._request(("measure", EngineConfig().to_dict(), {"repeats": 3}, {}), "the trial")
        assert "the trial raised KeyError in the worker" in caught.value.reason
        assert "workload.py" in caught.value.reason  # where: file, line and function
        assert any("KeyError" in line for line in caught.value.log_tail)  # the traceback's tail
        assert worker.measure(EngineConfig(n_threads=2), SMALL).requests_per_min.median > 0
        assert worker.pid != first and worker.restarts == 1
