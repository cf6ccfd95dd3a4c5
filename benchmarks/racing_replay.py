"""How often does racing stop a would-be finalist, what does it save, what does it cost the pick?

Racing stops a trial early when its first repetitions read clearly slower than the incumbent (the
fastest feasible trial so far). This replays simulated studies on the recorded CPU landscape
(benchmarks/data/landscape_cpu.json, 96 grid points measured on a real machine) with noise
injected, and compares four rules on the same draws:

* none: no racing at all (every trial measured fully): the reference;
* old: the original rule: stop after one repetition below the incumbent's median less max(5%,
  2 x noise, 2 x the incumbent's IQR), racing with the study-start floor;
* one or two: the previous tool rule: stop after one repetition when it reads
  PREVIOUS_FIRST_STOP_FACTOR (3) margins below the base (tuner.study.noise.race_base: the
  incumbent's lowest repetition, or its lower re-reading), else after two when both read one
  margin below it (margin: tuner.study.noise.race_margin), following drift as
  tuner/study/_optimize.py does (below);
* two: the tool's rule (tuner.study.noise.race_bound_from, called here): stop after two
  repetitions when both (the better of the two) read one margin below the base; never after one.
  Following drift as well.

One or two is kept to show what the one-reading stop bought and cost: in CI a trial with the
incumbent's very settings read 0.44x of the incumbent's lowest repetition on its first (0.3 s)
repetition, a noisy neighbour's burst, and was stopped on that one reading.

Each point's true value is requests per minute for one request of 64 prompt and 32 generated
tokens, derived from its recorded prompt and decode tok/s. A replay draws --trials points uniformly
with replacement (a random search); every trial's 3 repetitions are pre-drawn as
true x d x (1 + N(0, sigma_within)) with one run factor d = 1 + N(0, sigma_run) per trial (drift
between trials minutes apart). At the "spiky neighbour" level (assumed, not measured: EPYC
afternoon's Gaussian noise plus a heavy tail, motivated by that CI reading at 0.44x and the docs'
"one repetition once read 0.7 tok/s among ~52"), each repetition independently, with probability
2%, is also multiplied by a burst factor drawn uniformly from BURST_FACTOR (0.3-0.6); the floor
runs' repetitions and the re-measurements get bursts the same way. The study's noise floor is
estimated as the tool does: 3 runs of 3 repetitions of one fixed configuration (the landscape's
median point), floor = max(range of the run medians / their median, median within-run relative
IQR). A rule that stops early just does not use the later readings, so every rule sees the same
sequence and the same readings (a paired comparison); the noise levels share the same
standard-normal draws too, scaled. The bursts come from their own seeded stream per replay, drawn
(a uniform and a factor per repetition) whatever the level, so the other levels' readings are the
same as without them, and every rule at a level sees the same bursts.

Drift following (one or two, two): after every DRIFT_EVERY-th counted trial (stopped trials count;
not after the last trial: tuner.study.noise.drift_due), the incumbent (the completed trial with the
highest median) is re-measured once. One re-measurement is modelled as ONE reading with a fresh
run factor, true x (1 + N(0, sigma_run)) x (1 + N(0, sigma_within)), taken as its median (the tool
takes the median of the full workload's repetitions, so its within-run noise is a little smaller:
if anything the model widens the noise more than the tool would). The re-readings are kept as the
tool keeps them ({"trial", "after", "value", "trial_value"}) and read through
tuner.study.noise.Drift: the rule races with max(floor, Drift.relative) (reading_noise), from a
base of min(the incumbent's lowest repetition, Drift.lowest(incumbent)) (race_bound). The
re-measurement draws come from a separate seeded stream per replay, one draw per check (whichever
trial is the incumbent then), so the other rules' draws are the same as without drift following.
Both drift-following rules re-measure on the same schedule (counted trials), but their incumbents,
and so their re-readings, can differ once one of them stops a trial the other does not.
Each re-measurement costs 3 repetitions in "reps saved" (the tool re-measures the incumbent, speed
only, with the full workload's repetitions).

Reported per noise level and rule, over all replays:
* stops a finalist (the harm the issue names: racing stops a configuration full measurement would
  have confirmed within the noise of the best): replays where racing stopped at least one trial
  that (a) fully measured, i.e. in the no-racing replay of the same draws, is among the
  CONFIRM_CANDIDATES trials with distinct settings that tuner.study.confirm.pick_candidates would
  send to confirmation, and (b) has a TRUE value within the study's noise floor of the best true
  value among the replay's sampled points;
* stops a near-best: (b) alone: replays where racing stopped a trial whose true value is within the
  floor of the best sampled, whatever its readings (a near-best trial caught in a low run reads low
  on all its repetitions, so full measurement would have ranked it low too);
* winner lost: replays where every trial of the true-best sampled point was stopped;
* reps saved: 1 - (repetitions run + 3 per re-measurement) / (trials x 3), mean; trials stopped per
  study, mean;
* regret of the search's raw pick (the completed trial with the highest median reading):
  1 - true(pick) / true best sampled, mean and 95th percentile; and the replays where racing
  changed that pick, or the finalists confirmation would re-measure, against no racing.

Honest limits: random search, not the tool's TPE. TPE samples near the incumbent more, so near-ties
with the incumbent are more common there; random search is, if anything, kind to the rules that
stop on one reading. The noise is independent between trials (real drift is correlated in time: a
background job slows a stretch of trials, and a re-reading then agrees with its neighbours). The
spiky level's bursts are an assumption in rate (2%), depth (0.3-0.6x) and shape: each hits one
repetition alone, independently; a burst long enough to hit two consecutive repetitions of one
trial would defeat the two-reading rule as well, and the replay does not model that. A
re-measurement is one reading here, so a burst hits it whole: the tool's re-measurement is a median
of several repetitions, which one burst barely moves, so at that level the replay overstates how
often bursts lower the bound's base and widen the racing noise (both make racing stop less, for
both drift-following rules). The landscape's values are single recordings taken as truth.
Confirmation is modelled only through who the finalists are: which finalist it would pick is not
simulated, so the regret is the raw pick's, and "would have confirmed within the noise" is
approximated by (b), the true value. A trial's repetitions share its run factor, so no within-trial
rule can tell a drifted-low run from a slow configuration. Nor is what TPE loses by a stopped trial
modelled, nor a re-measurement's time beside a trial's (a trial also loads the model and runs the
quality proxy: reps saved is not time saved).
Following drift widens the racing noise by the spread of one incumbent's re-readings (a searched
trial's own reading is left out: it is the highest of many drifted readings, the winner's curse;
the replay has no baselines, whose own reading the tool counts), and Drift.relative is the widest
spread seen so far (it never narrows): the replay shows what that does, not whether the widening
is right. A changed set of finalists is not a harm in itself (the runners-up may be far from the
best).

    .venv/bin/python benchmarks/racing_replay.py                      # 1000 replays, 50 trials
    .venv/bin/python benchmarks/racing_replay.py --replays 50 --json  # raw results as JSON
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuner.study.confirm import CONFIRM_CANDIDATES, pick_candidates  # noqa: E402
from tuner.study.noise import (  # noqa: E402
    DRIFT_EVERY,
    Drift,
    drift_due,
    race_base,
    race_bound_from,
    race_margin,
)

LANDSCAPE = Path(__file__).with_name("data") / "landscape_cpu.json"
PROMPT_TOKENS, GEN_TOKENS = 64, 32  # one request: what requests per minute is computed for
REPS = 3  # repetitions of a fully measured trial, and of one re-measurement of the incumbent
FLOOR_RUNS = 3  # runs of the fixed configuration at study start (as NOISE_RUNS)

PREVIOUS_FIRST_STOP_FACTOR = 3  # the previous tool rule: one repetition this many margins below
BURST_FACTOR = (0.3, 0.6)  # a burst multiplies one reading by a factor drawn uniformly from this


class Level(NamedTuple):
    """One noise level. sigma_within: spread of back-to-back repetitions of one run; sigma_run:
    drift of a whole run against another minutes apart (one factor per trial); burst: probability,
    independently per repetition, that a burst multiplies that one reading by BURST_FACTOR."""

    sigma_within: float
    sigma_run: float
    burst: float = 0.0


# Assumed, not measured: "quiet" is an idle machine; "EPYC afternoon" a shared small cloud machine
# (like the 2-core EPYC the landscape comes from) with other jobs running; "harsh" is beyond what
# the tool is tuned for (a laptop on battery, a noisy neighbour); "spiky neighbour" is EPYC
# afternoon plus rare deep bursts on single readings (a CI trial with the incumbent's very settings
# read 0.44x of the incumbent's lowest repetition on its one first repetition; docs: "one
# repetition once read 0.7 tok/s among ~52").
LEVELS: dict[str, Level] = {
    "quiet": Level(0.01, 0.02),
    "EPYC afternoon": Level(0.03, 0.08),
    "harsh": Level(0.05, 0.15),
    "spiky neighbour": Level(0.03, 0.08, 0.02),
}

Draw = tuple[float, list[float]]  # standard normals of one run: its run factor, its repetitions
# per repetition of one run: a uniform [0, 1) (a burst when below the level's probability) and the
# burst's factor, drawn whatever the level so that every level and rule sees the same bursts
Bursts = list[tuple[float, float]]
Incumbent = list[float]  # the incumbent's repetition readings (always all REPS: it completed)
# readings, incumbent, racing noise, the incumbent's lowest re-reading (None: never re-read)
# -> repetitions run
Rule = Callable[[list[float], Incumbent | None, float, float | None], int]
ReRead = Callable[[int, int], float]  # (counted trials, incumbent's index) -> its re-reading


# --- the landscape -------------------------------------------------------------------------


def requests_per_min(row: dict) -> float:
    """A point's true speed: requests of PROMPT_TOKENS in, GEN_TOKENS out, per minute."""
    prompt_ms = PROMPT_TOKENS / row["prompt_tok_s"] * 1000
    decode_ms = GEN_TOKENS / row["decode_tok_s"] * 1000
    return 60000 / (prompt_ms + decode_ms)


def load_landscape(path: Path) -> tuple[dict, list[float]]:
    data = json.loads(path.read_text())
    return data, [requests_per_min(row) for row in data["points"]]


# --- statistics as the tool computes them --------------------------------------------------


def rel_iqr(samples: list[float]) -> float:
    """IQR over the median, inclusive quantiles (as tuner.stats.Stat does)."""
    q1, median, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return (q3 - q1) / median


def percentile95(values: list[float]) -> float:
    if len(values) < 2:  # quantiles needs two points
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


# --- the draws -----------------------------------------------------------------------------


def draw_run(rng: random.Random, reps: int = REPS) -> Draw:
    """Standard-normal draws for one run: its run factor and its ``reps`` repetitions."""
    return rng.gauss(0, 1), [rng.gauss(0, 1) for _ in range(reps)]


def draw_bursts(rng: random.Random, reps: int = REPS) -> Bursts:
    """Burst draws for one run's ``reps`` repetitions (from the bursts' own stream)."""
    return [(rng.random(), rng.uniform(*BURST_FACTOR)) for _ in range(reps)]


def readings(true: float, run: Draw, bursts: Bursts, level: Level) -> list[float]:
    """A run's repetition readings at one noise level, from its standard-normal and burst draws."""
    z_run, z_within = run
    d = 1 + level.sigma_run * z_run
    return [true * d * (1 + level.sigma_within * z) * (factor if u < level.burst else 1.0)
            for z, (u, factor) in zip(z_within, bursts)]


def noise_floor(true: float, runs: list[Draw], bursts: list[Bursts], level: Level) -> float:
    """The study-start floor, as NoiseFloor.of computes it from FLOOR_RUNS runs of one config."""
    samples = [readings(true, run, b, level) for run, b in zip(runs, bursts)]
    medians = [statistics.median(s) for s in samples]
    centre = statistics.median(medians)
    spread = (max(medians) - min(medians)) / centre
    within = statistics.median(rel_iqr(s) for s in samples)
    return max(spread, within)


# --- the rules: how many repetitions a trial runs ------------------------------------------


def no_racing(reads: list[float], incumbent: Incumbent | None, noise: float,
              re_read: float | None) -> int:
    return REPS


def old_rule(reads: list[float], incumbent: Incumbent | None, noise: float,
             re_read: float | None) -> int:
    """Before the change: one repetition below the incumbent's median less the margin stops it
    (it never saw re-readings: ``re_read`` is always None for it)."""
    if incumbent is None:
        return REPS
    margin = max(0.05, 2 * noise, 2 * rel_iqr(incumbent))
    bound = statistics.median(incumbent) * (1 - margin)
    return 1 if reads[0] < bound else REPS


def one_or_two_rule(reads: list[float], incumbent: Incumbent | None, noise: float,
                    re_read: float | None) -> int:
    """The previous tool rule: one reading PREVIOUS_FIRST_STOP_FACTOR margins below the base stops
    a trial after one repetition, else two readings both one margin below stop it after two.
    ``noise``: the racing noise (reading_noise: the floor, widened by drift)."""
    if incumbent is None:
        return REPS
    low = race_base(incumbent, re_read)
    margin = race_margin(noise)
    if reads[0] < low * max(1 - PREVIOUS_FIRST_STOP_FACTOR * margin, 0.0):
        return 1
    if max(reads[:2]) < low * (1 - margin):
        return 2
    return REPS


def two_rule(reads: list[float], incumbent: Incumbent | None, noise: float,
             re_read: float | None) -> int:
    """The tool's rule, its own bound (race_bound_from): a trial stops after two repetitions when
    both (the better of the two) read below it; never after one."""
    if incumbent is None:
        return REPS
    if max(reads[:2]) < race_bound_from(incumbent, re_read, noise).below:
        return 2
    return REPS


# name -> (rule, follows drift: re-measures the incumbent every DRIFT_EVERY counted trials)
RULES: dict[str, tuple[Rule, bool]] = {
    "none": (no_racing, False),
    "old": (old_rule, False),
    "one or two": (one_or_two_rule, True),
    "two": (two_rule, True),
}
TOOL_RULE = "two"  # the tool's rule today


# --- one replayed study --------------------------------------------------------------------


def play(trial_reads: list[list[float]], floor: float, rule: Rule,
         re_read: ReRead | None = None) -> tuple[list[int], int, list[dict]]:
    """Run the study under ``rule``: repetitions run per trial, the index of the raw pick, and the
    drift records (the incumbent re-read after every DRIFT_EVERY-th counted trial when ``re_read``
    is given; none otherwise, so the rule races with the floor alone)."""
    reps_run: list[int] = []
    records: list[dict] = []  # as the study attribute "drift": what tuner.study.noise.Drift reads
    best: int | None = None  # index of the completed trial with the highest median reading
    best_median = 0.0
    target = len(trial_reads)
    drift = Drift(records)
    noise = max(floor, drift.relative)  # reading_noise (re-read only when a record is added)
    for i, reads in enumerate(trial_reads):
        incumbent = trial_reads[best] if best is not None else None
        lowest = drift.lowest(best) if records and best is not None else None  # as race_bound
        n = rule(reads, incumbent, noise, lowest)
        reps_run.append(n)
        if n == REPS:  # a stopped trial never becomes the incumbent and is never picked
            median = statistics.median(reads)
            if best is None or median > best_median:
                best, best_median = i, median
        counted = i + 1  # every trial counts, stopped ones too
        if re_read is not None and best is not None and drift_due(counted, target):
            records.append({"trial": best, "after": counted, "value": re_read(counted, best),
                            "trial_value": best_median})
            drift = Drift(records)
            noise = max(floor, drift.relative)
    assert best is not None  # the first trial always runs fully
    return reps_run, best, records


def finalists(trial_reads: list[list[float]], sequence: list[int],
              reps_run: list[int]) -> list[int]:
    """The trials confirmation would re-measure: tuner.study.confirm.pick_candidates over the
    completed trials (by median; a landscape point is one setting)."""
    trials = [
        SimpleNamespace(number=i, values=[statistics.median(reads)],
                        user_attrs={"measurement": {"effective": {"point": sequence[i]}}})
        for i, (reads, n) in enumerate(zip(trial_reads, reps_run)) if n == REPS
    ]
    return [t.number for t in pick_candidates(trials, CONFIRM_CANDIDATES)]


def score(trues: list[float], reps_run: list[int], pick: int, picked: list[int],
          sequence: list[int], re_measurements: int, floor: float, full: dict) -> dict[str, float]:
    """One study's figures under one rule, against the truth of the points it sampled and the
    no-racing replay of the same draws (``full``: its pick and its finalists; ``picked``: this
    rule's own finalists)."""
    true_best = max(trues)
    stopped = {i for i, n in enumerate(reps_run) if n < REPS}
    near_best = {i for i, t in enumerate(trues) if t >= (1 - floor) * true_best}
    winners = {i for i, t in enumerate(trues) if t == true_best}  # every trial of the true-best
    reps = sum(reps_run) + REPS * re_measurements  # a re-measurement runs the full repetitions
    return {
        "stopped_finalist": float(bool(stopped & near_best & set(full["finalists"]))),
        "stopped_near_best": float(bool(stopped & near_best)),
        "winner_lost": float(winners <= stopped),
        "reps_saved": 1 - reps / (len(reps_run) * REPS),
        "trials_stopped": float(len(stopped)),
        "re_measurements": float(re_measurements),
        "regret": 1 - trues[pick] / true_best,
        "pick_changed": float(pick != full["pick"]),
        # the settings confirmation would compare differ (as a set) from no racing's
        "finalists_changed": float({sequence[i] for i in picked}
                                   != {sequence[i] for i in full["finalists"]}),
    }


def replay_once(rng: random.Random, drift_rng: random.Random, burst_rng: random.Random,
                values: list[float], floor_true: float, trials: int) -> dict[str, dict[str, dict]]:
    """One replay at every noise level and under every rule, all from the same draws
    (``drift_rng``: the re-measurements' own stream, so the trials' draws do not depend on it;
    ``burst_rng``: the bursts' own stream, so the Gaussian draws do not depend on them)."""
    sequence = [rng.randrange(len(values)) for _ in range(trials)]
    floor_draws = [draw_run(rng) for _ in range(FLOOR_RUNS)]
    trial_draws = [draw_run(rng) for _ in range(trials)]
    # one re-measurement per drift check, keyed by the counted trials it follows: one reading
    checks = [c for c in range(1, trials + 1) if drift_due(c, trials)]
    re_draws = {c: draw_run(drift_rng, 1) for c in checks}
    floor_bursts = [draw_bursts(burst_rng) for _ in range(FLOOR_RUNS)]
    trial_bursts = [draw_bursts(burst_rng) for _ in range(trials)]
    re_bursts = {c: draw_bursts(burst_rng, 1) for c in checks}
    trues = [values[i] for i in sequence]
    out: dict[str, dict[str, dict]] = {}
    for level_name, level in LEVELS.items():
        floor = noise_floor(floor_true, floor_draws, floor_bursts, level)
        trial_reads = [readings(t, d, b, level)
                       for t, d, b in zip(trues, trial_draws, trial_bursts)]

        def re_read(counted: int, trial: int, level: Level = level) -> float:
            return readings(trues[trial], re_draws[counted], re_bursts[counted], level)[0]

        out[level_name] = {"floor": {"value": floor}}
        full_reps, full_pick, _ = play(trial_reads, floor, no_racing)
        full = {"pick": full_pick, "finalists": finalists(trial_reads, sequence, full_reps)}
        for name, (rule, follows) in RULES.items():
            reps_run, pick, records = play(trial_reads, floor, rule, re_read if follows else None)
            picked = finalists(trial_reads, sequence, reps_run)
            out[level_name][name] = score(trues, reps_run, pick, picked, sequence, len(records),
                                          floor, full)
            out[level_name][name]["race_noise_end"] = max(floor, Drift(records).relative)
    return out


# --- over all replays ----------------------------------------------------------------------

# the figures counted in replays (each 0 or 1 per replay)
COUNTED = ("stopped_finalist", "stopped_near_best", "winner_lost", "pick_changed",
           "finalists_changed")


def summarize(per_replay: list[dict[str, dict[str, dict]]]) -> dict[str, dict]:
    """Figures per level and rule over all replays (raw numbers, for --json and the table)."""
    n = len(per_replay)
    result: dict[str, dict] = {}
    for level, noise in LEVELS.items():
        floors = sorted(r[level]["floor"]["value"] for r in per_replay)
        block: dict[str, dict] = {
            "sigma_within": noise.sigma_within,
            "sigma_run": noise.sigma_run,
            "burst_probability": noise.burst,
            "noise_floor": {"median": statistics.median(floors), "min": floors[0],
                            "max": floors[-1]},
            "rules": {},
        }
        for name, (_, follows) in RULES.items():
            rows = [r[level][name] for r in per_replay]
            regrets = [row["regret"] for row in rows]
            noises = [row["race_noise_end"] for row in rows]
            counts = {key: int(sum(row[key] for row in rows)) for key in COUNTED}
            block["rules"][name] = {
                "follows_drift": follows,
                "stopped_finalist": counts["stopped_finalist"],
                "stopped_near_best": counts["stopped_near_best"],
                "winner_lost": counts["winner_lost"],
                "replays": n,
                "reps_saved_mean": statistics.fmean(row["reps_saved"] for row in rows),
                "trials_stopped_mean": statistics.fmean(row["trials_stopped"] for row in rows),
                "re_measurements_mean": statistics.fmean(row["re_measurements"] for row in rows),
                "race_noise_end_median": statistics.median(noises),
                "regret_mean": statistics.fmean(regrets),
                "regret_p95": percentile95(regrets),
                "pick_changed": counts["pick_changed"],
                "finalists_changed": counts["finalists_changed"],
            }
        result[level] = block
    return result


def print_table(data: dict, args: argparse.Namespace, result: dict[str, dict]) -> None:
    print(f"landscape: {data['machine']}, {len(data['points'])} points")
    print(f"recorded {data['recorded']}; {args.replays} replays x {args.trials} trials "
          f"(random search, {REPS} repetitions each), seed {args.seed}")
    print(f"true value: requests/min for {PROMPT_TOKENS} prompt + {GEN_TOKENS} generated tokens; "
          f"regret vs the best point sampled")
    header = (f"  {'rule':<11} {'stops a finalist':>16} {'stops a near-best':>17} "
              f"{'winner lost':>15} {'reps saved':>10} {'stopped':>7} {'regret mean/p95':>15}")
    for level, block in result.items():
        floor = block["noise_floor"]
        low, high = BURST_FACTOR
        bursts = (f", bursts {block['burst_probability']:.0%} x{low}-{high}"
                  if block["burst_probability"] else "")
        print(f"\n{level}: sigma within {block['sigma_within']:.0%}, "
              f"run {block['sigma_run']:.0%}{bursts}; "
              f"noise floor median {floor['median']:.1%} "
              f"(range {floor['min']:.1%}-{floor['max']:.1%})")
        print(header)
        for name, fig in block["rules"].items():
            n = fig["replays"]
            cells = [f"{fig[key]} / {n} {fig[key] / n:5.1%}"
                     for key in ("stopped_finalist", "stopped_near_best", "winner_lost")]
            regret = f"{fig['regret_mean']:.2%}/{fig['regret_p95']:.2%}"
            print(f"  {name:<11} {cells[0]:>16} {cells[1]:>17} {cells[2]:>15} "
                  f"{fig['reps_saved_mean']:>10.1%} {fig['trials_stopped_mean']:>7.1f} "
                  f"{regret:>15}")
        drifted = {name: block["rules"][name] for name, (_, follows) in RULES.items() if follows}
        tool = drifted[TOOL_RULE]
        others = ", ".join(f"{name} {fig['race_noise_end_median']:.1%}"
                           for name, fig in drifted.items() if name != TOOL_RULE)
        print(f"  {TOOL_RULE}: {tool['re_measurements_mean']:.1f} re-measurements per study; "
              f"racing noise at the end, median {tool['race_noise_end_median']:.1%}"
              + (f" ({others})" if others else ""))
    print()
    for line in (
        "stops a finalist: replays where racing stopped a trial that, fully measured, would have",
        f"  been one of the {CONFIRM_CANDIDATES} distinct settings confirmation re-measures "
        f"(in the no-racing replay)",
        "  AND whose true value is within the noise floor of the best point sampled (target: 0);",
        "stops a near-best: the second condition alone; winner lost: every trial of the true-best",
        "  point stopped; stopped: trials stopped per study, mean;",
        f"reps saved: 1 - repetitions run / (trials x {REPS}), mean; " + " and ".join(
            name for name, (_, follows) in RULES.items() if follows) + " re-measure the",
        f"  incumbent every {DRIFT_EVERY} counted trials, each counted as {REPS} repetitions;",
        "regret: of the raw pick (the completed trial with the highest median), mean/p95.",
    ):
        print(line)
    names = [name for name in RULES if name != "none"]
    print(f"replays where racing changed, against no racing ({' / '.join(names)}):")
    for key, what in (("pick_changed", "the raw pick"), ("finalists_changed", "the finalists")):
        changed = ", ".join(f"{level} " + "/".join(str(b["rules"][name][key]) for name in names)
                            for level, b in result.items())
        print(f"  {what:<13} {changed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replays", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true",
                        help="print the raw results as one JSON object instead of the table")
    args = parser.parse_args()

    data, values = load_landscape(LANDSCAPE)
    floor_true = sorted(values)[len(values) // 2]  # the landscape's median point: the floor's
    per_replay = [
        replay_once(random.Random(f"{args.seed}:{r}"), random.Random(f"{args.seed}:{r}:drift"),
                    random.Random(f"{args.seed}:{r}:burst"), values, floor_true, args.trials)
        for r in range(args.replays)
    ]
    result = summarize(per_replay)
    if args.json:
        landscape = {k: data[k] for k in ("machine", "fingerprint", "recorded", "model")}
        landscape["points"] = len(values)
        print(json.dumps({"landscape": landscape, "replays": args.replays, "trials": args.trials,
                          "seed": args.seed, "tool_rule": TOOL_RULE,
                          "previous_first_stop_factor": PREVIOUS_FIRST_STOP_FACTOR,
                          "burst_factor": list(BURST_FACTOR), "drift_every": DRIFT_EVERY,
                          "confirm_candidates": CONFIRM_CANDIDATES,
                          "levels": result}))
    else:
        print_table(data, args, result)


if __name__ == "__main__":
    main()
