"""The bad-input catalogue: one line saying what is wrong and how to fix it, exit code 2, no
traceback, and the existing storage left exactly as it was."""

from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path

import pytest

from tests.conftest import SMALL_ARGS, run_tune


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, model_path) -> Path:
    """Storage with three studies: 'base' (1 completed trial), 'empty' (its only trial failed),
    and 'moved' (started on a copy of the model that was then deleted)."""
    cwd = tmp_path_factory.mktemp("bad")
    ok = run_tune("start", "--trials", "1", "--study", "base", *SMALL_ARGS, "--no-quality", cwd=cwd)
    assert ok.returncode == 0, ok.stderr
    # 400 generated tokens cannot finish within the 1 s trial timeout: the only trial fails, recorded
    empty = run_tune(
        "start", "--trials", "1", "--study", "empty", "--prompt-tokens", "64", "--gen-tokens", "400", "--trial-timeout", "1",
        "--no-quality", cwd=cwd,
    )
    assert empty.returncode == 0, empty.stderr
    assert "FAIL: the trial timed out after 1 s" in empty.stdout
    copy = cwd / "copy.gguf"
    shutil.copy(model_path, copy)
    moved = run_tune("start", "--trials", "1", "--study", "moved", "--model", str(copy), *SMALL_ARGS, "--no-quality", cwd=cwd)
    assert moved.returncode == 0, moved.stderr
    copy.unlink()
    altered = cwd / "altered.gguf"
    data = bytearray(model_path.read_bytes())
    data[-1] ^= 0xFF
    altered.write_bytes(bytes(data))
    (cwd / "bad").mkdir()
    files = {
        "syntax.yaml": "params:\n  n_threads: {low: 1, high: 2\n",
        "unknown.yaml": "params:\n  n_treads: {low: 1, high: 2}\n",
        "minmax.yaml": "params:\n  n_batch: {low: 512, high: 64}\n",
        "empty.yaml": "params:\n  n_ctx: {choices: []}\n",
        "types.yaml": "params:\n  flash_attn: {choices: [true, 3]}\n",
        "notgguf.gguf": "this is text, not a model",
        "preset-keys.yaml": f"model: {model_path}\nengine: {{n_ctx: 512, cont_batching: true}}\nsampling: {{}}\n",
        "preset-types.yaml": f"model: {model_path}\nengine: {{n_ctx: lots}}\nsampling: {{}}\n",
        "notes.db": "not a database",
        "requests.jsonl": '{"prompt": "Hello", "max_tokens": 8}\n{"prompt": "Hi", "max_tokens": 4}\n{"prompt": "oops"\n',
        "huge.yaml": "name: huge\nshapes:\n  - {depth: 100000, prompt: 32, gen: 8}\n",
        "list.yaml": "- n_ctx: 4096\n- n_threads: 8\n",
        "baseline-keys.yaml": "n_ctx: 4096\nn_treads: 8\n",
        "baseline-ctx.json": '{"n_ctx": 16, "n_threads": 2}\n',
    }
    for name, text in files.items():
        (cwd / "bad" / name).write_text(text)
    (cwd / "bad" / "truncated.gguf").write_bytes(model_path.read_bytes()[: 1 << 20])
    return cwd


def _digest(cwd: Path) -> str:
    return hashlib.sha256((cwd / "studies" / "tuner.db").read_bytes()).hexdigest()


def _gpu_build() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


CASES = [
    # (arguments, fragments of the one-line message)
    (["start", "--model", "bad/missing.gguf"], ["does not exist", "--model"]),
    (["start", "--model", "bad"], ["is a directory", ".gguf"]),
    (["start", "--model", "bad/notgguf.gguf"], ["not a GGUF file", "convert"]),
    (["start", "--model", "bad/truncated.gguf"], ["truncated", "download"]),
    (["start", "--space", "bad/syntax.yaml"], ["YAML syntax error at line", "fix the YAML"]),
    (["start", "--space", "bad/unknown.yaml"], ["unknown parameter 'n_treads'", "n_threads"]),
    (["start", "--space", "bad/minmax.yaml"], ["low=512 is greater than high=64"]),
    (["start", "--space", "bad/empty.yaml"], ["non-empty list"]),
    (["start", "--space", "bad/types.yaml"], ["3 has the wrong type for flash_attn", "true or false"]),
    (["start", "--space", "gpu9000"], ["neither a built-in space", "cpu"]),
    # a GPU space on this CPU-only build (a GPU build would run it)
    *([(["start", "--space", "rtx4090"], ["space 'rtx4090' offloads layers to a GPU, but this llama-cpp-python build has no GPU offload", "--space cpu"])]
      if not _gpu_build() else []),
    (["start", "--storage", "not a url"], ["not a valid SQLAlchemy URL"]),
    (["start", "--storage", "redis://localhost/0"], ["'redis'", "does not support"]),
    (["start", "--storage", "sqlite:///bad"], ["is a directory"]),
    (["start", "--storage", "sqlite:///bad/notes.db"], ["not a SQLite database"]),
    (["start", "--trials", "0"], ["trials=0 (--trials)"]),
    (["start", "--trials", "-2"], ["trials=-2 (--trials)"]),
    (["start", "--repeats", "2"], ["too few", "3 or more"]),
    (["start", "--prompt-tokens", "100000"], ["needs 100065 tokens, more than the model's training context (32768)", "shorten"]),
    (["start", "--trial-timeout", "0"], ["--trial-timeout"]),
    (["start", "--study", "base"], ["already exists", "tune resume base"]),
    (["resume", "nope"], ["study 'nope' does not exist", "base"]),
    (["show", "nope"], ["study 'nope' does not exist"]),
    (["export", "nope"], ["study 'nope' does not exist"]),
    (["resume", "base", "--trials", "0"], ["trials=0 (--trials)"]),
    (["export", "empty"], ["no completed trial", "tune resume empty"]),
    (["resume", "moved"], ["does not exist", "pass the study's model file with --model"]),
    (["resume", "base", "--model", "altered.gguf"], ["is not the model study 'base' was started with"]),
    (["bench", "--preset", "bad/preset-keys.yaml"], ["unknown engine key 'cont_batching'"]),
    (["bench", "--preset", "bad/preset-types.yaml"], ["n_ctx='lots' has the wrong type"]),
    (["bench", "--preset", "bad/none.yaml"], ["does not exist", "tune export"]),
    (["bench", "--set", "type_v=q8_0"], ["needs flash_attn: true"]),
    (["bench", "--set", "n_threads"], ["not KEY=VALUE"]),
    (["start", "--workload", "bad/requests.jsonl"], ["requests.jsonl line 3 is not JSON", "one JSON object per line"]),
    (["bench", "--workload", "bad/requests.jsonl"], ["requests.jsonl line 3 is not JSON"]),
    (["start", "--workload", "chatty"], ["'chatty' is neither a built-in profile nor a file", "chat"]),
    (["start", "--workload", "bad/huge.yaml"], ["needs 100041 tokens, more than the model's training context (32768)"]),
    (["start", "--n-ctx", "0"], ["--n-ctx 0 is not a context size", "--n-ctx 4096"]),
    (["start", "--n-ctx", "40000"], ["--n-ctx 40000 is above the model's training context (32768 tokens)", "--n-ctx 32768 or less"]),
    (["start", "--n-ctx", "16", *SMALL_ARGS], ["--n-ctx 16 cannot hold the workload: its largest request needs 41 tokens", "--n-ctx 41 or more"]),
    (["start", "--baseline", "bad/list.yaml"], ["baseline file bad/list.yaml is not a mapping of settings", "llama_cpp.Llama keywords"]),
    (["start", "--baseline", "bad/baseline-keys.yaml"], ["unknown key 'n_treads' in baseline file bad/baseline-keys.yaml", "did you mean 'n_threads'?"]),
    (["start", "--baseline", "bad/none.yaml"], ["baseline file bad/none.yaml does not exist"]),
    (["start", "--baseline", "bad/baseline-ctx.json", *SMALL_ARGS], ["your baseline's n_ctx 16 cannot hold the workload", "raise n_ctx in the baseline file"]),
    (["start", "--workload", "rag", "--prompt-tokens", "32"], ["both describe the requests", "give one of them"]),
    (["start", "--max-ttft-ms", "0"], ["max_ttft_ms=0.0 (--max-ttft-ms) must be positive"]),
    (["start", "--quality-budget", "0"], ["kld_mean=0.0 (--quality-budget) must be positive"]),
    (["start", "--accuracy-floor", "1.5"], ["accuracy_floor=1.5 (--accuracy-floor) is outside [0, 1]"]),
    (["start", "--confirm-rounds", "2"], ["confirm_rounds=2 (--confirm-rounds) is too few", "3 or more"]),
    (["resume", "base", "--confirm-rounds", "-1"], ["confirm_rounds=-1 (--confirm-rounds) is negative", "0 to skip"]),
    (["confirm", "base", "--rounds", "0"], ["rounds=0 (--rounds) measures nothing", "3 or more"]),
    (["confirm", "base", "--candidates", "0"], ["candidates=0 (--candidates) re-measures nothing", "1 or more"]),
    (["explain", "base", "--audit-guide", "--rounds", "1"], ["rounds=1 (--rounds) is too few", "3 or more"]),
    (["list", "--storage", "mysql+nodriver://u:secret@localhost/x"], ["no driver 'mysql+nodriver'"]),
    # mysqlclient is not a dependency: its driver is missing, as psycopg would be without [postgres]
    (["list", "--storage", "mysql://u:secret@127.0.0.1:1/x"], ["no database driver", "mysqlclient"]),
    (["list", "--storage", "postgresql://u:secret@127.0.0.1:1/x"], ["cannot open storage", "u:***@", "check the URL"]),
]


@pytest.mark.parametrize(("args", "fragments"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input(workdir, args, fragments):
    before = _digest(workdir)
    result = run_tune(*args, cwd=workdir, timeout=120)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and " — " in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == "", "every input is checked before anything is printed"
    for fragment in fragments:
        assert fragment in lines[0]
    assert "secret" not in result.stderr + result.stdout
    assert _digest(workdir) == before, "the storage changed"


def test_studies_directory_that_cannot_be_created(tmp_path):
    (tmp_path / "studies").write_text("a file where the studies directory should be")
    result = run_tune("start", "--trials", "1", *SMALL_ARGS, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: cannot create the directory studies")
    assert (tmp_path / "studies").read_text().startswith("a file")


def test_dashboard_port_in_use(workdir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_tune("dashboard", "--port", str(busy.getsockname()[1]), cwd=workdir, timeout=60)
    assert result.returncode == 2 and "pick another --port" in result.stderr
