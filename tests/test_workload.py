"""Workloads: request shapes as data, the objective computed from known timings, latency targets,
and the user's own requests read from JSONL."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.conftest import chat_requests
from tuner.engine import Generation
from tuner.errors import ConfigError
from tuner.measure import aggregate
from tuner.user_requests import MAX_SHAPES, from_text, read_requests, request_tokens, workload_from_requests
from tuner.vocab import Vocab
from tuner.workload import LatencyTargets, Shape, Workload, builtin_profiles, load_profile, parse_profile, requests_per_min


def _generation(prompt_ms: float, ttft_ms: float, decode_ms: float, n_prompt: int = 32, n_eval: int = 10) -> Generation:
    """Timings as llama.cpp and the wall clock would report them for one request."""
    return Generation(
        tokens=[], text="", n_prompt=n_prompt, prompt_ms=prompt_ms, n_eval=n_eval, eval_ms=decode_ms * 0.9,
        sample_ms=decode_ms * 0.1, n_sample=n_eval + 1, ttft_ms=ttft_ms, wall_prompt_ms=prompt_ms, wall_decode_ms=decode_ms,
    )


def test_requests_per_minute_is_sixty_thousand_over_the_weighted_mean_request_time():
    # a short request (1 s) three times as often as a long one (3 s): mean 1.5 s -> 40 per minute
    assert requests_per_min([1000.0, 3000.0], [0.75, 0.25]) == pytest.approx(40.0)
    assert requests_per_min([2000.0], [1.0]) == pytest.approx(30.0)


def test_the_objective_and_the_figures_from_known_timings():
    workload = Workload(shapes=(Shape(0, 32, 10, weight=3, name="a"), Shape(100, 32, 10, weight=1, name="b")), repeats=3)
    # shape a: TTFT 200 ms + decode 800 ms = 1000 ms; shape b: TTFT 1000 ms + decode 2000 ms = 3000 ms
    runs = [
        [_generation(prompt_ms=190, ttft_ms=200, decode_ms=800)] * 3,
        [_generation(prompt_ms=980, ttft_ms=1000, decode_ms=2000)] * 3,
    ]
    result = aggregate(runs, workload, config=None, clamped={})
    assert result.requests_per_min.samples == pytest.approx([40.0] * 3)  # 60 000 / (0.75 * 1000 + 0.25 * 3000)
    assert result.ttft_ms.median == pytest.approx(0.75 * 200 + 0.25 * 1000)
    assert result.prompt_tok_s.median == pytest.approx(64 / (190 + 980) * 1000)  # all prompt tokens / all prompt time
    assert result.decode_tok_s.median == pytest.approx(20 / (800 + 2000) * 1000)
    a, b = result.shapes
    assert (a.request_ms.median, b.request_ms.median) == (pytest.approx(1000.0), pytest.approx(3000.0))
    assert a.decode_tok_s.median == pytest.approx(10 / 800 * 1000)
    assert result.worst("ttft_ms") == pytest.approx(1000.0) and result.worst("decode_tok_s") == pytest.approx(5.0)


def test_every_builtin_profile_loads_and_says_where_its_numbers_come_from():
    profiles = builtin_profiles()
    assert {"chat", "rag", "summarize", "code", "long-chat"} <= set(profiles)
    for name, path in profiles.items():
        workload = load_profile(name)
        assert workload.name == name and workload.shapes
        assert sum(workload.weights) == pytest.approx(1.0)
        assert "Where the numbers come from" in path.read_text()


def test_the_profiles_differ_where_they_should():
    chat, rag, long_chat = load_profile("chat"), load_profile("rag"), load_profile("long-chat")
    assert max(s.prompt for s in rag.shapes) > 4 * max(s.prompt for s in chat.shapes)  # long prompts
    assert min(s.depth for s in long_chat.shapes) > 2 * max(s.depth for s in chat.shapes)  # deep context


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shapes: []", "non-empty 'shapes' list"),
        ("shapes:\n  - {depth: 0, prompt: 32}\n", "shape 1: 'gen' is missing"),
        ("shapes:\n  - {depth: 0, prompt: 32, gen: 8, wieght: 1}\n", "shape 1: unknown key 'wieght'"),
        ("shapes:\n  - {depth: -1, prompt: 32, gen: 8}\n", "depth=-1 must be an integer >= 0"),
        ("shapes:\n  - {depth: 0, prompt: 32, gen: 8, weight: 0}\n", "weight=0 must be a positive number"),
        ("name: x\nshape: []\n", "non-empty 'shapes' list"),
        ("shapes: [{depth: 0, prompt: 32, gen: 8}\n", "YAML syntax error"),
    ],
)
def test_a_bad_profile_is_refused_with_the_shape_it_concerns(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_profile(text, source="my.yaml")


def test_an_unknown_profile_name_lists_the_profiles():
    with pytest.raises(ConfigError, match="neither a built-in profile nor a file") as caught:
        load_profile("chatt")
    assert "chat" in caught.value.fix


def test_a_study_recorded_before_workloads_had_shapes_still_reads():
    old = {"prompt_tokens": 128, "gen_tokens": 64, "repeats": 3, "warmup": 1, "quality": True}
    workload = Workload.from_dict(old)
    assert workload.shapes == (Shape(depth=0, prompt=128, gen=64, name="custom"),)
    assert Workload.from_dict(workload.to_dict()) == workload


def test_latency_targets_become_constraints_on_the_worst_shape():
    targets = LatencyTargets(max_ttft_ms=500, min_decode_tok_s=20)
    assert targets.constraints(worst_ttft_ms=700, worst_decode_tok_s=25) == {"ttft_ms": 200, "decode_tok_s": -5}
    assert not LatencyTargets() and LatencyTargets(max_ttft_ms=1)
    with pytest.raises(ConfigError, match=r"max_ttft_ms=0 \(--max-ttft-ms\) must be positive"):
        LatencyTargets(max_ttft_ms=0)


# --- the user's own requests --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "line 2 is not JSON"),
        ('{"prompt": "hi"}', "line 2: max_tokens must be a positive integer"),
        ('{"prompt": "hi", "messages": [], "max_tokens": 4}', "line 2 needs exactly one of 'prompt' and 'messages'"),
        ('{"messages": [{"role": "robot", "content": "x"}], "max_tokens": 4}', "line 2: each message needs a role"),
        ('[1, 2]', "line 2 is not a JSON object"),
        ('{"prompt": "hi", "max_tokens": 4, "stop": [""]}', "line 2: 'stop' must be a string or a list of non-empty strings"),
        ('{"prompt": "hi", "max_tokens": 4, "stop": 3}', "line 2: 'stop' must be a string or a list of non-empty strings"),
    ],
)
def test_a_bad_request_line_is_named_by_its_number(tmp_path, line, message):
    path = tmp_path / "my.jsonl"
    path.write_text('{"prompt": "Hello", "max_tokens": 8}\n' + line + "\n")
    with pytest.raises(ConfigError, match=message):
        read_requests(path)


def test_a_request_keeps_the_applications_stop_strings(tmp_path):
    path = tmp_path / "my.jsonl"
    path.write_text('{"prompt": "Hello", "max_tokens": 8, "stop": "\\n"}\n{"messages": [{"role": "user", "content": "x"}], "max_tokens": 4, "stop": ["```", "END"]}\n')
    (plain, chat), _ = read_requests(path)
    assert plain.stop == ("\n",) and chat.stop == ("```", "END")


def test_the_users_requests_become_at_most_a_handful_of_weighted_shapes(tmp_path, model_path):
    path = chat_requests(tmp_path / "chat.jsonl")
    with Vocab(model_path) as vocab:
        workload = workload_from_requests(path, vocab, repeats=3)
        again = workload_from_requests(path, vocab, repeats=3)
    assert workload == again  # deterministic
    assert len(workload.shapes) == MAX_SHAPES
    assert sum(s.weight for s in workload.shapes) == 20  # every request is represented once
    assert workload.source["requests"] == 20 and len(workload.source["sha256"]) == 64
    assert "4 equal groups" in workload.source["sampling"]
    # a later turn of a conversation finds the earlier turns cached: depth grows with the history
    assert max(s.depth for s in workload.shapes) > min(s.depth for s in workload.shapes) > 0
    assert {s.gen for s in workload.shapes} <= {16, 24, 32, 40, 48}


def test_a_plain_prompt_is_counted_as_llama_cpp_python_tokenizes_it(tmp_path, model_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "The capital of France is", "max_tokens": 8}) + "\n")
    with Vocab(model_path) as vocab:
        workload = workload_from_requests(path, vocab)
        expected = len(vocab.tokenize("The capital of France is"))
    assert workload.shapes[0].depth == 0 and workload.shapes[0].prompt == expected and workload.shapes[0].gen == 8
    assert "all 1 requests" in workload.source["sampling"]


def test_a_workload_from_requests_keeps_their_text_for_speculation(tmp_path, model_path):
    """Each measured shape's request is kept as written (prompt or conversation, max_tokens, stop)
    with the weight of the requests it stands for, and survives the study's record."""
    path = chat_requests(tmp_path / "chat.jsonl")
    requests, _ = read_requests(path)
    with Vocab(model_path) as vocab:
        workload = workload_from_requests(path, vocab)
        shown = [request_tokens(from_text(text), vocab) for text in workload.texts]
    assert len(workload.texts) == len(workload.shapes)
    by_line = {f"line {r.line}": r for r in requests}
    for shape, text, tokens in zip(workload.shapes, workload.texts, shown):
        assert from_text(text) == replace(by_line[shape.name], line=1)
        assert text["weight"] == shape.weight and len(tokens) == shape.depth + shape.prompt
    assert Workload.from_dict(workload.to_dict()) == workload


def test_the_code_edit_requests_ship_with_the_tool_and_carry_text(model_path):
    from tuner.cli._app import workload as cli_workload

    builtin = builtin_profiles(".jsonl")
    assert {"code-edit", "questions"} <= set(builtin)
    workload = cli_workload("code-edit", None, None, None, repeats=3, model_path=model_path)
    assert workload.texts and all("```python" in t["prompt"] for t in workload.texts)
    assert not load_profile("chat").texts  # shapes only: nothing to decide speculation on
