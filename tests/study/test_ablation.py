"""Ablation: every change in the preset earns its keep, measured; the rest goes back to the start."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest

from tests.conftest import SMALL, simulated_measurement
from tuner.baseline import Requirement
from tuner.config import AUTO_SLOTS, EngineConfig
from tuner.hardware import describe_machine
from tuner.models import model_sha256
from tuner.space import parse_space
from tuner.study import Economies, InProcess, StudySpec, best_preset, open_storage, start_study, summarize
from tuner.study.ablation import GROUPS, NOT_ABLATED, changed_groups, compose, current_ablation, describe_change, worse_figures
from tuner.study.confirm import Candidate, current_confirmation
from tuner.workload import Shape, Workload

# The user's own settings: one thread for generation and for prompts.
ONE_THREAD = EngineConfig(n_ctx=1024, n_threads=1, n_threads_batch=1)
# A winner that changes prompt threads (which pays on two cores: prompt processing ran 1.6x faster
# on this project's AMD EPYC machine, decoding only 1.06x, so the workload is prompt-heavy and the
# generation threads stay the user's) and sampling values whose cost is the same. (Batch sizes larger than the 256-token prompt were the
# other no-op here, but on an Intel Xeon VM n_batch/n_ubatch 1024 read 1.08x over 512 in both the
# first rounds and the re-measurement, floor ±4.5%: not a no-op everywhere, so not a premise.)
PROMPT_HEAVY = Workload.single(128, 4, repeats=3)  # the quality proxy on: the minimal preset's quality is computed
NO_OP_CHANGES = """
name: threads-and-no-ops
params:
  n_threads: {choices: [1]}
  n_threads_batch: {choices: [2]}
  temperature: {choices: [0.7]}
  top_p: {choices: [0.9]}
"""


def test_generation_and_prompt_threads_are_two_changes():
    """A winner that raises one and lowers the other has each measured: together, a prompt-thread
    cut once rode on a decode gain into a preset that cost 30% of the time to first token."""
    start = EngineConfig(n_ctx=4096, n_threads=1, n_threads_batch=2)
    changed = changed_groups(start, replace(start, n_threads=2, n_threads_batch=1))
    assert changed == {"threads": {"n_threads": [1, 2]}, "prompt threads": {"n_threads_batch": [2, 1]}}


def test_the_groups_cover_every_setting_but_the_seed_and_speculation():
    """Speculation is decided after the ablation, on the workload's text (tuner.study.speculation)."""
    grouped = [knob for knobs in GROUPS.values() for knob in knobs]
    assert len(grouped) == len(set(grouped))
    assert set(NOT_ABLATED) == {"seed", "spec_type", "draft_tokens", "draft_ngram"}
    assert set(grouped) == {f.name for f in fields(EngineConfig)} - set(NOT_ABLATED)


def test_a_group_is_changed_only_where_the_values_that_run_differ():
    start = EngineConfig(n_ctx=4096)  # n_threads None: llama-cpp-python's own choice
    winner = replace(start, n_threads=start.effective().n_threads, n_batch=256, temperature=0.5)
    changed = changed_groups(start, winner)
    assert set(changed) == {"batch sizes", "sampling"}  # the same thread count, spelled out, is no change
    assert changed["batch sizes"] == {"n_batch": [512, 256], "n_ubatch": [512, 256]}  # n_ubatch clamped to n_batch, as llama.cpp does
    mixed = compose(start, winner, ["sampling"])
    assert (mixed.n_batch, mixed.temperature) == (512, 0.5)


def test_llama_servers_auto_slots_are_a_change_of_their_own_said_as_auto():
    """A study on llama-server starts at its defaults (auto slots) and trials run one slot: the
    slots are a group the ablation measures, and reverting it gives the user's default back."""
    start = EngineConfig(n_ctx=4096, n_parallel=AUTO_SLOTS)
    winner = replace(start, n_parallel=1)
    changed = changed_groups(start, winner)
    assert changed == {"slots": {"n_parallel": [AUTO_SLOTS, 1]}}
    assert describe_change("n_parallel", changed["slots"]["n_parallel"]) == "n_parallel auto -> 1"
    assert compose(start, winner, []).n_parallel == AUTO_SLOTS


def _entry(label: str, ttft: list[float], decode: list[float]) -> Candidate:
    shapes = [[{"ttft_ms": t, "decode_tok_s": d, "prompt_tok_s": 500.0, "request_ms": t + 1000.0}] for t, d in zip(ttft, decode)]
    return Candidate(label, None, {}, None, rounds=[50.0] * len(ttft), shapes=shapes)


def test_a_figure_the_preset_loses_against_the_start_is_said_with_the_shape_and_both_figures():
    shape = (Shape(depth=384, prompt=32, gen=48, name="chat-2"),)
    start = _entry("defaults", ttft=[100.0, 102.0, 99.0], decode=[30.0, 30.0, 30.0])
    slower_prompt = _entry("minimal", ttft=[120.0, 121.0, 119.0], decode=[50.0, 51.0, 49.0])
    [line] = worse_figures(slower_prompt, start, shape, noise=0.02)
    assert line == "the preset is slower than the defaults on chat-2: depth 384 + prompt 32 -> gen 48: time to first token 120 ms vs 100 ms (medians of 3 paired rounds)"
    within_noise = _entry("minimal", ttft=[101.0, 103.0, 99.5], decode=[30.0, 29.9, 30.1])
    assert worse_figures(within_noise, start, shape, noise=0.02) == []


def test_with_users_at_once_a_slower_decode_per_user_is_not_a_loss_but_a_longer_wait_is():
    # Four slots decode four users together, each at a third of one user's rate alone: what each
    # waits for (the slowest user's request time) is what the preset must not lose.
    shape = (Shape(depth=384, prompt=32, gen=48, name="chat-2"),)
    start = _entry("defaults", ttft=[100.0, 102.0, 99.0], decode=[60.0, 60.0, 60.0])
    slots = _entry("minimal", ttft=[100.0, 101.0, 99.0], decode=[20.0, 20.0, 20.0])
    assert worse_figures(slots, start, shape, noise=0.02, users=4) == []
    assert "decode 20.0 vs 60.0 tok/s" in worse_figures(slots, start, shape, noise=0.02)[0]
    waits = _entry("minimal", ttft=[300.0, 310.0, 305.0], decode=[20.0, 20.0, 20.0])
    first, second = worse_figures(waits, start, shape, noise=0.02, users=4)
    assert "the slowest of 4 users' time to first token 305 ms vs 100 ms" in first
    assert "the slowest of 4 users' request time 1305 ms vs 1100 ms" in second


def _study(tmp_path_factory, engine, model_path, name: str, space: str, runner, *, yours=None, workload=SMALL, listen=None):
    spec = StudySpec(
        model=model_path,
        model_sha256=model_sha256(model_path),
        space=parse_space(space),
        workload=workload,
        trials=4 if yours is not None else 3,  # the baselines and one searched trial
        seed=1,
        economies=Economies(racing=False),
        requirement=Requirement(1024, "the test's"),
        yours=yours,
    )
    notes: list[str] = []
    url = f"sqlite:///{tmp_path_factory.mktemp(name) / 'ablation.db'}"

    def note(line: str) -> None:
        notes.append(line)
        if listen is not None:  # a simulated machine that reacts to the study's phases
            listen(line)

    study = start_study(spec, name=name, storage=open_storage(url), runner=runner, machine=describe_machine().to_dict(), on_note=note)
    return study, notes


@pytest.fixture(scope="module")
def no_ops(tmp_path_factory, engine, model_path):
    """A study from one thread whose winner also changes sampling values.

    Its premise, two prompt threads beating one beyond the noise, needs a quiet few minutes: a
    suite run once read a floor of ±32.3%, and the ablation's re-measurement (1.251x) put the gain
    within it. As the tool does, a reading that does not show the premise is measured again: a
    second study, at most (a tool that never keeps the change fails both)."""
    earlier: list[str] = []
    for attempt in range(2):
        study, notes = _study(tmp_path_factory, engine, model_path, f"no-ops-{attempt}", NO_OP_CHANGES, InProcess(engine), yours=ONE_THREAD, workload=PROMPT_HEAVY)
        if _prompt_threads_kept(study):
            break
        earlier += [f"attempt {attempt + 1}: {line}" for line in notes]
    return study, earlier + notes


def _prompt_threads_kept(study) -> bool:
    ablation = current_ablation(study)
    return current_confirmation(study).winner == 3 and ablation is not None and any(s.group == "prompt threads" and s.kept for s in ablation.steps)


def test_the_thread_change_is_kept_and_the_changes_that_do_nothing_are_reverted(no_ops):
    study, notes = no_ops
    assert current_confirmation(study).winner == 3, "premise: two prompt threads beat one beyond the noise, confirmed\n" + "\n".join(notes)
    ablation = current_ablation(study)
    assert ablation is not None and ablation.start == "yours"
    verdicts = {step.group: step.kept for step in ablation.steps}
    assert verdicts == {"prompt threads": True, "sampling": False}, [s.why for s in ablation.steps]
    minimal = EngineConfig.from_dict(ablation.minimal)
    assert (minimal.n_threads, minimal.n_threads_batch) == (1, 2)
    assert (minimal.n_batch, minimal.n_ubatch, minimal.temperature, minimal.top_p) == (512, 512, 0.8, 0.95)  # yours
    assert minimal.n_ctx == 1024  # the requirement
    assert ablation.quality is not None and ablation.quality["feasible"]  # its own quality, computed
    assert any(line.startswith("ablation: ") for line in notes)


def test_the_preset_is_the_minimal_one_and_full_is_the_raw_winner(no_ops):
    study, _ = no_ops
    preset = best_preset(study)
    assert preset.config() == EngineConfig.from_dict(current_ablation(study).minimal)
    assert preset.measured["changes"] == {"n_threads_batch": {"from": 1, "to": 2, "group": "prompt threads"}}
    assert [row["group"] for row in preset.measured["ablation"]] == ["prompt threads", "sampling"]
    assert preset.measured["vs_yours"] > 1 and "vs_defaults" in preset.measured
    # Without the ablation the export carries every searched value: the no-op changes included.
    full = best_preset(study, full=True).config()
    assert (full.temperature, full.top_p) == (0.7, 0.9)


def test_the_summary_leads_with_the_minimal_preset_measured_beside_yours_and_the_defaults(no_ops):
    study, _ = no_ops
    summary = summarize(study)
    assert summary.start == "yours" and summary.minimal is not None
    assert summary.minimal.source == "ablation"
    assert summary.minimal.ratio_vs_yours is not None and summary.minimal.ratio_vs_defaults is not None
    assert "yours" in summary.baselines and summary.baselines["yours"].ratio_vs_yours == pytest.approx(1.0)


class Simulated:
    """A runner whose readings are exact functions of the settings (``speed``) and of the
    ablation's phase (``phases``: 0 before it, then one more as each announces its rounds): for
    paths whose logic is the test's subject, on readings a real machine cannot produce on demand."""

    phases = 0

    def saw(self, line: str) -> None:
        if line.startswith("ablation: ") and "measured in" in line:  # by count, not by label: labels vary with the core count
            self.phases += 1

    def reference(self, model_sha256: str, **options):
        return {"greedy_accuracy": 0.7, "greedy_nll": 1.0}

    def measure(self, config, workload, **options):
        effective = config.effective()
        return simulated_measurement(effective, workload, self.speed(effective))


class EitherPays(Simulated):
    """A simulated machine on which two changes each give the whole gain alone (redundant):
    requests/min doubles when flash attention is on or n_ubatch is 64, and nothing else matters.
    Such a pair cannot be produced on demand on a 2-core CPU, and the path's logic is what is
    tested here, so the readings are exact (the real engine's noise is tested above)."""

    def speed(self, effective):
        return 100.0 * (2 if effective.flash_attn or effective.n_ubatch == 64 else 1) / (4 if effective.n_threads > 2 else 1)


REDUNDANT = """
name: redundant
params:
  n_batch: {choices: [256]}
  n_ubatch: {choices: [64]}
  flash_attn: {choices: [true]}
"""


def test_when_changes_are_redundant_the_path_adds_back_one_until_the_preset_ties_the_winner(tmp_path_factory, engine, model_path):
    study, notes = _study(tmp_path_factory, engine, model_path, "redundant", REDUNDANT, EitherPays(), workload=replace(SMALL, quality=False))
    ablation = current_ablation(study)
    kept = [step for step in ablation.steps if step.kept]
    assert {s.group for s in ablation.steps} == {"batch sizes", "attention and KV cache"}
    assert len(kept) == 1, [s.why for s in ablation.steps]  # reverting either alone costs nothing; both together cost 2x
    assert kept[0].why.startswith("kept: without it the winner beats the preset")
    assert any("adding back" in line for line in notes)
    minimal = EngineConfig.from_dict(ablation.minimal)
    assert minimal.flash_attn or minimal.n_ubatch == 64  # it keeps the gain
    assert not (minimal.flash_attn and minimal.n_ubatch == 64)  # and not both changes


class TransientWin(Simulated):
    """A simulated machine on which n_batch 256 reads 1.5x faster during the first rounds of the
    ablation and changes nothing after (a transient, as seen on this project's noisy 2-core
    machine, where a no-op was once kept at 1.148x against a ±12.7% floor). Threads pay 2x
    throughout. A transient that ends on cue cannot be produced on a real machine; the
    re-measurement's logic is what is tested."""

    def speed(self, effective):
        return 100.0 * (2 if effective.n_threads == 2 else 1) * (1.5 if self.phases == 1 and effective.n_batch == 256 else 1)


THREADS_AND_BATCH = """
name: threads-and-batch
params:
  n_threads: {choices: [2]}
  n_threads_batch: {choices: [1]}
  n_batch: {choices: [256]}
"""


def test_a_keep_the_re_measurement_does_not_confirm_is_reverted(tmp_path_factory, engine, model_path):
    runner = TransientWin()
    study, notes = _study(tmp_path_factory, engine, model_path, "transient", THREADS_AND_BATCH, runner, yours=ONE_THREAD, workload=replace(SMALL, quality=False), listen=runner.saw)
    steps = {step.group: step for step in current_ablation(study).steps}
    assert steps["batch sizes"].worth.median == pytest.approx(1.5)  # the first rounds read it as a win
    assert not steps["batch sizes"].kept and "re-measured beside the preset" in steps["batch sizes"].why, steps["batch sizes"].why
    assert steps["threads"].kept  # it pays again, and stays
    minimal = EngineConfig.from_dict(current_ablation(study).minimal)
    assert (minimal.n_threads, minimal.n_batch) == (2, 512)
    assert any("does not pay again when re-measured" in line for line in notes)


class CheckOnlyWin(Simulated):
    """A simulated machine on which threads pay 2x and a temperature of 0.7 reads 0.99x in the
    ablation's first rounds and 1.05x in its check (readings that contradict each other, as a
    clean-clone CI run read sampling values that do nothing: within the noise, then 1.030x ahead).
    Readings that flip on cue cannot be produced on a real machine; the decision rule is tested."""

    def speed(self, effective):
        factor = {0: 1.0, 1: 0.99}.get(self.phases, 1.05)  # the trials, the first rounds, then the check
        return 100.0 * (2 if effective.n_threads == 2 else 1) * (factor if effective.temperature == 0.7 else 1)


THREADS_AND_TEMPERATURE = """
name: threads-and-temperature
params:
  n_threads: {choices: [2]}
  n_threads_batch: {choices: [1]}
  temperature: {choices: [0.7]}
"""


def test_a_group_is_not_added_back_on_a_check_its_earlier_rounds_contradict(tmp_path_factory, engine, model_path):
    runner = CheckOnlyWin()
    study, notes = _study(tmp_path_factory, engine, model_path, "check-only", THREADS_AND_TEMPERATURE, runner, yours=ONE_THREAD, workload=replace(SMALL, quality=False), listen=runner.saw)
    steps = {step.group: step for step in current_ablation(study).steps}
    assert steps["threads"].kept
    # The check reads the winner 1.05x ahead of the preset in every round, but the same two
    # configurations read 0.99x in the first rounds: all six rounds together are no win.
    ablation = current_ablation(study)
    assert ablation.entry("winner").ratios_to(ablation.minimal_entry) == pytest.approx([1.05] * 3)  # premise: the check alone reads a win
    assert ablation.versus == pytest.approx([0.99] * 3 + [1.05] * 3)
    assert "reads 1.020x the minimal preset over 6 rounds (0.99-1.05, a tie within the noise)" in best_preset(study).measured["full_winner"]["note"]
    assert not steps["sampling"].kept and steps["sampling"].why.startswith("reverted"), steps["sampling"].why
    assert EngineConfig.from_dict(current_ablation(study).minimal).temperature == 0.8  # yours
    assert not any("adding back" in line for line in notes), notes
