"""One trial: suggest a configuration (or take a baseline's), measure it through a runner, and
record everything a reader needs later on the trial.

A runner measures a configuration: :class:`InProcess` in this process, or
:class:`tuner.worker.Worker` in a worker process that a llama.cpp abort cannot take down.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tuner.config import EngineConfig
from tuner.engine import Engine
from tuner.errors import ConfigError, EngineError, WorkerFailed
from tuner.hardware import describe_machine
from tuner.measure import Measurement, RaceBound, measure, offload_flag
from tuner.quality import Quality, QualityBudget, evaluate, reference_for
from tuner.space import SearchSpace
from tuner.study._trials import counted_trials
from tuner.study.noise import race_bound
from tuner.workload import LatencyTargets, Workload


__all__ = ["Economies", "InProcess", "Runner", "TrialFailed", "make_objective"]


@dataclass(frozen=True)
class Economies:
    """What a study may skip without changing a decision: racing (a trial whose first two
    repetitions are clearly slower than the best stops) and the quality cache (logits computed
    once per arithmetic). Both on by default; `tune start --no-racing --no-cache` turns them off
    for audits."""

    racing: bool = True
    cache: bool = True


class TrialFailed(Exception):
    """A trial whose configuration llama.cpp refused or the workload cannot use (recorded as FAIL)."""


class Runner(Protocol):
    """Measures one configuration: :class:`InProcess` or :class:`tuner.worker.Worker`."""

    def measure(self, config: EngineConfig, workload: Workload, *, race: RaceBound | None = None, use_cache: bool = True) -> Measurement: ...

    def reference(self, model_sha256: str, *, use_cache: bool = True) -> dict[str, float]: ...

    def quality(self, config: EngineConfig) -> Quality: ...


class InProcess:
    """Runs trials in this process: fastest, but a llama.cpp abort takes the process down.

    The CLI uses :class:`tuner.worker.Worker` instead; the library and its tests may use this.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._reference: Any = None

    def reference(self, model_sha256: str, *, use_cache: bool = True) -> dict[str, float]:
        self._reference = reference_for(self.engine, model_sha256, use_cache=use_cache)
        return {"greedy_accuracy": self._reference.greedy_accuracy, "greedy_nll": self._reference.greedy_nll}

    def measure(self, config: EngineConfig, workload: Workload, *, race: RaceBound | None = None, use_cache: bool = True) -> Measurement:
        return measure(self.engine, config, workload, self._reference, race=race, use_cache=use_cache)

    def quality(self, config: EngineConfig) -> Quality:
        """The quality proxy alone (the reference must be loaded: :meth:`reference`)."""
        return evaluate(self.engine, config, self._reference)


def make_objective(
    runner: Runner,
    space: SearchSpace,
    workload: Workload,
    model_sha: str,
    target: int,
    budget: QualityBudget | None,
    reference: dict[str, float] | None,
    targets: LatencyTargets | None = None,
    speed: str = "requests_per_min",
    economies: Economies | None = None,
    prepared: dict[str, Measurement] | None = None,
) -> Callable[[Any], Any]:
    """The function Optuna calls for each trial: suggest (or take the baseline's settings),
    measure, record, and return the objectives; a refused configuration raises TrialFailed.

    The speed objective ``speed`` is the workload's requests per minute (decode tok/s in studies
    made before workloads); with the quality proxy, mean KLD is the second. The quality floor and
    the latency targets are Optuna constraints.

    ``economies`` turns racing and the quality cache on or off; ``prepared`` may hold, by baseline
    label, a measurement already made (the noise floor's last run) for that baseline's trial.
    """
    import optuna

    economies = economies or Economies()
    prepared = prepared if prepared is not None else {}

    def objective(trial: Any) -> Any:
        try:
            return run_trial(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)  # optuna marks it FAIL; resume runs it again
            raise

    def run_trial(trial: Any) -> Any:
        if _surplus(trial, target):
            trial.set_user_attr("surplus", True)
            raise optuna.TrialPruned("another process took the last trial slot")
        if "baseline" in trial.user_attrs:
            config = EngineConfig.from_dict(trial.user_attrs["baseline_config"])
        else:
            config, _ = space.suggest(trial)
        trial.set_user_attr("config", config.to_dict())
        started = time.perf_counter()
        # Racing compares requests/min; studies made before workloads (decode tok/s) are not raced.
        racing = economies.racing and speed == "requests_per_min" and "baseline" not in trial.user_attrs
        bound = race_bound(trial.study, speed) if racing else None
        try:
            if trial.user_attrs.get("baseline") in prepared:
                result = prepared.pop(trial.user_attrs["baseline"])  # measured moments ago as the noise floor's last run
                trial.set_user_attr("reused", "the noise floor's last run (same settings, same workload, same process)")
            else:
                result = runner.measure(config, workload, race=bound, use_cache=economies.cache)
        except (ConfigError, EngineError) as exc:
            return _fail(trial, str(exc))
        except WorkerFailed as exc:
            trial.set_user_attr("llama_log_tail", exc.log_tail)
            return _fail(trial, exc.reason)
        _record(trial, result, model_sha, time.perf_counter() - started)
        if result.stopped:
            trial.set_user_attr("raced", f"stopped early: {result.stopped}")  # the rule: tuner.study.noise.race_rule
            raise optuna.TrialPruned(trial.user_attrs["raced"])
        if budget is not None and (result.quality is None or reference is None):
            # A two-objective study needs both values: without the second, Optuna would fail the
            # trial without a reason and the sampler could ask for the same settings again.
            return _fail(trial, "the quality proxy gave no figures for this trial (the reference was not loaded)")
        _constrain(trial, result, budget, reference, targets)
        value = getattr(result, speed).median
        if budget is None:
            return value
        return value, result.quality.kld_mean

    return objective


def _constrain(
    trial: Any, result: Measurement, budget: QualityBudget | None, reference: dict[str, float] | None, targets: LatencyTargets | None
) -> None:
    """Set the quality floor's and the latency targets' constraints, and say why a trial misses."""
    constraints: dict[str, float] = {}
    if budget is not None:
        constraints.update(budget.constraints(result.quality, reference["greedy_accuracy"]))
    if targets:
        constraints.update(targets.constraints(result.worst("ttft_ms"), result.worst("decode_tok_s")))
    if not constraints:
        return
    for key, value in constraints.items():
        trial.set_constraint(key, value)
    # optuna-dashboard 0.21 shows only the old list format: mirror them where it looks
    trial.set_user_attr("constraints", constraints)
    trial.set_user_attr("feasible", all(v <= 0 for v in constraints.values()))
    missed = [_why(key, value, result, budget, targets) for key, value in constraints.items() if value > 0]
    if missed:
        trial.set_user_attr("infeasible_reason", "; ".join(missed))


def _why(key: str, excess: float, result: Measurement, budget: QualityBudget | None, targets: LatencyTargets | None) -> str:
    """One constraint a trial misses, in words."""
    if key == "ttft_ms":
        return f"time to first token {result.worst('ttft_ms'):.0f} ms on its slowest shape > {targets.max_ttft_ms:g} ms (--max-ttft-ms)"
    if key == "decode_tok_s":
        return f"decode {result.worst('decode_tok_s'):.1f} tok/s on its slowest shape < {targets.min_decode_tok_s:g} (--min-decode-tok-s)"
    if key == "kld_mean":
        return f"mean KLD {result.quality.kld_mean:.4f} > {budget.kld_mean} (--quality-budget)"
    return f"task accuracy {result.quality.task_accuracy:.2f} below {budget.accuracy_floor:.0%} of greedy (--accuracy-floor)"


def _surplus(trial: Any, target: int) -> bool:
    """True when processes sharing the study already fill the target without this trial.

    Two processes can both see one free slot and both start a trial; the one with the lower
    trial number keeps the slot, the other stops before measuring anything.
    """
    from optuna.trial import TrialState

    study = trial.study
    ahead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if t.number < trial.number]
    return len(counted_trials(study)) + len(ahead) >= target


def _fail(trial: Any, reason: str) -> float:
    trial.set_user_attr("fail_reason", reason)
    raise TrialFailed(reason)


def _record(trial: Any, result: Measurement, model_sha: str, measured_s: float) -> None:
    """Everything a reader of this trial needs later: medians, IQRs, raw samples, context, and
    where its time went (the measurement's parts, and the rest: the worker round trip)."""
    machine = describe_machine()
    if trial.user_attrs.get("reused"):
        seconds: dict[str, float] = {}  # its time is the noise floor's, counted there
    else:
        seconds = {part: round(spent, 3) for part, spent in result.seconds.items()}
        seconds["overhead"] = round(max(measured_s - sum(result.seconds.values()), 0.0), 3)
    trial.set_user_attr("seconds", seconds)
    if result.flags:
        trial.set_user_attr("counter_flags", result.flags)
    if offloaded := offload_flag(result.config.n_gpu_layers, result.placed):
        trial.set_user_attr("offload_flag", offloaded)  # on its progress line and in tune show
    trial.set_user_attr("measurement", result.to_dict())
    for name in ("requests_per_min", "decode_tok_s", "prompt_tok_s", "ttft_ms"):
        stat = getattr(result, name)
        trial.set_user_attr(f"{name}_median", round(stat.median, 3))
        trial.set_user_attr(f"{name}_iqr", round(stat.iqr, 3))
    trial.set_user_attr("kv_type", result.config.kv_type)
    if result.quality is not None:
        for key, value in result.quality.to_dict().items():
            rounded = round(value, 6) if isinstance(value, float) else value
            trial.set_user_attr(key if key != "seconds" else "quality_seconds", rounded)
    trial.set_user_attr("llama_cpp_version", machine.llama_cpp_version)
    trial.set_user_attr("model_sha256", model_sha)
    trial.set_user_attr("machine", {"summary": machine.summary(), "fingerprint": machine.fingerprint})
