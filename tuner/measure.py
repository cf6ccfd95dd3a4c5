"""Throughput measurement: a fixed workload, one warm-up pass, repetitions, medians and spread.

Rates come from llama.cpp's own counters (llama_perf_context, llama_perf_sampler); wall-clock
rates are kept beside them as a cross-check. The very first eval on a new context reports
nonsense (0.49 ms for 428 tokens against 8.5 s of wall time was seen on this project's machine),
which is why every measurement starts with a warm-up pass whose numbers are thrown away.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tuner.config import EngineConfig
from tuner.engine import Engine, Generation
from tuner.errors import ConfigError
from tuner.quality import EVAL_TOKENS, Quality, Reference, evaluate
from tuner.stats import Stat
from tuner.telemetry import Telemetry

__all__ = ["Workload", "Measurement", "measure", "WORKLOAD_TEXT"]

# The prompt every trial evaluates: fixed, so trials compare like with like. Written for this
# project; repeated as needed to reach the workload's prompt length.
WORKLOAD_TEXT = (
    "The lighthouse keeper kept a careful log. Each evening he wrote down the direction of the wind, "
    "the height of the waves against the lower rocks, the number of ships that passed the point, and "
    "the time at which the lamp was lit. In winter the entries grew short, because the cold made his "
    "hand stiff, but he never missed a day. Years later a historian found the books in a crate at the "
    "harbour office and read them from the first page to the last. She learned that storms came in "
    "clusters, that the fishing fleet sailed less often after the new railway opened, and that the "
    "keeper had once seen a whale so close to the shore that he could hear it breathe. She also learned "
    "that he had taught himself to draw: in the margins of the later books there were small, exact "
    "sketches of birds, boats and clouds. "
)


@dataclass(frozen=True)
class Workload:
    """What one repetition does: evaluate a prompt, then decode a fixed number of tokens.

    The defaults make one trial take a few seconds on a 2-core CPU with the embedded model.
    """

    prompt_tokens: int = 128
    gen_tokens: int = 64
    repeats: int = 3
    warmup: int = 1
    quality: bool = True  # also run the quality proxy (tuner.quality) in the same context

    def __post_init__(self) -> None:
        if self.prompt_tokens < 2:
            raise ConfigError(f"prompt_tokens={self.prompt_tokens} is too small", "use at least 2 prompt tokens")
        if self.gen_tokens < 1:
            raise ConfigError(f"gen_tokens={self.gen_tokens} is too small", "generate at least 1 token")
        if self.repeats < 3:
            raise ConfigError(f"repeats={self.repeats} is too few for a median and spread", "use 3 or more repetitions")
        if self.warmup < 1:
            raise ConfigError(f"warmup={self.warmup}: the first pass on a new context reads wrong", "use 1 or more warm-up passes")

    @property
    def n_ctx_needed(self) -> int:
        """Smallest n_ctx that holds the prompt, the generated tokens and the sampled last token,
        and the quality proxy's evaluation text when it runs."""
        return max(self.prompt_tokens + self.gen_tokens + 1, EVAL_TOKENS if self.quality else 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Workload:
        counts = {key: int(values[key]) for key in ("prompt_tokens", "gen_tokens", "repeats", "warmup")}
        return cls(**counts, quality=bool(values.get("quality", True)))


@dataclass(frozen=True)
class Measurement:
    """The figures of one configuration under one workload.

    * ``prompt_tok_s``: prompt tokens / llama.cpp's prompt-eval time.
    * ``decode_tok_s``: generated tokens / (llama.cpp's decode time + sampler time) — generation
      speed as a create_completion user sees it, sampling included.
    * ``eval_tok_s``: generated tokens / decode time alone (the engine without the sampler).
    * ``wall_decode_tok_s``: the same rate from the wall clock, the cross-check.
    * ``ttft_ms``: wall time from the start of the prompt to the first sampled token.
    * ``sample_us_per_tok``: sampler cost per token, from llama.cpp's sampler counters.
    """

    prompt_tok_s: Stat
    decode_tok_s: Stat
    eval_tok_s: Stat
    wall_decode_tok_s: Stat
    ttft_ms: Stat
    sample_us_per_tok: Stat
    workload: Workload
    config: EngineConfig  # the effective (resolved and clamped) config that ran
    clamped: dict[str, tuple[Any, Any]]
    telemetry: dict[str, Any] = field(default_factory=dict)  # peak RSS; GPU VRAM/util/power/energy
    quality: Quality | None = None  # the quality proxy's figures, when it ran

    METRICS = ("prompt_tok_s", "decode_tok_s", "eval_tok_s", "wall_decode_tok_s", "ttft_ms", "sample_us_per_tok")

    @property
    def counter_wall_gap(self) -> float:
        """Relative gap between counter-based and wall-clock decode rates (large = suspicious)."""
        wall = self.wall_decode_tok_s.median
        return abs(self.decode_tok_s.median - wall) / wall if wall else float("inf")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        """The inverse of :meth:`to_dict` (how a worker process hands its result back)."""
        return cls(
            **{name: Stat.from_dict(data[name]) for name in cls.METRICS},
            workload=Workload.from_dict(data["workload"]),
            config=EngineConfig.from_dict(data["effective"]),
            clamped={key: tuple(pair) for key, pair in data["clamped"].items()},
            telemetry=dict(data.get("telemetry") or {}),
            quality=Quality(**data["quality"]) if data.get("quality") else None,
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name).to_dict() for name in self.METRICS}
        data["counter_wall_gap"] = self.counter_wall_gap
        data["workload"] = self.workload.to_dict()
        data["effective"] = self.config.to_dict()
        data["clamped"] = {key: list(pair) for key, pair in self.clamped.items()}
        data["telemetry"] = self.telemetry
        data["quality"] = self.quality.to_dict() if self.quality else None
        return data


def measure(engine: Engine, config: EngineConfig, workload: Workload, reference: Reference | None = None) -> Measurement:
    """Measure ``config`` on ``engine``: warm-up pass(es), then ``workload.repeats`` timed passes,
    then (with a ``reference`` and ``workload.quality``) the quality proxy in the same context.

    Raises:
        ConfigError: n_ctx below what the workload needs.
        EngineError: llama.cpp refused the configuration.
    """
    effective = config.effective()
    with_quality = reference is not None and workload.quality
    need = workload.n_ctx_needed if with_quality else workload.prompt_tokens + workload.gen_tokens + 1
    if 0 < effective.n_ctx < need:
        raise ConfigError(
            f"n_ctx={effective.n_ctx} is below the {need} tokens this workload needs",
            f"use n_ctx >= {need} or a shorter workload",
        )
    runs: list[Generation] = []
    clamped = config.clamped()
    with engine.session(config) as session:
        actual_n_ctx = session.context.n_ctx()  # llama.cpp pads n_ctx (to a multiple of 256)
        if actual_n_ctx != effective.n_ctx:
            clamped["n_ctx"] = (config.n_ctx, actual_n_ctx)
            effective = replace(effective, n_ctx=actual_n_ctx)
        prompt = prompt_tokens(session.tokenize(WORKLOAD_TEXT), workload.prompt_tokens)
        for _ in range(workload.warmup):
            session.generate(prompt, workload.gen_tokens, stop_at_eos=False)
        with Telemetry() as telemetry:
            for _ in range(workload.repeats):
                runs.append(session.generate(prompt, workload.gen_tokens, stop_at_eos=False))
        quality = evaluate(session, reference) if with_quality else None
    return Measurement(
        prompt_tok_s=Stat.of([r.n_prompt / r.prompt_ms * 1000 for r in runs]),
        decode_tok_s=Stat.of([r.n_eval / (r.eval_ms + r.sample_ms) * 1000 for r in runs]),
        eval_tok_s=Stat.of([r.n_eval / r.eval_ms * 1000 for r in runs]),
        wall_decode_tok_s=Stat.of([r.n_eval / r.wall_decode_ms * 1000 for r in runs]),
        ttft_ms=Stat.of([r.ttft_ms for r in runs]),
        sample_us_per_tok=Stat.of([r.sample_ms * 1000 / max(r.n_sample, 1) for r in runs]),
        workload=workload,
        config=effective,
        clamped=clamped,
        telemetry=telemetry.summary(tokens=sum(r.n_eval for r in runs)),
        quality=quality,
    )


def prompt_tokens(text_tokens: list[int], length: int) -> list[int]:
    """Exactly ``length`` tokens: the BOS-led text, its body repeated as often as needed."""
    body = text_tokens[1:] or text_tokens
    tokens = list(text_tokens)
    while len(tokens) < length:
        tokens.extend(body)
    return tokens[:length]
