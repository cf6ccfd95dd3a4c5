"""Throughput measurement: a workload's request shapes run on one session, warm-up first, then
repetitions; per-shape figures, the objective (requests per minute), medians and spread.

A session starts with one warm-up pass (untimed) on the paths that are timed: a prompt as long as
the workload's longest prompt, capped at the context's n_ubatch (:func:`warmup_prompt`: the
largest batch the timed prompts run, which on a GPU takes other kernels than a few tokens do),
then :data:`WARMUP_TOKENS` decode steps (on a GPU, clocks ramp up over the first steps). The very
first eval on a new context reports nonsense (0.49 ms for 428 tokens against 8.5 s of wall time
was seen on this project's machine). Then each
shape's ``depth`` tokens are evaluated into the KV cache (untimed: the context a request finds
there; a depth the session evaluated before is restored from its saved state, see
:meth:`tuner.engine.Session.enter_depth`) and its requests are timed: the prompt, then exactly ``gen`` generated tokens, each
request from the same cached depth. Every repetition's counters are checked against the wall
clock, and a repetition where they disagree is flagged.

Racing: with a :class:`RaceBound`, every shape's first repetition runs first, then every shape's
second (the last shape first: its depth is still in the cache); when the objective of the better
of the two is below the bound, the measurement stops there (``stopped`` says why) and the quality
proxy does not run. Otherwise the remaining repetitions follow. One repetition never stops a
measurement: a neighbour's burst once read a trial with the incumbent's very settings at 0.44x on
its first repetition. How the bound is set is :mod:`tuner.study.noise`'s business.

Requests at once (``workload.concurrency`` N, llama-server only): a repetition of a shape is N
users sending it together, each with a conversation of its own (:func:`user_tokens`), its depth
put back in its slot first (untimed); the round counts as one repetition (:func:`served`): the
objective is the requests the server completes per minute, TTFT the slowest user's.

Rates come from llama.cpp's own counters (llama_perf_context, llama_perf_sampler); wall-clock
times are kept beside them as a cross-check, and the end-to-end request time (what the user
waits for) is wall-clock: time to first token + generation time. The quality proxy runs in a
context of its own (see :mod:`tuner.quality`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tuner.config import EngineConfig
from tuner.engine import Engine, Generation, Session
from tuner.errors import ConfigError
from tuner.quality import Quality, Reference, evaluate
from tuner.stats import Stat
from tuner.telemetry import Telemetry
from tuner.workload import Shape, Workload, requests_per_min

__all__ = ["TIME_PARTS", "RaceBound", "WARMUP_TOKENS", "warmup_prompt", "WORKLOAD_TEXT", "Measurement", "ShapeFigures", "aggregate", "clamps", "measure", "request_ms", "served", "served_ms", "user_tokens"]

# The text every trial evaluates: fixed, so trials compare like with like. Written for this
# project; repeated as needed to reach a shape's depth + prompt length.
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
WARMUP_TOKENS = 8  # decode steps of the warm-up pass: the decode path, and a GPU's clocks ramping
COUNTER_WALL_LIMIT = 0.25  # a repetition whose counter and wall rates differ more is flagged
TIME_PARTS = ("setup", "warmup", "prefill", "timed", "quality")


@dataclass(frozen=True)
class ShapeFigures:
    """One request shape's figures over the repetitions.

    ``context_tokens`` is what llama.cpp's memory held when the first token was sampled (read
    from it, not counted here): depth + prompt when the cached depth was really there.
    """

    shape: Shape
    prompt_tok_s: Stat
    decode_tok_s: Stat
    ttft_ms: Stat
    request_ms: Stat
    context_tokens: int

    METRICS = ("prompt_tok_s", "decode_tok_s", "ttft_ms", "request_ms")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"shape": asdict(self.shape), "context_tokens": self.context_tokens}
        data.update({name: getattr(self, name).to_dict() for name in self.METRICS})
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShapeFigures:
        return cls(
            shape=Shape(**data["shape"]),
            **{name: Stat.from_dict(data[name]) for name in cls.METRICS},
            context_tokens=int(data["context_tokens"]),
        )


@dataclass(frozen=True)
class Measurement:
    """The figures of one configuration under one workload (each Stat over the repetitions).

    * ``requests_per_min``: the objective, 60 000 / the weighted mean end-to-end request time.
    * ``prompt_tok_s``: all shapes' prompt tokens / llama.cpp's prompt-eval time.
    * ``decode_tok_s``: all generated tokens / (llama.cpp's decode time + sampler time) —
      generation speed as a create_completion user sees it, sampling included.
    * ``eval_tok_s``: generated tokens / decode time alone (the engine without the sampler).
    * ``wall_decode_tok_s``: the same rate from the wall clock, the cross-check.
    * ``ttft_ms``: the shapes' time to first token (wall), weighted like the objective.
    * ``sample_us_per_tok``: sampler cost per token, from llama.cpp's sampler counters.
    * ``shapes``: the same figures per request shape.
    """

    requests_per_min: Stat
    prompt_tok_s: Stat
    decode_tok_s: Stat
    eval_tok_s: Stat
    wall_decode_tok_s: Stat
    ttft_ms: Stat
    sample_us_per_tok: Stat
    shapes: list[ShapeFigures]
    workload: Workload
    config: EngineConfig  # the effective (resolved and clamped) config that ran
    clamped: dict[str, tuple[Any, Any]]
    telemetry: dict[str, Any] = field(default_factory=dict)  # peak RSS; GPU VRAM/util/power/energy
    quality: Quality | None = None  # the quality proxy's figures, when it ran
    stopped: str = ""  # why the measurement stopped after its first or second repetition (racing), if it did
    flags: list[str] = field(default_factory=list)  # repetitions whose counters disagree with the wall clock
    seconds: dict[str, float] = field(default_factory=dict)  # where the time went: TIME_PARTS
    placed: dict[str, Any] = field(default_factory=dict)  # layers offloaded, buffers per device (tuner.llama_log.placement_read_back)

    METRICS = ("requests_per_min", "prompt_tok_s", "decode_tok_s", "eval_tok_s", "wall_decode_tok_s", "ttft_ms", "sample_us_per_tok")

    @property
    def counter_wall_gap(self) -> float:
        """Relative gap between counter-based and wall-clock decode rates (large = suspicious)."""
        wall = self.wall_decode_tok_s.median
        return abs(self.decode_tok_s.median - wall) / wall if wall else float("inf")

    def worst(self, metric: str) -> float:
        """The worst shape's median: the highest TTFT, or the lowest decode rate."""
        values = [getattr(s, metric).median for s in self.shapes]
        return max(values) if metric in ("ttft_ms", "request_ms") else min(values)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        """The inverse of :meth:`to_dict` (how a worker process hands its result back)."""
        return cls(
            **{name: Stat.from_dict(data[name]) for name in cls.METRICS},
            shapes=[ShapeFigures.from_dict(s) for s in data["shapes"]],
            workload=Workload.from_dict(data["workload"]),
            config=EngineConfig.from_dict(data["effective"]),
            clamped={key: tuple(pair) for key, pair in data["clamped"].items()},
            telemetry=dict(data.get("telemetry") or {}),
            quality=Quality.from_dict(data["quality"]) if data.get("quality") else None,
            stopped=str(data.get("stopped", "")),
            flags=list(data.get("flags") or []),
            seconds=dict(data.get("seconds") or {}),
            placed=dict(data.get("placed") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name).to_dict() for name in self.METRICS}
        data["shapes"] = [s.to_dict() for s in self.shapes]
        data["counter_wall_gap"] = self.counter_wall_gap
        data["workload"] = self.workload.to_dict()
        data["effective"] = self.config.to_dict()
        data["clamped"] = {key: list(pair) for key, pair in self.clamped.items()}
        data["telemetry"] = self.telemetry
        data["quality"] = self.quality.to_dict() if self.quality else None
        data["stopped"] = self.stopped
        data["flags"] = self.flags
        data["seconds"] = self.seconds
        data["placed"] = self.placed
        return data


@dataclass(frozen=True)
class RaceBound:
    """Racing's bound on the objective: two repetitions whose better one reads below ``below``
    stop a measurement."""

    below: float


def measure(
    engine: Engine,
    config: EngineConfig,
    workload: Workload,
    reference: Reference | None = None,
    *,
    race: RaceBound | None = None,
    use_cache: bool = True,
) -> Measurement:
    """Measure ``config`` on ``engine`` under ``workload``: a warm-up pass, each shape's cached
    depth and ``workload.repeats`` timed requests; then (with a ``reference`` and
    ``workload.quality``) the quality proxy.

    Args:
        race: racing: stop after the second repetition when both read below its bound.
        use_cache: let the quality proxy reuse cached logits (see :mod:`tuner.quality`).

    Raises:
        ConfigError: n_ctx below what the workload needs.
        EngineError: llama.cpp refused the configuration.
    """
    effective = config.effective()
    need = effective.context_needed(workload.tokens_needed, workload.concurrency)
    if 0 < effective.n_ctx < need:
        raise ConfigError(
            f"n_ctx={effective.n_ctx} is below the {need} tokens this workload needs" + (" (its users at once share one cache)" if need > workload.tokens_needed else ""),
            f"use n_ctx >= {need} or a shorter workload",
        )
    clock = _Clock()
    with engine.session(config) as session:
        effective = session.config  # what llama.cpp runs with, read back from the context
        if workload.concurrency > 1 and not hasattr(session, "generate_together"):
            raise ConfigError(f"{workload.concurrency} requests at once (--concurrency): llama_cpp.Llama serves one at a time", "measure requests at once with --engine llama-server")
        text = session.tokenize(WORKLOAD_TEXT)
        clock.lap("setup")
        for _ in range(workload.warmup):
            session.generate(prompt_tokens(text, warmup_prompt(workload, effective)), WARMUP_TOKENS, stop_at_eos=False)
        clock.lap("warmup")
        placed = session.placed
        with Telemetry(pid=getattr(session, "pid", None)) as telemetry:  # a server's RSS is its own
            runs, stopped = _repetitions(session, workload, text, race, clock)
    quality = None
    if reference is not None and workload.quality and not stopped:
        quality = evaluate(engine, config, reference, use_cache=use_cache)
        clock.lap("quality")
    return aggregate(
        runs,
        workload,
        config=effective,
        clamped=clamps(config, effective),
        telemetry=telemetry.summary(tokens=sum(g.n_eval for shape_runs in runs for g in shape_runs)),
        quality=quality,
        stopped=stopped,
        flags=_disagreements(runs, workload),
        seconds=clock.parts,
        placed=placed,
    )


class _Clock:
    """Wall time spent in each part of a measurement (TIME_PARTS), lap by lap. Kept exact: the
    parts are disjoint slices of the measurement's wall time, and rounding each lap let their sum
    exceed it (rounding is for the record, see tuner.study._objective)."""

    def __init__(self) -> None:
        self.parts = dict.fromkeys(TIME_PARTS, 0.0)
        self._last = time.perf_counter()

    def lap(self, part: str) -> None:
        now = time.perf_counter()
        self.parts[part] += now - self._last
        self._last = now


def _repetitions(
    session: Any, workload: Workload, text: list[int], race: RaceBound | None, clock: _Clock
) -> tuple[list[list[Generation]], str]:
    """Every shape's repetitions: the first of each shape, the second (last shape first), each
    followed by its racing check, then the rest."""
    requests = []
    for shape in workload.shapes:
        tokens = [user_tokens(text, user, shape.depth + shape.prompt) for user in range(workload.concurrency)]
        requests.append([(t[: shape.depth], t[shape.depth :]) for t in tokens])
    runs: list[list[Generation]] = [[] for _ in workload.shapes]
    cached: list[int | None] = [None]  # the shape whose depth the KV cache holds

    def run(index: int) -> None:
        if workload.concurrency > 1:
            session.enter_depths([depth for depth, _ in requests[index]])  # where each user's previous turn left it
            clock.lap("prefill")
            runs[index].append(served(*session.generate_together(requests[index], workload.shapes[index].gen)))
            clock.lap("timed")
            return
        shape, ((depth, prompt),) = workload.shapes[index], requests[index]
        if cached[0] != index:
            session.enter_depth(depth)
            cached[0] = index
            clock.lap("prefill")
        runs[index].append(session.generate(prompt, shape.gen, past=shape.depth, stop_at_eos=False))
        clock.lap("timed")

    def objective(repetition: int) -> float:
        return requests_per_min([served_ms(r[repetition]) for r in runs], workload.weights)

    shapes = list(range(len(workload.shapes)))
    for index in shapes:
        run(index)
    done = 1
    if race is not None and workload.repeats >= 2:
        shapes.reverse()  # the last shape's depth is still in the cache
        for index in shapes:
            run(index)
        done = 2
        better = max(objective(0), objective(1))
        if better < race.below:
            return runs, f"{better:.1f} < {race.below:.1f} requests/min after 2 repetitions"
    shapes.reverse()
    for index in shapes:
        for _ in range(workload.repeats - done):
            run(index)
    return runs, ""


def offload_flag(asked: int, placed: dict[str, Any]) -> str:
    """'' when llama.cpp offloaded the layers asked for (or the build offloads none and says
    nothing); else what it did: fewer layers on the GPU than asked is a different configuration
    from the one the trial is labelled with (llama.cpp counts the output layer: n_layers + 1)."""
    if placed.get("offloaded_layers") is None:
        return ""
    most = placed["layers"]
    wanted = most if asked < 0 else min(asked, most)
    if placed["offloaded_layers"] == wanted:
        return ""
    return f"offloaded {placed['offloaded_layers']}/{most} layers, asked {asked}"


def _disagreements(runs: list[list[Generation]], workload: Workload) -> list[str]:
    """Repetitions whose llama.cpp counters and wall clock disagree by more than COUNTER_WALL_LIMIT
    (decode: counted decode + sampler time vs the wall clock; prompt: counted vs wall)."""
    flags = []
    for shape, gens in zip(workload.shapes, runs):
        for number, g in enumerate(gens, start=1):
            pairs = (("decode", g.eval_ms + g.sample_ms, g.wall_decode_ms), ("prompt", g.prompt_ms, g.wall_prompt_ms))
            for what, counted, wall in pairs[: 1 if g.served_ms else 2]:  # at once, a user's wait for a slot is in its wall prompt time
                if wall > 0 and abs(counted / wall - 1) > COUNTER_WALL_LIMIT:
                    flags.append(f"{shape.name or 'shape'} repetition {number}: llama.cpp counted {counted:.1f} ms of {what}, the wall clock {wall:.1f} ms")
    return flags


def aggregate(runs: list[list[Generation]], workload: Workload, **rest: Any) -> Measurement:
    """The figures from the raw runs: ``runs[i][r]`` is shape i's repetition r.

    Per repetition r, across shapes: the objective from the shapes' request times (TTFT + wall
    decode time) and weights; rates as total tokens over total time; TTFT weighted like the
    objective. Then each figure's median and spread over the repetitions.
    """
    weights = workload.weights
    repetitions = list(zip(*runs))  # repetition r: one Generation per shape

    def per_rep(figure: Any) -> Stat:
        return Stat.of([figure(list(rep)) for rep in repetitions])

    shapes = [
        ShapeFigures(
            shape=shape,
            prompt_tok_s=Stat.of([g.n_prompt / g.prompt_ms * 1000 for g in gens]),
            decode_tok_s=Stat.of([g.n_eval / (g.eval_ms + g.sample_ms) * 1000 for g in gens]),
            ttft_ms=Stat.of([g.ttft_ms for g in gens]),
            request_ms=Stat.of([request_ms(g) for g in gens]),
            context_tokens=gens[-1].context_tokens,
        )
        for shape, gens in zip(workload.shapes, runs)
    ]
    return Measurement(
        requests_per_min=per_rep(lambda rep: requests_per_min([served_ms(g) for g in rep], weights)),
        prompt_tok_s=per_rep(lambda rep: sum(g.n_prompt for g in rep) / sum(g.prompt_ms for g in rep) * 1000),
        decode_tok_s=per_rep(lambda rep: sum(g.n_eval for g in rep) / sum(g.eval_ms + g.sample_ms for g in rep) * 1000),
        eval_tok_s=per_rep(lambda rep: sum(g.n_eval for g in rep) / sum(g.eval_ms for g in rep) * 1000),
        wall_decode_tok_s=per_rep(lambda rep: sum(g.n_eval for g in rep) / sum(g.wall_decode_ms for g in rep) * 1000),
        ttft_ms=per_rep(lambda rep: sum(w * g.ttft_ms for w, g in zip(weights, rep))),
        sample_us_per_tok=per_rep(lambda rep: sum(g.sample_ms for g in rep) * 1000 / max(sum(g.n_sample for g in rep), 1)),
        shapes=shapes,
        workload=workload,
        **rest,
    )


def clamps(asked: EngineConfig, effective: EngineConfig) -> dict[str, tuple[Any, Any]]:
    """The sizes llama.cpp runs with that differ from the ones asked for: name -> (asked, ran).

    llama_cpp.Llama and llama.cpp clamp n_batch to n_ctx and n_ubatch to n_batch, and llama.cpp
    pads n_ctx to a multiple of 256; ``effective`` is read back from the context.
    """
    return {
        key: (getattr(asked, key), getattr(effective, key))
        for key in ("n_ctx", "n_batch", "n_ubatch")
        if getattr(asked, key) != getattr(effective, key)
    }


def request_ms(generation: Generation) -> float:
    """What the user waits for: time to first token + the rest of the generation (wall clock);
    with requests at once (:func:`served`), the slowest user's wait."""
    return generation.waited_ms or generation.ttft_ms + generation.wall_decode_ms


def served_ms(generation: Generation) -> float:
    """The objective's time per request: what the user waits for, one request at a time; with
    requests at once, the server's time per request (the round's wall time over its requests),
    so requests/min is what the server completes."""
    return generation.served_ms or request_ms(generation)


def served(generations: list[Generation], seconds: float) -> Generation:
    """One round of requests sent at once, as one repetition: the tokens and the time the server
    counted, summed over the users (rates are per user); the slowest user's time to first token
    and wait; ``served_ms`` the round's wall time over its requests."""
    first = generations[0]
    return Generation(
        tokens=first.tokens,
        text=first.text,
        n_prompt=sum(g.n_prompt for g in generations),
        prompt_ms=sum(g.prompt_ms for g in generations),
        n_eval=sum(g.n_eval for g in generations),
        eval_ms=sum(g.eval_ms for g in generations),
        sample_ms=sum(g.sample_ms for g in generations),
        n_sample=sum(g.n_sample for g in generations),
        ttft_ms=max(g.ttft_ms for g in generations),
        wall_prompt_ms=sum(g.wall_prompt_ms for g in generations),
        wall_decode_ms=sum(g.wall_decode_ms for g in generations),
        context_tokens=first.context_tokens,
        served_ms=seconds * 1000 / len(generations),
        waited_ms=max(request_ms(g) for g in generations),
    )


def user_tokens(text_tokens: list[int], user: int, length: int) -> list[int]:
    """User ``user``'s request tokens with requests at once: the BOS-led text from an offset of its
    own, so no two users share a prompt (user 0's is :func:`prompt_tokens`)."""
    body = text_tokens[1:] or text_tokens
    shift = (user * 37) % len(body)
    return prompt_tokens([text_tokens[0], *body[shift:], *body[:shift]], length)


def warmup_prompt(workload: Workload, config: EngineConfig) -> int:
    """Prompt tokens of the warm-up pass: the longest timed prompt, at most n_ubatch (the largest
    batch llama.cpp evaluates at once), within the context (room left for the decode steps)."""
    longest = max(shape.prompt for shape in workload.shapes)
    room = config.n_ctx - WARMUP_TOKENS - 1 if config.n_ctx > 0 else longest
    return max(1, min(longest, config.n_ubatch, room))


def prompt_tokens(text_tokens: list[int], length: int) -> list[int]:
    """Exactly ``length`` tokens: the BOS-led text, its body repeated as often as needed."""
    body = text_tokens[1:] or text_tokens
    tokens = list(text_tokens)
    while len(tokens) < length:
        tokens.extend(body)
    return tokens[:length]
