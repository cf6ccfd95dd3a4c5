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
   is beyond the noise (:func:`tuner.study.noise.beats`), else reverted. Why from the winner and not
   forward from the start: a change's worth depends on the other knobs, and the preset the user
   adopts carries the winner's kept changes, so that is the context to measure it in. (Measured
   forward from a start with 8 threads on 2 cores, smaller batch sizes read 1.10x; on top of the
   winner's 2 threads they do nothing.) No decision rests on one round: transients of -30% in a
   single reading were seen on this project's machines. When the rounds disagree on a decision (a
   win that some round reads as a tie or a loss, or a tie that some round reads as a clear win), up to
   :data:`EXTRA_ROUNDS` more rounds are measured before it is taken (:func:`tuner.study.noise.settled`).
2. **Every keep is re-measured, and the minimal preset must tie the winner.** The minimal
   preset is measured beside itself without each kept group (:meth:`_Work._rechecked`); a group
   the new rounds do not confirm is reverted. Changes can be redundant (either of two gives the
   gain, so reverting either alone costs nothing), which single reversions do not see. So the
   minimal preset (the start plus the kept groups) is measured beside the winner, the start and
   the defaults; if the winner still beats it beyond the noise in every round of the two from
   every phase (:meth:`_Work._evidence`), the reverted group with the largest worth is added back
   and the check repeats.
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

from tuner.config import AUTO_SLOTS, KV_TYPE_NAMES, EngineConfig
from tuner.quality import QualityBudget
from tuner.stats import UNITS, Stat, check_rounds
from tuner.errors import ConfigError, EngineError, WorkerFailed
from tuner.study._trials import baseline_trial, speed_objective, start_label, start_words
from tuner.study.noise import beats, noise_floor, settled
from tuner.study.confirm import CONFIRM_ROUNDS, Candidate, current_confirmation, interleave
from tuner.workload import Workload

__all__ = ["GROUPS", "NOT_ABLATED", "Ablation", "Step", "ablate", "changed_groups", "compose", "current_ablation", "describe_change", "worse_figures"]

# Knob groups, as a person adopts a change: each group's knobs move together (a quantized V cache
# needs flash attention; n_ubatch <= n_batch), so any mix of the start's and the winner's groups is
# a valid configuration; generation and prompt threads are two (make tune once kept n_threads 1 -> 2
# with n_threads_batch 2 -> 1 as one change, the second costing 30% of the time to first token).
GROUPS: dict[str, tuple[str, ...]] = {
    "context": ("n_ctx",),
    "threads": ("n_threads",),
    "prompt threads": ("n_threads_batch",),
    "batch sizes": ("n_batch", "n_ubatch"),
    "attention and KV cache": ("flash_attn", "type_k", "type_v", "offload_kqv", "swa_full"),
    "offload": ("n_gpu_layers", "main_gpu", "split_mode", "op_offload", "use_mmap", "use_mlock"),
    "sampling": ("temperature", "top_k", "top_p", "min_p", "repeat_penalty"),
    "slots": ("n_parallel", "kv_unified"),  # llama-server's parallel slots, searched when requests come at once
}
# Decided after the ablation on the workload's text (tuner.study.speculation), never by trials.
NOT_ABLATED = ("seed", "spec_type", "draft_tokens", "draft_ngram")

Note = Callable[[str], None]
# Rounds a phase may add when its rounds disagree on a decision (see tuner.study.noise.settled): a
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

    @property
    def change_text(self) -> str:
        """'n_threads 1 -> 2, n_threads_batch 1 -> 2': the group's changed knobs, from -> to."""
        return ", ".join(describe_change(k, v) for k, v in self.changes.items())

    @property
    def worth_text(self) -> str:
        """'1.683x (1.52-1.80)': the median and the range of the per-round ratios ('-' unmeasured)."""
        return f"{self.worth.median:.3f}x ({min(self.ratios):.2f}-{max(self.ratios):.2f})" if self.ratios else "-"


@dataclass(frozen=True)
class Ablation:
    """The result: each changed group's worth, and the minimal preset with its measured figures.

    ``entries`` are the configurations measured side by side in the rounds that give the minimal
    preset's figures; ``roles`` names the entry that holds each role there ("minimal", "start",
    "winner", "defaults": one entry may hold several, e.g. the minimal preset is the start).
    """

    start: str  # "defaults" or "yours"
    winner: int  # the confirmed winner's trial number
    steps: list[Step]
    minimal: dict[str, Any]  # the minimal preset's effective settings
    roles: dict[str, str]
    entries: list[Candidate]
    noise: float
    metric: str
    confirmed: list[float]  # the confirmation's rounds of its winner: the ablation speaks for that confirmation
    quality: dict[str, Any] | None = None  # the minimal preset's quality figures (None: the start's or winner's)
    worse: list[str] = field(default_factory=list)  # figures the minimal preset loses against the start
    note: str = ""  # a decision the table alone does not show (a fallback to the full winner)
    versus: list[float] = field(default_factory=list)  # the winner over the minimal preset, every paired round of every phase

    def entry(self, role: str) -> Candidate | None:
        """The measured entry holding ``role`` ("minimal", "start", "winner", "defaults")."""
        label = self.roles.get(role)
        return next((e for e in self.entries if e.label == label and e.rounds and not e.error), None)

    @property
    def minimal_entry(self) -> Candidate:
        entry = self.entry("minimal")
        assert entry is not None, "an ablation is stored only with its minimal preset measured"
        return entry

    @property
    def rounds(self) -> int:
        """Rounds the minimal preset was measured in (the planned ones, and any added)."""
        return len(self.minimal_entry.rounds)

    @property
    def kept(self) -> list[Step]:
        return [s for s in self.steps if s.kept]

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
    """'n_threads 1 -> 2', with KV types by name and llama-server's auto slots as "auto"."""
    def show(value: Any) -> str:
        if knob == "n_parallel" and value == AUTO_SLOTS:
            return "auto"
        if knob in ("type_k", "type_v"):
            return KV_TYPE_NAMES.get(value, str(value))
        if isinstance(value, bool):
            return "on" if value else "off"
        return f"{value:g}" if isinstance(value, float) else str(value)

    return f"{knob} {show(values[0])} -> {show(values[1])}"


def ablate(study: Any, runner: Any, *, rounds: int = CONFIRM_ROUNDS, on_note: Note | None = None) -> Ablation | None:
    """Measure what each change from the starting point to the confirmed winner is worth and
    store the minimal preset (``ablation`` on the study). None when the study has no current
    confirmation or no starting point to measure from.

    The runner must have the quality reference loaded when the study has a quality proxy (the
    minimal preset's quality is computed).
    """
    check_rounds(rounds)
    confirmation = current_confirmation(study)
    start_trial = baseline_trial(study, start_label(study))
    if confirmation is None or start_trial is None:
        return None
    work = _Work(study, runner, start_trial, study.trials[confirmation.winner], rounds, on_note or (lambda _msg: None))
    return work.run(confirmation)


class _Work:
    """One ablation's state: the measured entries, the decisions, the path toward the winner.

    Entries are found by their settings (a role is a configuration; labels are for people)."""

    def __init__(self, study: Any, runner: Any, start_trial: Any, winner_trial: Any, rounds: int, note: Note) -> None:
        self.study, self.runner, self.rounds, self.note = study, runner, rounds, note
        self.label = start_label(study)
        # Both as llama.cpp ran them (read back: n_ctx padded to 256), so that only real changes differ.
        self.start = _ran(start_trial)
        self.winner = _ran(winner_trial)
        self.winner_trial = winner_trial
        self.winner_label = f"#{winner_trial.number}"
        defaults = baseline_trial(study, "defaults")
        self.defaults = _ran(defaults) if defaults is not None else None
        self.noise = noise_floor(study)
        self.metric = speed_objective(study)
        self.workload = replace(Workload.from_dict(study.user_attrs["workload"]), quality=False)
        self.changed = changed_groups(self.start, self.winner)
        self.phases: list[list[Candidate]] = []  # every phase's entries, for the evidence on a pair

    def run(self, confirmation: Any) -> Ablation:
        if not self.changed:  # the confirmation kept the starting point: its rounds give the figures
            self.note(f"ablation: the confirmed winner is {start_words(self.label)}; nothing changes, nothing to measure")
            entries = [replace(confirmation.candidate(self.winner_trial.number), label=self.label)]
            if self.label != "defaults":
                entries.append(confirmation.defaults)
            roles = {"minimal": self.label, "start": self.label, "winner": self.label, "defaults": entries[-1].label}
            return self._store(self._result([], self.start, roles, entries, confirmation))
        reverted = {g: self._without(set(self.changed), g) for g in self.changed}
        entries = self._phase([(self.winner_label, self.winner)] + [(f"without {g}", c) for g, c in reverted.items()], pairs=[(self.winner, c) for c in reverted.values()])
        steps = {group: self._step(group, reverted[group], entries) for group in self.changed}
        kept = {g for g, s in steps.items() if s.kept}
        note = ""
        minimal = compose(self.start, self.winner, kept)
        entries = self._verified(minimal, entries, recheck=kept)
        if self._find(entries, minimal) is not None:
            kept = self._rechecked(steps, kept, minimal, entries)
        while True:
            minimal = compose(self.start, self.winner, kept)
            entries = self._verified(minimal, entries)
            failed = self._find(entries, minimal) is None
            behind = "" if failed else self._winner_beats(minimal, entries)
            if failed or not behind:
                break
            add = self._next_to_add(steps, kept)
            steps[add] = replace(steps[add], kept=True, why=f"kept: without it the winner beats the preset ({behind})")
            self.note(f"ablation: the winner still beats the preset ({behind}); adding back {add}")
            kept.add(add)
        quality = None if failed else self._quality(minimal)
        if failed or (quality is not None and not quality["feasible"]):
            why = "could not be measured" if failed else f"misses the quality floor ({quality['why']})"
            note = f"the minimal preset {why}: the full winner is exported instead"
            self.note(f"ablation: {note}")
            steps = {g: s if s.kept else replace(s, kept=True, why=f"kept: the preset without it {why}") for g, s in steps.items()}
            minimal, quality = self.winner, None
            entries = self._verified(minimal, entries)
        roles = {"minimal": self._find(entries, minimal).label, "start": self._find(entries, self.start).label, "winner": self._find(entries, self.winner).label}
        if self.defaults is not None and self._find(entries, self.defaults) is not None:
            roles["defaults"] = self._find(entries, self.defaults).label
        result = self._result([steps[g] for g in GROUPS if g in steps], minimal, roles, entries, confirmation, quality, note)
        return self._store(replace(result, worse=self._worse(entries, minimal)))

    def _result(self, steps: list[Step], minimal: EngineConfig, roles: dict[str, str], entries: list[Candidate], confirmation: Any, quality: dict[str, Any] | None = None, note: str = "") -> Ablation:
        winner = confirmation.candidate(confirmation.winner)
        versus = self._evidence(self.winner, minimal)
        return Ablation(self.label, self.winner_trial.number, steps, _settings(minimal), roles, entries, self.noise, self.metric, list(winner.rounds), quality, note=note, versus=versus)

    # -- measuring ---------------------------------------------------------------------------------

    def _phase(self, configs: list[tuple[str, EngineConfig]], pairs: list[tuple[EngineConfig, EngineConfig]]) -> list[Candidate]:
        """Measure ``configs`` interleaved, each distinct configuration once (named after the
        start, the winner or the defaults when it is one of them), with more rounds while the
        rounds disagree on a decision: the first of each of ``pairs`` against the second."""
        names = [(self.start, self.label), (self.winner, self.winner_label)] + ([(self.defaults, "defaults")] if self.defaults else [])
        entries: list[Candidate] = []
        for label, config in configs:
            if self._find(entries, config, measured=False) is None:
                label = next((name for known, name in names if _settings(known) == _settings(config)), label)
                entries.append(Candidate(label, None, _settings(config), None))
        self.phases.append(entries)
        unit = UNITS.get(self.metric, self.metric)
        self.note(f"ablation: {', '.join(e.label for e in entries)} measured in {self.rounds} interleaved rounds ({unit}, speed only)")
        say = lambda line: self.note(f"ablation {line}")  # noqa: E731
        interleave(entries, self.runner, self.workload, self.metric, self.rounds, say)
        done = self.rounds
        while done < self.rounds + EXTRA_ROUNDS and not all(settled(r, self.noise) for r in self._comparisons(entries, pairs)):
            self.note("ablation: the rounds disagree on a decision; one more round")
            interleave(entries, self.runner, self.workload, self.metric, 1, say, first=done)
            done += 1
        return entries

    @staticmethod
    def _find(entries: list[Candidate], config: EngineConfig, measured: bool = True) -> Candidate | None:
        """The entry measuring ``config`` (with ``measured``: only if its rounds completed)."""
        found = next((e for e in entries if e.config == _settings(config)), None)
        return found if found is None or not measured or (found.rounds and not found.error) else None

    def _paired(self, entries: list[Candidate], a: EngineConfig, b: EngineConfig) -> list[float]:
        """``a`` over ``b`` in one phase's rounds ([] unless both are measured there, as two entries)."""
        x, y = self._find(entries, a), self._find(entries, b)
        return x.ratios_to(y) if x is not None and y is not None and x is not y else []

    def _comparisons(self, entries: list[Candidate], pairs: list[tuple[EngineConfig, EngineConfig]]) -> list[list[float]]:
        """The paired ratios a phase decides on: the first of each pair over the second."""
        return [ratios for a, b in pairs if (ratios := self._paired(entries, a, b))]

    def _evidence(self, a: EngineConfig, b: EngineConfig) -> list[float]:
        """Every paired ratio of ``a`` over ``b``, from every phase that measured both (CI once added
        back no-op sampling values on one check's 3 rounds at 1.030x that the first rounds tied)."""
        return [ratio for entries in self.phases for ratio in self._paired(entries, a, b)]

    def _verified(self, minimal: EngineConfig, entries: list[Candidate], recheck: set[str] = frozenset()) -> list[Candidate]:
        """Entries whose rounds hold the minimal preset beside the winner, the start and the
        defaults (and, for each group in ``recheck``, the minimal preset without it): the current
        ones when they hold them all, else a new interleaved measurement."""
        wanted = [("minimal", minimal), (self.winner_label, self.winner), (self.label, self.start)]
        if self.defaults is not None:
            wanted.append(("defaults", self.defaults))
        without = {g: self._without(recheck, g) for g in sorted(recheck)}
        wanted += [(f"minimal without {g}", c) for g, c in without.items()]
        if all(self._find(entries, c) is not None for _, c in wanted):
            return entries
        return self._phase(wanted, pairs=[(self.winner, minimal)] + [(minimal, c) for c in without.values()])

    def _rechecked(self, steps: dict[str, Step], kept: set[str], minimal: EngineConfig, entries: list[Candidate]) -> set[str]:
        """The kept groups that pay again when re-measured (the minimal preset against itself
        without the group, in the rounds of :meth:`_verified`); the others are reverted, their row
        saying so. First rounds can read a no-op as a win: an ablation test here kept batch sizes
        larger than its prompts at 1.148x, floor ±12.7%."""
        confirmed = set(kept)
        for group in sorted(kept):
            ratios = self._paired(entries, minimal, self._without(kept, group))
            if ratios and not beats(ratios, self.noise):
                step = steps[group]
                steps[group] = replace(step, kept=False, why=f"reverted: {step.worth.median:.3f}x in the first rounds, {Stat.of(ratios).median:.3f}x re-measured beside the preset (±{self.noise:.1%})")
                self.note(f"ablation: {group} does not pay again when re-measured ({Stat.of(ratios).median:.3f}x); reverted")
                confirmed.discard(group)
        return confirmed

    def _without(self, groups: set[str], group: str) -> EngineConfig:
        """The start with ``groups`` changed as the winner has them, ``group`` left out: the
        configuration a group's worth is measured against, in both phases."""
        return compose(self.start, self.winner, groups - {group})

    def _step(self, group: str, reverted: EngineConfig, entries: list[Candidate]) -> Step:
        changes = self.changed[group]
        without, winner = self._find(entries, reverted, measured=False), self._find(entries, self.winner, measured=False)
        if without.error or winner.error or not without.rounds or not winner.rounds:
            return Step(group, changes, [], False, f"reverted: could not be measured ({without.error or winner.error})")
        ratios = winner.ratios_to(without)
        worth = Stat.of(ratios)
        if not beats(ratios, self.noise):
            how = "it costs" if worth.median < 1 - self.noise else "within the noise"
            return Step(group, changes, ratios, False, f"reverted: {worth.median:.3f}x, {how} (±{self.noise:.1%})")
        return Step(group, changes, ratios, True, f"kept: {worth.median:.3f}x, beyond the noise (±{self.noise:.1%})")

    def _next_to_add(self, steps: dict[str, Step], kept: set[str]) -> str:
        """The reverted group to add back: the largest measured worth, sampling last (the user's
        product's behaviour changes only when nothing else closes the gap)."""
        reverted = [g for g in self.changed if g not in kept]
        return max(reverted, key=lambda g: (g != "sampling", steps[g].worth.median if steps[g].ratios else 0.0))

    def _winner_beats(self, minimal: EngineConfig, entries: list[Candidate]) -> str:
        """The winner's ratio over the minimal preset if it beats it on every round of the two; ''
        when it does not, or the winner failed in these rounds (``entries``)."""
        ratios = self._evidence(self.winner, minimal) if self._find(entries, self.winner) else []
        return f"{Stat.of(ratios).median:.3f}x" if beats(ratios, self.noise) else ""

    def _quality(self, minimal: EngineConfig) -> dict[str, Any] | None:
        """The minimal preset's quality figures and whether it keeps the floor (None: the study has
        no quality proxy, or the preset is the start or the winner, whose trials hold theirs).
        A proxy that cannot run counts as missing the floor: nothing unmeasured is exported."""
        budget = self.study.user_attrs.get("quality_budget")
        reference = self.study.user_attrs.get("reference")
        if not budget or not reference or _settings(minimal) in (_settings(self.start), _settings(self.winner)):
            return None
        try:
            quality = self.runner.quality(minimal)
        except (ConfigError, EngineError, WorkerFailed) as exc:
            return {"feasible": False, "why": f"its quality proxy failed: {exc.what}"}
        excess = QualityBudget(**budget).constraints(quality, reference["greedy_accuracy"])
        missed = [key for key, value in excess.items() if value > 0]
        why = "; ".join(f"{key} {getattr(quality, key):.4f}" for key in missed)
        return {**quality.to_dict(), "feasible": not missed, "why": why}

    def _worse(self, entries: list[Candidate], minimal: EngineConfig) -> list[str]:
        mine, start = self._find(entries, minimal), self._find(entries, self.start)
        return [] if mine is start or start is None else worse_figures(mine, start, self.workload.shapes, self.noise, start_words(self.label), self.workload.concurrency)

    def _store(self, result: Ablation) -> Ablation:
        self.study.set_user_attr("ablation", result.to_dict())
        return result


def _ran(trial: Any) -> EngineConfig:
    """A trial's settings as llama.cpp ran them (read back), or as asked when it recorded none."""
    measured = (trial.user_attrs.get("measurement") or {}).get("effective")
    return EngineConfig.from_dict(measured or trial.user_attrs.get("baseline_config") or trial.user_attrs["config"]).effective()


def _settings(config: EngineConfig) -> dict[str, Any]:
    return config.effective().to_dict()


def worse_figures(minimal: Candidate, start: Candidate, shapes: Any, noise: float, start_words: str = "the defaults", users: int = 1) -> list[str]:
    """Request shapes where the minimal preset's time to first token or decode speed is worse
    than the start's beyond the noise, judged on their paired per-round figures (one line each).
    With ``users`` at once, the request time instead of decode speed: one user's decode rate
    falls when slots decode together, what each waits for is its TTFT and request time (the
    slowest user's, :func:`tuner.measure.served`)."""
    lines = []
    rounds = list(zip(minimal.shapes, start.shapes))
    recorded = min((min(len(m), len(t)) for m, t in rounds), default=0)  # shapes every round holds
    compared = (("ttft_ms", True), ("decode_tok_s", False) if users == 1 else ("request_ms", True))
    for index, shape in enumerate(shapes[:recorded]):
        for figure, worse_when_higher in compared:
            mine = [m[index][figure] for m, _ in rounds]
            theirs = [t[index][figure] for _, t in rounds]
            ratios = [m / t if worse_when_higher else t / m for m, t in zip(mine, theirs)]
            if beats(ratios, noise):
                m, t = Stat.of(mine).median, Stat.of(theirs).median
                whose = "" if users == 1 else f"the slowest of {users} users' "
                what = {"ttft_ms": f"{whose}time to first token {m:.0f} ms vs {t:.0f} ms", "request_ms": f"{whose}request time {m:.0f} ms vs {t:.0f} ms"}.get(
                    figure, f"decode {m:.1f} vs {t:.1f} tok/s")
                lines.append(f"the preset is slower than {start_words} on {shape.describe()}: {what} (medians of {len(ratios)} paired rounds)")
    return lines


def current_ablation(study: Any) -> Ablation | None:
    """The stored ablation, if it still speaks for the study: it ablated the winner of the
    study's current confirmation (the same re-measurement, not a later one)."""
    stored = study.user_attrs.get("ablation")
    confirmation = current_confirmation(study)
    if not stored or confirmation is None:
        return None
    if "roles" not in stored:  # stored by a development version of this module
        return None
    ablation = Ablation.from_dict(stored)
    winner = confirmation.candidate(confirmation.winner)
    # A confirmation kept when a resume changed nothing (refresh_if_unchanged) has the same rounds.
    if ablation.winner != confirmation.winner or ablation.confirmed != list(winner.rounds):
        return None
    return ablation
