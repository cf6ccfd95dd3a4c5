"""The quality proxy: cheap, deterministic, sensitive to engine settings and to sampling values.

Two parts, both run in the trial's own context:

* **Fidelity** (engine settings): the trial teacher-forces a fixed evaluation text and its
  next-token distributions are compared with a reference run of the same model (f16 KV cache,
  flash attention off, default batch sizes): mean and p99 KL divergence, and top-1 agreement.
  The reference keeps the top-K log-probabilities per position plus the tail mass, cached per
  model sha256 and llama_cpp version.
* **Sampling** (sampling values): short prompts with known answers and a few open prompts, with
  fixed per-prompt seeds: task accuracy, the negative log-likelihood of the generated text under
  the model's raw distribution, and the repeated-4-gram rate.

Log-probabilities come from the logits with numpy: llama-cpp-python's ``logprobs=`` path sorts
the whole 262k vocabulary in Python per token (0.28 s per token).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tuner.config import EngineConfig
from tuner.engine import Engine, Session
from tuner.errors import ConfigError
from tuner.models import tool_cache_dir

__all__ = [
    "DEFAULT_KLD_BUDGET",
    "DEFAULT_ACCURACY_FLOOR",
    "EVAL_TEXT",
    "Quality",
    "QualityBudget",
    "Reference",
    "evaluate",
    "reference_config",
    "reference_for",
]

TOP_K = 64
EVAL_TOKENS = 256
# Bump when the proxy's texts, tasks or arithmetic change: cached references then stop matching.
PROXY_VERSION = 1

# Mean KLD budget: admits flash attention (~0.006) and q8_0 K/V (~0.006) on the embedded model,
# rejects q4_0 K/V (~0.08).
DEFAULT_KLD_BUDGET = 0.03
# Task accuracy must reach this fraction of the greedy reference's accuracy.
DEFAULT_ACCURACY_FLOOR = 0.8

# Written for this project. Plain expository prose: predictable enough that a small model has
# confident next-token distributions for quantization noise to disturb.
EVAL_TEXT = (
    "A river begins as rain or melting snow high in the hills. The water gathers in small streams, "
    "and the streams join to form a larger channel that runs downhill toward the sea. Along the way "
    "the river carries sand, mud and small stones, and it drops them where the current slows, which "
    "is how deltas and sandbars are built. People have always settled beside rivers. A river gives "
    "fresh water for drinking and for crops, fish for food, and an easy road for boats. Many of the "
    "oldest cities in the world grew up on the banks of great rivers, such as the Nile in Egypt, the "
    "Tigris and the Euphrates in Mesopotamia, and the Yellow River in China. Farmers learned to dig "
    "canals that carried water away from the river to their fields, and they learned to watch the "
    "seasons, because a river that floods in spring can ruin a harvest or make the soil rich for the "
    "next one. Today rivers still matter. They turn the turbines of power stations, they carry "
    "goods on barges, and they are home to many kinds of plants and animals. Keeping a river clean "
    "is not simple. Waste from towns and chemicals from farms can wash into the water, and a dam can "
    "block the path of fish that swim upstream to lay their eggs. Scientists measure the health of "
    "a river by counting the insects that live on its bed, because some of them can only survive in "
    "clean, cold water that is rich in oxygen. When those insects return to a river that was once "
    "polluted, it is a sign that the water is getting better. In the end, a river is a long story "
    "told by the land: where it rises, where it bends, and where it finally meets the sea."
)

# (prompt, accepted answers): completions a 270M model mostly gets right greedily; an answer counts
# when one of the first generated words is accepted. Each prompt has its own fixed seed.
TASKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("The capital of France is the city of", ("paris",)),
    ("The capital of Japan is the city of", ("tokyo",)),
    ("The capital of Germany is the city of", ("berlin",)),
    ("The capital of Spain is the city of", ("madrid",)),
    ("The capital of England is the city of", ("london",)),
    ("The capital of Russia is the city of", ("moscow",)),
    ("The capital of Egypt is the city of", ("cairo",)),
    ("The capital of Italy is the city of", ("rome",)),
    ("The capital of China is the city of", ("beijing",)),
    ("On a clear day the color of the sky is", ("blue",)),
    ("The color of fresh grass is", ("green",)),
    ("Two plus two equals", ("4", "four")),
    ("A dog has four legs and a bird has", ("2", "two")),
    ("The number of days in a week is", ("7", "seven")),
    ("The opposite of hot is", ("cold",)),
    ("The opposite of up is", ("down",)),
    ("The largest planet in our solar system is", ("jupiter",)),
    ("The sun rises in the", ("east",)),
    ("The first month of the year is", ("january",)),
    ("Romeo and Juliet was written by William", ("shakespeare",)),
    ("When water freezes it turns into", ("ice",)),
    ("Bees make a sweet food called", ("honey",)),
    ("The opposite of day is", ("night",)),
    ("The star closest to the Earth is the", ("sun",)),
    ("The chemical symbol for gold is", ("au",)),
    ("Snow is usually the color", ("white",)),
    ("A triangle has this many sides:", ("3", "three")),
    ("The month after March is", ("april",)),
)
OPEN_PROMPTS = (
    "Write one sentence about the ocean:",
    "Describe a busy market in one sentence:",
    "Tell a very short story about a lost key:",
)
ANSWER_TOKENS = 4
_PUNCTUATION = str.maketrans({c: " " for c in ".,;:!?\"'()"})
OPEN_TOKENS = 24


@dataclass(frozen=True)
class QualityBudget:
    """The quality floor a trial must meet to be feasible."""

    kld_mean: float = DEFAULT_KLD_BUDGET
    accuracy_floor: float = DEFAULT_ACCURACY_FLOOR  # fraction of the greedy reference's accuracy

    def __post_init__(self) -> None:
        # The CLI passes its options straight through: a library user gets the same one line.
        if not self.kld_mean > 0:
            raise ConfigError(
                f"quality budget kld_mean={self.kld_mean} (--quality-budget) must be positive: it is the largest mean KLD a feasible trial may have",
                f"use e.g. {DEFAULT_KLD_BUDGET} (admits flash attention and q8_0 KV)",
            )
        if not 0 <= self.accuracy_floor <= 1:
            raise ConfigError(
                f"accuracy_floor={self.accuracy_floor} (--accuracy-floor) is outside [0, 1]",
                f"use e.g. {DEFAULT_ACCURACY_FLOOR} (80% of greedy decoding's accuracy)",
            )

    def constraints(self, quality: Quality, greedy_accuracy: float) -> dict[str, float]:
        """Optuna constraint values (feasible when every value is <= 0).

        Args:
            greedy_accuracy: the reference's task accuracy with greedy sampling.
        """
        return {
            "kld_mean": quality.kld_mean - self.kld_mean,
            "task_accuracy": self.accuracy_floor * greedy_accuracy - quality.task_accuracy,
        }


@dataclass(frozen=True)
class Quality:
    """The quality figures of one configuration."""

    kld_mean: float
    kld_p99: float
    top1_agreement: float
    task_accuracy: float
    gen_nll: float  # mean -log p(token) of the generated text under the model's raw distribution
    repeat4: float  # fraction of repeated 4-grams in the open generations
    seconds: float = 0.0  # cost of the quality proxy in this trial

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Reference:
    """Reference distributions of the evaluation text, and the greedy sampling scores."""

    tokens: np.ndarray  # (n,) the evaluation tokens
    top_ids: np.ndarray  # (n-1, K) reference top-K token ids per predicted position
    top_logp: np.ndarray  # (n-1, K) their log-probabilities
    greedy_accuracy: float
    greedy_nll: float

    @property
    def tail_logp(self) -> np.ndarray:
        """log of the probability mass outside the top K, per position."""
        return np.log(np.clip(1.0 - np.exp(self.top_logp).sum(axis=1), 1e-12, None))


def reference_config() -> EngineConfig:
    """The reference: f16 KV cache, flash attention off, default batch sizes, greedy sampling."""
    return EngineConfig(n_ctx=1024, n_batch=512, n_ubatch=512, flash_attn=False, temperature=0.0, seed=0)


def reference_for(engine: Engine, model_sha256: str) -> Reference:
    """The model's reference, computed once and cached: see :func:`reference_key` for what the
    cache file's name stands for."""
    path = cache_dir() / f"reference-{reference_key(model_sha256)}.npz"
    if path.is_file():
        data = np.load(path)
        return Reference(
            tokens=data["tokens"],
            top_ids=data["top_ids"],
            top_logp=data["top_logp"],
            greedy_accuracy=float(data["greedy_accuracy"]),
            greedy_nll=float(data["greedy_nll"]),
        )
    with engine.session(reference_config()) as session:
        tokens = np.array(eval_tokens(session), dtype=np.int32)
        ids, logp = [], []
        for rows in session.logits(tokens.tolist()):
            lp = _log_softmax(rows)
            top = np.argpartition(-lp, TOP_K, axis=1)[:, :TOP_K]
            top_lp = np.take_along_axis(lp, top, axis=1)
            order = np.argsort(-top_lp, axis=1)
            ids.append(np.take_along_axis(top, order, axis=1))
            logp.append(np.take_along_axis(top_lp, order, axis=1))
        accuracy, nll, _ = _sampling_scores(session)
    reference = Reference(
        tokens=tokens,
        top_ids=np.concatenate(ids)[:-1].astype(np.int32),
        top_logp=np.concatenate(logp)[:-1].astype(np.float32),
        greedy_accuracy=accuracy,
        greedy_nll=nll,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, tokens=reference.tokens, top_ids=reference.top_ids, top_logp=reference.top_logp,
             greedy_accuracy=accuracy, greedy_nll=nll)
    os.replace(tmp, path)  # atomic: concurrent workers never read half a file
    return reference


def reference_key(model_sha256: str) -> str:
    """What a reference depends on: the model, the llama.cpp build that ran it (version and the
    CPU features it was compiled for), the reference configuration, and the proxy itself."""
    import llama_cpp

    build = f"{llama_cpp.__version__}|{llama_cpp.llama_print_system_info().decode(errors='replace').strip()}"
    proxy = f"{PROXY_VERSION}|{EVAL_TEXT}|{TASKS}|{OPEN_PROMPTS}|{TOP_K}|{EVAL_TOKENS}"
    config = repr(sorted(reference_config().to_dict().items()))
    return hashlib.sha256(f"{model_sha256}|{build}|{config}|{proxy}".encode()).hexdigest()[:24]


def evaluate(session: Session, reference: Reference) -> Quality:
    """Fidelity and sampling quality of ``session``'s configuration.

    Run it after the throughput measurement in the same session: the context is warm by then.
    """
    import time

    start = time.perf_counter()
    klds, agree = [], []
    offset = 0
    n_pred = len(reference.top_ids)
    tail = reference.tail_logp
    for rows in session.logits(reference.tokens.tolist()):
        rows = rows[: max(0, n_pred - offset)]
        if not len(rows):
            break
        sl = slice(offset, offset + len(rows))
        ref_ids, ref_lp = reference.top_ids[sl], reference.top_logp[sl].astype(np.float64)
        trial_lp = (np.take_along_axis(rows, ref_ids, axis=1) - _logsumexp(rows)[:, None]).astype(np.float64)
        trial_tail = np.log(np.clip(1.0 - np.exp(trial_lp).sum(axis=1), 1e-12, None))
        kld = (np.exp(ref_lp) * (ref_lp - trial_lp)).sum(axis=1) + np.exp(tail[sl]) * (tail[sl] - trial_tail)
        klds.append(np.maximum(kld, 0.0))
        agree.append(rows.argmax(axis=1) == ref_ids[:, 0])
        offset += len(rows)
    kld_all = np.concatenate(klds)
    accuracy, nll, repeat4 = _sampling_scores(session)
    return Quality(
        kld_mean=float(kld_all.mean()),
        kld_p99=float(np.percentile(kld_all, 99)),
        top1_agreement=float(np.concatenate(agree).mean()),
        task_accuracy=accuracy,
        gen_nll=nll,
        repeat4=repeat4,
        seconds=round(time.perf_counter() - start, 3),
    )


def eval_tokens(session: Session) -> list[int]:
    return session.tokenize(EVAL_TEXT)[:EVAL_TOKENS]


def _sampling_scores(session: Session) -> tuple[float, float, float]:
    """Task accuracy, generated-text NLL and repeated-4-gram rate with the session's sampling."""
    correct, logps, repeats = 0, [], []
    for index, (prompt, answers) in enumerate(TASKS):
        out = session.generate(session.tokenize(prompt), ANSWER_TOKENS, seed=1000 + index, stop_text="\n", score=True)
        words = out.text.lower().translate(_PUNCTUATION).split()
        correct += any(word in answers for word in words)
        logps.extend(out.logprobs)
    for index, text in enumerate(OPEN_PROMPTS):
        out = session.generate(session.tokenize(text), OPEN_TOKENS, seed=2000 + index, score=True)
        logps.extend(out.logprobs)
        repeats.append(_repeat4(out.tokens))
    nll = -float(np.mean(logps)) if logps else 0.0
    return correct / len(TASKS), nll, float(np.mean(repeats)) if repeats else 0.0


def _repeat4(tokens: list[int]) -> float:
    grams = [tuple(tokens[i : i + 4]) for i in range(len(tokens) - 3)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def _logsumexp(rows: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp, one scratch buffer (the rows are n x 262k floats)."""
    top = rows.max(axis=1)
    scratch = np.subtract(rows, top[:, None])
    np.exp(scratch, out=scratch)
    return top + np.log(scratch.sum(axis=1))


def _log_softmax(rows: np.ndarray) -> np.ndarray:
    return rows - _logsumexp(rows)[:, None]


def cache_dir() -> Path:
    """Where quality references are cached: $TUNER_CACHE_DIR/quality, by default
    ~/.cache/llama-tuner/quality (XDG_CACHE_HOME respected)."""
    return tool_cache_dir() / "quality"
