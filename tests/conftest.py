"""Shared fixtures: the real embedded model, a real engine, a small real workload."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

# The tool's cache (quality references, model hashes) is a temporary one for the whole session,
# subprocesses included: the tests never read or write a user's cache.
os.environ["TUNER_CACHE_DIR"] = tempfile.mkdtemp(prefix="tuner-test-cache-")
atexit.register(shutil.rmtree, os.environ["TUNER_CACHE_DIR"], ignore_errors=True)

from tuner.config import EngineConfig  # noqa: E402
from tuner.engine import Engine  # noqa: E402 - after the cache is set
from tuner.models import default_model_path  # noqa: E402
from tuner.stats import Stat  # noqa: E402
from tuner.workload import Workload  # noqa: E402

# Small enough to keep the suite quick on 2 cores, large enough to exercise batching.
SMALL = Workload.single(32, 8, repeats=3)
SMALL_ARGS = ["--prompt-tokens", "32", "--gen-tokens", "8", "--repeats", "3"]


@pytest.fixture(scope="session")
def model_path() -> Path:
    return default_model_path()


@pytest.fixture(scope="session")
def engine(model_path: Path):
    with Engine(model_path) as eng:
        yield eng


@pytest.fixture(scope="session")
def server_binary():
    """The llama-server `make test` builds into .venv/bin (scripts/install_server.sh)."""
    from tuner.server_binary import ServerBinary

    return ServerBinary.find()


@pytest.fixture(scope="session")
def server_engine(model_path: Path, server_binary):
    from tuner.server import ServerEngine

    return ServerEngine(model_path, server_binary, timeout_s=120)


@pytest.fixture
def small() -> Workload:
    return SMALL


# The RTX 4090 guide's "before" settings: what its reader ran before tuning (tune start --baseline).
GUIDE_BEFORE = "n_ctx: 4096\nn_batch: 2048\nn_threads: 8\nn_threads_batch: 8\ntop_k: 20\ntop_p: 0.9\n"


@pytest.fixture(scope="session")
def cli_study(tmp_path_factory) -> Path:
    """A working directory holding 'guide-user', a study made by the real `tune start` from the user's
    own settings (--baseline before.yaml, GUIDE_BEFORE): 3 baselines (defaults, guide card,
    yours) and 1 searched trial in the default storage studies/tuner.db, quality proxy on,
    confirmed and ablated, racing off; its output in start.out.

    One study for the CLI, baseline, report, dashboard and speculation tests (a second one cost
    the suite two minutes); tests that change a study work on a copy.
    """
    cwd = tmp_path_factory.mktemp("cli")
    (cwd / "before.yaml").write_text(GUIDE_BEFORE)
    # --no-racing: the searched trial must complete, so that confirmation has a candidate to
    # re-measure (racing may stop it; tests/study/test_racing.py covers racing).
    result = run_tune("start", "--trials", "4", "--study", "guide-user", "--seed", "2", "--no-racing", "--baseline", "before.yaml", *SMALL_ARGS, cwd=cwd)
    assert result.returncode == 0, result.stderr
    (cwd / "start.out").write_text(result.stdout)
    return cwd


class LuckyOnce:
    """A runner that records one measurement 20x too fast: the winner's curse, made reproducible.

    A real lucky reading cannot be produced on demand; everything else is the real engine.
    """

    def __init__(self, engine: Engine, lucky_call: int) -> None:
        from tuner.study import InProcess

        self.inner, self.calls, self.lucky_call = InProcess(engine), 0, lucky_call

    def reference(self, model_sha256: str, **options):
        return self.inner.reference(model_sha256, **options)

    def measure(self, config, workload, **options):
        result = self.inner.measure(config, workload, **options)
        self.calls += 1
        if self.calls == self.lucky_call:
            result = replace(result, requests_per_min=Stat.of([x * 20 for x in result.requests_per_min.samples]))
        return result


@pytest.fixture(scope="session")
def speed_study(tmp_path_factory, model_path: Path, engine: Engine):
    """A 12-trial speed-only study (noise floor, confirmation) whose trial #3 read 20x too fast.

    Racing is off: after a 20x reading every later trial would stop at its first repetition, and
    the importances need completed trials (catching the lucky reading is confirmation's job).

    Returns (storage URL, study name, notes the library reported).
    """
    from tuner.hardware import describe_machine
    from tuner.models import model_sha256
    from tuner.space import load_space
    from tuner.study import Economies, StudySpec, open_storage, start_study

    url = f"sqlite:///{tmp_path_factory.mktemp('speed') / 'speed.db'}"
    spec = StudySpec(
        model=model_path,
        model_sha256=model_sha256(model_path),
        space=load_space("cpu"),
        workload=replace(SMALL, quality=False),
        trials=12,  # 10 searched: enough for parameter importances
        seed=3,
        economies=Economies(racing=False),
    )
    notes: list[str] = []
    # 3 noise-floor runs (the last one is trial #0's, the defaults), then trials #1 #2 #3: the 6th call
    runner = LuckyOnce(engine, lucky_call=6)
    start_study(spec, name="speed", storage=open_storage(url), runner=runner, machine=describe_machine().to_dict(), on_note=notes.append)
    return url, "speed", notes


def simulated_measurement(config, workload: Workload, speed: float, quality=None, shapes=None):
    """A Measurement whose rates are ``speed`` (spread ±3% over three repetitions), for runners
    that simulate a machine: what a real one cannot produce on demand (tests say which)."""
    from tuner.measure import Measurement

    def stat(median: float) -> Stat:
        return Stat.of([0.97 * median, median, 1.02 * median])

    rates = {name: stat(speed) for name in ("requests_per_min", "decode_tok_s", "eval_tok_s", "wall_decode_tok_s")}
    return Measurement(
        shapes=shapes or [],
        prompt_tok_s=stat(100.0),
        ttft_ms=stat(50.0),
        sample_us_per_tok=stat(5.0),
        **rates,
        workload=workload,
        config=config.effective(),
        clamped={},
        quality=quality,
    )


def run_tune(*args: str, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `tune` CLI in a subprocess (exit codes and stderr exactly as a user sees them),
    with ``env`` added to this process's environment."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tuner.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def chat_requests(path: Path, count: int = 20, shortest_answer: int = 16) -> Path:
    """``count`` chat requests of growing conversations and varied answer lengths (from
    ``shortest_answer`` tokens to 3x that)."""
    lines = []
    for i in range(count):
        messages = [{"role": "system", "content": "You are a concise assistant for a museum."}]
        for turn in range(i % 4):
            messages += [
                {"role": "user", "content": f"Tell me about room {turn + 1} of the museum, briefly."},
                {"role": "assistant", "content": f"Room {turn + 1} holds maps and ship models from the harbour's history."},
            ]
        messages.append({"role": "user", "content": f"Question {i}: when does the museum open on Sundays?"})
        lines.append(json.dumps({"messages": messages, "max_tokens": shortest_answer + shortest_answer // 2 * (i % 5)}))
    path.write_text("\n".join(lines) + "\n")
    return path


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_busy(pid: int, cpu: float = 0.3, timeout: float = 120) -> None:
    """Until ``pid`` has used ``cpu`` more seconds of CPU: an event ("it is measuring now") instead
    of a sleep that a loaded machine can outrun."""
    import time

    start, deadline = cpu_seconds(pid), time.monotonic() + timeout
    while cpu_seconds(pid) - start < cpu:
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not get busy within {timeout} s")
        time.sleep(0.02)


def worker_pids(pid: int) -> list[int]:
    """The tuner worker processes ``pid`` started (multiprocessing spawn children; not its
    resource tracker)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and b"spawn_main" in command:
            children.append(int(stat.parent.name))
    return children


NEAR_TIE = 0.25  # logits between the two best tokens: where a batch's numerics may choose the other


def same_or_parted_at_a_near_tie(engine: Engine, prompt: list[int], plain: list[int], other: list[int]) -> bool:
    """True when ``other`` is ``plain`` token for token. Otherwise asserts that they part where the
    model's two best tokens after the common part were a near-tie (within :data:`NEAR_TIE`, read
    in-process), which is how speculation's verification batches legitimately differ from
    one-token decoding, and returns False. A larger margin is a real difference: the test fails."""
    import numpy as np

    parted = next((i for i, (a, b) in enumerate(zip(plain, other)) if a != b), None)
    if parted is None:
        assert list(other) == list(plain), "one answer is the other cut short"
        return True
    with engine.session(EngineConfig(n_ctx=4096)) as session:
        logits = session.last_logits(list(prompt) + list(plain[:parted]))
    best, second = np.sort(logits)[-2:][::-1]
    assert best - second < NEAR_TIE, f"the answers part at token {parted} where the best token led by {best - second:.3f} logits"
    return False
