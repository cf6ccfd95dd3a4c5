"""What a study measures: a workload, i.e. a few request shapes with weights, and the objective
computed from them.

A request shape is ``depth`` tokens already in the KV cache when the request arrives (a system
prompt, the conversation so far), ``prompt`` new tokens to process and ``gen`` tokens to generate.
A workload is a weighted list of shapes: a built-in profile (workloads/*.yaml, e.g. ``chat``), a
profile file of the user's own, a JSONL file of the user's own requests (see
:mod:`tuner.user_requests`), or one custom shape from the command line.

The objective is what a user waits for: requests per minute, from the weighted mean end-to-end
request time (time to first token + generation time) over the shapes; see :func:`requests_per_min`.
Nothing here needs llama_cpp: profiles are validated without loading a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from tuner.errors import ConfigError
from tuner.stats import MIN_ROUNDS

__all__ = [
    "DEFAULT_PROFILE",
    "LatencyTargets",
    "Shape",
    "Workload",
    "builtin_profiles",
    "load_profile",
    "parse_profile",
    "requests_per_min",
]

DEFAULT_PROFILE = "chat"
SHAPE_KEYS = ("name", "depth", "prompt", "gen", "weight")
PROFILE_KEYS = {"name", "description", "shapes"}


@dataclass(frozen=True)
class Shape:
    """One kind of request: ``depth`` cached tokens, ``prompt`` new tokens, ``gen`` generated."""

    depth: int
    prompt: int
    gen: int
    weight: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        label = f"shape '{self.name}'" if self.name else "a shape"
        # a prompt of one token would be decoded as a generation step: llama.cpp counts it so
        for key, low in (("depth", 0), ("prompt", 2), ("gen", 1)):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{label}: {key}={value!r} must be an integer >= {low}", f"set {key} to {low} or more tokens")
        if not isinstance(self.weight, (int, float)) or isinstance(self.weight, bool) or not self.weight > 0:
            raise ConfigError(f"{label}: weight={self.weight!r} must be a positive number", "weights are relative frequencies, e.g. 1")

    @property
    def tokens(self) -> int:
        """Positions the request occupies: depth + prompt + generated (+1 for the last sampled token)."""
        return self.depth + self.prompt + self.gen + 1

    def describe(self) -> str:
        name = f"{self.name}: " if self.name else ""
        return f"{name}depth {self.depth} + prompt {self.prompt} -> gen {self.gen}"


@dataclass(frozen=True)
class Workload:
    """What every trial measures: the shapes, and how (warm-up, repetitions, the quality proxy).

    ``source`` records where the shapes came from (a profile file, or a JSONL file's sha256 and
    how its requests were sampled), so a study and its preset say what they were tuned for.
    """

    shapes: tuple[Shape, ...] = (Shape(depth=0, prompt=128, gen=64, name="custom"),)
    name: str = "custom"
    repeats: int = 3
    warmup: int = 1
    quality: bool = True  # also run the quality proxy (tuner.quality) in the same context
    source: dict[str, Any] = field(default_factory=dict)
    # requests in flight at once (--concurrency): each shape's request is sent by this many users
    # together; the objective is then the requests the server completes per minute (llama-server)
    concurrency: int = 1
    # the user's requests as written, when the workload came from them (a JSONL file, or the
    # code-edit profile): {prompt or messages, max_tokens, stop, weight}, one per measured shape.
    # Speculation is decided on these (tuner.study.speculation); shapes time everything else.
    texts: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not self.shapes:
            raise ConfigError(f"workload '{self.name}' has no request shape", "give at least one shape")
        object.__setattr__(self, "shapes", tuple(self.shapes))
        object.__setattr__(self, "texts", tuple(dict(t) for t in self.texts))
        if self.repeats < MIN_ROUNDS:
            raise ConfigError(f"repeats={self.repeats} (--repeats) is too few for a median and spread", f"use {MIN_ROUNDS} or more repetitions")
        if not isinstance(self.concurrency, int) or isinstance(self.concurrency, bool) or self.concurrency < 1:
            raise ConfigError(f"concurrency={self.concurrency!r} (--concurrency) must be a whole number of requests, at least 1", "use 1 (one request at a time) or more")
        if self.warmup < 1:
            raise ConfigError(f"warmup={self.warmup}: the first pass on a new context reads wrong", "use 1 or more warm-up passes")

    @classmethod
    def single(cls, prompt: int, gen: int, depth: int = 0, **options: Any) -> Workload:
        """One custom shape (what --prompt-tokens/--gen-tokens/--depth ask for)."""
        return cls(shapes=(Shape(depth=depth, prompt=prompt, gen=gen, name="custom"),), name="custom", **options)

    @property
    def weights(self) -> list[float]:
        """The shapes' weights, normalized to sum to 1."""
        total = sum(s.weight for s in self.shapes)
        return [s.weight / total for s in self.shapes]

    @property
    def tokens_needed(self) -> int:
        """The smallest context that holds the largest request shape."""
        return max(s.tokens for s in self.shapes)

    def speed_only(self) -> Workload:
        return replace(self, quality=False)

    def describe(self) -> str:
        """One line per shape with its share, e.g. for the `tune start` header."""
        return "; ".join(f"{s.describe()} ({w:.0%})" for s, w in zip(self.shapes, self.weights))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shapes"] = [asdict(s) for s in self.shapes]
        data["texts"] = [dict(t) for t in self.texts]  # a list, as the study's JSON record holds it
        return data

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Workload:
        """The inverse of :meth:`to_dict`; also reads a study recorded before workloads had shapes
        (``prompt_tokens``/``gen_tokens``: one shape at depth 0)."""
        options = {key: int(values[key]) for key in ("repeats", "warmup", "concurrency") if key in values}
        quality = bool(values.get("quality", True))
        if "shapes" not in values:
            return cls.single(int(values["prompt_tokens"]), int(values["gen_tokens"]), quality=quality, **options)
        shapes = tuple(Shape(**{k: s[k] for k in SHAPE_KEYS if k in s}) for s in values["shapes"])
        texts = tuple(values.get("texts") or ())
        return cls(shapes=shapes, name=str(values.get("name", "custom")), quality=quality, source=dict(values.get("source") or {}), texts=texts, **options)


@dataclass(frozen=True)
class LatencyTargets:
    """Limits a user sets on what they wait for, judged on the worst request shape (its median).

    A trial that misses one is infeasible (an Optuna constraint, like the quality floor): it stays
    recorded, with the reason, and export never picks it.
    """

    max_ttft_ms: float | None = None  # time to first token
    min_decode_tok_s: float | None = None  # generation speed

    def __post_init__(self) -> None:
        for name, flag in (("max_ttft_ms", "--max-ttft-ms"), ("min_decode_tok_s", "--min-decode-tok-s")):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name}={value} ({flag}) must be positive", f"give a positive limit, or leave {flag} out")

    def __bool__(self) -> bool:
        return self.max_ttft_ms is not None or self.min_decode_tok_s is not None

    def constraints(self, worst_ttft_ms: float, worst_decode_tok_s: float) -> dict[str, float]:
        """Optuna constraint values (feasible when every value is <= 0) for the targets set."""
        values = {}
        if self.max_ttft_ms is not None:
            values["ttft_ms"] = worst_ttft_ms - self.max_ttft_ms
        if self.min_decode_tok_s is not None:
            values["decode_tok_s"] = self.min_decode_tok_s - worst_decode_tok_s
        return values

    def describe(self) -> str:
        parts = []
        if self.max_ttft_ms is not None:
            parts.append(f"time to first token <= {self.max_ttft_ms:g} ms")
        if self.min_decode_tok_s is not None:
            parts.append(f"decode >= {self.min_decode_tok_s:g} tok/s")
        return " and ".join(parts) + " on every request shape" if parts else "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def requests_per_min(request_ms: list[float], weights: list[float]) -> float:
    """The objective: requests per minute from one pass over the shapes.

    ``request_ms[i]`` is shape i's end-to-end time (time to first token + generation time) and
    ``weights`` its share of the requests (summing to 1). A user sending requests in those
    proportions, one after another, gets 60 000 / (weighted mean request time) per minute.
    """
    if len(request_ms) != len(weights) or not request_ms:
        raise ValueError("one request time per shape")
    mean_ms = sum(w * t for w, t in zip(weights, request_ms))
    return 60_000.0 / mean_ms if mean_ms > 0 else float("inf")


def builtin_profiles(suffix: str = ".yaml") -> dict[str, Path]:
    """Workload files shipped with the tool: name -> file. Profiles (shapes) are ``.yaml``;
    ``.jsonl`` ones are requests with their text (``code-edit``, ``questions``)."""
    folder = resources.files("tuner.workloads")
    return {Path(entry.name).stem: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(suffix)}


def load_profile(name_or_path: str | Path, **options: Any) -> Workload:
    """A workload from a built-in profile name (``chat``, ``rag``, ...) or a profile YAML file.

    ``options`` (repeats, warmup, quality) are passed to :class:`Workload`.
    """
    builtin = builtin_profiles()
    path = Path(name_or_path)
    if str(name_or_path) in builtin:
        path = builtin[str(name_or_path)]
    elif not path.is_file():
        raise ConfigError(
            f"workload '{name_or_path}' is neither a built-in profile nor a file",
            f"use one of {', '.join(sorted({*builtin, *builtin_profiles('.jsonl')}))}, a profile .yaml or a requests .jsonl file",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read workload file {path}: {exc}", "check the file") from None
    return parse_profile(text, source=str(path), **options)


def parse_profile(text: str, *, source: str = "<workload>", **options: Any) -> Workload:
    """Validate profile YAML ``text``: ``name``, ``description`` and a list of ``shapes``."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}: YAML syntax error{where}", "fix the YAML syntax") from None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list) or not data["shapes"]:
        raise ConfigError(f"{source}: a workload profile needs a non-empty 'shapes' list", "see workloads/chat.yaml")
    for key in data:
        if key not in PROFILE_KEYS:
            raise ConfigError(f"{source}: unknown top-level key '{key}'", f"allowed: {', '.join(sorted(PROFILE_KEYS))}")
    shapes = []
    for index, raw in enumerate(data["shapes"], start=1):
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: shape {index} must be a mapping", "e.g. {depth: 0, prompt: 128, gen: 64, weight: 1}")
        unknown = [k for k in raw if k not in SHAPE_KEYS]
        if unknown:
            raise ConfigError(f"{source}: shape {index}: unknown key '{unknown[0]}'", f"allowed: {', '.join(SHAPE_KEYS)}")
        missing = [k for k in ("depth", "prompt", "gen") if k not in raw]
        if missing:
            raise ConfigError(f"{source}: shape {index}: '{missing[0]}' is missing", "give depth, prompt and gen (tokens)")
        try:
            shapes.append(Shape(**{**raw, "name": str(raw.get("name", f"shape{index}"))}))
        except ConfigError as exc:
            raise ConfigError(f"{source}: shape {index}: {exc.what}", exc.fix) from None
    name = str(data.get("name") or Path(source).stem)
    return Workload(shapes=tuple(shapes), name=name, source={"kind": "profile", "path": source}, **options)
