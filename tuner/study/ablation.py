"""Ablation: what each change from the starting point to the confirmed winner is worth, and the
minimal preset: the starting point plus the changes that earned their keep.

The starting point is the user's own settings ("yours", ``--baseline``) or llama-cpp-python's
defaults at the required context. The changes are grouped the way a person adopts them
(:data:`GROUPS`: threads, batch sizes, attention and KV cache, ...). After Fawcett and Hoos
("Analysing differences between algorithm configurations through ablation", 2016), each change's
worth is measured on the path between the two configurations, interleaved in rounds with the
configuration it is compared to (:func:`tuner.study.confirm.interleave`):

1. **Each group reverted alone from the winner.** For every group the winner changes, the winner
   with that group set back to the start's values is measured beside the winner. A group's worth
   is the median of winner / reverted over the rounds, paired round by round. It is kept when that
   is beyond the noise (:func:`tuner.stats.beats`), else reverted. Why from the winner and not
   forward from the start: a change's worth depends on the other knobs, and the preset the user
   adopts carries the winner's kept changes, so that is the context to measure it in. (Measured
   forward from a start with 8 threads on 2 cores, smaller batch sizes read 1.10x; on top of the
   winner's 2 threads they do nothing.) No decision rests on one round: transients of -30% in a
   single reading were seen on this project's machines. When the rounds disagree on a decision (a
   win that some round reads as a loss, or a tie that some round reads as a clear win), up to
   :data:`EXTRA_ROUNDS` more rounds are measured before it is taken (:func:`tuner.stats.settled`).
2. **The minimal preset must tie the winner.** Changes can be redundant (either of two gives the
   gain, so reverting either alone costs nothing), which single reversions do not see. So the
   minimal preset (the start plus the kept groups) is measured beside the winner, the start and
   the defaults; if the winner still beats it beyond the noise, the reverted group with the
   largest worth is added back and the check repeats.
3. **Sampling values are the user's product**: they change only when that change is measurably
   faster, and the minimal preset's quality is computed (cached logits) and must keep the floor;
   otherwise the full winner is exported, and the study says so. The context is a requirement: it
   never goes below it (see :mod:`tuner.baseline`), and a larger one is kept only when it pays.
4. **No figure gets worse unseen**: the minimal preset's time to first token and decode speed on
   each request shape are compared with the start's, round by round; a shape where it is slower
   beyond the noise is stated (:attr:`Ablation.worse`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tuner.config import KV_TYPE_NAMES, EngineConfig
from tuner.quality import QualityBudget
from tuner.stats import UNITS, Stat, beats, check_rounds, settled
from tuner.study._trials import baseline_trial, noise_floor, speed_objective, start_label
from tuner.study.confirm import CONFIRM_ROUNDS, Candidate, current_confirmation, interleave
from tuner.workload import Workload

__all__ = ["GROUPS", "Ablation", "Step", "ablate", "changed_groups", "compose", "current_ablation", "describe_change", "worse_figures"]

# Knob groups, as a person adopts a change: each group's knobs move together (a quantized V cache
# needs flash attention; n_ubatch <= n_batch), so any mix of the start's and the winner's groups is
# a valid configuration.
GROUPS: dict[str, tuple[str, ...]] = {
    "context": ("n_ctx",),
    "threads": ("n_threads", "n_threads_batch"),
    "batch sizes": ("n_batch", "n_ubatch"),
    "attention and KV cache": ("flash_attn", "type_k", "type_v", "offload_kqv"),
    "offload": ("n_gpu_layers", "main_gpu", "split_mode", "use_mmap", "use_mlock"),
    "sampling": ("temperature", "top_k", "top_p", "min_p", "repeat_penalty"),
}

Note = Callable[[str], None]
# Rounds a phase may add when its rounds disagree on a decision (see tuner.stats.settled): a
# decision is then taken on more readings, not on one noisy round.
EXTRA_ROUNDS = 2


@dataclass(frozen=True)
class Step:
    """One group's row in the ablation table."""

    group: str
    changes: dict[str, list[Any]]  # knob -> [start's value, winner's value], changed knobs only
    ratios: list[float]  # the winner over the winner with this group reverted, per round (the speed objective)
    kept: bool
    why: str

    @property
    def worth(self) -> Stat:
        return Stat.of(self.ratios)


@dataclass(frozen=True)
class Ablation:
    """The result: each changed group's worth, and the minimal preset with its measured figures.

    ``entries`` are the configurations measured side by side in the rounds that give the minimal
    preset's figures; ``minimal_label`` names the minimal preset's entry among them.
    """

    start: str  # "defaults" or "yours"
    winner: int  # the confirmed winner's trial number
    steps: list[Step]
    minimal: dict[str, Any]  # the minimal preset's effective settings
    minimal_label: str
    entries: list[Candidate]
    rounds: int
    noise: float
    metric: str
    counted_trials: int  # the confirmation's: the ablation speaks for the study while that confirmation does
    quality: dict[str, Any] | None = None  # the minimal preset's quality figures (None: the start's or winner's)
    worse: list[str] = field(default_factory=list)  # figures the minimal preset loses against the start
    note: str = ""  # a decision the table alone does not show (a fallback to the full winner)

    def entry(self, label: str) -> Candidate | None:
        return next((e for e in self.entries if e.label == label and e.rounds and not e.error), None)

    @property
    def minimal_entry(self) -> Candidate:
        return next(e for e in self.entries if e.label == self.minimal_label)

    @property
    def kept(self) -> list[Step]:
        return [s for s in self.steps if s.kept]

    def ratio_to(self, label: str) -> Stat | None:
        """The minimal preset over entry ``label`` ("defaults", "yours", "#N"), paired per round."""
        other = self.entry(label)
        if other is None:
            return None
        return Stat.of(self.minimal_entry.ratios_to(other))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Ablation:
        data = dict(data)
        data["steps"] = [Step(**s) for s in data["steps"]]
        data["entries"] = [Candidate.from_dict(e) for e in data["entries"]]
        return cls(**data)


def changed_groups(start: EngineConfig, winner: EngineConfig) -> dict[str, dict[str, list[Any]]]:
    """Group -> the knobs the winner changes from the start, as [start's value, winner's value]
    (effective values: what llama.cpp runs with; groups the winner leaves alone are absent)."""
    a, b = start.effective(), winner.effective()
    changed = {}
    for group, knobs in GROUPS.items():
        diff = {k: [getattr(a, k), getattr(b, k)] for k in knobs if getattr(a, k) != getattr(b, k)}
        if diff:
            changed[group] = diff
    return changed


def compose(start: EngineConfig, winner: EngineConfig, groups: set[str] | list[str]) -> EngineConfig:
    """The starting point with ``groups`` taken from the winner (effective values)."""
    a, b = start.effective(), winner.effective()
    return replace(a, **{k: getattr(b, k) for g in groups for k in GROUPS[g]})


def describe_change(knob: str, values: list[Any]) -> str:
    """'n_threads 1 -> 2', with KV types by name."""
    def show(value: Any) -> str:
        if knob in ("type_k", "type_v"):
            return KV_TYPE_NAMES.get(value, str(value))
        return f"{value:g}" if isinstance(value, float) else str(value)

    return f"{knob} {show(values[0])} -> {show(values[1])}"


def ablate(study: Any, runner: Any, *, rounds: int = CONFIRM_ROUNDS, on_note: Note | None = None) -> Ablation | None:
    """Measure what each change from the starting point to the confirmed winner is worth and
    store the minimal preset (``ablation`` on the study). None when the study has no current
    confirmation or no starting point to measure from."""
    check_rounds(rounds)
    note = on_note or (lambda _msg: None)
    confirmation = current_confirmation(study)
    label = start_label(study)
    start_trial = baseline_trial(study, label)
    if confirmation is None or start_trial is None:
        return None
    start = EngineConfig.from_dict(start_trial.user_attrs["baseline_config"]).effective()
    winner_trial = study.trials[confirmation.winner]
    winner = EngineConfig.from_dict(winner_trial.user_attrs["measurement"]["effective"]).effective()
    work = _Work(study, runner, label, start, winner, rounds, note)
    return work.run(winner_trial, confirmation)


class _Work:
    """One ablation's state: the measured entries, the decisions, the path toward the winner."""

    def __init__(self, study: Any, runner: Any, label: str, start: EngineConfig, winner: EngineConfig, rounds: int, note: Note) -> None:
        self.study, self.runner, self.label, self.start, self.winner = study, runner, label, start, winner
        self.rounds, self.note = rounds, note
        self.noise = noise_floor(study)
        self.metric = speed_objective(study)
        self.workload = replace(Workload.from_dict(study.user_attrs["workload"]), quality=False)
        self.changed = changed_groups(start, winner)

    def run(self, winner_trial: Any, confirmation: Any) -> Ablation:
        self.winner_label = f"#{winner_trial.number}"
        seen = confirmation.counted_trials
        if not self.changed:  # the confirmation kept the starting point: its rounds give the figures
            self.note(f"ablation: the confirmed winner is {self._start_words()}; nothing changes, nothing to measure")
            winner = replace(confirmation.candidate(winner_trial.number), label=self.label)
            entries = [winner] + ([confirmation.defaults] if self.label != "defaults" else [])
            minimal = self._dict(self.start)
            return self._store(Ablation(self.label, winner_trial.number, [], minimal, self.label, entries, self.rounds, self.noise, self.metric, seen))
        reverted = [self._reverted(g) for g in self.changed]
        entries = self._phase([(self.winner_label, self.winner)] + [(f"without {g}", c) for g, c in zip(self.changed, reverted)], decide=reverted)
        steps = {group: self._step(group, entries) for group in self.changed}
        kept = {g for g, s in steps.items() if s.kept}
        note = ""
        while True:
            minimal = compose(self.start, self.winner, kept)
            entries, minimal_label = self._verified(minimal, entries)
            behind = self._winner_beats(entries, minimal_label)
            if not behind:
                break
            reverted = sorted((g for g in self.changed if g not in kept), key=lambda g: -steps[g].worth.median if steps[g].ratios else 0.0)
            add = reverted[0]
            steps[add] = replace(steps[add], kept=True, why=f"kept: without it the winner beats the preset ({behind})")
            self.note(f"ablation: the winner still beats the preset ({behind}); adding back {add}")
            kept.add(add)
        quality = self._quality(minimal)
        if quality is not None and not quality["feasible"]:
            note = f"the minimal preset misses the quality floor ({quality['why']}): the full winner is exported instead"
            self.note(f"ablation: {note}")
            minimal, quality = self.winner, None
            entries, minimal_label = self._verified(minimal, entries)
        result = Ablation(
            start=self.label,
            winner=winner_trial.number,
            steps=[steps[g] for g in GROUPS if g in steps],
            minimal=self._dict(minimal),
            minimal_label=minimal_label,
            entries=entries,
            rounds=self.rounds,
            noise=self.noise,
            metric=self.metric,
            counted_trials=seen,
            quality=quality,
            worse=self._worse(entries, minimal_label),
            note=note,
        )
        return self._store(result)

    # -- measuring ---------------------------------------------------------------------------------

    def _reverted(self, group: str) -> EngineConfig:
        """The winner with ``group`` set back to the start's values."""
        return compose(self.start, self.winner, [g for g in self.changed if g != group])

    def _phase(self, configs: list[tuple[str, EngineConfig]], decide: list[EngineConfig]) -> list[Candidate]:
        """Measure ``configs`` interleaved (each distinct configuration once, under the start's,
        the winner's or the defaults' label when it is one of them), with more rounds while the
        rounds disagree on a decision: the winner against each of ``decide``."""
        named = {tuple(sorted(self._dict(c).items())): label for label, c in [(self.label, self.start), (self.winner_label, self.winner)] + self._defaults()}
        entries: list[Candidate] = []
        for label, config in configs:
            if all(e.config != self._dict(config) for e in entries):
                label = named.get(tuple(sorted(self._dict(config).items())), label)  # the start is "defaults", not "without threads"
                entries.append(Candidate(label, None, self._dict(config), None))
        unit = UNITS.get(self.metric, self.metric)
        self.note(f"ablation: {', '.join(e.label for e in entries)} measured in {self.rounds} interleaved rounds ({unit}, speed only)")
        say = lambda line: self.note(f"ablation {line}")  # noqa: E731
        interleave(entries, self.runner, self.workload, self.metric, self.rounds, say)
        done = self.rounds
        while done < self.rounds + EXTRA_ROUNDS and not all(settled(r, self.noise) for r in self._comparisons(entries, decide)):
            self.note("ablation: the rounds disagree on a decision; one more round")
            interleave(entries, self.runner, self.workload, self.metric, 1, say, first=done)
            done += 1
        return entries

    def _comparisons(self, entries: list[Candidate], decide: list[EngineConfig]) -> list[list[float]]:
        """The paired ratios a phase decides on: the winner over each configuration in ``decide``."""
        winner = next((e for e in entries if e.label == self.winner_label), None)
        wanted = [self._dict(c) for c in decide]
        if winner is None or winner.error:
            return []
        return [winner.ratios_to(e) for e in entries if e is not winner and e.config in wanted and e.rounds and not e.error]

    def _verified(self, minimal: EngineConfig, entries: list[Candidate]) -> tuple[list[Candidate], str]:
        """Entries whose rounds hold the minimal preset beside the winner, the start and the
        defaults: the current ones when they hold all four, else a new interleaved measurement."""
        wanted = [("minimal", minimal), (self.winner_label, self.winner), (self.label, self.start)] + self._defaults()
        measured = {tuple(sorted(e.config.items())): e for e in entries if e.rounds and not e.error}
        if all(tuple(sorted(self._dict(c).items())) in measured for _, c in wanted):
            return entries, measured[tuple(sorted(self._dict(minimal).items()))].label
        entries = self._phase(wanted, decide=[minimal])
        return entries, next(e.label for e in entries if e.config == self._dict(minimal))

    def _defaults(self) -> list[tuple[str, EngineConfig]]:
        """The defaults, when the start is yours: every claim also names them."""
        trial = baseline_trial(self.study, "defaults") if self.label != "defaults" else None
        return [("defaults", EngineConfig.from_dict(trial.user_attrs["baseline_config"]))] if trial is not None else []

    def _step(self, group: str, entries: list[Candidate]) -> Step:
        changes = self.changed[group]
        without = next(e for e in entries if e.config == self._dict(self._reverted(group)))
        winner = next(e for e in entries if e.label == self.winner_label)
        if without.error or winner.error or not without.rounds:
            return Step(group, changes, [], False, f"reverted: could not be measured ({without.error or winner.error})")
        ratios = winner.ratios_to(without)
        worth = Stat.of(ratios)
        if group == "context" and changes["n_ctx"][1] < changes["n_ctx"][0]:
            return Step(group, changes, ratios, False, "reverted: the context is a requirement, never below it")
        if not beats(ratios, self.noise):
            how = "it costs" if worth.median < 1 - self.noise else "within the noise"
            return Step(group, changes, ratios, False, f"reverted: {worth.median:.3f}x, {how} (±{self.noise:.1%})")
        return Step(group, changes, ratios, True, f"kept: {worth.median:.3f}x, beyond the noise (±{self.noise:.1%})")

    def _winner_beats(self, entries: list[Candidate], minimal_label: str) -> str:
        """'' when the minimal preset ties (or beats) the winner in these rounds; else the ratio."""
        minimal = next(e for e in entries if e.label == minimal_label)
        winner = next(e for e in entries if e.label == self.winner_label)
        if minimal is winner or not minimal.rounds or not winner.rounds:
            return ""
        ratios = winner.ratios_to(minimal)
        return f"{Stat.of(ratios).median:.3f}x" if beats(ratios, self.noise) else ""

    def _quality(self, minimal: EngineConfig) -> dict[str, Any] | None:
        """The minimal preset's quality figures and whether it keeps the floor (None: the study has
        no quality proxy, or the preset is the start or the winner, whose trials hold theirs)."""
        budget = self.study.user_attrs.get("quality_budget")
        reference = self.study.user_attrs.get("reference")
        if not budget or not reference or minimal in (self.start, self.winner):
            return None
        quality = self.runner.quality(minimal)
        excess = QualityBudget(**budget).constraints(quality, reference["greedy_accuracy"])
        missed = [key for key, value in excess.items() if value > 0]
        why = "; ".join(f"{key} {getattr(quality, key):.4f}" for key in missed)
        return {**quality.to_dict(), "feasible": not missed, "why": why}

    def _worse(self, entries: list[Candidate], minimal_label: str) -> list[str]:
        minimal = next(e for e in entries if e.label == minimal_label)
        start = next(e for e in entries if e.label == self.label)
        return [] if minimal is start else worse_figures(minimal, start, self.workload.shapes, self.noise, self._start_words())

    # -- helpers -----------------------------------------------------------------------------------

    def _start_words(self) -> str:
        return "your settings" if self.label == "yours" else "the defaults"

    @staticmethod
    def _dict(config: EngineConfig) -> dict[str, Any]:
        return config.effective().to_dict()

    def _store(self, result: Ablation) -> Ablation:
        self.study.set_user_attr("ablation", result.to_dict())
        return result


def worse_figures(minimal: Candidate, start: Candidate, shapes: Any, noise: float, start_words: str = "the defaults") -> list[str]:
    """Request shapes where the minimal preset's time to first token or decode speed is worse
    than the start's beyond the noise, judged on their paired per-round figures (one line each)."""
    lines = []
    rounds = list(zip(minimal.shapes, start.shapes))
    recorded = min((min(len(m), len(t)) for m, t in rounds), default=0)  # shapes every round holds
    for index, shape in enumerate(shapes[:recorded]):
        for figure, worse_when_higher in (("ttft_ms", True), ("decode_tok_s", False)):
            mine = [m[index][figure] for m, _ in rounds]
            theirs = [t[index][figure] for _, t in rounds]
            ratios = [m / t if worse_when_higher else t / m for m, t in zip(mine, theirs)]
            if beats(ratios, noise):
                m, t = Stat.of(mine).median, Stat.of(theirs).median
                what = f"time to first token {m:.0f} ms vs {t:.0f} ms" if figure == "ttft_ms" else f"decode {m:.1f} vs {t:.1f} tok/s"
                lines.append(f"the preset is slower than {start_words} on {shape.describe()}: {what} (medians of {len(ratios)} paired rounds)")
    return lines


def current_ablation(study: Any) -> Ablation | None:
    """The stored ablation, if it still speaks for the study: it ablated the current
    confirmation's winner, and no trial was added since."""
    stored = study.user_attrs.get("ablation")
    confirmation = current_confirmation(study)
    if not stored or confirmation is None:
        return None
    ablation = Ablation.from_dict(stored)
    if ablation.winner != confirmation.winner or ablation.counted_trials != confirmation.counted_trials:
        return None
    return ablation
