"""The quality proxy: deterministic, cheap, sensitive to engine settings and to sampling values.

Two parts, both computed from the model's logits, never from sampled text:

* **Fidelity** (engine settings): a fixed evaluation text is teacher-forced and its next-token
  distributions are compared with a reference run of the same model (f16 KV cache, flash
  attention off, no offload): mean and p99 KL divergence, and top-1 agreement.
* **Sampling** (sampling values): for short prompts with known answers, the probability that the
  configured sampler chain's first token starts an accepted answer (expected task accuracy); over
  the evaluation text, the expected negative log-likelihood, under the model's raw distribution,
  of the token the chain would emit (expected NLL), and the raw probability mass the chain keeps.
  The chain's distribution is computed as llama.cpp's samplers compute it (:mod:`tuner.sampling`),
  so the same configuration always gets the same figures.

Logits depend only on the settings that change llama.cpp's arithmetic: flash attention, the KV
cache types and GPU offload (:func:`numerics_key`). Measured on the embedded model: threads, n_ctx
and the batch sizes leave the evaluation text's logits bit for bit unchanged, except that
n_ubatch values whose ubatches are not a multiple of 4 rows (17, 27, 31, 33) move logits by up to
2.3 through the matmul kernels' remainder path — a per-prompt-length effect every setting meets on
real prompts of varying length, not a property of the setting. So the proxy evaluates with fixed
batches (n_batch = n_ubatch = 512) in a context of the trial's arithmetic settings, and caches the
logits it needs (the top :data:`~tuner.sampling.TOP_STORED` per position) per model, llama.cpp
build, proxy version and numerics key, in memory and on disk: a change of sampling values, threads
or batch sizes then costs only numpy.

Version 1 of the proxy (studies made before this one) sampled answers and texts once with fixed
seeds; those trials keep their figures, labelled ``version: 1``.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from tuner.config import EngineConfig
from tuner.engine import Engine, Session
from tuner.errors import ConfigError
from tuner.models import tool_cache_dir
from tuner.sampling import TOP_STORED, Sampling, chain_distribution

__all__ = [
    "DEFAULT_ACCURACY_FLOOR",
    "DEFAULT_KLD_BUDGET",
    "EVAL_TEXT",
    "EVAL_TOKENS",
    "PROXY_VERSION",
    "TASKS",
    "Logits",
    "Quality",
    "QualityBudget",
    "Reference",
    "evaluate",
    "numerics_key",
    "reference_config",
    "reference_for",
    "sampling_figures",
]

PROXY_VERSION = 2  # bump when texts, tasks or arithmetic change: cached logits then stop matching
KLD_TOP = 64  # reference positions' top tokens the KL divergence is computed over (+ the tail)
EVAL_TOKENS = 256
QUALITY_BATCH = 512  # fixed n_batch = n_ubatch of the quality pass (see the module docstring)
ROW_BLOCK = 4  # logit rows per numpy pass in _top (4 x 262k floats: 4 MiB)
# The settings that change llama.cpp's arithmetic in the proxy's pass (see the module docstring):
# attention kernel, KV cache precision, and where layers and the KV cache run (GPU offload).
NUMERICS_KEYS = ("flash_attn", "type_k", "type_v", "offload_kqv", "op_offload", "n_gpu_layers", "main_gpu", "split_mode")

# Mean KLD budget: admits flash attention (~0.006) and q8_0 K/V (~0.006) on the embedded model,
# rejects q4_0 K/V (~0.08).
DEFAULT_KLD_BUDGET = 0.03
# Expected task accuracy must reach this fraction of greedy decoding's. On the embedded model
# llama-cpp-python's default sampling (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05) reaches
# 0.80 and the guide card's 0.91; flash attention or a q8_0 KV cache moves it by about 0.01; an
# untruncated temperature 1.5 falls to 0.32. The floor sits below the defaults by more than the
# arithmetic's effect, so it judges sampling values, not kernels.
DEFAULT_ACCURACY_FLOOR = 0.75

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

# (prompt, accepted answers): completions a 270M model mostly gets right greedily. An answer counts
# when the first generated token starts it: the token's text, lower-cased and stripped of spaces
# and punctuation, is an accepted answer or (3 letters or more) its beginning.
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
_PUNCTUATION = str.maketrans({c: " " for c in ".,;:!?\"'()"})


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
                f"use e.g. {DEFAULT_ACCURACY_FLOOR} ({DEFAULT_ACCURACY_FLOOR:.0%} of greedy decoding's accuracy)",
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
    """The quality figures of one configuration (version 2: computed; version 1: sampled)."""

    kld_mean: float
    kld_p99: float
    top1_agreement: float
    task_accuracy: float  # expected: the chain's probability of starting an accepted answer
    gen_nll: float  # expected -log p_raw of the token the chain emits, over the evaluation text
    repeat4: float | None = None  # version 1 only: repeated 4-grams in sampled texts
    kept_mass: float | None = None  # version 2: raw probability mass the chain keeps, on average
    seconds: float = 0.0  # cost of the quality proxy in this trial (0 when its logits were cached)
    version: int = 1
    cached: bool = False  # the logits came from the cache

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Quality:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Logits:
    """What the proxy reads from one configuration's arithmetic: the evaluation text's positions
    and each task's last prompt position, their top :data:`TOP_STORED` logits and log-sum-exp,
    and the fidelity figures against the reference (zero for the reference itself)."""

    eval_tokens: np.ndarray  # (n,)
    eval_ids: np.ndarray  # (n-1, TOP_STORED) token ids, position i predicting token i+1
    eval_logits: np.ndarray  # (n-1, TOP_STORED)
    eval_lse: np.ndarray  # (n-1,) log-sum-exp of the full row
    task_ids: np.ndarray  # (tasks, TOP_STORED)
    task_logits: np.ndarray
    task_lse: np.ndarray
    task_accepted: np.ndarray  # (tasks, TOP_STORED) bool: the token starts an accepted answer
    kld_mean: float
    kld_p99: float
    top1_agreement: float

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **{k: np.asarray(v) for k, v in asdict(self).items()})
        os.replace(tmp, path)  # atomic: concurrent workers never read half a file

    @classmethod
    def load(cls, path: Path) -> Logits:
        with np.load(path) as data:
            values = {f.name: data[f.name] for f in fields(cls)}
        return cls(**{k: (float(v) if v.ndim == 0 else v) for k, v in values.items()})


@dataclass(frozen=True)
class Reference:
    """The reference configuration's logits, and its greedy figures."""

    model_sha256: str
    logits: Logits
    greedy_accuracy: float
    greedy_nll: float


def reference_config() -> EngineConfig:
    """The reference: f16 KV cache, flash attention off, no offload, greedy sampling."""
    return EngineConfig(n_ctx=QUALITY_BATCH, n_batch=QUALITY_BATCH, n_ubatch=QUALITY_BATCH, flash_attn=False, temperature=0.0, seed=0)


def numerics_key(config: EngineConfig, model_sha256: str) -> str:
    """What the proxy's logits depend on: the model, the llama.cpp build (version and the CPU
    features it was compiled for), the proxy itself, and the settings that change the arithmetic
    (:data:`NUMERICS_KEYS`)."""
    import llama_cpp

    build = f"{llama_cpp.__version__}|{llama_cpp.llama_print_system_info().decode(errors='replace').strip()}"
    proxy = f"{PROXY_VERSION}|{QUALITY_BATCH}|{EVAL_TEXT}|{TASKS}|{TOP_STORED}|{KLD_TOP}|{EVAL_TOKENS}"
    effective = config.effective()
    settings = repr([(key, getattr(effective, key)) for key in NUMERICS_KEYS])
    return hashlib.sha256(f"{model_sha256}|{build}|{proxy}|{settings}".encode()).hexdigest()[:24]


_memory: dict[str, Logits] = {}  # this process's cache (a worker keeps it across trials)


def cached_logits(engine: Engine, config: EngineConfig, model_sha256: str, reference: Logits | None, *, use_cache: bool = True) -> tuple[Logits, bool]:
    """The logits of ``config``'s arithmetic: from the cache, or computed (and cached).

    Returns:
        The logits, and whether they came from the cache.
    """
    key = numerics_key(config, model_sha256)
    path = cache_dir() / f"logits-{key}.npz"
    if use_cache and key in _memory:
        return _memory[key], True
    if use_cache and path.is_file():
        _memory[key] = Logits.load(path)
        return _memory[key], True
    logits = compute_logits(engine, config, reference)
    if use_cache:
        logits.save(path)
        _memory[key] = logits
    return logits, False


def compute_logits(engine: Engine, config: EngineConfig, reference: Logits | None) -> Logits:
    """Run the proxy's passes with ``config``'s arithmetic settings and fixed batches."""
    # Fixed batches (see the module docstring); all cores, since threads do not change the logits.
    cores = os.cpu_count() or 1
    quality_config = replace(
        config, n_ctx=QUALITY_BATCH, n_batch=QUALITY_BATCH, n_ubatch=QUALITY_BATCH, n_threads=cores, n_threads_batch=cores
    )
    with engine.session(quality_config) as session:
        tokens = session.tokenize(EVAL_TEXT)[:EVAL_TOKENS]
        batches = list(session.logits(tokens))  # one batch: the text fits in QUALITY_BATCH
        rows = (batches[0] if len(batches) == 1 else np.concatenate(batches))[:-1]  # position i predicts token i+1
        eval_ids, eval_logits, eval_lse = _top(rows)
        kld, agree = _fidelity(rows, eval_lse, reference) if reference is not None else (np.zeros(len(rows)), np.ones(len(rows), bool))
        task_rows = np.stack([session.last_logits(session.tokenize(prompt)) for prompt, _ in TASKS])
        task_ids, task_logits, task_lse = _top(task_rows)
        accepted = np.array([[_starts_answer(session, int(t), answers) for t in ids] for ids, (_, answers) in zip(task_ids, TASKS)])
    return Logits(
        eval_tokens=np.asarray(tokens, dtype=np.int32),
        eval_ids=eval_ids,
        eval_logits=eval_logits,
        eval_lse=eval_lse,
        task_ids=task_ids,
        task_logits=task_logits,
        task_lse=task_lse,
        task_accepted=accepted,
        kld_mean=float(kld.mean()),
        kld_p99=float(np.percentile(kld, 99)),
        top1_agreement=float(agree.mean()),
    )


def reference_for(engine: Engine, model_sha256: str, *, use_cache: bool = True) -> Reference:
    """The model's reference (its logits cached like any configuration's) and greedy figures."""
    logits, _ = cached_logits(engine, reference_config(), model_sha256, None, use_cache=use_cache)
    greedy = sampling_figures(logits, Sampling(temperature=0.0, top_k=40, top_p=0.95, min_p=0.05))
    return Reference(model_sha256, logits, greedy["task_accuracy"], greedy["gen_nll"])


def evaluate(engine: Engine, config: EngineConfig, reference: Reference, *, use_cache: bool = True) -> Quality:
    """Fidelity and sampling quality of ``config`` (computed, or from the cache for its arithmetic)."""
    start = time.perf_counter()
    logits, cached = cached_logits(engine, config, reference.model_sha256, reference.logits, use_cache=use_cache)
    sampling = Sampling(config.temperature, config.top_k, config.top_p, config.min_p, config.repeat_penalty)
    return Quality(
        kld_mean=logits.kld_mean,
        kld_p99=logits.kld_p99,
        top1_agreement=logits.top1_agreement,
        **sampling_figures(logits, sampling),
        seconds=round(time.perf_counter() - start, 3),
        version=PROXY_VERSION,
        cached=cached,
    )


def sampling_figures(logits: Logits, sampling: Sampling) -> dict[str, float]:
    """Expected task accuracy, expected NLL and kept mass of ``sampling``'s chain (numpy only)."""
    accuracy = [
        chain_distribution(ids, row, lse, sampling).probability_of({int(t) for t, ok in zip(ids, accepted) if ok})
        for ids, row, lse, accepted in zip(logits.task_ids, logits.task_logits, logits.task_lse, logits.task_accepted)
    ]
    tokens = logits.eval_tokens.tolist()
    nll, kept = [], []
    for i, (ids, row, lse) in enumerate(zip(logits.eval_ids, logits.eval_logits, logits.eval_lse)):
        chain = chain_distribution(ids, row, float(lse), sampling, history=tokens[: i + 1])  # the text so far
        nll.append(chain.expected_nll)
        kept.append(chain.kept_mass)
    return {"task_accuracy": float(np.mean(accuracy)), "gen_nll": float(np.mean(nll)), "kept_mass": float(np.mean(kept))}


def _top(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's TOP_STORED highest logits (any order), their ids, and the row's log-sum-exp.

    A few rows at a time (ROW_BLOCK): each pass's scratch then stays in the CPU's cache. Row by
    row the results are bit for bit those of one pass over all rows, 13x faster on the embedded
    model's 255 x 262k logits (0.26 s instead of 3.5 s on 2 cores).
    """
    ids = np.empty((len(rows), TOP_STORED), dtype=np.int32)
    values = np.empty((len(rows), TOP_STORED), dtype=np.float32)
    lse = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), ROW_BLOCK):
        block = rows[start : start + ROW_BLOCK]
        top = np.argpartition(block, -TOP_STORED, axis=1)[:, -TOP_STORED:]
        ids[start : start + ROW_BLOCK] = top
        values[start : start + ROW_BLOCK] = np.take_along_axis(block, top, axis=1)
        lse[start : start + ROW_BLOCK] = _logsumexp(block)
    return ids, values, lse


def _fidelity(rows: np.ndarray, lse: np.ndarray, reference: Logits) -> tuple[np.ndarray, np.ndarray]:
    """Per position: KL(reference || trial) over the reference's top KLD_TOP tokens plus the tail,
    and whether the trial's top token is the reference's."""
    order = np.argsort(-reference.eval_logits, axis=1)[:, :KLD_TOP]
    ref_ids = np.take_along_axis(reference.eval_ids, order, axis=1)
    ref_lp = (np.take_along_axis(reference.eval_logits, order, axis=1) - reference.eval_lse[:, None]).astype(np.float64)
    trial_lp = (np.take_along_axis(rows, ref_ids, axis=1) - lse[:, None]).astype(np.float64)
    ref_tail = np.log(np.clip(1.0 - np.exp(ref_lp).sum(axis=1), 1e-12, None))
    trial_tail = np.log(np.clip(1.0 - np.exp(trial_lp).sum(axis=1), 1e-12, None))
    kld = (np.exp(ref_lp) * (ref_lp - trial_lp)).sum(axis=1) + np.exp(ref_tail) * (ref_tail - trial_tail)
    return np.maximum(kld, 0.0), rows.argmax(axis=1) == ref_ids[:, 0]


def _starts_answer(session: Session, token: int, answers: tuple[str, ...]) -> bool:
    piece = session.engine.model.token_to_piece(token).rstrip(b"\0")  # llama-cpp-python pads it to 32 bytes
    text = piece.decode("utf-8", errors="ignore").lower().translate(_PUNCTUATION).strip()
    return bool(text) and any(text == a or (len(text) >= 3 and a.startswith(text)) for a in answers)


def _logsumexp(rows: np.ndarray) -> np.ndarray:
    """Row-wise log-sum-exp, one scratch buffer (a block of rows of 262k floats each)."""
    top = rows.max(axis=1)
    scratch = np.subtract(rows, top[:, None])
    np.exp(scratch, out=scratch)
    return top.astype(np.float64) + np.log(scratch.sum(axis=1, dtype=np.float64))


def cache_dir() -> Path:
    """Where the proxy's logits are cached: $TUNER_CACHE_DIR/quality, by default
    ~/.cache/llama-tuner/quality (XDG_CACHE_HOME respected)."""
    return tool_cache_dir() / "quality"
