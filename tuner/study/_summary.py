"""What a study found: comparison rows, the summary (best trial, baselines, Pareto front, noise
floor, confirmation, ablation and the minimal preset), and why the pick is the one it is. The
preset it becomes: :mod:`tuner.study._preset`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from tuner.stats import UNITS, Stat, duration
from tuner.study._trials import (
    BASELINE_LABELS,
    baseline_trial,
    is_feasible,
    quality_version,
    required_context,
    speed_objective,
    start_label,
    start_words,
    unconfirmed_best,
)
from tuner.study.ablation import Ablation, current_ablation
from tuner.study.confirm import SHAPE_FIGURES, Candidate, Confirmation, current_confirmation
from tuner.study.noise import RACE_MIN_MARGIN, Drift, drift, noise_floor, reading_noise, tie

# Where a study's time goes (see time_spent), in the order a trial spends it, with display names.
TRIAL_PARTS = (("setup", "setup"), ("warmup", "warm-up"), ("prefill", "prefill"), ("timed", "timed"), ("quality", "quality"), ("overhead", "overhead"))
STUDY_PARTS = (("reference", "reference"), ("noise_floor", "noise floor"), ("drift", "drift checks"), ("confirmation", "confirmation"), ("ablation", "ablation"), ("speculation", "speculation"))

__all__ = ["SHAPE_COLUMNS", "Row", "Summary", "by_shape", "minimal_row", "study_json", "summarize", "why_picked"]


@dataclass(frozen=True)
class Row:
    """One configuration's figures in a comparison table.

    ``speed`` is the study's speed objective (``metric``: requests/min, or decode tok/s in a study
    made before workloads); decode, prompt and TTFT are over all request shapes, and ``shapes``
    holds each shape's medians.
    """

    label: str
    number: int
    speed: Stat
    decode: Stat
    prompt: Stat
    ttft: Stat
    config: dict[str, Any]
    metric: str = "requests_per_min"
    ratio_vs_defaults: float | None = None  # on the speed objective
    ratio_vs_yours: float | None = None  # the same against the user's own settings (--baseline), when given
    telemetry: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, float] | None = None
    feasible: bool = True
    shapes: list[dict[str, Any]] = field(default_factory=list)  # the trial's own per-shape medians
    source: str = "trial"  # "trial": the trial's own reading; "confirmed": re-measured in the confirmation; "ablation": measured there

    rounds_vs_defaults: list[float] = field(default_factory=list)  # paired per-round ratios, when re-measured beside them

    @classmethod
    def of(cls, label: str, trial: Any, defaults: Any | None, metric: str = "requests_per_min", yours: Any | None = None) -> Row:
        m = trial.user_attrs["measurement"]
        speed = Stat.from_dict(m[metric])

        def ratio(baseline: Any | None) -> float | None:
            return speed.median / Stat.from_dict(baseline.user_attrs["measurement"][metric]).median if baseline is not None else None

        return cls(
            label=label,
            number=trial.number,
            speed=speed,
            decode=Stat.from_dict(m["decode_tok_s"]),
            prompt=Stat.from_dict(m["prompt_tok_s"]),
            ttft=Stat.from_dict(m["ttft_ms"]),
            config=m["effective"],
            metric=metric,
            ratio_vs_defaults=ratio(defaults),
            ratio_vs_yours=ratio(yours),
            telemetry=m.get("telemetry") or {},
            quality=m.get("quality"),
            feasible=is_feasible(trial),
            shapes=[_shape_medians(s) for s in m.get("shapes") or []],
        )


    def to_dict(self) -> dict[str, Any]:
        """The row for `tune show --json` (docs/json.md)."""
        return {
            "label": self.label,
            "trial": self.number,
            "source": self.source,
            "metric": self.metric,
            self.metric: self.speed.to_dict(),
            "decode_tok_s": self.decode.to_dict(),
            "prompt_tok_s": self.prompt.to_dict(),
            "ttft_ms": self.ttft.to_dict(),
            "vs_defaults": self.ratio_vs_defaults,
            "vs_yours": self.ratio_vs_yours,
            "feasible": self.feasible,
            "quality": self.quality,
            "telemetry": self.telemetry,
            "shapes": self.shapes,
            "settings": self.config,
        }

    def confirmed(self, candidate: Candidate, yours: Candidate | None = None, source: str = "confirmed") -> Row:
        """This row with the figures ``candidate`` was re-measured with (the trial's reading,
        biased up by the winner's curse, stays in the trial's own row); the ratios are the medians
        of the candidate's paired per-round ratios to the defaults and to ``yours``."""

        def stat(figure: str, fallback: Stat) -> Stat:
            return candidate.stat(figure) or fallback

        return replace(
            self,
            speed=candidate.value,
            decode=stat("decode_tok_s", self.decode),
            prompt=stat("prompt_tok_s", self.prompt),
            ttft=stat("ttft_ms", self.ttft),
            ratio_vs_defaults=candidate.ratio.median if candidate.ratio_vs_defaults else self.ratio_vs_defaults,
            rounds_vs_defaults=list(candidate.ratio_vs_defaults),
            ratio_vs_yours=Stat.of(candidate.ratios_to(yours)).median if yours is not None and yours.rounds else None,
            shapes=_shapes_of(candidate, self.shapes) or self.shapes,
            source=source,
        )


def _shapes_of(candidate: Candidate, recorded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each shape's medians over the rounds ``candidate`` was re-measured in ([] when its rounds
    kept no per-shape figures, as in confirmations stored before them)."""
    if not candidate.shapes or not recorded or len(candidate.shapes[0]) != len(recorded):
        return []
    rows = []
    for index, shape in enumerate(recorded):
        medians = {name: round(Stat.of([r[index][name] for r in candidate.shapes]).median, 2) for name in SHAPE_FIGURES}
        rows.append({"shape": shape["shape"], "context_tokens": shape["context_tokens"], **medians})
    return rows


def _shape_medians(figures: dict[str, Any]) -> dict[str, Any]:
    """One request shape's medians (and its shape) from a recorded measurement."""
    row = {"shape": figures["shape"], "context_tokens": figures["context_tokens"]}
    row.update({name: round(figures[name]["median"], 2) for name in ("prompt_tok_s", "decode_tok_s", "ttft_ms", "request_ms")})
    return row


SHAPE_COLUMNS = ["decode tok/s", "prompt tok/s", "TTFT ms", "request ms"]


def by_shape(rows: list[Row]) -> list[tuple[dict[str, Any], list[tuple[Row, list[str]]]]]:
    """Each request shape with every row's medians for it, as the cells of :data:`SHAPE_COLUMNS`.

    Empty when the rows' shapes do not line up (a study made before workloads has none): the
    `tune start` table and the report both show shapes only then.
    """
    if not rows or len({len(r.shapes) for r in rows}) != 1 or not rows[0].shapes:
        return []
    return [(first["shape"], [(row, _shape_cells(row.shapes[index])) for row in rows]) for index, first in enumerate(rows[0].shapes)]


def _shape_cells(medians: dict[str, Any]) -> list[str]:
    return [f"{medians['decode_tok_s']:.1f}", f"{medians['prompt_tok_s']:.0f}", f"{medians['ttft_ms']:.0f}", f"{medians['request_ms']:.0f}"]


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
    noise: float = 0.0  # the study's relative noise floor (paired comparisons)
    reading_noise: float = 0.0  # the noise of single readings: the floor widened by the drift seen
    drift: Drift = field(default_factory=Drift)  # the incumbents' re-measurements during the search
    confirmation: Confirmation | None = None  # when current (see current_confirmation)
    metric: str = "requests_per_min"  # the speed objective every Row's ``speed`` holds
    noise_error: str | None = None  # why the noise floor could not be measured, when it could not
    trial_readings: dict[str, Row] = field(default_factory=dict)  # best and baselines as their trials read
    seconds: dict[str, float] = field(default_factory=dict)  # where the study's time went (see time_spent)
    raced: int = 0  # trials stopped early by racing
    cached_quality: int = 0  # trials whose quality came from cached logits
    quality_version: int | None = None  # the quality proxy's version (1: sampled, 2: computed); None: off
    searched_feasible: int = 0  # feasible completed trials other than the baselines: what confirmation re-measures
    start: str = "defaults"  # the starting point the preset changes: "defaults", or "yours" (--baseline)
    required_n_ctx: int | None = None  # the context the application requires (None: a study made before requirements)
    ablation: Ablation | None = None  # when current (see current_ablation)
    minimal: Row | None = None  # the minimal preset, as the ablation measured it

    @property
    def time_lines(self) -> list[str]:
        """Where the study's time went, one part a line (the total, the trials' parts, the study's
        own parts, what racing and the quality cache saved), each short enough for a terminal;
        [] when not recorded."""
        spent = self.seconds
        if not spent:
            return []
        trials = ", ".join(f"{label} {duration(spent[key])}" for key, label in TRIAL_PARTS if spent.get(key))
        own = ", ".join(f"{label} {duration(spent[key])}" for key, label in STUDY_PARTS if spent.get(key))
        return [f"{duration(sum(spent.values()))} in all", f"trials: {trials}"] + ([f"study: {own}"] if own else []) + [
            f"{self.raced} trial(s) stopped early by racing; {self.cached_quality} quality figure(s) from cached logits"
        ]

    @property
    def time_text(self) -> str:
        """The time lines as one sentence (the report's row; "" when not recorded)."""
        return "; ".join(self.time_lines)

    @property
    def start_unchanged(self) -> bool:
        """The best is the starting point handed over as it is, because no searched trial
        completed within the floor (:func:`tuner.study._trials.unconfirmed_best`)."""
        start = self.baselines.get(self.start)
        return self.best is not None and self.confirmation is None and self.searched_feasible == 0 and start is not None and start.number == self.best.number

    @property
    def unconfirmed_note(self) -> str:
        """Why the best is not confirmed by re-measurement ("" when it is, or there is no best)."""
        if self.best is None or self.confirmation is not None:
            return ""
        if self.start_unchanged:
            return f"not confirmed: no searched trial completed within the quality floor; {start_words(self.start)} unchanged, nothing re-measured"
        if self.searched_feasible == 0:
            return "not confirmed: no searched trial completed within the quality floor; the fastest baseline's own reading, nothing re-measured"
        return "not confirmed by re-measurement (the study changed since, or confirmation was skipped)"

    @property
    def quality_note(self) -> str:
        """What a reader must know about the study's quality figures ("" when nothing)."""
        if self.quality_version == 1:
            return (
                "quality proxy version 1: each answer and text was sampled once with a fixed seed "
                "(task accuracy moves by about ±0.09 between equal settings); studies made since "
                "compute version 2 from the logits (docs/quality.md)"
            )
        return ""

    def ties_defaults(self, row: Row) -> bool:
        """True when ``row`` (not the defaults themselves) is within the noise of the defaults, by
        the one tie rule: on its paired rounds and the floor when it was re-measured beside them,
        else on the two readings and the noise of single readings."""
        defaults = self.baselines.get("defaults")
        if defaults is None or row.number == defaults.number or row.ratio_vs_defaults is None:
            return False
        if row.rounds_vs_defaults:
            return tie(row.rounds_vs_defaults, self.noise)
        # two readings minutes apart: without a floor, at least racing's smallest margin separates them
        return tie([row.ratio_vs_defaults], self.reading_noise if self.noise else max(self.reading_noise, RACE_MIN_MARGIN))

    def to_dict(self) -> dict[str, Any]:
        """The figures `tune show` prints, for scripts (`tune show --json`; docs/json.md)."""

        def row(r: Row) -> dict[str, Any]:
            return {**r.to_dict(), "ties_defaults": self.ties_defaults(r)}

        return {
            "study": self.name,
            "objective": self.metric,
            "trials": {"target": self.target, "complete": self.complete, "failed": self.failed, "feasible": self.feasible, "infeasible": self.infeasible},
            "noise_floor": {"relative": self.noise, "error": self.noise_error, "single_readings": self.reading_noise, "drift": self.drift.readings},
            "best": row(self.best) if self.best else None,
            "baselines": {label: row(r) for label, r in self.baselines.items()},
            "trial_readings": {label: r.to_dict() for label, r in self.trial_readings.items()},
            "confirmation": self.confirmation.to_dict() if self.confirmation else None,
            "pareto": [r.to_dict() for r in self.pareto],
            "failures": [{"trial": number, "reason": reason} for number, reason in self.failures],
            "seconds": self.seconds,
            "raced": self.raced,
            "cached_quality": self.cached_quality,
            "quality_version": self.quality_version,
            "starting_point": self.start,
            "required_n_ctx": self.required_n_ctx,
            "minimal": row(self.minimal) if self.minimal else None,
            "ablation": self.ablation.to_dict() if self.ablation else None,
        }


def summarize(study: Any) -> Summary:
    """The best trial and the baselines, with medians and spread."""
    from optuna.trial import TrialState

    defaults, yours = baseline_trial(study, "defaults"), baseline_trial(study, "yours")
    metric = speed_objective(study)
    baselines = {}
    for label in BASELINE_LABELS:
        trial = baseline_trial(study, label)
        if trial is not None:
            baselines[label] = Row.of(label, trial, defaults, metric, yours)
    confirmation = current_confirmation(study)
    best = study.trials[confirmation.winner] if confirmation else unconfirmed_best(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    feasible = [t for t in complete if is_feasible(t)]
    front = study.best_trials if len(study.directions) > 1 else ([best] if best else [])
    failures = [
        (t.number, t.user_attrs.get("fail_reason", "process died (heartbeat stale)"))
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    ]
    best_row = Row.of("best", best, defaults, metric, yours) if best else None
    readings = {"best": best_row, **baselines} if best_row else dict(baselines)
    if confirmation is not None:  # the re-measured figures lead; the trial readings stay beside them
        best_row, baselines = _confirmed_rows(confirmation, best_row, baselines)
    ablation = current_ablation(study)
    return Summary(
        name=study.study_name,
        target=int(study.user_attrs.get("target_trials", 0)),
        complete=len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
        failed=len(failures),
        best=best_row,
        baselines=baselines,
        trial_readings=readings,
        failures=failures,
        pareto=sorted((Row.of("pareto", t, defaults, metric) for t in front), key=lambda r: -r.speed.median),
        feasible=len(feasible),
        searched_feasible=sum(1 for t in feasible if "baseline" not in t.user_attrs),
        infeasible=len(complete) - len(feasible),
        noise=noise_floor(study),
        reading_noise=reading_noise(study),
        drift=drift(study),
        confirmation=confirmation,
        metric=metric,
        noise_error=study.user_attrs.get("noise_floor_error"),
        seconds=time_spent(study),
        raced=sum(1 for t in study.get_trials(deepcopy=False) if "raced" in t.user_attrs),
        cached_quality=sum(1 for t in complete if t.user_attrs.get("cached") is True),
        quality_version=quality_version(study),
        start=start_label(study),
        required_n_ctx=required_context(study) if study.user_attrs.get("requirement") else None,
        ablation=ablation,
        minimal=minimal_row(ablation, best_row, baselines) if ablation is not None and best_row is not None else None,
    )


def minimal_row(ablation: Ablation, winner: Row, baselines: dict[str, Row]) -> Row:
    """The minimal preset's row: its settings, and the figures of the rounds the ablation measured
    it in, paired with the defaults (and yours). Its quality is its own when the ablation computed
    it, else that of the configuration it equals (the starting point, or the winner); memory is
    shown only then (the ablation's rounds record none)."""
    entry = ablation.minimal_entry
    defaults = ablation.entry("defaults")
    yours = ablation.entry("start") if ablation.start == "yours" else None
    same = next((row for role, row in (("start", baselines.get(ablation.start)), ("winner", winner)) if ablation.roles.get(role) == ablation.roles["minimal"]), None)
    own = {k: v for k, v in (ablation.quality or {}).items() if k not in ("feasible", "why")} or None
    row = replace(
        same or winner,
        label="minimal",
        config=dict(ablation.minimal),
        quality=own or (same or winner).quality,
        telemetry=same.telemetry if same else {},
        feasible=ablation.quality["feasible"] if ablation.quality else (same or winner).feasible,
        ratio_vs_defaults=None,
    )
    return row.confirmed(replace(entry, ratio_vs_defaults=entry.ratios_to(defaults) if defaults else []), yours, source="ablation")


def time_spent(study: Any) -> dict[str, float]:
    """Seconds the study spent, by part: each trial's measurement parts (setup, warm-up, prefill,
    timed repetitions, quality) and overhead (the rest of a trial: the worker round trip), summed
    over its trials, and the study's own reference, noise floor and confirmation."""
    spent: dict[str, float] = {}
    for trial in study.get_trials(deepcopy=False):
        for part, seconds in (trial.user_attrs.get("seconds") or {}).items():
            spent[part] = round(spent.get(part, 0.0) + seconds, 3)
    for part, seconds in (study.user_attrs.get("seconds") or {}).items():
        spent[part] = round(spent.get(part, 0.0) + seconds, 3)
    return spent


def _confirmed_rows(confirmation: Confirmation, best: Row, baselines: dict[str, Row]) -> tuple[Row, dict[str, Row]]:
    """The best row and the baselines with the figures their confirmation re-measured."""
    re_measured = {"defaults": confirmation.defaults, "guide_card": confirmation.guide, "yours": confirmation.yours}
    yours = confirmation.yours
    rows = {label: row.confirmed(re_measured[label], yours) if re_measured.get(label) else row for label, row in baselines.items()}
    return best.confirmed(confirmation.candidate(confirmation.winner), yours), rows


def why_picked(summary: Summary, budget: dict[str, float] | None) -> str:
    """One sentence: why the exported trial is the one."""
    best = summary.best
    assert best is not None
    if summary.confirmation is not None:
        return f"confirmed by re-measurement: {summary.confirmation.why}"
    unit = UNITS.get(summary.metric, summary.metric)
    if summary.start_unchanged:
        return f"no searched trial completed within the quality floor: {start_words(summary.start)} as they are (no change was measured to pay)"
    if not budget or not best.quality:
        return f"most {unit} of the {summary.feasible} feasible trials ({summary.complete} completed, no quality floor)"
    return (
        f"most {unit} among {summary.feasible} trials within the quality floor "
        f"(mean KLD {best.quality['kld_mean']:.4f} <= {budget['kld_mean']}, task accuracy "
        f"{best.quality['task_accuracy']:.2f} >= {budget['accuracy_floor']:.0%} of greedy); "
        f"{summary.infeasible} completed trials were outside it"
    )


def study_json(study: Any) -> dict[str, Any]:
    """What `tune show` prints, as one JSON-ready object (`tune show --json`; docs/json.md)."""
    summary = summarize(study)
    attrs = study.user_attrs
    data = {
        **summary.to_dict(),
        "model": {"path": attrs.get("model_path"), "sha256": attrs.get("model_sha256")},
        "machine": attrs.get("machine"),
        "space": (attrs.get("space") or {}).get("name"),
        "workload": attrs.get("workload"),
        "latency_targets": attrs.get("latency_targets"),
        "quality_budget": attrs.get("quality_budget"),
        "picked": why_picked(summary, attrs.get("quality_budget")) if summary.best else None,
    }
    return data
