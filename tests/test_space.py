"""Search spaces: built-ins load, constraints hold by construction, bad files get clear errors."""

from __future__ import annotations

import optuna
import pytest

from tuner.config import AUTO_SLOTS, KV_TYPES
from tuner.errors import SpaceError
from tuner.space import builtin_spaces, load_space, parse_space


def test_builtin_spaces_load():
    assert {"cpu", "rtx4090"} <= set(builtin_spaces())
    for name in ("cpu", "rtx4090"):
        space = load_space(name)
        names = {p.name for p in space.params}
        assert {"n_batch", "n_ubatch", "n_threads", "temperature", "top_k", "top_p"} <= names


def test_fixed_trial_gives_that_config():
    space = load_space("cpu", cores=2)
    trial = optuna.trial.FixedTrial(
        {
            "n_ctx": 1024, "n_batch": 256, "n_ubatch": 64, "n_threads": 2, "n_threads_batch": 2,
            "flash_attn": True, "kv_type": "q8_0", "temperature": 0.5, "top_k": 20, "top_p": 0.9,
            "min_p": 0.05, "repeat_penalty": 1.05,
        }
    )
    config, values = space.suggest(trial)
    assert (config.n_ctx, config.n_batch, config.n_ubatch, config.n_threads) == (1024, 256, 64, 2)
    assert config.type_k == config.type_v == KV_TYPES["q8_0"]
    assert config.n_gpu_layers == 0  # from `fixed`
    assert values["kv_type"] == "q8_0"


@pytest.mark.parametrize("name", ["cpu", "rtx4090"])
def test_constraints_hold_by_construction(name):
    space = load_space(name, cores=2).for_workload(700)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(300):
        trial = study.ask()
        config, values = space.suggest(trial)
        assert config.n_ubatch <= config.n_batch <= config.n_ctx
        assert config.n_ctx >= 700
        assert 1 <= config.n_threads <= 2 and 1 <= config.n_threads_batch <= 2
        assert config.type_k == config.type_v  # symmetric pairs
        if not config.flash_attn:
            assert config.type_v == KV_TYPES["f16"]
        study.tell(trial, 0.0)


@pytest.mark.parametrize("name", ["cpu", "rtx4090"])
def test_sampled_floats_are_values_a_person_writes(name):
    space = load_space(name, cores=2).for_requirement(4096)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
    for _ in range(200):
        trial = study.ask()
        config, _ = space.suggest(trial)
        for knob, step in (("temperature", 0.05), ("top_p", 0.01), ("min_p", 0.005), ("repeat_penalty", 0.01)):
            value = getattr(config, knob)
            assert value == round(value, 3) and abs(value / step - round(value / step)) < 1e-9, (knob, value)
        study.tell(trial, 0.0)


def test_the_context_is_searched_at_the_requirement_and_up_to_twice_it():
    n_ctx = lambda space: next(p for p in space.params if p.name == "n_ctx")  # noqa: E731
    cpu = load_space("cpu")
    assert n_ctx(cpu.for_requirement(4096)).choices == (4096, 8192)
    assert n_ctx(cpu.for_requirement(2048)).choices == (2048, 4096)
    assert n_ctx(cpu.for_requirement(3000)).choices == (3000, 4096)  # the requirement itself is a choice
    assert n_ctx(cpu.for_requirement(4096, max_ctx=4096)).choices == (4096,)  # never above the training context
    ranged = parse_space("params:\n  n_ctx: {low: 512, high: 32768}\n").for_requirement(4096)
    assert (n_ctx(ranged).low, n_ctx(ranged).high) == (4096, 8192)
    unsearched = parse_space("params:\n  n_threads: {low: 1, high: 2}\n").for_requirement(4096)
    assert unsearched.fixed["n_ctx"] == 4096  # not llama-cpp-python's 512


def test_a_space_that_fixes_the_context_below_the_requirement_is_refused():
    space = parse_space("params:\n  n_threads: {low: 1, high: 2}\nfixed: {n_ctx: 2048}\n", source="mine.yaml")
    with pytest.raises(SpaceError, match="fixed n_ctx=2048 is below the 4096 tokens of context required"):
        space.for_requirement(4096)


def test_threads_above_cores_are_capped_unless_oversubscribe():
    text = "params:\n  n_threads: {low: 1, high: 64}\n"
    assert parse_space(text, cores=2).params[0].high == 2
    text = "params:\n  n_threads: {low: 1, high: 64, oversubscribe: true}\n"
    assert parse_space(text, cores=2).params[0].high == 64


def test_workload_too_large_for_every_n_ctx_choice():
    with pytest.raises(SpaceError, match="no n_ctx choice fits"):
        load_space("cpu").for_workload(100_000)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("params: {n_threads: {low: 1, high: 2}\n", "YAML syntax error at line"),
        ("- a list\n", "must be a mapping"),
        ("params: {}\n", "non-empty mapping"),
        ("parms: {n_threads: {low: 1, high: 2}}\n", "unknown top-level key 'parms'"),
        ("params: {n_thread: {low: 1, high: 2}}\n", "unknown parameter 'n_thread'"),
        ("params: {tfs_z: {low: 0.5, high: 1.0}}\n", "unknown parameter 'tfs_z'"),
        ("params: {n_batch: {low: 512, high: 64}}\n", "low=512 is greater than high=64"),
        ("params: {n_ctx: {choices: []}}\n", "non-empty list"),
        ("params: {n_ctx: {choices: [512, big]}}\n", "'big' has the wrong type for n_ctx"),
        ("params: {n_batch: {low: one, high: 64}}\n", "'one' has the wrong type for n_batch"),
        ("params: {flash_attn: {choices: [yes, 2]}}\n", "2 has the wrong type for flash_attn"),
        ("params: {flash_attn: {low: 0, high: 1}}\n", "takes 'choices'"),
        ("params: {n_batch: {low: 32, high: 64, at_most: n_ctx}}\n", "not a knob searched above it"),
        ("params: {n_batch: {low: 32, high: 64, sted: 2}}\n", "unknown spec key 'sted'"),
        ("params: {n_batch: {low: 0, high: 64, log: true}}\n", "log range needs low > 0"),
        ("params: {kv_type: {choices: [f16, q3]}}\n", "'q3' has the wrong type for kv_type"),
        ("params: {type_k: {choices: [1]}}\n", "search KV-cache types with 'kv_type'"),
        ("params: {n_threads: {low: 1, high: 2}}\nfixed: {n_threads: 2}\n", "both searched and fixed"),
        ("params: {n_threads: {low: 1, high: 2}}\nfixed: {n_gpu_layer: 1}\n", "unknown parameter 'n_gpu_layer'"),
        ("params: {n_ctx: {choices: [256]}, n_batch: {low: 512, high: 1024, at_most: n_ctx}}\n", "below this knob's low"),
    ],
)
def test_bad_space_files_are_rejected_clearly(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError) as err:
        load_space(str(path))
    assert message in str(err.value)
    assert str(path) in str(err.value)  # the message names the file
    assert "\n" not in str(err.value)  # one line


def test_unknown_space_name():
    with pytest.raises(SpaceError, match="neither a built-in space"):
        load_space("gpu9000")


def test_fixing_takes_knobs_out_of_the_search_and_their_bounds_come_from_the_fixed_value():
    """What an engine has no flag for (tuner.server_flags.lacking_settings) runs at its own value:
    the knob is not searched, and a knob bounded by it (n_ubatch <= n_batch) reads the fixed one."""
    space = load_space("cpu").fixing({"n_batch": 256, "type_k": 1, "type_v": 1, "min_p": 0.0})
    names = [p.name for p in space.params]
    assert not {"n_batch", "kv_type", "min_p"} & set(names) and "n_ubatch" in names
    study = optuna.create_study()
    for _ in range(5):
        config, values = space.suggest(study.ask())
        assert config.n_batch == 256 and config.n_ubatch <= 256 and (config.type_k, config.min_p) == (1, 0.0)
        assert "n_batch" not in values
    assert load_space("cpu").fixing({}) == load_space("cpu")


def test_requests_at_once_search_the_slots_from_one_to_the_users_and_the_servers_auto():
    space = load_space("cpu", cores=2)
    assert space.with_slots(1) is space
    slots = next(p for p in space.with_slots(3).params if p.name == "n_parallel")
    assert slots.choices == (AUTO_SLOTS, 1, 2, 3)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        config, values = space.with_slots(3).suggest(study.ask())
        assert config.n_parallel == values["n_parallel"]
        seen.add(config.n_parallel)
    assert seen == {AUTO_SLOTS, 1, 2, 3}
    assert next(p for p in space.with_slots(3).params if p.name == "kv_unified").choices == (False, True)
    for _ in range(30):  # shared or not only where there is something to share: one slot and auto are one point each
        trial = study.ask()
        config, values = space.with_slots(3).suggest(trial)
        assert ("kv_unified" in trial.params) == (config.n_parallel >= 2)
        assert config.kv_unified is (trial.params.get("kv_unified", False))
    without = space.fixing({"kv_unified": False}).with_slots(3)  # a binary without --kv-unified
    assert "kv_unified" not in {p.name for p in without.params} and without.fixed["kv_unified"] is False
