"""Running a study: start and resume, the noise floor first, the trial loop, then confirmation,
ablation and (on requests with text) speculation.

A study is an Optuna study in an RDB storage (SQLite by default) whose study-level user_attrs record
what it tunes (model file and sha256, workload, required context, search space, machine) and whose
trials record every measurement. Before the first trial the noise floor is measured (a one-trial
study's when a resume gives it more); the first trials are the baselines (:func:`tuner.study.baselines_for`);
after the last, the winner is confirmed (:mod:`tuner.study.confirm`), ablated into the minimal preset
(:mod:`tuner.study.ablation`) and speculation decided on it (:mod:`tuner.study.speculation`).
``trials`` counts every trial of the study, baselines included."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tuner.baseline import Baseline, Requirement, required_n_ctx
from tuner.config import EngineConfig
from tuner.errors import ConfigError, EngineError, StudyError, WorkerFailed
from tuner.gguf import read_gguf_info
from tuner.hardware import describe_machine, different_machine
from tuner.workload import LatencyTargets, Workload
from tuner.quality import PROXY_VERSION, QualityBudget
from tuner.placement import placement_of
from tuner.space import SearchSpace
from tuner.stats import check_rounds
from tuner.study._storage import HEARTBEAT_INTERVAL_S, new_sampler, now, quiet_experimental, redact
from tuner.study._objective import Economies, Runner, TrialFailed, make_objective
from tuner.study._trials import baselines_for, counted_trials, fastest_feasible, is_feasible, quality_version, speed_objective, start_words, study_defaults
from tuner.study._eta import end_estimate, per_trial
from tuner.study.ablation import ablate
from tuner.study.speculation import speculate
from tuner.study.confirm import CONFIRM_ROUNDS, confirm, current_confirmation, refresh_if_unchanged
from tuner.study.noise import DRIFT_EVERY, drift_due, floor_config, follow_drift, measure_noise_floor, noise_floor, race_rule

__all__ = ["Progress", "StudySpec", "check_machine", "check_quality_version", "check_trials", "resume_study", "start_study"]

# What a study optimizes: what the user waits for (requests per minute on the workload), and
# (with the quality proxy) fidelity to the reference. Studies made before workloads optimized
# decode_tok_s; they keep it when resumed.
OBJECTIVES = ("requests_per_min", "kld_mean")
DIRECTIONS = {"requests_per_min": "maximize", "decode_tok_s": "maximize", "kld_mean": "minimize"}


@dataclass(frozen=True)
class StudySpec:
    """What a new study tunes.

    ``requirement``: the context the application needs (see :func:`tuner.baseline.required_n_ctx`);
    ``yours``: the user's settings (``--baseline``), the baseline "yours" and the minimal preset's
    start (settings, or a file as read: :meth:`tuner.baseline.Baseline.on` the engine's defaults).
    """

    model: Path
    model_sha256: str
    space: SearchSpace
    workload: Workload = field(default_factory=Workload)
    trials: int = 50
    seed: int | None = None
    budget: QualityBudget = field(default_factory=QualityBudget)
    targets: LatencyTargets = field(default_factory=LatencyTargets)
    economies: Economies = field(default_factory=Economies)
    requirement: Requirement | None = None
    yours: EngineConfig | Baseline | None = None
    engine: dict[str, Any] | None = None  # what measures (tuner.server_worker.ServerRunner.record); None: llama-cpp-python
    defaults: EngineConfig | None = None  # that engine's own defaults (None: llama-cpp-python's)

    def __post_init__(self) -> None:
        check_trials(self.trials)

    def resolved_requirement(self) -> tuple[Requirement, int]:
        """The required context and the model's training context (the cap of what is searched)."""
        train_ctx = read_gguf_info(self.model).context_length
        requirement = self.requirement or required_n_ctx(None, None, train_ctx=train_ctx, needed=self.workload.tokens_needed)
        return requirement, train_ctx


@dataclass(frozen=True)
class Progress:
    """One finished trial, as reported while a study runs."""

    done: int  # trials counted toward the target
    target: int
    number: int
    label: str  # a baseline's label (BASELINE_LABELS) or "search"
    state: str
    value: float | None  # the speed objective (see ``objective``)
    iqr: float | None
    best_value: float | None
    best_number: int | None
    eta_s: float | None
    reason: str = ""
    kld: float | None = None
    accuracy: float | None = None
    feasible: bool = True
    objective: str = "requests_per_min"
    decode_tok_s: float | None = None
    prompt_tok_s: float | None = None
    offload: str = ""  # llama.cpp offloaded other layers than asked (tuner.measure.offload_flag)


def start_study(
    spec: StudySpec,
    *,
    name: str,
    storage: Any,
    runner: Runner,
    machine: dict[str, Any],
    on_progress: Callable[[Progress], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    confirm_rounds: int = CONFIRM_ROUNDS,
) -> Any:
    """Create a study, enqueue the baselines and run it until it holds ``spec.trials`` trials.

    Before the first trial it measures the noise floor (the defaults, several times); after the
    last, it confirms the winner by re-measuring the top candidates (``confirm_rounds`` 0: skip).
    ``on_note`` receives one-line messages about both.
    """
    import optuna

    check_rounds(confirm_rounds, name="confirm_rounds", flag="--confirm-rounds", skip_allowed=True)
    optuna.logging.set_verbosity(logging.ERROR)  # progress is reported through on_progress
    objectives = OBJECTIVES if spec.workload.quality else OBJECTIVES[:1]
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, directions=[DIRECTIONS[o] for o in objectives], sampler=new_sampler(spec.seed)
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise StudyError(
            f"study '{name}' already exists in {redact(storage.url)}",
            f"continue it with `tune resume {name}`, or choose another name with --study",
        ) from None
    with quiet_experimental():
        study.set_metric_names(list(objectives))
    requirement, train_ctx = spec.resolved_requirement()
    clock = time.monotonic()
    reference = runner.reference(spec.model_sha256, use_cache=spec.economies.cache) if spec.workload.quality else None
    _add_seconds(study, "reference", time.monotonic() - clock)
    attrs = {
        "model_path": str(spec.model),
        "model_sha256": spec.model_sha256,
        "workload": spec.workload.to_dict(),
        "space": {"name": spec.space.name, "source": spec.space.source, "text": spec.space.text},
        "target_trials": spec.trials,
        "seed": spec.seed,
        "objectives": list(objectives),
        "quality_budget": asdict(spec.budget) if spec.workload.quality else None,
        "quality_version": PROXY_VERSION if spec.workload.quality else None,
        "latency_targets": spec.targets.to_dict() if spec.targets else None,
        "economies": asdict(spec.economies),
        "requirement": {"n_ctx": requirement.n_ctx, "why": requirement.why, "max_ctx": train_ctx},
        "placement": placement_of(spec.space),
        "reference": reference,
        "machine": machine,
        "engine": spec.engine or {"name": "llama-cpp-python"},
        "created": now(),
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    for label, config in baselines_for(requirement.n_ctx, Baseline.on(spec.yours, spec.defaults), placement_of(spec.space), spec.defaults).items():
        study.enqueue_trial({}, user_attrs={"baseline": label, "baseline_config": config.to_dict()})
    # One trial (the starting point alone) compares nothing: its floor waits for a resume to more.
    prepared = _measure_noise(study, runner, spec.workload, on_note) if spec.trials > 1 else _no_floor(on_note)
    space = study_space(study, spec.space)
    ran = _run(study, spec.trials, runner, space, spec.workload, on_progress, confirm_rounds, prepared, on_note)
    return _confirm(study, runner, confirm_rounds, ran, False, on_note)


def resume_study(
    study: Any,
    *,
    runner: Runner,
    space: SearchSpace,
    trials: int | None = None,
    machine: Any = None,
    allow_other_hardware: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    confirm_rounds: int = CONFIRM_ROUNDS,
) -> Any:
    """Continue ``study`` until it holds ``trials`` counted trials (default: its own target),
    then confirm its winner as :func:`start_study` does.

    Args:
        machine: this machine (:class:`tuner.hardware.Machine`); a study started on another
            machine is refused unless ``allow_other_hardware``.
    """
    if trials is not None:
        check_trials(trials)
    check_rounds(confirm_rounds, name="confirm_rounds", flag="--confirm-rounds", skip_allowed=True)
    check_quality_version(study)  # first: nothing else matters if its figures cannot mix
    check_machine(study, machine, allow_other_hardware)
    target = trials or int(study.user_attrs["target_trials"])
    if trials and trials > int(study.user_attrs["target_trials"]):
        study.set_user_attr("target_trials", trials)
    workload = Workload.from_dict(study.user_attrs["workload"])
    if workload.quality:
        runner.reference(study.user_attrs["model_sha256"], use_cache=economies_of(study).cache)
    if "noise_floor" not in study.user_attrs:  # a study from before noise floors, or interrupted early
        _measure_noise(study, runner, workload, on_note)
    nothing_to_do = len(counted_trials(study)) >= target
    ran = _run(study, target, runner, study_space(study, space), workload, on_progress, confirm_rounds, on_note=on_note)
    return _confirm(study, runner, confirm_rounds, ran, nothing_to_do, on_note)


def study_space(study: Any, space: SearchSpace) -> SearchSpace:
    """The space as the study searches it: n_ctx at or above the required context (older studies:
    their own rule), what its llama-server has no flag for fixed, slots with requests at once."""
    workload = Workload.from_dict(study.user_attrs["workload"])
    space = space.fixing((study.user_attrs.get("engine") or {}).get("lacks") or {}).with_slots(workload.concurrency)
    requirement = study.user_attrs.get("requirement")
    if requirement is None:
        return space.for_workload(workload.tokens_needed)
    return space.for_requirement(int(requirement["n_ctx"]), int(requirement.get("max_ctx") or 0))


def check_trials(trials: int) -> None:
    """Refuse a study target that asks for no trial."""
    if trials < 1:
        raise StudyError(f"trials={trials} (--trials) asks for no trial", "use --trials 1 or more")


def check_quality_version(study: Any) -> None:
    """Refuse to add trials whose quality figures would not be comparable with the study's."""
    version = quality_version(study)
    if version is not None and version != PROXY_VERSION:
        raise StudyError(
            f"study '{study.study_name}' measured quality with proxy version {version}; this tuner computes version "
            f"{PROXY_VERSION}, and their figures are not comparable (nothing was changed)",
            "start a new study with `tune start`; this one still shows, reports and exports as it is",
        )


def economies_of(study: Any) -> Economies:
    """The study's economies (a study made before them had none: both on, as for new studies)."""
    return Economies(**study.user_attrs["economies"]) if study.user_attrs.get("economies") else Economies()


def _add_seconds(study: Any, part: str, seconds: float) -> None:
    """Add to the study's own time (reference, noise floor, confirmation), beside its trials'."""
    spent = dict(study.user_attrs.get("seconds") or {})
    spent[part] = round(spent.get(part, 0.0) + seconds, 3)
    study.set_user_attr("seconds", spent)


def _no_floor(on_note: Callable[[str], None] | None) -> dict[str, Any]:
    if on_note:
        on_note("noise floor: not measured (one trial compares nothing; a resume to more trials measures it)")
    return {}


def _measure_noise(study: Any, runner: Runner, workload: Workload, on_note: Callable[[str], None] | None) -> dict[str, Any]:
    """Measure and store the noise floor on the starting point; returns its last run for that
    baseline's trial (by label), and says the racing rule once (a stopped trial's line is short)."""
    clock = time.monotonic()
    label, config = floor_config(study)
    try:
        try:
            floor, last = _floor_on(study, runner, workload, label, config)
        except (ConfigError, EngineError, WorkerFailed):
            if label != "yours":
                raise
            # your settings cannot run this workload (their trial will say why): the defaults,
            # then the starting point, carry the floor
            label, config = "defaults", study_defaults(study)
            floor, last = _floor_on(study, runner, workload, label, config)
    except (ConfigError, EngineError, WorkerFailed) as exc:
        # The starting point cannot run this workload: its baseline trial will fail and say why;
        # ties then rest on the rounds' own spread.
        study.set_user_attr("noise_floor_error", exc.what)  # shown by tune show and the report
        if on_note:
            on_note(f"noise floor not measured: {start_words(label)} failed on this workload ({exc.what})")
        return {}
    finally:
        _add_seconds(study, "noise_floor", time.monotonic() - clock)
    study.set_user_attr("noise_floor", floor.to_dict())
    study.set_user_attr("noise_floor_error", None)
    if on_note:
        on_note(f"noise floor: {floor.describe()}; closer results are ties")
        if economies_of(study).racing and speed_objective(study) == "requests_per_min":
            on_note(race_rule(noise_floor(study)))
    return {label: last}


def _floor_on(study: Any, runner: Runner, workload: Workload, label: str, config: EngineConfig) -> tuple[Any, Any]:
    return measure_noise_floor(runner, workload, metric=speed_objective(study), config=config, use_cache=economies_of(study).cache, label=label)


def _confirm(
    study: Any, runner: Runner, rounds: int, ran: set[int], nothing_to_do: bool, on_note: Callable[[str], None] | None
) -> Any:
    """Confirm the winner, once per study run even with several workers: the process that ran
    the study's last counted trial does it (exactly one did). A resume of a study that already
    held its target (``nothing_to_do``) confirms only when the study has no current confirmation."""
    counted = [t.number for t in counted_trials(study)]
    last_here = bool(ran) and bool(counted) and max(counted) in ran
    if rounds > 0 and (last_here or (nothing_to_do and current_confirmation(study) is None)):
        economize = economies_of(study).racing
        if economize and refresh_if_unchanged(study) is not None:
            if on_note:
                on_note("the top candidates are the ones the last confirmation re-measured: it stands (no re-measurement)")
            return study
        clock = time.monotonic()
        confirmed = confirm(study, runner, rounds=rounds, on_note=on_note, economize=economize)
        _add_seconds(study, "confirmation", time.monotonic() - clock)
        if confirmed is not None and confirmed.winner is not None:
            clock = time.monotonic()
            ablate(study, runner, rounds=rounds, on_note=on_note)
            _add_seconds(study, "ablation", time.monotonic() - clock)
        _add_seconds(study, "speculation", speculate(study, rounds=rounds, on_note=on_note))  # at the preset's settings, whatever won
    elif rounds > 0 and not nothing_to_do and on_note:
        on_note("another worker ran the study's last trial: it confirms the winner")
    return study


def check_machine(study: Any, machine: Any, allow_other_hardware: bool = False) -> None:
    """Refuse to add trials from a machine other than the one the study was started on."""
    why = different_machine(study.user_attrs.get("machine"), machine or describe_machine())
    if why and not allow_other_hardware:
        raise StudyError(
            f"study '{study.study_name}' was started on another machine: {why}",
            "results from different hardware must not mix: start a new study here, or resume with --allow-other-hardware",
        )


def _run(
    study: Any,
    target: int,
    runner: Runner,
    space: SearchSpace,
    workload: Workload,
    on_progress: Callable[[Progress], None] | None,
    confirm_rounds: int = CONFIRM_ROUNDS,
    prepared: dict[str, Any] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> set[int]:
    """Run trials until the study holds ``target`` counted trials; return the numbers run here.
    Every DRIFT_EVERY counted trials the incumbent is re-measured (tuner.study.noise: drift).

    Safe with several processes on one study: each re-counts before every trial, and when the
    trials still missing are already RUNNING elsewhere it waits for them instead of overshooting.
    """
    import optuna

    optuna.logging.set_verbosity(logging.ERROR)  # progress is reported through on_progress
    # Resumed runs continue the random stream instead of repeating the first run's startup trials.
    study.sampler = new_sampler(None if study.user_attrs.get("seed") is None else study.user_attrs["seed"] + len(study.trials))
    _requeue_interrupted(study)
    budget = QualityBudget(**study.user_attrs["quality_budget"]) if study.user_attrs.get("quality_budget") else None
    targets = LatencyTargets(**study.user_attrs["latency_targets"]) if study.user_attrs.get("latency_targets") else None
    objective = make_objective(
        runner,
        space,
        workload,
        model_sha=study.user_attrs.get("model_sha256", ""),
        target=target,
        budget=budget,
        reference=study.user_attrs.get("reference"),
        targets=targets,
        speed=speed_objective(study),
        economies=economies_of(study),
        prepared=prepared,
    )
    numbers: set[int] = set()
    durations: list[tuple[float, bool]] = []  # (seconds, a baseline?) of the trials run here, for the ETA
    while True:
        with quiet_experimental():
            optuna.storages.fail_stale_trials(study)  # a dead process's RUNNING trial -> FAIL + re-enqueued
        done = len(counted_trials(study))
        if done >= target:
            break
        running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
        if done + running >= target:
            time.sleep(HEARTBEAT_INTERVAL_S)  # the last trials are running in another process
            continue
        finished: list[Any] = []
        clock = time.monotonic()
        study.optimize(
            objective,
            n_trials=1,
            catch=(TrialFailed,),
            callbacks=[lambda _study, trial: finished.append(trial)],
            gc_after_trial=False,
        )
        if finished and "reused" not in finished[0].user_attrs:  # a reused measurement took no time here
            durations.append((time.monotonic() - clock, "baseline" in finished[0].user_attrs))
        numbers.update(t.number for t in finished)
        if on_progress and finished:
            remaining = max(target - len(counted_trials(study)), 0)
            # each drift check costs about one trial (speed only)
            drifts = 1 / DRIFT_EVERY if speed_objective(study) == "requests_per_min" else 0.0
            eta = remaining * per_trial(durations) * (1 + drifts) + end_estimate(study, confirm_rounds) if durations else None
            on_progress(_progress(study, finished[0], target, remaining, eta))
        counted = len(counted_trials(study))
        if finished and drift_due(counted, target) and speed_objective(study) == "requests_per_min":
            clock = time.monotonic()
            follow_drift(study, runner, workload, speed_objective(study), on_note)
            _add_seconds(study, "drift", time.monotonic() - clock)
    return numbers


def _requeue_interrupted(study: Any) -> None:
    """Trials stopped by Ctrl-C run again (a baseline in particular must not go missing)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for trial in trials:
        if trial.state == TrialState.FAIL and trial.user_attrs.get("interrupted") and trial.number not in retried:
            keep = {key: trial.user_attrs[key] for key in ("baseline", "baseline_config") if key in trial.user_attrs}
            study.enqueue_trial(trial.params, user_attrs={**keep, "retry_of": trial.number})


def _progress(study: Any, trial: Any, target: int, remaining: int, eta_s: float | None) -> Progress:
    best = fastest_feasible(study)
    measurement = trial.user_attrs.get("measurement") or {}
    speed = speed_objective(study)

    def median(name: str) -> float | None:
        return (measurement.get(name) or {}).get("median")

    return Progress(
        done=target - remaining,
        target=target,
        number=trial.number,
        label=trial.user_attrs.get("baseline", "search"),
        state=trial.state.name,
        value=trial.values[0] if trial.state.name == "COMPLETE" else None,
        iqr=(measurement.get(speed) or {}).get("iqr"),
        best_value=best.values[0] if best else None,
        best_number=best.number if best else None,
        eta_s=eta_s,
        reason=trial.user_attrs.get("fail_reason", "")
        or trial.user_attrs.get("infeasible_reason", "")
        or trial.user_attrs.get("raced", "")
        or ("another process took the last trial slot" if trial.user_attrs.get("surplus") else ""),
        kld=trial.user_attrs.get("kld_mean"),
        accuracy=trial.user_attrs.get("task_accuracy"),
        feasible=is_feasible(trial),
        objective=speed,
        decode_tok_s=median("decode_tok_s"),
        prompt_tok_s=median("prompt_tok_s"),
        offload=trial.user_attrs.get("offload_flag", ""),
    )


