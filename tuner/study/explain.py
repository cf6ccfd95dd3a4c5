"""Why a study came out as it did: parameter importances, per-knob effects, and a guide audit.

* :func:`importances` — optuna.importance (PED-ANOVA by default) per objective, over the settings
  that actually ran (each trial's *effective* config: after llama.cpp's clamps, baselines included),
  so conditional and bounded knobs (kv_type, n_batch <= n_ctx) are comparable across trials.
* :func:`knob_effects` — per knob, the median speed objective and KLD of the trials at each value
  (or each third of a numeric range). Observational: knobs move together in a study, so these
  are hints; the guide audit below is the controlled experiment.
* :func:`audit_guide` — each of the RTX 4090 guide's per-knob claims re-enacted as the guide
  states it (its BEFORE vs its AFTER value, everything else llama-cpp-python's defaults), both
  measured interleaved in rounds on this machine; the per-round ratio is the measured effect.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tuner.config import CONTEXT_KEYS, SAMPLING_KEYS, EngineConfig
from tuner.errors import ConfigError, EngineError, WorkerFailed
from tuner.workload import Workload
from tuner.stats import Stat, check_rounds
from tuner.study.noise import round_order, tie

__all__ = [
    "GUIDE_CLAIMS",
    "MIN_TRIALS_FOR_IMPORTANCE",
    "Claim",
    "ClaimResult",
    "KnobEffect",
    "audit_guide",
    "importances",
    "knob_effects",
    "searched_trials",
]

# PED-ANOVA contrasts the top 10% of trials with the rest: below this it has nothing to contrast
# (and below 20 that top is one trial: rough, and said so where importances are shown).
MIN_TRIALS_FOR_IMPORTANCE = 10

# The knobs whose effect a study can show: what the search spaces search, with type_k/type_v as
# their symmetric pair kv_type, and without the sampler seed.
KNOBS = (
    ("n_gpu_layers",)
    + tuple(k for k in CONTEXT_KEYS if k not in ("type_k", "type_v"))
    + ("kv_type",)
    + tuple(k for k in SAMPLING_KEYS if k != "seed")
)


@dataclass(frozen=True)
class Claim:
    """One of the guide's per-knob claims, as the guide states it."""

    knob: str
    before: dict[str, Any]
    after: dict[str, Any]
    claimed: tuple[float, float] | None  # claimed speed-up as fractions (0.25, 0.35) = "+25-35%"
    guide_says: str
    metric: str = "decode"  # what the claim is about: "decode" or "prompt" processing


# From ../shared/reference/rtx4090-tuning-guide.md, "BEFORE" and "AFTER" as written there.
GUIDE_CLAIMS: tuple[Claim, ...] = (
    Claim("n_ctx", {"n_ctx": 4096}, {"n_ctx": 2048}, (0.25, 0.35), "n_ctx 4096 -> 2048: +25-35% speed"),
    Claim(
        "n_batch",
        {"n_ctx": 2048, "n_batch": 2048},
        {"n_ctx": 2048, "n_batch": 4096},
        (0.40, 0.60),
        "n_batch 2048 -> 4096: +40-60% in parallel processing (n_ctx 2048 as in the guide)",
        "prompt",  # batching speeds up prompt processing; decode goes one token at a time
    ),
    Claim(
        "n_threads",
        {"n_threads": 8, "n_threads_batch": 8},
        {"n_threads": 16, "n_threads_batch": 16},
        (0.15, 0.25),
        "n_threads/n_threads_batch 8 -> 16: +15-25%",
    ),
    Claim(
        "top_k/top_p",
        {"top_k": 20, "top_p": 0.9},
        {"top_k": 10, "top_p": 0.8},
        (0.10, 0.20),
        "top_k 20 -> 10, top_p 0.9 -> 0.8: +10-20% in token sampling",
    ),
    Claim("flash_attn", {"flash_attn": False}, {"flash_attn": True}, None, "flash_attn on: 'for speed' (no figure given)"),
)


# --- importances -------------------------------------------------------------------------------


def _knob_value(effective: dict[str, Any], knob: str) -> Any:
    if knob == "kv_type":
        return EngineConfig.from_dict(effective).kv_type
    return effective.get(knob)


def _completed(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "measurement" in t.user_attrs]


def searched_trials(study: Any) -> list[Any]:
    """Completed trials the sampler chose (the baselines excluded)."""
    return [t for t in _completed(study) if "baseline" not in t.user_attrs]


def importances(study: Any) -> dict[str, dict[str, float]]:
    """Parameter importances per objective name, over the effective settings of completed
    searched trials (the baselines sit outside the search space: one guide-card trial would make
    its every odd knob, n_gpu_layers -1 on a CPU say, look important).

    Knobs that never varied are left out. Returns an empty mapping for an objective when fewer
    than :data:`MIN_TRIALS_FOR_IMPORTANCE` trials completed: PED-ANOVA compares the top 10% of
    trials with the rest, which means nothing with a handful.
    """
    import logging
    import warnings

    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    trials = searched_trials(study)
    rows = [{k: _knob_value(t.user_attrs["measurement"]["effective"], k) for k in KNOBS} for t in trials]
    distributions: dict[str, Any] = {}
    for knob in KNOBS:
        values = [row[knob] for row in rows]
        if len(set(map(repr, values))) < 2:
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            distributions[knob] = FloatDistribution(float(min(values)), float(max(values)))
        else:
            distributions[knob] = CategoricalDistribution(sorted(set(values), key=repr))
    names = study.metric_names or ["decode_tok_s"]
    result: dict[str, dict[str, float]] = {name: {} for name in names}
    if len(trials) < MIN_TRIALS_FOR_IMPORTANCE or not distributions:
        return result
    optuna.logging.set_verbosity(logging.ERROR)
    shadow = optuna.create_study(directions=study.directions)
    for trial, row in zip(trials, rows):
        params = {k: (float(row[k]) if isinstance(distributions[k], FloatDistribution) else row[k]) for k in distributions}
        shadow.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, values=trial.values))
    for index, (name, direction) in enumerate(zip(names, study.directions)):
        # PED-ANOVA asks which knobs lead to LOW target values: negate what is maximized.
        sign = -1.0 if direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # it warns that it minimizes; the sign above handles that
            scores = optuna.importance.get_param_importances(shadow, target=lambda t, i=index, k=sign: k * t.values[i])
        result[name] = {knob: round(float(score), 4) for knob, score in scores.items()}
    return result


# --- per-knob effects --------------------------------------------------------------------------


@dataclass(frozen=True)
class KnobEffect:
    """Trials grouped by one knob's value: how many, their median speed objective and KLD."""

    knob: str
    group: str  # the value, or a numeric range "1.0-1.5"
    trials: int
    speed_median: float  # the study's speed objective (requests/min, or decode tok/s before workloads)
    kld_median: float | None


def knob_effects(study: Any) -> list[KnobEffect]:
    """Per knob, per value (or per third of its observed range), the trials' median figures."""
    trials = _completed(study)
    effects = []
    for knob in KNOBS:
        values = [_knob_value(t.user_attrs["measurement"]["effective"], knob) for t in trials]
        if len(set(map(repr, values))) < 2:
            continue
        for group, members in _groups(values, trials):
            kld = [t.user_attrs["kld_mean"] for t in members if t.user_attrs.get("kld_mean") is not None]
            effects.append(
                KnobEffect(knob, group, len(members), statistics.median(t.values[0] for t in members), statistics.median(kld) if kld else None)
            )
    return effects


def _groups(values: list[Any], trials: list[Any]) -> list[tuple[str, list[Any]]]:
    distinct = sorted(set(values), key=lambda v: (str(type(v)), v))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if not numeric or len(distinct) <= 6:
        return [(_fmt(v) if numeric else str(v), [t for t, x in zip(trials, values) if x == v]) for v in distinct]
    ordered = sorted(values)
    cuts = [ordered[len(ordered) // 3], ordered[2 * len(ordered) // 3]]
    bins = [(ordered[0], cuts[0]), (cuts[0], cuts[1]), (cuts[1], ordered[-1])]
    groups = []
    for i, (low, high) in enumerate(bins):
        members = [t for t, x in zip(trials, values) if (low <= x < high) or (i == 2 and low <= x <= high)]
        if members:
            groups.append((f"{_fmt(low)}-{_fmt(high)}", members))
    return groups


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, int) or abs(x) >= 10 else f"{x:.3g}"


# --- the guide audit ---------------------------------------------------------------------------


@dataclass
class ClaimResult:
    """A claim re-enacted: both sides measured in each round; ratios after/before per round."""

    knob: str
    guide_says: str
    claimed: tuple[float, float] | None
    before: dict[str, Any]
    after: dict[str, Any]
    decode_before: list[float] = field(default_factory=list)
    decode_after: list[float] = field(default_factory=list)
    prompt_before: list[float] = field(default_factory=list)
    prompt_after: list[float] = field(default_factory=list)
    clamped: dict[str, Any] = field(default_factory=dict)  # what llama.cpp changed on the AFTER side
    verdict: str = ""
    metric: str = "decode"
    error: str = ""

    @property
    def measured(self) -> bool:
        return not self.error and len(self.decode_after) == len(self.decode_before) > 0

    @property
    def decode_ratio(self) -> Stat:
        return Stat.of([a / b for a, b in zip(self.decode_after, self.decode_before)])

    @property
    def prompt_ratio(self) -> Stat:
        return Stat.of([a / b for a, b in zip(self.prompt_after, self.prompt_before)])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def audit_guide(
    runner: Any,
    workload: Workload,
    *,
    rounds: int = 3,
    noise: float = 0.0,
    claims: tuple[Claim, ...] = GUIDE_CLAIMS,
    on_note: Callable[[str], None] | None = None,
    base: EngineConfig | None = None,
) -> list[ClaimResult]:
    """Measure each guide claim (BEFORE vs AFTER, on llama-cpp-python's defaults), interleaved.

    ``base`` is the defaults the claims change (the study's defaults baseline: n_ctx raised when
    512 cannot hold the workload). Every round measures all 2 x len(claims) configurations, in
    :func:`tuner.study.noise.round_order`.
    """
    defaults = (base or EngineConfig()).to_dict()
    check_rounds(rounds)
    speed_only = replace(workload, quality=False)
    results = [ClaimResult(c.knob, c.guide_says, c.claimed, c.before, c.after, metric=c.metric) for c in claims]
    jobs = [(r, side) for r in results for side in ("before", "after")]
    for round_ in range(rounds):
        for result, side in round_order(jobs, round_):
            if result.error:
                continue
            try:
                measurement = runner.measure(EngineConfig.from_dict({**defaults, **getattr(result, side)}), speed_only)
            except (ConfigError, EngineError) as exc:
                result.error = str(exc)
                continue
            except WorkerFailed as exc:  # e.g. a timeout: this claim drops out, the others go on
                result.error = exc.reason
                continue
            getattr(result, f"decode_{side}").append(measurement.decode_tok_s.median)
            getattr(result, f"prompt_{side}").append(measurement.prompt_tok_s.median)
            if side == "after":
                result.clamped = {k: list(v) for k, v in measurement.clamped.items()}
        if on_note:
            on_note(f"guide audit round {round_ + 1}/{rounds} done")
    for result in results:
        result.verdict = _verdict(result, noise)
    return results


def _verdict(result: ClaimResult, noise: float) -> str:
    """The claim judged on the median of its per-round ratios (the range shown beside it):

    * not testable as written: llama.cpp clamps the AFTER value back to the BEFORE one;
    * no measurable effect: the median is within the noise of 1.0;
    * holds here: the median change lies in the claimed interval;
    * exceeds the claim here / refuted here: the median change lies above / below it;
    * a claim without a figure gets the measured change alone.
    """
    if not result.measured:
        return f"could not be measured: {result.error}"
    clamp = ""
    if result.clamped:
        clamp = " (llama.cpp clamped: " + ", ".join(f"{k} {v[0]} -> {v[1]}" for k, v in result.clamped.items()) + ")"
    for knob, (_, ran) in result.clamped.items():
        if knob in result.before and ran == result.before[knob] and knob in result.after:
            return f"not testable as written{clamp}: AFTER runs the same {knob} as BEFORE"
    ratio = result.prompt_ratio if result.metric == "prompt" else result.decode_ratio
    change, spread = ratio.median - 1, max(noise, ratio.rel_iqr)
    rounds = f"rounds {min(ratio.samples) - 1:+.0%} to {max(ratio.samples) - 1:+.0%}"
    what = f"{result.metric} {change:+.0%} ({rounds})"
    if tie(ratio.samples, noise):
        return f"no measurable effect: {what}, within the noise ±{spread:.0%}{clamp}"
    if result.claimed is None:
        return f"{what}{clamp}"
    low, high = result.claimed
    claimed = f"claimed +{low:.0%} to +{high:.0%}"
    if low <= change <= high:
        return f"holds here: {what}, {claimed}{clamp}"
    if change > high:
        return f"exceeds the claim here: {what}, {claimed}{clamp}"
    return f"refuted here: {what}, {claimed}{clamp}"
