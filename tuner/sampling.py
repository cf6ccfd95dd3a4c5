"""The sampler chain's distribution, computed instead of sampled.

llama-cpp-python (and the engine) sample with llama.cpp's chain: repeat penalty -> top_k ->
typical (p = 1: no effect) -> top_p -> min_p -> temperature -> dist. Given one position's raw
logits, :func:`chain_distribution` returns the tokens the chain can emit and the probability of
each, following llama.cpp's own code (src/llama-sampler.cpp):

* penalties: a token seen in the last 64 tokens has its logit divided by ``repeat_penalty`` when
  positive, multiplied when negative;
* top_k <= 0 keeps everything; else the k highest logits;
* top_p >= 1 keeps everything; else the softmax of the remaining logits (no temperature), sorted,
  and the shortest prefix whose probabilities sum to at least top_p;
* min_p <= 0 keeps everything; else the logits >= the highest + log(min_p);
* temperature divides what is left (temperature 0: greedy, the highest logit);
* dist samples from the softmax of the result.

Only the top :data:`TOP_STORED` logits of a position need to be known for a chain whose top_k is
at most that (the search spaces' top_k is at most 100): the probabilities are then exact. With a
larger or no top_k the tail beyond them is left out, and the result says how much raw mass that
was (``tail``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TOP_STORED", "ChainDistribution", "Sampling", "chain_distribution"]

TOP_STORED = 128
PENALTY_LAST_N = 64  # llama-cpp-python's last_n_tokens_size


@dataclass(frozen=True)
class Sampling:
    """The sampling values the chain uses."""

    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repeat_penalty: float = 1.0


@dataclass(frozen=True)
class ChainDistribution:
    """The tokens the chain can emit at one position and their probabilities (summing to 1)."""

    ids: np.ndarray
    probs: np.ndarray
    raw_logp: np.ndarray  # log-probability of each kept token under the model's raw distribution
    tail: float  # raw probability mass beyond the stored logits that a wide chain would also keep

    @property
    def kept_mass(self) -> float:
        """Raw probability mass of the tokens the chain can emit."""
        return float(np.exp(self.raw_logp).sum())

    @property
    def expected_nll(self) -> float:
        """E[-log p_raw(token)] over the chain's distribution: how far from the model's own choice
        sampled text strays (greedy: the top token's NLL; a hot, untruncated chain: high)."""
        return float(-(self.probs * self.raw_logp).sum())

    def probability_of(self, token_ids: set[int]) -> float:
        return float(sum(p for t, p in zip(self.ids, self.probs) if int(t) in token_ids))


def chain_distribution(
    ids: np.ndarray, logits: np.ndarray, lse: float, sampling: Sampling, history: list[int] | None = None
) -> ChainDistribution:
    """The chain's distribution at one position.

    Args:
        ids, logits: the position's highest raw logits (any order) and their token ids.
        lse: log-sum-exp of the position's full raw logits (the raw distribution's normalizer).
        history: the tokens before this position the repeat penalty sees (its last 64 count).
    """
    ids = np.asarray(ids, dtype=np.int64)
    raw = np.asarray(logits, dtype=np.float32)
    z = raw.copy()
    if sampling.repeat_penalty != 1.0 and history:
        seen = np.isin(ids, np.asarray(history[-PENALTY_LAST_N:], dtype=np.int64))
        z = np.where(seen, np.where(z > 0, z / np.float32(sampling.repeat_penalty), z * np.float32(sampling.repeat_penalty)), z)
    order = np.argsort(-z, kind="stable")
    ids, z, raw = ids[order], z[order], raw[order]
    stored_all = True
    if sampling.temperature <= 0:
        keep = 1
    else:
        keep = len(z)
        if sampling.top_k > 0:
            keep = min(keep, sampling.top_k)
        else:
            stored_all = False
        if sampling.top_p < 1.0:
            p = _softmax(z[:keep])
            cum = np.cumsum(p, dtype=np.float32)
            keep = min(keep, int(np.searchsorted(cum, np.float32(sampling.top_p), side="left")) + 1)
        if sampling.min_p > 0.0:
            threshold = z[0] + np.float32(np.log(sampling.min_p))
            keep = max(1, min(keep, int((z[:keep] >= threshold).sum())))
    kept_z = z[:keep]
    probs = np.array([1.0]) if sampling.temperature <= 0 else _softmax(kept_z / np.float32(sampling.temperature))
    raw_logp = raw[:keep].astype(np.float64) - lse
    tail = 0.0 if stored_all or keep < len(z) else max(0.0, 1.0 - float(np.exp(raw.astype(np.float64) - lse).sum()))
    return ChainDistribution(ids=ids[:keep], probs=probs, raw_logp=raw_logp, tail=tail)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z.astype(np.float64) - float(z.max()))
    return e / e.sum()
