"""The sampler chain's distribution, computed: checked against llama.cpp's own samplers.

The chain llama.cpp builds for a configuration is sampled many times from one position's real
logits; the empirical frequencies must match the computed probabilities within a binomial bound.
"""

from __future__ import annotations

import math

import llama_cpp
import numpy as np
import pytest

from tuner.config import EngineConfig
from tuner.sampling import TOP_STORED, Sampling, chain_distribution

DRAWS = 800


def _frequencies(session, history: list[int], draws: int) -> dict[int, int]:
    """Tokens llama.cpp's chain (the engine's, as Llama builds it) samples from the context's last
    logits, one fresh chain and seed per draw, after accepting ``history`` into its penalties."""
    counts: dict[int, int] = {}
    for seed in range(draws):
        chain = session._sampler(seed)
        try:
            for token in history:
                llama_cpp.llama_sampler_accept(chain.sampler, token)
            token = chain.sample(session.context, -1)
        finally:
            chain.close()
        counts[token] = counts.get(token, 0) + 1
    return counts


@pytest.mark.parametrize(
    "settings",
    [
        {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05},  # llama-cpp-python's defaults
        {"temperature": 1.3, "top_k": 100, "top_p": 1.0, "min_p": 0.0},  # hot, truncated only by top_k
        {"temperature": 0.6, "top_k": 10, "top_p": 0.8, "min_p": 0.0},  # the guide card's sampling
        {"temperature": 1.0, "top_k": 60, "top_p": 0.97, "min_p": 0.02, "repeat_penalty": 1.3},
    ],
)
def test_computed_probabilities_match_llama_cpps_samplers(engine, settings):
    values = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0, **settings}
    with engine.session(EngineConfig(n_ctx=512, n_threads=2, **settings)) as session:
        tokens = session.tokenize("The lighthouse keeper wrote in his log that the sea was")
        session.prefill(tokens)  # the last prompt position's logits are the context's last
        n_vocab = engine.model.n_vocab()
        row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(session.context.ctx, -1), shape=(n_vocab,)).astype(np.float64)
        history = tokens[-8:] if values["repeat_penalty"] != 1.0 else []
        counts = _frequencies(session, history, DRAWS)
    ids = np.argpartition(-row, TOP_STORED)[:TOP_STORED]
    lse = float(row.max() + np.log(np.exp(row - row.max()).sum()))
    chain = chain_distribution(ids, row[ids].astype(np.float32), lse, Sampling(**values), history=history)
    computed = dict(zip(chain.ids.tolist(), chain.probs.tolist()))
    assert set(counts) <= set(computed), "llama.cpp sampled a token the computed chain cannot emit"
    checked = 0
    for token, p in computed.items():
        if p < 0.01:
            continue
        bound = 4.5 * math.sqrt(p * (1 - p) / DRAWS) + 1 / DRAWS  # ~4.5 sigma: a false alarm in ~1 in 100 000 checks
        assert abs(counts.get(token, 0) / DRAWS - p) <= bound, (token, counts.get(token, 0) / DRAWS, p)
        checked += 1
    assert checked >= 2  # the position is uncertain enough for the check to mean something


def test_greedy_is_the_highest_logit_after_the_repeat_penalty():
    ids, logits = np.array([7, 3, 9]), np.array([5.0, 4.0, -1.0], dtype=np.float32)
    greedy = chain_distribution(ids, logits, 6.0, Sampling(0.0, 40, 0.95, 0.05))
    assert greedy.ids.tolist() == [7] and greedy.probs.tolist() == [1.0]
    penalized = chain_distribution(ids, logits, 6.0, Sampling(0.0, 40, 0.95, 0.05, repeat_penalty=2.0), history=[7])
    assert penalized.ids.tolist() == [3]  # 5.0 / 2 = 2.5 < 4.0


def test_top_k_top_p_min_p_and_temperature_in_llama_cpps_order():
    ids = np.arange(5)
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.06, 0.04], dtype=np.float32))  # raw probabilities
    lse = 0.0
    # top_k 4, then top_p 0.85 over the renormalized four: 0.4/0.96, +0.3/0.96, +0.2/0.96 -> crosses at the third
    kept = chain_distribution(ids, logits, lse, Sampling(1.0, 4, 0.85, 0.0))
    assert kept.ids.tolist() == [0, 1, 2]
    assert kept.probs.tolist() == pytest.approx([0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9])
    # min_p 0.6 keeps logits within log(0.6) of the best: 0.4 and 0.3 (0.3 >= 0.24), not 0.2
    assert chain_distribution(ids, logits, lse, Sampling(1.0, 0, 1.0, 0.6)).ids.tolist() == [0, 1]
    # temperature comes last: it reshapes what truncation kept, it does not change what is kept
    hot = chain_distribution(ids, logits, lse, Sampling(2.0, 3, 1.0, 0.0))
    assert hot.ids.tolist() == [0, 1, 2] and hot.probs[0] < kept.probs[0]
    assert hot.kept_mass == pytest.approx(0.9)
