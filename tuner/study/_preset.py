"""The preset a study hands the user: by default the minimal preset (the starting point plus the
changes that earned their keep in the ablation), or with ``full`` the raw confirmed winner; its
figures, what each change is worth, and its provenance.
"""

from __future__ import annotations

from typing import Any

from tuner.config import EngineConfig
from tuner.errors import StudyError
from tuner.preset import Preset
from tuner.stats import Stat
from tuner.study._storage import now
from tuner.study._summary import Row, Summary, summarize, why_picked
from tuner.study._trials import start_words, study_placement
from tuner.study.noise import beats
from tuner.study.ablation import Ablation
from tuner.study.speculation import kept_speculation
from tuner.study.confirm import Candidate, Confirmation

__all__ = ["ablation_table", "best_preset", "winner_vs_minimal"]


def best_preset(study: Any, *, full: bool = False) -> Preset:
    """The preset for the study: the minimal preset when the study has a current ablation (unless
    ``full``), else its best trial, with its figures and provenance.

    Raises:
        StudyError: the study has no completed (feasible) trial.
    """
    summary = summarize(study)
    if summary.best is None:
        if summary.infeasible:
            raise StudyError(
                f"study '{study.study_name}' has no feasible trial ({summary.infeasible} completed, all outside the quality floor or a latency target)",
                f"run more trials with `tune resume {study.study_name} --trials N`, or start a study with a looser --quality-budget or latency targets",
            )
        raise StudyError(
            f"study '{study.study_name}' has no completed trial to export",
            f"run it first with `tune resume {study.study_name}`",
        )
    if not full and summary.minimal is not None and summary.ablation is not None:
        return _minimal_preset(study, summary, summary.minimal, summary.ablation)
    return _winner_preset(study, summary)


def _winner_preset(study: Any, summary: Summary) -> Preset:
    """The confirmed winner (or the fastest feasible trial) as it ran, every searched value kept."""
    best = summary.best
    measured = _common(study, summary, best)
    measured["picked"] = why_picked(summary, study.user_attrs.get("quality_budget"))
    for label, row in summary.baselines.items():
        measured[f"vs_{label}"] = round(_ratio(best, row, summary.confirmation), 3)
    if summary.confirmation is not None:
        winner = summary.confirmation.candidate(summary.confirmation.winner)
        measured["confirmed"] = _confirmed_figures(winner, summary.confirmation.defaults, summary.confirmation.rounds, summary.metric, "the confirmation")
        measured["confirmed"]["candidates"] = {c.label: round(c.value.median, 2) for c in summary.confirmation.candidates if c.rounds and not c.error}
        reading = summary.trial_readings["best"]
        measured["trial_reading"] = {
            **_figures(reading),
            **{f"vs_{label}": round(reading.speed.median / row.speed.median, 3) for label, row in summary.trial_readings.items() if label != "best"},
            "note": "the trial's own reading; the fastest of many noisy readings reads high (the winner's curse)",
        }
    if summary.ablation is not None:
        measured["ablation"] = ablation_table(summary.ablation)
        measured["full"] = "the raw winner, every searched value kept (tune export without --full writes the minimal preset)"
    return _preset(study, EngineConfig.from_dict(best.config), measured, best.number)


def _minimal_preset(study: Any, summary: Summary, minimal: Row, ablation: Ablation) -> Preset:
    """The starting point plus the changes that earned their keep, with the figures the ablation
    measured it with, paired round by round with the defaults (and yours)."""
    measured = _common(study, summary, minimal)
    measured["picked"] = (
        f"the minimal preset: {start_words(ablation.start)} at the required context plus the changes that measurably pay "
        f"(ablation of the confirmed winner #{ablation.winner}, {ablation.rounds} interleaved rounds)"
    )
    measured["changes"] = {knob: {"from": values[0], "to": values[1], "group": step.group} for step in ablation.kept for knob, values in step.changes.items()}
    measured["vs_defaults"] = round(minimal.ratio_vs_defaults, 3) if minimal.ratio_vs_defaults is not None else None
    if minimal.ratio_vs_yours is not None:
        measured["vs_yours"] = round(minimal.ratio_vs_yours, 3)
    defaults = ablation.entry("defaults")
    if defaults is not None:
        measured["confirmed"] = _confirmed_figures(ablation.minimal_entry, defaults, ablation.rounds, summary.metric, "the ablation")
    winner = ablation.entry("winner")
    if winner is not None and winner is not ablation.minimal_entry:
        measured["full_winner"] = {
            "trial": ablation.winner,
            "vs_minimal": round(Stat.of(_winner_over_minimal(ablation)).median, 3),
            "note": f"{winner_vs_minimal(ablation)}: the reverted changes do not pay (tune export --full writes the winner)",
        }
    measured["ablation"] = ablation_table(ablation)
    if ablation.worse:
        measured["worse"] = list(ablation.worse)
    if ablation.note:
        measured["ablation_note"] = ablation.note
    return _preset(study, EngineConfig.from_dict(ablation.minimal), measured, ablation.winner, minimal=True)


def winner_vs_minimal(ablation: Ablation) -> str:
    """The full winner against the minimal preset, in words ('' when they are one configuration)."""
    winner, minimal = ablation.entry("winner"), ablation.minimal_entry
    if winner is None or winner is minimal:
        return ""
    ratios = _winner_over_minimal(ablation)
    how = "the minimal preset is faster" if beats([1 / r for r in ratios], ablation.noise) else "a tie within the noise"
    return f"the full winner #{ablation.winner} reads {Stat.of(ratios).median:.3f}x the minimal preset over {len(ratios)} rounds ({min(ratios):.2f}-{max(ratios):.2f}, {how})"


def _winner_over_minimal(ablation: Ablation) -> list[float]:
    """The winner over the minimal preset, round by round: every paired round the ablation held
    (what it decided on), or the last phase's in an ablation stored before it kept them."""
    return ablation.versus or ablation.entry("winner").ratios_to(ablation.minimal_entry)


def ablation_table(ablation: Ablation) -> list[dict[str, Any]]:
    """The ablation table as a preset carries it: each changed group, from -> to, its measured
    worth (median and range of its per-round ratios to the start) and whether it was kept."""
    rows = []
    for step in ablation.steps:
        worth = {"median": round(step.worth.median, 3), "low": round(min(step.ratios), 3), "high": round(max(step.ratios), 3)} if step.ratios else None
        rows.append({
            "group": step.group,
            "change": step.change_text,
            "worth": worth,
            "kept": step.kept,
            "why": step.why,
        })
    return rows


def _common(study: Any, summary: Summary, row: Row) -> dict[str, Any]:
    """What every preset's ``measured`` section says: the figures, the workload, the requirement."""
    source = {"confirmed": "confirmed: re-measured in the confirmation", "ablation": "measured in the ablation's interleaved rounds"}
    measured: dict[str, Any] = {
        "objective": row.metric,
        "figures": source.get(row.source, "the trial's own reading (not confirmed)"),
        **_figures(row),
        "workload": dict(study.user_attrs["workload"]),
        "latency_targets": study.user_attrs.get("latency_targets"),
        "telemetry": row.telemetry,
        "quality": {**row.quality, "version": summary.quality_version} if row.quality else None,
        "noise_floor": round(summary.noise, 4),
    }
    if summary.required_n_ctx is not None:
        requirement = study.user_attrs["requirement"]
        measured["requirement"] = {"n_ctx": summary.required_n_ctx, "why": requirement.get("why", "")}
    measured["starting_point"] = summary.start
    placement = study_placement(study)
    if placement:  # what the defaults shared with the candidates: kept in every export, like n_ctx
        measured["placement"] = placement
    return measured


def _preset(study: Any, config: EngineConfig, measured: dict[str, Any], number: int, minimal: bool = False) -> Preset:
    config, speculation = kept_speculation(study, config)
    if speculation is not None:  # decided on the workload's text at these settings (tuner.study.speculation)
        measured["speculation"] = {"kept": speculation.kept, "why": speculation.why, "candidates": speculation.table()}
    trial = study.trials[number]
    provenance = {
        "study": study.study_name,
        "trial": number,
        "preset": "minimal (ablated)" if minimal else "winner",
        "baseline": trial.user_attrs.get("baseline"),
        "machine": trial.user_attrs.get("machine"),
        "llama_cpp_version": trial.user_attrs.get("llama_cpp_version"),
        "engine": study.user_attrs.get("engine") or {"name": "llama-cpp-python"},  # what measured it
        "model_sha256": trial.user_attrs.get("model_sha256"),
        "exported": now(),
    }
    return Preset.from_config(study.user_attrs["model_path"], config, measured=measured, provenance=provenance)


def _confirmed_figures(entry: Candidate, defaults: Candidate, rounds: int, metric: str, where: str) -> dict[str, Any]:
    """An entry's re-measured figures for a preset's ``measured.confirmed`` section."""
    ratios = entry.ratios_to(defaults)
    return {
        "metric": metric,
        metric: {"median": round(entry.value.median, 2), "iqr": round(entry.value.iqr, 2), "rounds": [round(x, 2) for x in entry.rounds]},
        f"defaults_{metric}": {"median": round(defaults.value.median, 2), "rounds": [round(x, 2) for x in defaults.rounds]},
        "vs_defaults": {"median": round(Stat.of(ratios).median, 3), "low": round(min(ratios), 3), "high": round(max(ratios), 3)},
        "interval": f"range of the per-round ratios over {rounds} interleaved rounds of {where}",
    }


def _figures(row: Row) -> dict[str, Any]:
    """A row's figures for a preset: the speed objective, decode, prompt, TTFT, per shape."""
    def pair(stat: Stat) -> dict[str, float]:
        return {"median": round(stat.median, 2), "iqr": round(stat.iqr, 2)}

    return {
        row.metric: pair(row.speed),
        "decode_tok_s": pair(row.decode),
        "prompt_tok_s": pair(row.prompt),
        "ttft_ms": pair(row.ttft),
        "shapes": row.shapes,
    }


def _ratio(best: Row, baseline: Row, confirmation: Confirmation | None) -> float:
    """best / baseline on the speed objective: the median of the paired per-round ratios when both
    were re-measured in the confirmation, else the ratio of the two rows' medians."""
    if confirmation is not None and best.source == baseline.source == "confirmed":
        winner = confirmation.candidate(confirmation.winner)
        other = confirmation.defaults if baseline.label == "defaults" else confirmation.baseline(baseline.label)
        if other is not None:
            return Stat.of(winner.ratios_to(other)).median
    return best.speed.median / baseline.speed.median
