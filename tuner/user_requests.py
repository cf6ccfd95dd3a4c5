"""The user's own requests (a JSONL file) turned into a workload: their token counts, measured.

One request per line, either ``{"prompt": "...", "max_tokens": N}`` or OpenAI-style
``{"messages": [{"role": ..., "content": ...}, ...], "max_tokens": N}``, with the application's
``"stop"`` strings where it has them. Messages are rendered with the model's own chat template from
its GGUF metadata, as llama-cpp-python does, and every request is tokenized with the model's
vocabulary (loaded alone: no weights, no compute).

A request's shape: for ``messages``, ``depth`` is the conversation before the last message (what a
server with a prompt cache holds from the previous turn: the system prompt, earlier turns) and
``prompt`` the rest of the rendered conversation; a plain ``prompt`` has depth 0. ``gen`` is
``max_tokens``. A large file is measured through a deterministic sample of at most
:data:`MAX_SHAPES` shapes: the requests sorted by size, cut into that many groups of equal count,
each group represented by its median request and weighted by its size.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tuner.errors import ConfigError
from tuner.workload import Shape, Workload

__all__ = ["MAX_SHAPES", "Request", "Tokenizer", "as_text", "from_text", "read_requests", "request_tokens", "workload_from_requests"]

MAX_SHAPES = 4
ROLES = {"system", "user", "assistant", "tool", "developer"}


@dataclass(frozen=True)
class Request:
    """One line of the file: a prompt or a conversation, and how many tokens to generate."""

    line: int
    max_tokens: int
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] = ()
    stop: tuple[str, ...] = ()  # where the application ends the answer (OpenAI's "stop"), besides the model's own end


class Tokenizer(Protocol):
    """What deriving shapes needs from a model: :class:`tuner.engine.Vocab`."""

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]: ...

    def chat_prompt(self, messages: list[dict[str, str]], *, generation_prompt: bool) -> tuple[str, bool]: ...


def read_requests(path: str | Path) -> tuple[list[Request], str]:
    """Parse a JSONL requests file; returns the requests and the file's sha256.

    Raises:
        ConfigError: a line that is not a request, naming its line number.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read requests file {path}: {exc.strerror}", "check the path") from None
    requests = []
    for number, raw in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if raw.strip():
            requests.append(_request(raw, number, path))
    if not requests:
        raise ConfigError(f"{path} holds no request", 'write one JSON object per line, e.g. {"prompt": "...", "max_tokens": 64}')
    return requests, hashlib.sha256(data).hexdigest()


def _request(raw: str, number: int, path: Path) -> Request:
    where = f"{path.name} line {number}"
    example = 'e.g. {"prompt": "...", "max_tokens": 64} or {"messages": [{"role": "user", "content": "..."}], "max_tokens": 64}'
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not JSON ({exc.msg})", f"write one JSON object per line, {example}") from None
    if not isinstance(item, dict):
        raise ConfigError(f"{where} is not a JSON object", example)
    max_tokens = item.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ConfigError(f"{where}: max_tokens must be a positive integer (got {max_tokens!r})", "say how many tokens the answer may have")
    if ("prompt" in item) == ("messages" in item):
        raise ConfigError(f"{where} needs exactly one of 'prompt' and 'messages'", example)
    stop = item.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ConfigError(f"{where}: 'stop' must be a string or a list of non-empty strings (got {item['stop']!r})", 'e.g. "stop": ["\\n\\n"]')
    if "prompt" in item:
        if not isinstance(item["prompt"], str) or not item["prompt"]:
            raise ConfigError(f"{where}: 'prompt' must be a non-empty string", example)
        return Request(number, max_tokens, prompt=item["prompt"], stop=tuple(stop))
    messages = item["messages"]
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f"{where}: 'messages' must be a non-empty list", example)
    for message in messages:
        if not isinstance(message, dict) or message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            raise ConfigError(f"{where}: each message needs a role ({', '.join(sorted(ROLES))}) and a string content", example)
    return Request(number, max_tokens, messages=tuple({"role": m["role"], "content": m["content"]} for m in messages), stop=tuple(stop))


def request_tokens(request: Request, tokenizer: Tokenizer) -> list[int]:
    """The tokens the model is given for ``request``: its prompt as written, or its conversation
    rendered with the model's chat template and a generation prompt, as a server or
    ``create_chat_completion`` gives it."""
    return _rendered(request, tokenizer)[0]


def _rendered(request: Request, tokenizer: Tokenizer) -> tuple[list[int], bool]:
    """:func:`request_tokens`, and whether a BOS token leads them (the template decides)."""
    if request.prompt is not None:
        return tokenizer.tokenize(request.prompt), True
    text, add_bos = tokenizer.chat_prompt(list(request.messages), generation_prompt=True)
    return tokenizer.tokenize(text, add_bos=add_bos), add_bos


def shape_of(request: Request, tokenizer: Tokenizer) -> Shape:
    """The request's token counts: cached depth, new prompt tokens, tokens to generate.

    A conversation's depth is the longest run of leading tokens it shares with the conversation
    before its last message: what a prompt cache (llama-cpp-python's, llama-server's) reuses.
    """
    name = f"line {request.line}"
    full, add_bos = _rendered(request, tokenizer)
    if request.prompt is not None:
        return Shape(depth=0, prompt=max(len(full), 2), gen=request.max_tokens, name=name)
    messages = list(request.messages)
    depth = 0
    if len(messages) > 1:
        before = tokenizer.tokenize(tokenizer.chat_prompt(messages[:-1], generation_prompt=False)[0], add_bos=add_bos)
        while depth < min(len(before), len(full) - 2) and before[depth] == full[depth]:
            depth += 1
    return Shape(depth=depth, prompt=len(full) - depth, gen=request.max_tokens, name=name)


def workload_from_requests(path: str | Path, tokenizer: Tokenizer, *, max_shapes: int = MAX_SHAPES, **options: Any) -> Workload:
    """A workload measuring the file's requests (or a deterministic sample of them).

    ``options`` (repeats, warmup, quality) are passed to :class:`Workload`.
    """
    requests, digest = read_requests(path)
    shapes = sorted((shape_of(r, tokenizer) for r in requests), key=lambda s: (s.depth + s.prompt + s.gen, s.name))
    groups = _groups(shapes, max_shapes)
    chosen = tuple(
        Shape(depth=g[len(g) // 2].depth, prompt=g[len(g) // 2].prompt, gen=g[len(g) // 2].gen, weight=float(len(g)), name=g[len(g) // 2].name)
        for g in groups
    )
    by_line = {f"line {r.line}": r for r in requests}
    texts = tuple({**as_text(by_line[shape.name]), "weight": shape.weight} for shape in chosen)
    sampled = len(chosen) < len(shapes)
    source = {
        "kind": "jsonl",
        "path": str(path),
        "sha256": digest,
        "requests": len(shapes),
        "sampling": (
            f"{len(shapes)} requests sorted by size in {len(chosen)} equal groups, each measured through its median request "
            "and weighted by its size"
            if sampled
            else f"all {len(shapes)} requests, one shape each"
        ),
    }
    return Workload(shapes=chosen, name=Path(path).name, source=source, texts=texts, **options)


def as_text(request: Request) -> dict[str, Any]:
    """``request`` as a JSONL line holds it (what :attr:`tuner.workload.Workload.texts` keeps)."""
    text: dict[str, Any] = {"prompt": request.prompt} if request.prompt is not None else {"messages": [dict(m) for m in request.messages]}
    return {**text, "max_tokens": request.max_tokens, "stop": list(request.stop)}


def from_text(text: dict[str, Any], number: int = 1) -> Request:
    """The inverse of :func:`as_text` (the weight, if any, left aside)."""
    line = {key: value for key, value in text.items() if key != "weight"}
    return _request(json.dumps(line), number, Path("workload texts"))


def _groups(shapes: list[Shape], count: int) -> list[list[Shape]]:
    """``shapes`` cut into at most ``count`` consecutive groups whose sizes differ by at most one."""
    count = min(count, len(shapes))
    size, extra = divmod(len(shapes), count)
    groups, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        groups.append(shapes[start:end])
        start = end
    return groups
