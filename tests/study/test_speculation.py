"""Speculation decided on the user's text (tuner.study.speculation): prompt lookup against none at
the preset's settings, on natural output; kept only when it beats none beyond the noise, and then
carried by the preset with its worth."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import optuna
import pytest

from tests.conftest import run_tune

from tuner.config import EngineConfig
from tuner.study import best_preset
from tuner.study.noise import beats
from tuner.server import ServerEngine
from tuner.study.speculation import LOOKUPS, SPEC_TYPES, Entry, candidates, decide, llama_candidate, measure_speculation, server_candidate
from tuner.user_requests import workload_from_requests
from tuner.vocab import Vocab

WORKLOADS = Path(__file__).resolve().parents[2] / "workloads"


def _entries(none: list[float], lookup: list[float]) -> list[Entry]:
    return [Entry("none", rounds=none, ttft_ms=[100.0] * len(none)),
            Entry("lookup 10x2", {"draft_tokens": 10, "draft_ngram": 2}, rounds=lookup, ttft_ms=[200.0] * len(lookup), drafted=100, accepted=70, identical=3, answers=3)]


def test_a_lookup_is_kept_only_when_it_beats_none_beyond_the_noise():
    faster = decide(EngineConfig(), _entries([60.0, 61.0, 59.0], [80.0, 82.0, 79.0]), rounds=3, noise=0.02)
    assert faster.kept == "lookup 10x2" and faster.why == "kept lookup 10x2: 1.34x none (1.33-1.34, 70% of drafts accepted), beyond the noise ±2.0% in 3 rounds"
    within = decide(EngineConfig(), _entries([60.0, 61.0, 59.0], [61.0, 60.0, 60.0]), rounds=3, noise=0.02)
    assert within.kept == "none" and within.why.startswith("none kept: nothing beats none beyond the noise ±2.0% (best lookup 10x2 1.02x none (0.98-1.02")
    slower_once = decide(EngineConfig(), _entries([60.0, 61.0, 59.0], [80.0, 82.0, 58.0]), rounds=3, noise=0.02)
    assert slower_once.kept == "none"  # a round that reads it slower: not a change that pays (THE tie rule)
    row = faster.table()[0]
    assert row["acceptance"] == 0.7 and row["ttft_vs_none"] == 2.0 and row["identical_answers"] == "3/3" and row["kept"]


def test_the_decision_says_on_how_many_requests_the_kept_one_is_faster_and_slower():
    """A round pools the requests, so one looping answer can carry a kept candidate (llama-server's
    ngram-mod on questions: 1.26x in all, 1.65x on one answer, 0.78x on another): the line says it."""
    entries = _entries([60.0, 61.0, 59.0], [75.0, 76.0, 74.0])
    entries[0].requests = [[60.0, 60.0, 60.0, 60.0]] * 3
    entries[1].requests = [[99.0, 62.4, 58.2, 46.8]] * 3  # 1.65x, 1.04x, 0.97x, 0.78x
    result = decide(EngineConfig(), entries, rounds=3, noise=0.05)
    assert result.kept == "lookup 10x2" and result.why.endswith("in 3 rounds; 1 of 4 requests faster, 1 slower (0.78x)")
    row = result.table()[0]
    assert row["per_request"] == [1.65, 1.04, 0.97, 0.78]  # within ±5%: 1.04x and 0.97x are neither
    assert row["requests"] == {"faster": 1, "slower": 1, "of": 4, "low": 0.78, "high": 1.65}
    entries[0].requests = [[60.0, 0.0, 60.0, 60.0]] * 3  # none answered the second request with no token: no rate to compare
    assert decide(EngineConfig(), entries, rounds=3, noise=0.05).per_request("lookup 10x2") == pytest.approx([1.65, 0.97, 0.78])


def test_the_stage_measures_none_and_each_lookup_on_the_requests_text(model_path):
    """Real engine, a code-edit request with the preset's own sampling (temperature 0.8), the same
    seed for every candidate in a round. Sampled answers need not be the same text: a verification
    batch's numerics move the probabilities a little (greedy answers are, tests/test_replay.py),
    which speculation leaves unbiased, so the rounds' ratios carry that spread too."""
    with Vocab(model_path) as vocab:
        workload = workload_from_requests(WORKLOADS / "code-edit.jsonl", vocab, max_shapes=1)
    config = EngineConfig(n_ctx=1024, n_threads=2)
    notes: list[str] = []
    result = measure_speculation(str(model_path), lambda c: llama_candidate(str(model_path), c), config, workload, candidates("llama-cpp-python"),
                                 rounds=2, noise=0.05, note=notes.append)
    assert [e.label for e in result.entries] == ["none", *(f"lookup {n}x{k}" for n, k in LOOKUPS)]
    none, *lookups = result.entries
    assert len(none.rounds) == 2 and none.drafted == 0 and none.identical == none.answers == 2
    assert none.scores_mib == config.n_batch * 262144 * 4 / 2**20  # without a draft: n_batch rows
    for entry in lookups:
        assert 0 < entry.accepted <= entry.drafted and entry.answers == 2 and len(entry.tokens) == 2
        assert len(entry.requests) == 2 and len(result.per_request(entry.label)) == len(workload.texts)
        assert entry.scores_mib == config.n_ctx * 262144 * 4 / 2**20  # logits_all: a row for every position
    paying = [e.label for e in lookups if beats(result.ratios(e.label), 0.05)]
    assert result.kept in paying if paying else result.kept == "none"
    assert len(notes) == 2 and notes[0].startswith("speculation round 1/2: none ")


def test_on_llama_server_the_stage_measures_each_spec_type_on_a_fresh_server(model_path, server_binary):
    """The same stage on llama-server: --spec-type per candidate, drafted and accepted tokens from
    the server's own timings, greedy answers the same tokens as without speculation."""
    with Vocab(model_path) as vocab:
        workload = workload_from_requests(WORKLOADS / "code-edit.jsonl", vocab, max_shapes=1)
    entries = candidates("llama-server", server_binary.flags)
    assert [e.label for e in entries] == ["none", *SPEC_TYPES] and candidates("llama-server", set()) == [Entry("none")]
    engine = ServerEngine(model_path, server_binary)
    config = EngineConfig(n_ctx=1024, n_threads=2, temperature=0.0, top_k=1)
    result = measure_speculation(str(model_path), lambda c: server_candidate(engine, c), config, workload, entries, rounds=1, noise=0.05, note=lambda _: None)
    none, simple, _ = result.entries
    assert none.drafted == 0 and len(none.rounds) == 1 and none.tokens[0] > 0
    assert 0 < simple.accepted <= simple.drafted and simple.identical == simple.answers == 1


def test_a_preset_carries_the_kept_draft_and_what_it_is_worth(cli_study, tmp_path):
    shutil.copytree(cli_study / "studies", tmp_path / "studies")
    study = optuna.load_study(study_name="guide-user", storage=f"sqlite:///{tmp_path / 'studies' / 'tuner.db'}")
    plain = best_preset(study)
    assert not plain.draft and "speculation" not in plain.measured
    at = plain.config()
    study.set_user_attr("speculation", decide(at, _entries([60.0, 61.0, 59.0], [80.0, 82.0, 79.0]), rounds=3, noise=0.02).to_dict())
    drafted = best_preset(study)
    assert drafted.draft == {"num_pred_tokens": 10, "max_ngram_size": 2} and drafted.engine["logits_all"] is True
    assert drafted.measured["speculation"]["kept"] == "lookup 10x2"
    assert drafted.measured["speculation"]["candidates"][0]["worth"] == {"median": 1.339, "low": 1.333, "high": 1.344}
    shown = run_tune("show", "guide-user", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "speculation on your requests' text (llama-cpp-python, none and each candidate at the preset's settings, 3 interleaved rounds)" in shown.stdout
    assert re.search(r"lookup 10x2\s+1\.339x \(1\.33-1\.34\)\s+-\s+2\.00x\s+70%\s+3/3\s+kept", shown.stdout)  # "-": no per-request figures
    entries = _entries([60.0, 61.0, 59.0], [80.0, 82.0, 79.0])
    entries[0].requests, entries[1].requests = [[60.0, 60.0]] * 3, [[90.0, 57.0]] * 3  # 1.50x and 0.95x
    study.set_user_attr("speculation", decide(at, entries, rounds=3, noise=0.02).to_dict())
    shown = run_tune("show", "guide-user", cwd=tmp_path).stdout
    assert re.search(r"1\.339x \(1\.33-1\.34\)\s+1/1 of 2 \(0\.95-1\.50x\)\s+2\.00x", shown)
    assert "beyond the noise ±2.0% in 3 rounds; 1 of 2 requests faster, 1 slower (0.95x)" in shown
    study.set_user_attr("speculation", decide(at, _entries([60.0, 61.0, 59.0], [60.0, 61.0, 59.0]), rounds=3, noise=0.02).to_dict())
    within = best_preset(study)
    assert not within.draft and within.measured["speculation"]["kept"] == "none"
    other = EngineConfig.from_dict({**at.to_dict(), "n_threads": (at.n_threads or 1) + 1})
    study.set_user_attr("speculation", decide(other, _entries([60.0], [90.0]), rounds=1, noise=0.02).to_dict())
    assert not best_preset(study).draft and "speculation" not in best_preset(study).measured  # measured at other settings


def test_a_study_of_request_shapes_says_speculation_was_not_measured(cli_study):
    assert "speculation: not measured, the workload is request shapes without text" in (cli_study / "start.out").read_text()
