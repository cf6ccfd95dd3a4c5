"""`tune start --workload ...` through the real CLI: profiles, the user's own requests, latency
targets; every trial records the objective and its per-shape figures."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from tests.conftest import chat_requests, run_tune

# --no-racing: every trial completes with all its figures, which is what these tests read (racing
# may stop a trial after two repetitions; tests/study/test_racing.py covers it).
SPEED = ["--no-quality", "--confirm-rounds", "0", "--seed", "1", "--no-racing"]


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, object]:
    """Three short speed-only studies in one storage: the rag and long-chat profiles (the defaults
    baseline only: their long requests are costly), and a file of 20 chat requests (3 trials);
    their `tune start` output kept."""
    cwd = tmp_path_factory.mktemp("workloads")
    chat_requests(cwd / "my.jsonl", shortest_answer=4)  # answers of 4-12 tokens: 25 s instead of 70
    outputs = {}
    for name, workload, trials in (("rag", "rag", "1"), ("long", "long-chat", "1"), ("mine", "my.jsonl", "3")):
        result = run_tune("start", "--study", name, "--workload", workload, "--trials", trials, *SPEED, cwd=cwd)
        assert result.returncode == 0, result.stderr
        outputs[name] = result.stdout
    return {"cwd": cwd, "out": outputs}


def _trials(cwd: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{cwd / 'studies' / 'tuner.db'}")
    return [t for t in study.trials if t.state.name == "COMPLETE"]


@pytest.mark.parametrize(("name", "shapes", "trials"), [("rag", 1, 1), ("long", 1, 1), ("mine", 4, 3)])
def test_every_trial_records_the_objective_and_each_shapes_figures(studies, name, shapes, trials):
    completed = _trials(studies["cwd"], name)
    assert len(completed) == trials
    for trial in completed:
        m = trial.user_attrs["measurement"]
        assert trial.values[0] == pytest.approx(m["requests_per_min"]["median"])
        assert len(m["shapes"]) == shapes
        for figures in m["shapes"]:
            shape = figures["shape"]
            assert figures["context_tokens"] == shape["depth"] + shape["prompt"]  # read from llama.cpp
            for metric in ("decode_tok_s", "prompt_tok_s", "ttft_ms", "request_ms"):
                assert len(figures[metric]["samples"]) == 3 and figures[metric]["median"] > 0


def test_the_defaults_run_at_the_required_context_which_holds_a_deep_workload(studies):
    defaults = _trials(studies["cwd"], "long")[0]
    assert defaults.user_attrs["baseline"] == "defaults"
    # 1536 + 32 + 64 + 1 tokens needed; the required context is the default 4096, not the smallest that fits
    assert defaults.user_attrs["measurement"]["effective"]["n_ctx"] == 4096


def test_start_prints_the_workload_and_progress_in_requests_per_minute(studies):
    out = studies["out"]
    assert "workload: rag — 1 request shape(s)" in out["rag"]
    assert "question-with-passages: depth 64 + prompt 512 -> gen 32" in out["rag"]
    assert "deep-turn: depth 1536 + prompt 32 -> gen 64" in out["long"]
    assert "from my.jsonl" in out["mine"] and "20 requests sorted by size in 4 equal groups" in out["mine"]
    progress = [line for line in out["mine"].splitlines() if line.startswith("[")]
    assert len(progress) == 3 and all("requests/min" in line and "decode" in line and "prompt" in line for line in progress)
    assert "per request shape (medians):" in out["mine"]


def test_a_latency_target_no_trial_meets_makes_every_trial_infeasible_with_its_reason(tmp_path):
    result = run_tune("start", "--study", "fast", "--prompt-tokens", "16", "--gen-tokens", "4", "--max-ttft-ms", "1", "--trials", "3", *SPEED, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "latency targets: time to first token <= 1 ms on every request shape" in result.stdout
    trials = _trials(tmp_path, "fast")
    assert trials and all(t.user_attrs["feasible"] is False for t in trials)
    assert all("(--max-ttft-ms)" in t.user_attrs["infeasible_reason"] for t in trials)
    exported = run_tune("export", "fast", cwd=tmp_path)
    assert exported.returncode == 2 and "no feasible trial" in exported.stderr
