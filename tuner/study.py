"""Study orchestration: storage, baselines, the objective, resume, and the summary tables.

A study is an Optuna study in an RDB storage (SQLite by default) whose study-level user_attrs
record what it tunes (model file and sha256, workload, search space, machine) and whose trials
record every measurement. The first two trials are enqueued baselines that run exactly as written,
even outside the search space: llama-cpp-python's defaults, and the RTX 4090 guide's settings
("the guide card"). ``--trials N`` counts every trial of the study, baselines included.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from tuner.confirm import CONFIRM_ROUNDS
from tuner.engine import Engine, EngineConfig
from tuner.errors import ConfigError, EngineError, StorageError, StudyError
from tuner.measure import Measurement, Stat, Workload, measure
from tuner.quality import QualityBudget
from tuner.space import SearchSpace

__all__ = [
    "BASELINES",
    "DEFAULT_STORAGE",
    "InProcess",
    "Runner",
    "Progress",
    "Row",
    "StudySpec",
    "Summary",
    "TrialFailed",
    "check_machine",
    "counted_trials",
    "fastest_feasible",
    "list_studies",
    "load_study",
    "noise_floor",
    "open_storage",
    "redact",
    "resume_study",
    "start_study",
    "summarize",
]

DEFAULT_STORAGE = "sqlite:///studies/tuner.db"
# What a study optimizes: decode speed, and (with the quality proxy) fidelity to the reference.
OBJECTIVES = ("decode_tok_s", "kld_mean")
DIRECTIONS = {"decode_tok_s": "maximize", "kld_mean": "minimize"}
HEARTBEAT_INTERVAL_S = 5
GRACE_PERIOD_S = 20
_PIP_NAMES = {"psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient"}
SUPPORTED_DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")

# The two baselines every study measures first. "defaults" is what llama_cpp.Llama does when a
# user passes nothing; "guide_card" is the RTX 4090 guide's settings, kept verbatim (its 16 threads
# on a 2-core machine are the point of measuring it; n_batch 4096 is clamped to n_ctx by llama.cpp).
BASELINES: dict[str, EngineConfig] = {
    "defaults": EngineConfig(),
    "guide_card": EngineConfig(
        n_ctx=2048,
        n_batch=4096,
        n_threads=16,
        n_threads_batch=16,
        top_k=10,
        top_p=0.8,
        flash_attn=True,
        offload_kqv=True,
        n_gpu_layers=-1,
    ),
}


class TrialFailed(Exception):
    """A trial whose configuration llama.cpp refused or the workload cannot use (recorded as FAIL)."""


@dataclass(frozen=True)
class StudySpec:
    """What a new study tunes."""

    model: Path
    model_sha256: str
    space: SearchSpace
    workload: Workload = field(default_factory=Workload)
    trials: int = 50
    seed: int | None = None
    budget: QualityBudget = field(default_factory=QualityBudget)


@dataclass(frozen=True)
class Progress:
    """One finished trial, as reported while a study runs."""

    done: int  # trials counted toward the target
    target: int
    number: int
    label: str  # "defaults", "guide_card" or "search"
    state: str
    value: float | None
    iqr: float | None
    best_value: float | None
    best_number: int | None
    eta_s: float | None
    reason: str = ""
    kld: float | None = None
    accuracy: float | None = None
    feasible: bool = True


def redact(url: str) -> str:
    """A storage URL with its password hidden, for anything a user sees or a log keeps."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown without its credentials part
        return url.split("@")[-1] if "@" in url else url


def open_storage(url: str | None = None, *, must_exist: bool = False) -> Any:
    """An Optuna RDBStorage with heartbeats, for any SQLAlchemy URL Optuna supports.

    Args:
        url: SQLAlchemy URL; default ``sqlite:///studies/tuner.db`` relative to the working directory.
        must_exist: for read-only commands: a SQLite file that does not exist is an error instead
            of being created.

    Raises:
        StorageError: malformed or unsupported URL, missing driver, unwritable location.
    """
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    url = url or DEFAULT_STORAGE
    shown = redact(url)
    try:
        parsed = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise StorageError(
            f"storage URL '{shown}' is not a valid SQLAlchemy URL",
            "use e.g. sqlite:///studies/tuner.db or postgresql://user@host/db",
        ) from None
    dialect = parsed.get_backend_name()
    if dialect not in SUPPORTED_DIALECTS:
        raise StorageError(
            f"storage URL '{shown}' uses '{dialect}', which Optuna's RDB storage does not support",
            "use sqlite:///FILE, postgresql://... or mysql://...",
        )
    if _wants_missing_psycopg2(parsed):
        # SQLAlchemy 2.0 reads a plain postgresql:// as psycopg2, but the [postgres] extra installs
        # psycopg 3: use the driver that is there rather than fail on one the user never chose.
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    engine_kwargs: dict[str, Any] = {}
    if dialect == "sqlite":
        _check_sqlite_path(parsed.database, shown, must_exist)
        # Wait for a lock instead of failing at once when two tune processes share the file.
        engine_kwargs["connect_args"] = {"timeout": 60}
    import optuna

    try:
        with _no_experimental_warnings():  # heartbeats are what makes crash recovery work
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=GRACE_PERIOD_S,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(),
            )
    except ImportError as exc:
        cause = exc.__cause__ or exc.__context__  # optuna wraps the driver's own ImportError
        missing = getattr(cause, "name", None) or exc.name or "for its driver"
        raise StorageError(
            f"no database driver for '{shown}' (Python module {missing} is missing)",
            f"install it into the tool's environment: .venv/bin/pip install {_PIP_NAMES.get(missing, missing)}",
        ) from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise StorageError(
            f"SQLAlchemy has no driver '{parsed.drivername}' for '{shown}'",
            f"use a known driver, e.g. {dialect}:// or sqlite:///studies/tuner.db",
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise StorageError(f"cannot open storage '{shown}': {reason}", "check the URL, the server and its credentials") from None


def _wants_missing_psycopg2(parsed: Any) -> bool:
    """A postgresql:// URL whose default driver here is psycopg2, absent, while psycopg 3 is installed."""
    import importlib.util

    if parsed.drivername != "postgresql" or parsed.get_dialect().driver != "psycopg2":
        return False
    return importlib.util.find_spec("psycopg2") is None and importlib.util.find_spec("psycopg") is not None


def _check_sqlite_path(database: str | None, shown: str, must_exist: bool) -> None:
    if not database or database == ":memory:":
        raise StorageError(f"storage URL '{shown}' has no database file", "use sqlite:///studies/tuner.db (a file keeps the study)")
    path = Path(database)
    if path.is_dir():
        raise StorageError(f"storage path {path} is a directory", "point the URL at a file, e.g. sqlite:///studies/tuner.db")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise StorageError(f"storage file {path} is not readable and writable", "fix its permissions or use another --storage")
        with path.open("rb") as handle:
            if handle.read(16) not in (b"SQLite format 3\x00", b""):
                raise StorageError(f"storage file {path} is not a SQLite database", "point --storage at a study database")
        return
    if must_exist:
        raise StudyError(f"no study storage at {path}", "start a study first with `tune start`, or pass --storage URL")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the directory {path.parent}: {exc.strerror}", "run from a writable directory or pass --storage") from None
    if not os.access(path.parent, os.W_OK):
        raise StorageError(f"the directory {path.parent} is not writable", "run from a writable directory or pass --storage")


@contextlib.contextmanager
def _no_experimental_warnings() -> Iterator[None]:
    """Optuna flags heartbeats, grouped TPE and metric names as experimental; users need not see that."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def load_study(name: str, storage: Any) -> Any:
    """Load an existing study, or raise a StudyError that lists the ones that exist."""
    import optuna

    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=_sampler(None))
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        known = f"studies here: {', '.join(names)}" if names else "start one with `tune start`"
        raise StudyError(f"study '{name}' does not exist in {redact(storage.url)}", known) from None


def list_studies(storage: Any) -> list[Any]:
    import optuna

    return optuna.get_all_study_summaries(storage, include_best_trial=True)


def _sampler(seed: int | None) -> Any:
    import optuna

    with _no_experimental_warnings():
        # group=True: baselines carry no searched params, and kv_type is conditional; grouping keeps
        # the multivariate model over the knobs that do appear together.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=10)


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

    if spec.trials < 1:
        raise StudyError(f"--trials {spec.trials} asks for no trial", "use --trials 1 or more")
    optuna.logging.set_verbosity(logging.ERROR)  # progress is reported through on_progress
    objectives = OBJECTIVES if spec.workload.quality else OBJECTIVES[:1]
    try:
        study = optuna.create_study(
            study_name=name, storage=storage, directions=[DIRECTIONS[o] for o in objectives], sampler=_sampler(spec.seed)
        )
    except optuna.exceptions.DuplicatedStudyError:
        raise StudyError(
            f"study '{name}' already exists in {redact(storage.url)}",
            f"continue it with `tune resume {name}`, or choose another name with --study",
        ) from None
    with _no_experimental_warnings():
        study.set_metric_names(list(objectives))
    reference = runner.reference(spec.model_sha256) if spec.workload.quality else None
    attrs = {
        "model_path": str(spec.model),
        "model_sha256": spec.model_sha256,
        "workload": spec.workload.to_dict(),
        "space": {"name": spec.space.name, "source": spec.space.source, "text": spec.space.text},
        "target_trials": spec.trials,
        "seed": spec.seed,
        "objectives": list(objectives),
        "quality_budget": asdict(spec.budget) if spec.workload.quality else None,
        "reference": reference,
        "machine": machine,
        "created": _now(),
    }
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    for label, config in BASELINES.items():
        study.enqueue_trial({}, user_attrs={"baseline": label, "baseline_config": config.to_dict()})
    _measure_noise(study, runner, spec.workload, on_note)
    ran = _run(study, spec.trials, runner, spec.space.for_workload(spec.workload.n_ctx_needed), spec.workload, on_progress)
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
    check_machine(study, machine, allow_other_hardware)
    target = trials or int(study.user_attrs["target_trials"])
    if target < 1:
        raise StudyError(f"--trials {target} asks for no trial", "use --trials 1 or more")
    if trials and trials > int(study.user_attrs["target_trials"]):
        study.set_user_attr("target_trials", trials)
    workload = Workload.from_dict(study.user_attrs["workload"])
    if workload.quality:
        runner.reference(study.user_attrs["model_sha256"])
    if "noise_floor" not in study.user_attrs:  # a study from before noise floors, or interrupted early
        _measure_noise(study, runner, workload, on_note)
    nothing_to_do = len(counted_trials(study)) >= target
    ran = _run(study, target, runner, space.for_workload(workload.n_ctx_needed), workload, on_progress)
    return _confirm(study, runner, confirm_rounds, ran, nothing_to_do, on_note)


def noise_floor(study: Any) -> float:
    """The study's relative noise floor (0 when it has none): smaller differences are ties."""
    stored = study.user_attrs.get("noise_floor")
    return float(stored["relative"]) if stored else 0.0


def _measure_noise(study: Any, runner: Runner, workload: Workload, on_note: Callable[[str], None] | None) -> None:
    from tuner.confirm import measure_noise_floor
    from tuner.worker import WorkerFailed

    try:
        floor = measure_noise_floor(runner, workload)
    except (ConfigError, EngineError, WorkerFailed) as exc:
        # The defaults cannot run this workload (e.g. n_ctx 512 under a longer prompt): their
        # baseline trial will fail and say why; ties then rest on each trial's own spread.
        if on_note:
            on_note(f"noise floor not measured: the defaults failed on this workload ({getattr(exc, 'reason', exc)})")
        return
    study.set_user_attr("noise_floor", floor.to_dict())
    if on_note:
        on_note(f"noise floor: {floor.describe()}; closer results are ties")


def _confirm(
    study: Any, runner: Runner, rounds: int, ran: set[int], nothing_to_do: bool, on_note: Callable[[str], None] | None
) -> Any:
    """Confirm the winner, once per study run even with several workers: the process that ran
    the study's last counted trial does it (exactly one did). A resume of a study that already
    held its target (``nothing_to_do``) confirms only when the study has no current confirmation."""
    from tuner.confirm import confirm

    counted = [t.number for t in counted_trials(study)]
    last_here = bool(ran) and bool(counted) and max(counted) in ran
    if rounds > 0 and (last_here or (nothing_to_do and current_confirmation(study) is None)):
        confirm(study, runner, rounds=rounds, on_note=on_note)
    elif rounds > 0 and not nothing_to_do and on_note:
        on_note("another worker ran the study's last trial: it confirms the winner")
    return study


def check_machine(study: Any, machine: Any, allow_other_hardware: bool = False) -> None:
    """Refuse to add trials from a machine other than the one the study was started on."""
    from tuner.hardware import describe_machine, different_machine

    why = different_machine(study.user_attrs.get("machine"), machine or describe_machine())
    if why and not allow_other_hardware:
        raise StudyError(
            f"study '{study.study_name}' was started on another machine: {why}",
            "results from different hardware must not mix: start a new study here, or resume with --allow-other-hardware",
        )


def counted_trials(study: Any) -> list[Any]:
    """Trials that count toward the target: completed ones, and failures the tuner recorded.

    A trial failed by the heartbeat (its process died) does not count: its parameters are
    re-enqueued and run again.
    """
    from optuna.trial import TrialState

    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "fail_reason" in t.user_attrs)
    ]


def _run(
    study: Any,
    target: int,
    runner: Runner,
    space: SearchSpace,
    workload: Workload,
    on_progress: Callable[[Progress], None] | None,
) -> set[int]:
    """Run trials until the study holds ``target`` counted trials; return the numbers run here.

    Safe with several processes on one study: each re-counts before every trial, and when the
    trials still missing are already RUNNING elsewhere it waits for them instead of overshooting.
    """
    import optuna

    optuna.logging.set_verbosity(logging.ERROR)  # progress is reported through on_progress
    # Resumed runs continue the random stream instead of repeating the first run's startup trials.
    study.sampler = _sampler(None if study.user_attrs.get("seed") is None else study.user_attrs["seed"] + len(study.trials))
    _requeue_interrupted(study)
    budget = QualityBudget(**study.user_attrs["quality_budget"]) if study.user_attrs.get("quality_budget") else None
    objective = _objective(runner, space, workload, study.user_attrs.get("model_sha256", ""), target, budget, study.user_attrs.get("reference"))
    started, run_here, numbers = time.monotonic(), 0, set()
    while True:
        with _no_experimental_warnings():
            optuna.storages.fail_stale_trials(study)  # a dead process's RUNNING trial -> FAIL + re-enqueued
        done = len(counted_trials(study))
        if done >= target:
            break
        running = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
        if done + running >= target:
            time.sleep(HEARTBEAT_INTERVAL_S)  # the last trials are running in another process
            continue
        finished: list[Any] = []
        study.optimize(
            objective,
            n_trials=1,
            catch=(TrialFailed,),
            callbacks=[lambda _study, trial: finished.append(trial)],
            gc_after_trial=False,
        )
        run_here += 1
        numbers.update(t.number for t in finished)
        if on_progress and finished:
            elapsed = time.monotonic() - started
            remaining = max(target - len(counted_trials(study)), 0)
            on_progress(_progress(study, finished[0], target, remaining, elapsed / run_here))
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


def _progress(study: Any, trial: Any, target: int, remaining: int, per_trial_s: float) -> Progress:
    best = fastest_feasible(study)
    measurement = trial.user_attrs.get("measurement") or {}
    return Progress(
        done=target - remaining,
        target=target,
        number=trial.number,
        label=trial.user_attrs.get("baseline", "search"),
        state=trial.state.name,
        value=trial.values[0] if trial.state.name == "COMPLETE" else None,
        iqr=(measurement.get("decode_tok_s") or {}).get("iqr"),
        best_value=best.values[0] if best else None,
        best_number=best.number if best else None,
        eta_s=remaining * per_trial_s,
        reason=trial.user_attrs.get("fail_reason", "")
        or ("another process took the last trial slot" if trial.user_attrs.get("surplus") else ""),
        kld=trial.user_attrs.get("kld_mean"),
        accuracy=trial.user_attrs.get("task_accuracy"),
        feasible=is_feasible(trial),
    )


class Runner(Protocol):
    """Measures one configuration: :class:`InProcess` or :class:`tuner.worker.Worker`."""

    def measure(self, config: EngineConfig, workload: Workload) -> Measurement: ...

    def reference(self, model_sha256: str) -> dict[str, float]: ...


class InProcess:
    """Runs trials in this process: fastest, but a llama.cpp abort takes the process down.

    The CLI uses :class:`tuner.worker.Worker` instead; the library and its tests may use this.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._reference: Any = None

    def reference(self, model_sha256: str) -> dict[str, float]:
        from tuner.quality import reference_for

        self._reference = reference_for(self.engine, model_sha256)
        return {"greedy_accuracy": self._reference.greedy_accuracy, "greedy_nll": self._reference.greedy_nll}

    def measure(self, config: EngineConfig, workload: Workload) -> Measurement:
        return measure(self.engine, config, workload, self._reference)


def _objective(
    runner: Runner,
    space: SearchSpace,
    workload: Workload,
    model_sha: str,
    target: int,
    budget: QualityBudget | None,
    reference: dict[str, float] | None,
) -> Callable[[Any], Any]:
    import optuna

    from tuner.worker import WorkerFailed

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
        try:
            result = runner.measure(config, workload)
        except (ConfigError, EngineError) as exc:
            return _fail(trial, str(exc))
        except WorkerFailed as exc:
            trial.set_user_attr("llama_log_tail", exc.log_tail)
            return _fail(trial, exc.reason)
        _record(trial, result, model_sha)
        if budget is None or result.quality is None:
            return result.decode_tok_s.median
        constraints = budget.constraints(result.quality, reference["greedy_accuracy"])
        for key, value in constraints.items():
            trial.set_constraint(key, value)
        # optuna-dashboard 0.21 shows only the old list format: mirror them where it looks
        trial.set_user_attr("constraints", constraints)
        trial.set_user_attr("feasible", all(v <= 0 for v in constraints.values()))
        return result.decode_tok_s.median, result.quality.kld_mean

    return objective


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


def _record(trial: Any, result: Measurement, model_sha: str) -> None:
    """Everything a reader of this trial needs later: medians, IQRs, raw samples, context."""
    from tuner.hardware import describe_machine

    machine = describe_machine()
    trial.set_user_attr("measurement", result.to_dict())
    for name in ("decode_tok_s", "prompt_tok_s", "ttft_ms"):
        stat = getattr(result, name)
        trial.set_user_attr(f"{name}_median", round(stat.median, 3))
        trial.set_user_attr(f"{name}_iqr", round(stat.iqr, 3))
    trial.set_user_attr("kv_type", result.config.kv_type)
    if result.quality is not None:
        for key, value in result.quality.to_dict().items():
            trial.set_user_attr(key if key != "seconds" else "quality_seconds", round(value, 6))
    trial.set_user_attr("llama_cpp_version", machine.llama_cpp_version)
    trial.set_user_attr("model_sha256", model_sha)
    trial.set_user_attr("machine", {"summary": machine.summary(), "fingerprint": machine.fingerprint})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# Summaries: best trial vs the baselines


@dataclass(frozen=True)
class Row:
    """One configuration's figures in a comparison table."""

    label: str
    number: int
    decode: Stat
    prompt: Stat
    ttft: Stat
    config: dict[str, Any]
    ratio_vs_defaults: float | None = None
    telemetry: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, float] | None = None
    feasible: bool = True

    def within_noise_of(self, other: Row, noise: float = 0.0) -> bool:
        """A tie: the decode medians differ by no more than the larger of the two IQRs, or by no
        more than the relative ``noise`` (the study's noise floor)."""
        from tuner.confirm import is_tie

        gap = abs(self.decode.median - other.decode.median)
        return gap <= max(self.decode.iqr, other.decode.iqr) or is_tie(self.decode.median, other.decode.median, noise)

    @classmethod
    def of(cls, label: str, trial: Any, defaults: Any | None) -> Row:
        m = trial.user_attrs["measurement"]
        decode = Stat.from_dict(m["decode_tok_s"])
        ratio = None
        if defaults is not None:
            ratio = decode.median / Stat.from_dict(defaults.user_attrs["measurement"]["decode_tok_s"]).median
        return cls(
            label=label,
            number=trial.number,
            decode=decode,
            prompt=Stat.from_dict(m["prompt_tok_s"]),
            ttft=Stat.from_dict(m["ttft_ms"]),
            config=m["effective"],
            ratio_vs_defaults=ratio,
            telemetry=m.get("telemetry") or {},
            quality=m.get("quality"),
            feasible=is_feasible(trial),
        )


@dataclass(frozen=True)
class Summary:
    name: str
    target: int
    complete: int
    failed: int
    best: Row | None
    baselines: dict[str, Row]
    failures: list[tuple[int, str]]
    pareto: list[Row] = field(default_factory=list)  # feasible trials no other trial beats on both objectives
    feasible: int = 0
    infeasible: int = 0
    noise: float = 0.0  # the study's relative noise floor
    confirmation: Any = None  # tuner.confirm.Confirmation, when current (see current_confirmation)

    def ties_defaults(self, row: Row) -> bool:
        """True when ``row`` (not the defaults themselves) is within the noise of the defaults."""
        defaults = self.baselines.get("defaults")
        return defaults is not None and row.number != defaults.number and row.within_noise_of(defaults, self.noise)


def is_feasible(trial: Any) -> bool:
    """Within the quality floor: every constraint value <= 0 (no constraints: feasible)."""
    return all(value <= 0 for value in trial.constraints.values())


def feasible_trials(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_feasible(t)]


def fastest_feasible(study: Any) -> Any | None:
    """The fastest completed trial within the quality floor (decode tok/s is the first objective)."""
    return max(feasible_trials(study), key=lambda t: t.values[0], default=None)


def _baseline_trial(study: Any, label: str) -> Any | None:
    from optuna.trial import TrialState

    done = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get("baseline") == label
    ]
    return done[-1] if done else None


def summarize(study: Any) -> Summary:
    """The best trial and the baselines, with medians and spread."""
    from optuna.trial import TrialState

    defaults = _baseline_trial(study, "defaults")
    baselines = {}
    for label in BASELINES:
        trial = _baseline_trial(study, label)
        if trial is not None:
            baselines[label] = Row.of(label, trial, defaults)
    confirmation = current_confirmation(study)
    best = study.trials[confirmation.winner] if confirmation else fastest_feasible(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    feasible = [t for t in complete if is_feasible(t)]
    front = study.best_trials if len(study.directions) > 1 else ([best] if best else [])
    failures = [
        (t.number, t.user_attrs.get("fail_reason", "process died (heartbeat stale)"))
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    ]
    return Summary(
        name=study.study_name,
        target=int(study.user_attrs.get("target_trials", 0)),
        complete=len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
        failed=len(failures),
        best=Row.of("best", best, defaults) if best else None,
        baselines=baselines,
        failures=failures,
        pareto=sorted((Row.of("pareto", t, defaults) for t in front), key=lambda r: -r.decode.median),
        feasible=len(feasible),
        infeasible=len(complete) - len(feasible),
        noise=noise_floor(study),
        confirmation=confirmation,
    )


def current_confirmation(study: Any) -> Any | None:
    """The stored confirmation, if it still speaks for the study: it picked a winner, and no
    trial was added since (a resumed study must be confirmed again)."""
    from tuner.confirm import Confirmation

    stored = study.user_attrs.get("confirmation")
    if not stored:
        return None
    confirmation = Confirmation.from_dict(stored)
    if confirmation.winner is None or confirmation.counted_trials != len(counted_trials(study)):
        return None
    return confirmation


def why_picked(summary: Summary, budget: dict[str, float] | None) -> str:
    """One sentence: why the exported trial is the one."""
    best = summary.best
    assert best is not None
    if summary.confirmation is not None:
        return f"confirmed by re-measurement: {summary.confirmation.why}"
    if not budget or not best.quality:
        return f"fastest decode of {summary.complete} completed trials (no quality floor)"
    return (
        f"fastest decode among {summary.feasible} trials within the quality floor "
        f"(mean KLD {best.quality['kld_mean']:.4f} <= {budget['kld_mean']}, task accuracy "
        f"{best.quality['task_accuracy']:.2f} >= {budget['accuracy_floor']:.0%} of greedy); "
        f"{summary.infeasible} completed trials were outside it"
    )


def _confirmed_figures(confirmation: Any) -> dict[str, Any]:
    """The winner's re-measured figures for a preset's ``measured.confirmed`` section."""
    winner = confirmation.candidate(confirmation.winner)
    ratios = winner.ratio_vs_defaults
    return {
        "decode_tok_s": {"median": round(winner.decode.median, 2), "iqr": round(winner.decode.iqr, 2), "rounds": [round(x, 2) for x in winner.rounds]},
        "defaults_decode_tok_s": {"median": round(confirmation.defaults.decode.median, 2), "rounds": [round(x, 2) for x in confirmation.defaults.rounds]},
        "vs_defaults": {"median": round(winner.ratio.median, 3), "low": round(min(ratios), 3), "high": round(max(ratios), 3)},
        "interval": f"range of the per-round ratios over {confirmation.rounds} interleaved rounds",
        "candidates": {c.label: round(c.decode.median, 2) for c in confirmation.candidates if c.rounds and not c.error},
    }


def best_preset(study: Any) -> Any:
    """The preset for the study's best completed trial, with its figures and provenance.

    Raises:
        StudyError: the study has no completed trial.
    """
    from tuner.preset import Preset

    summary = summarize(study)
    if summary.best is None:
        if summary.infeasible:
            raise StudyError(
                f"study '{study.study_name}' has no trial within the quality floor ({summary.infeasible} completed, all infeasible)",
                f"run more trials with `tune resume {study.study_name} --trials N`, or start a study with a looser --quality-budget",
            )
        raise StudyError(
            f"study '{study.study_name}' has no completed trial to export",
            f"run it first with `tune resume {study.study_name}`",
        )
    best = summary.best
    config = EngineConfig.from_dict(best.config)
    measured: dict[str, Any] = {
        "decode_tok_s": {"median": round(best.decode.median, 2), "iqr": round(best.decode.iqr, 2)},
        "prompt_tok_s": {"median": round(best.prompt.median, 2), "iqr": round(best.prompt.iqr, 2)},
        "ttft_ms": {"median": round(best.ttft.median, 2), "iqr": round(best.ttft.iqr, 2)},
        "workload": dict(study.user_attrs["workload"]),
        "telemetry": best.telemetry,
        "quality": best.quality,
        "picked": why_picked(summary, study.user_attrs.get("quality_budget")),
        "noise_floor": round(summary.noise, 4),
    }
    if summary.confirmation is not None:
        measured["confirmed"] = _confirmed_figures(summary.confirmation)
    for label, row in summary.baselines.items():
        measured[f"vs_{label}"] = round(best.decode.median / row.decode.median, 3)
    trial = study.trials[best.number]
    provenance = {
        "study": study.study_name,
        "trial": best.number,
        "baseline": trial.user_attrs.get("baseline"),
        "machine": trial.user_attrs.get("machine"),
        "llama_cpp_version": trial.user_attrs.get("llama_cpp_version"),
        "model_sha256": trial.user_attrs.get("model_sha256"),
        "exported": _now(),
    }
    return Preset.from_config(study.user_attrs["model_path"], config, measured=measured, provenance=provenance)
