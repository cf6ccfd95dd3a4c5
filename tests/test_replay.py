"""The user's requests replayed as written on natural output (tuner.replay): what speculation is
measured on. Real engine: a plain llama_cpp.Llama on the embedded model."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import same_or_parted_at_a_near_tie
from tuner.config import EngineConfig
from tuner.errors import ConfigError
from dataclasses import replace

from tuner.replay import CountingLookup, acceptance, open_llama, replay
from tuner.user_requests import read_requests, request_tokens
from tuner.vocab import Vocab

WORKLOADS = Path(__file__).resolve().parents[1] / "workloads"
GREEDY = EngineConfig(n_ctx=2048, temperature=0.0, top_k=1)


@pytest.fixture(scope="module")
def vocab(model_path):
    return Vocab(model_path)


@pytest.fixture(scope="module")
def plain(model_path):
    llm, _ = open_llama(model_path, GREEDY)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def lookup(model_path):
    llm, counter = open_llama(model_path, replace(GREEDY, draft_tokens=10, draft_ngram=2))
    yield llm, counter
    llm.close()


def test_prompt_lookup_drafts_from_the_prompt_and_leaves_greedy_text_unchanged(plain, lookup, vocab, engine):
    """Code to rewrite: the answer quotes the prompt, so lookup proposes drafts and sampling keeps
    some. Under greedy sampling the text is the one decoding without speculation gives, except
    where the two best tokens were a near-tie: a verification batch's numerics differ a little
    from one-token decoding's (measured here: one answer in four, at a margin of 0.07 logits),
    and from there the answers part. benchmarks/prompt_lookup.py measures what it is worth."""
    requests, _ = read_requests(WORKLOADS / "code-edit.jsonl")
    llm, counter = lookup
    identical = 0
    for request in requests:
        tokens = request_tokens(request, vocab)
        alone = replay(plain, tokens, request.max_tokens, request.stop, GREEDY)
        drafted = replay(llm, tokens, request.max_tokens, request.stop, GREEDY, counter)
        assert alone.text.strip() and alone.drafted == 0 and acceptance([alone]) is None
        assert 0 < drafted.accepted <= drafted.drafted
        assert drafted.accepted < len(drafted.ids)  # each verification batch samples a token of its own
        identical += same_or_parted_at_a_near_tie(engine, tokens, list(alone.ids), list(drafted.ids))
        assert drafted.text == alone.text or drafted.ids != alone.ids
    assert identical >= len(requests) // 2


def test_an_answer_ends_where_the_model_ends_it(plain, vocab):
    """End-of-generation is not suppressed: the embedded base model (no chat template: llama-2's
    format, as create_chat_completion renders it) ends this conversation at once, and the reply
    says so, where decoding past the end would have timed 200 tokens the user never gets."""
    from tuner.user_requests import Request

    request = Request(line=1, max_tokens=200, messages=({"role": "user", "content": "What is the capital of France?"},))
    reply = replay(plain, request_tokens(request, vocab), request.max_tokens, request.stop, GREEDY)
    assert reply.finish == "stop" and reply.tokens < request.max_tokens
    assert reply.text == "" and reply.tokens == 0 and reply.ttft_ms > 0


def test_an_answer_ends_at_its_stop_string_and_leaves_it_out(plain, vocab):
    requests, _ = read_requests(WORKLOADS / "questions.jsonl")
    request = requests[1]
    reply = replay(plain, request_tokens(request, vocab), request.max_tokens, ("\n",), GREEDY)
    assert "\n" not in reply.text
    assert reply.finish == "stop" or reply.tokens == request.max_tokens


def test_acceptance_counts_the_tokens_produced_between_proposals(model_path):
    """Each verification batch yields one sampled token plus the accepted part of its draft: the
    history grew 1 + accepted tokens from one proposal to the next; the last proposal's accepted
    part is what was produced after it, cut where the answer ended."""
    counter = CountingLookup(tokens=4, ngram=2)
    counter.proposals = [(100, 4), (105, 4), (106, 0), (107, 4)]
    assert counter.counts(produced=109) == (12, 4 + 0 + 0 + 1)
    assert counter.proposals == []  # the next request counts from nothing


def test_speculation_answers_a_request_longer_than_n_batch(lookup, vocab):
    """Llama(draft_model=...) alone sizes its scores array by n_batch and fails past it: a preset
    with a draft asks for logits_all=True too (an array of n_ctx rows), and open_llama builds
    the Llama from the preset's keywords."""
    llm, counter = lookup
    assert llm.scores.shape[0] == GREEDY.n_ctx
    tokens = vocab.tokenize("The lighthouse keeper kept a careful log. " * 70)
    assert len(tokens) > GREEDY.n_batch
    reply = replay(llm, tokens, 8, (), GREEDY, counter)
    assert reply.tokens == 8 and reply.finish == "length"


def test_a_request_longer_than_the_context_is_refused_in_one_line(plain):
    with pytest.raises(ConfigError, match="n_ctx=2048 is too small"):
        replay(plain, [1] * 2000, 100, (), GREEDY)
