"""Search spaces: YAML data turned into Optuna suggestions, with constraints held by construction.

A space file (see search_spaces/cpu.yaml for the syntax) is validated when it is loaded; every
mistake is reported as a :class:`~tuner.errors.SpaceError` naming the file and the knob.
Constraints between knobs are built into the suggestions instead of being checked afterwards:
``at_most`` gives n_ubatch <= n_batch <= n_ctx, n_ctx choices below what the workload needs are
dropped, ``high: cores`` is the machine's core count, and ``when`` makes a knob conditional
(quantized V cache only with flash attention). No trial is spent on an impossible combination.
"""

from __future__ import annotations

import difflib
from decimal import Decimal
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from tuner.config import AUTO_SLOTS, KV_TYPES, EngineConfig
from tuner.errors import ConfigError, SpaceError
from tuner.hardware import logical_cores

__all__ = [
    "Param",
    "SearchSpace",
    "builtin_spaces",
    "load_space",
    "on_grid",
    "parse_space",
    "space_to_yaml",
]

# Knobs a space may search, with their value type. kv_type sets type_k and type_v together.
KNOB_TYPES: dict[str, type] = {
    "n_gpu_layers": int,
    "use_mmap": bool,
    "use_mlock": bool,
    "main_gpu": int,
    "split_mode": int,
    "n_ctx": int,
    "n_batch": int,
    "n_ubatch": int,
    "n_threads": int,
    "n_threads_batch": int,
    "flash_attn": bool,
    "offload_kqv": bool,
    "op_offload": bool,
    "swa_full": bool,
    "kv_type": str,
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "repeat_penalty": float,
    "n_parallel": int,  # llama-server's slots: added by with_slots when requests come at once
    "kv_unified": bool,  # ... and whether they share one cache (--kv-unified)
}
TOP_KEYS = {"name", "description", "params", "fixed"}
SPEC_KEYS = {"choices", "low", "high", "log", "step", "at_most", "when", "otherwise", "oversubscribe"}


@dataclass(frozen=True)
class Param:
    """One searched knob."""

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    at_most: str | None = None
    # knob -> the value it must have for this one to be searched, or a tuple of the values it may
    # have (internal only: a space file's YAML has no tuples); otherwise: this knob's value if not.
    when: dict[str, Any] = field(default_factory=dict)
    otherwise: Any = None

    def searched_with(self, value_of: Any) -> bool:
        """Whether this knob is searched, ``value_of(knob)`` giving the value of each it depends on."""
        return all(
            value_of(knob) in want if isinstance(want, tuple) else value_of(knob) == want for knob, want in self.when.items()
        )

    @property
    def is_int(self) -> bool:
        return KNOB_TYPES[self.name] is int

    @property
    def smallest(self) -> Any:
        return min(self.choices) if self.choices is not None else self.low

    def suggest(self, trial: Any, bound: Any = None) -> Any:
        """Ask ``trial`` for this knob's value; ``bound`` is the value named by ``at_most``."""
        if self.choices is not None:
            return trial.suggest_categorical(self.name, list(self.choices))
        high = self.high if bound is None else min(self.high, bound)
        if self.is_int:
            return trial.suggest_int(self.name, int(self.low), int(high), log=self.log, step=int(self.step or 1))
        value = trial.suggest_float(self.name, float(self.low), float(high), log=self.log, step=self.step)
        return on_grid(value, self.step) if self.step else value


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space: searched knobs in order, and fixed knobs."""

    name: str
    description: str
    params: tuple[Param, ...]
    fixed: dict[str, Any]
    source: str
    text: str

    @property
    def offloads(self) -> bool:
        """True when the space puts layers on a GPU: n_gpu_layers searched, or fixed at -1 or above 0."""
        return any(p.name == "n_gpu_layers" for p in self.params) or self.fixed.get("n_gpu_layers", 0) != 0

    def for_workload(self, n_ctx_needed: int) -> SearchSpace:
        """This space without n_ctx values too small for the workload (how studies made before
        context requirements searched; they resume with it, see :meth:`for_requirement`)."""
        params = []
        for param in self.params:
            if param.name == "n_ctx" and param.choices is not None:
                kept = tuple(c for c in param.choices if c >= n_ctx_needed)
                if not kept:
                    raise SpaceError(
                        f"{self.source}: no n_ctx choice fits the workload (it needs {n_ctx_needed} tokens)",
                        f"add an n_ctx choice >= {n_ctx_needed} or shorten the workload",
                    )
                param = replace(param, choices=kept)
            elif param.name == "n_ctx" and param.high is not None:
                if param.high < n_ctx_needed:
                    raise SpaceError(
                        f"{self.source}: n_ctx high={param.high} is below the {n_ctx_needed} tokens the workload needs",
                        f"raise n_ctx high to >= {n_ctx_needed}",
                    )
                param = replace(param, low=max(param.low, n_ctx_needed))
            params.append(param)
        if self.fixed.get("n_ctx", n_ctx_needed) < n_ctx_needed:
            raise SpaceError(
                f"{self.source}: fixed n_ctx={self.fixed['n_ctx']} is below the {n_ctx_needed} tokens the workload needs",
                f"fix n_ctx >= {n_ctx_needed}",
            )
        return replace(self, params=tuple(params))

    def for_requirement(self, n_ctx: int, max_ctx: int = 0) -> SearchSpace:
        """This space with n_ctx searched only at or above the context the application requires.

        n_ctx is a requirement, not a knob to minimise: the requirement itself is always a
        choice, and so are the space's larger values up to twice it (and the model's training
        context ``max_ctx``), which the ablation keeps only when they measurably pay. A space
        that does not search n_ctx runs at the requirement; one that fixes it lower is refused.
        """
        limit = min(2 * n_ctx, max_ctx) if max_ctx else 2 * n_ctx
        params = []
        for param in self.params:
            if param.name == "n_ctx" and param.choices is not None:
                param = replace(param, choices=tuple(sorted({n_ctx, *(c for c in param.choices if n_ctx < c <= limit)})))
            elif param.name == "n_ctx":
                param = replace(param, low=n_ctx, high=max(n_ctx, min(param.high, limit)))
            params.append(param)
        fixed = dict(self.fixed)
        if fixed.get("n_ctx", n_ctx) < n_ctx:
            raise SpaceError(
                f"{self.source}: fixed n_ctx={fixed['n_ctx']} is below the {n_ctx} tokens of context required",
                f"fix n_ctx >= {n_ctx}, or lower the requirement with --n-ctx",
            )
        if not any(p.name == "n_ctx" for p in params):
            fixed.setdefault("n_ctx", n_ctx)
        return replace(self, params=tuple(params), fixed=fixed)

    def fixing(self, settings: dict[str, Any]) -> SearchSpace:
        """This space with ``settings`` (EngineConfig keys and values) fixed and their knobs not
        searched: what an engine has no flag for runs at its own value (a type_k or type_v
        takes kv_type out of the search)."""
        knobs = {"kv_type" if key in ("type_k", "type_v") else key for key in settings}
        fixed = {key: value for key, value in self.fixed.items() if key not in knobs}
        return replace(self, params=tuple(p for p in self.params if p.name not in knobs), fixed={**fixed, **settings})

    def with_slots(self, concurrency: int) -> SearchSpace:
        """With ``concurrency`` requests at once (llama-server), its slots searched too: from 1 to
        ``concurrency``, each with n_ctx of its own (the server's -c grows with them) or, with
        ``kv_unified``, sharing one cache of n_ctx cells; or llama-server's auto
        (:data:`AUTO_SLOTS`: 4 slots sharing one cache, which 4 users at once on the 2-core VM
        served at 1.23x the throughput of -np 4 with 4 x n_ctx, benchmarks/concurrency.py). One
        request at a time leaves the space as it is; kv_unified is searched only where it changes
        something (2 slots or more) and not at all where it is fixed (a binary without the flag)."""
        if concurrency <= 1 or any(p.name == "n_parallel" for p in self.params):
            return self
        slots = [Param(name="n_parallel", choices=(AUTO_SLOTS, *range(1, concurrency + 1)))]
        if "kv_unified" not in self.fixed:  # 1 slot and auto ignore it (EngineConfig.effective): not two points each
            shared = tuple(range(2, concurrency + 1))
            slots.append(Param(name="kv_unified", choices=(False, True), when={"n_parallel": shared}, otherwise=False))
        return replace(self, params=(*self.params, *slots), fixed={k: v for k, v in self.fixed.items() if k != "n_parallel"})

    def suggest(self, trial: Any) -> tuple[EngineConfig, dict[str, Any]]:
        """Suggest one configuration through ``trial`` (an optuna Trial or FixedTrial).

        Returns:
            The engine config and the searched values (conditional knobs included).
        """
        values: dict[str, Any] = {}
        for param in self.params:
            if not param.searched_with(lambda knob: values.get(knob, self.fixed.get(knob))):
                values[param.name] = param.otherwise
                continue
            bound = values.get(param.at_most, self.fixed.get(param.at_most)) if param.at_most else None  # fixed: see fixing
            values[param.name] = param.suggest(trial, bound)
        return to_config({**self.fixed, **values}), values


def on_grid(value: float, step: float) -> float:
    """``value`` written with the step's decimals: Optuna's grid points are sums of floats
    (0.1 + 13 * 0.05 = 0.7500000000000001), and a preset shows what a person would write."""
    decimals = max(0, -Decimal(str(step)).normalize().as_tuple().exponent)
    return round(value, decimals)


def to_config(values: dict[str, Any]) -> EngineConfig:
    """EngineConfig from knob values; ``kv_type`` becomes the symmetric pair type_k = type_v."""
    values = dict(values)
    kv = values.pop("kv_type", None)
    if kv is not None:
        values["type_k"] = values["type_v"] = KV_TYPES[kv]
    return EngineConfig.from_dict(values)


def builtin_spaces() -> dict[str, Path]:
    """Search spaces shipped with the tool: name -> file."""
    folder = resources.files("tuner.search_spaces")
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml")}


def load_space(name_or_path: str | Path, *, cores: int | None = None) -> SearchSpace:
    """Load and validate a space by built-in name (``cpu``, ``rtx4090``) or YAML file path."""
    builtin = builtin_spaces()
    path = Path(name_or_path)
    if str(name_or_path) in builtin:
        path = builtin[str(name_or_path)]
    elif not path.exists():
        raise SpaceError(
            f"search space '{name_or_path}' is neither a built-in space nor an existing file",
            f"use one of {', '.join(sorted(builtin))} or a path to a .yaml file",
        )
    if path.is_dir():
        raise SpaceError(f"search space path {path} is a directory", "pass a .yaml file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceError(f"cannot read search space {path}: {exc}", "check the file") from exc
    return parse_space(text, source=str(path), cores=cores)


def parse_space(text: str, *, source: str = "<space>", cores: int | None = None) -> SearchSpace:
    """Validate YAML ``text`` as a search space."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SpaceError(f"{source}: YAML syntax error{where}: {problem}", "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: a search space must be a mapping with a 'params' key", "see search_spaces/cpu.yaml")
    for key in data:
        if key not in TOP_KEYS:
            raise SpaceError(f"{source}: unknown top-level key '{key}'", f"allowed keys: {', '.join(sorted(TOP_KEYS))}")
    raw_params = data.get("params")
    if not isinstance(raw_params, dict) or not raw_params:
        raise SpaceError(f"{source}: 'params' must be a non-empty mapping of knob -> spec", "see search_spaces/cpu.yaml")
    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SpaceError(f"{source}: 'fixed' must be a mapping of knob -> value", "e.g. fixed: {n_gpu_layers: 0}")
    cores = cores or logical_cores()
    params: list[Param] = []
    for name, spec in raw_params.items():
        params.append(_parse_param(source, str(name), spec, params, cores))
    for name, value in fixed.items():
        _check_knob(source, f"fixed.{name}", str(name))
        if name in raw_params:
            raise SpaceError(f"{source}: '{name}' is both searched and fixed", "remove it from params or from fixed")
        _check_value(source, f"fixed.{name}", str(name), value)
    try:
        to_config(dict(fixed))
    except ConfigError as exc:
        raise SpaceError(f"{source}: fixed: {exc.what}", exc.fix) from None
    return SearchSpace(
        name=str(data.get("name") or Path(source).stem),
        description=str(data.get("description") or ""),
        params=tuple(params),
        fixed=dict(fixed),
        source=source,
        text=text,
    )


def _check_knob(source: str, where: str, name: str) -> None:
    if name in ("type_k", "type_v"):
        raise SpaceError(f"{source}: {where}: search KV-cache types with 'kv_type'", "K and V types stay a symmetric pair")
    if name not in KNOB_TYPES:
        guess = difflib.get_close_matches(name, sorted(KNOB_TYPES), n=1)
        fix = f"did you mean '{guess[0]}'?" if guess else f"known knobs: {', '.join(KNOB_TYPES)}"
        raise SpaceError(f"{source}: {where}: unknown parameter '{name}'", fix)


def _check_value(source: str, where: str, name: str, value: Any) -> None:
    kind = KNOB_TYPES[name]
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = value in KV_TYPES
    if not ok:
        expected = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, f"one of {', '.join(KV_TYPES)}")
        raise SpaceError(f"{source}: {where}: {value!r} has the wrong type for {name}", f"use {expected}")


def _parse_param(source: str, name: str, spec: Any, earlier: list[Param], cores: int) -> Param:
    where = f"params.{name}"
    _check_knob(source, where, name)
    if not isinstance(spec, dict):
        raise SpaceError(f"{source}: {where}: the spec must be a mapping", "e.g. {choices: [...]} or {low: 1, high: 8}")
    for key in spec:
        if key not in SPEC_KEYS:
            raise SpaceError(f"{source}: {where}: unknown spec key '{key}'", f"allowed: {', '.join(sorted(SPEC_KEYS))}")

    def fail(what: str, fix: str) -> SpaceError:
        return SpaceError(f"{source}: {where}: {what}", fix)

    when = spec.get("when") or {}
    if not isinstance(when, dict):
        raise fail("'when' must be a mapping of knob -> value", "e.g. when: {flash_attn: true}")
    earlier_names = {p.name for p in earlier}
    for knob, value in when.items():
        if knob not in earlier_names:
            raise fail(f"'when' names '{knob}', which is not a knob searched above it", "list that knob first")
        _check_value(source, f"{where}.when", knob, value)
    otherwise = spec.get("otherwise")
    if when and otherwise is None:
        raise fail("a conditional knob needs 'otherwise' (its value when the condition is false)", "add otherwise: VALUE")
    if otherwise is not None:
        _check_value(source, f"{where}.otherwise", name, otherwise)

    if "choices" in spec:
        if any(key in spec for key in ("low", "high", "log", "step", "at_most")):
            raise fail("give either 'choices' or a low/high range, not both", "remove one of them")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise fail("'choices' must be a non-empty list", "e.g. choices: [512, 1024]")
        for choice in choices:
            _check_value(source, f"{where}.choices", name, choice)
        if len(set(map(repr, choices))) != len(choices):
            raise fail("'choices' has duplicates", "list each value once")
        return Param(name=name, choices=tuple(choices), when=dict(when), otherwise=otherwise)

    if "low" not in spec or "high" not in spec:
        raise fail("needs 'choices' or both 'low' and 'high'", "e.g. {low: 1, high: 8}")
    if KNOB_TYPES[name] not in (int, float):
        raise fail(f"{name} is not numeric, so it takes 'choices', not a range", "e.g. choices: [false, true]")
    low, high = spec["low"], spec["high"]
    if high == "cores":
        if name not in ("n_threads", "n_threads_batch"):
            raise fail("'high: cores' is only for n_threads and n_threads_batch", "give a number")
        high = cores
    _check_value(source, f"{where}.low", name, low)
    _check_value(source, f"{where}.high", name, high)
    if name in ("n_threads", "n_threads_batch") and high > cores and not spec.get("oversubscribe", False):
        high = max(low, cores)  # threads beyond the cores only slow llama.cpp down, unless asked for
    if low > high:
        raise fail(f"low={low} is greater than high={high}", "swap them or fix one")
    log, step = bool(spec.get("log", False)), spec.get("step")
    if log and low <= 0:
        raise fail(f"a log range needs low > 0 (low={low})", "raise low or drop log")
    if log and step is not None:
        raise fail("'log' and 'step' cannot be combined", "drop one of them")
    if step is not None:
        _check_value(source, f"{where}.step", name, step)
        if step <= 0:
            raise fail(f"step={step} must be positive", "use a positive step")
    at_most = spec.get("at_most")
    if at_most is not None:
        bound = next((p for p in earlier if p.name == at_most), None)
        if bound is None:
            raise fail(f"'at_most' names '{at_most}', which is not a knob searched above it", "list that knob first")
        if bound.smallest < low:
            raise fail(f"{at_most} can be {bound.smallest}, below this knob's low={low}", f"lower low to <= {bound.smallest}")
    return Param(
        name=name, low=low, high=high, log=log, step=step, at_most=at_most, when=dict(when), otherwise=otherwise
    )


def space_to_yaml(space: SearchSpace) -> str:
    """YAML text that :func:`parse_space` reads back into the same space (bounds resolved)."""
    params: dict[str, Any] = {}
    for p in space.params:
        spec: dict[str, Any] = {}
        if p.choices is not None:
            spec["choices"] = list(p.choices)
        else:
            spec.update(low=p.low, high=p.high)
            if p.log:
                spec["log"] = True
            if p.step is not None:
                spec["step"] = p.step
            if p.at_most:
                spec["at_most"] = p.at_most
            if p.name in ("n_threads", "n_threads_batch"):
                spec["oversubscribe"] = True  # the bound was already resolved for this machine
        if p.when:
            spec.update(when=dict(p.when), otherwise=p.otherwise)
        params[p.name] = spec
    data = {"name": space.name, "description": space.description, "params": params, "fixed": dict(space.fixed)}
    return yaml.safe_dump(data, sort_keys=False)
