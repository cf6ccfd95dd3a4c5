"""A small reader for GGUF header metadata (no model load, no llama.cpp needed).

Used to plan GPU offload before loading anything: layer count, context length, sizes.
Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (v2/v3: 64-bit counts).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tuner.errors import ModelError

__all__ = ["GgufInfo", "read_gguf_info"]

# value type id -> struct format (scalars); 8 = string, 9 = array
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class GgufInfo:
    """What offload planning needs from a GGUF file."""

    path: Path
    architecture: str
    n_layers: int
    context_length: int
    embedding_length: int
    n_head: int
    n_head_kv: int
    key_length: int
    value_length: int
    file_bytes: int
    metadata: dict[str, Any]
    n_vocab: int = 0  # tokens in the vocabulary (0: the file does not say)

    @property
    def bytes_per_layer(self) -> int:
        """Weights per repeating layer, approximated as the file size spread over the layers."""
        return self.file_bytes // max(self.n_layers, 1)

    def kv_bytes_per_token(self, bytes_per_element: float = 2.0) -> float:
        """KV-cache bytes per token of context (K and V, every layer) at the given element size."""
        return self.n_layers * self.n_head_kv * (self.key_length + self.value_length) * bytes_per_element


def read_gguf_info(path: str | Path) -> GgufInfo:
    """Read a GGUF file's header metadata (array values are skipped, not loaded)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            if handle.read(4) != b"GGUF":
                raise ModelError(f"{path} is not a GGUF file", "pass a .gguf model")
            version = _read(handle, "<I")
            if version < 2:
                raise ModelError(f"{path} is GGUF version {version}, too old", "convert it with a current llama.cpp")
            _read(handle, "<Q")  # tensor count
            n_kv = _read(handle, "<Q")
            metadata = {}
            for _ in range(n_kv):
                key = _read_string(handle)
                metadata[key] = _read_value(handle, _read(handle, "<I"))
    except (struct.error, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: GGUF header is truncated or corrupt ({exc})", "download the model again") from None
    arch = str(metadata.get("general.architecture", ""))

    def arch_int(name: str, default: int = 0) -> int:
        value = metadata.get(f"{arch}.{name}", default)
        return int(value) if isinstance(value, (int, float)) else default

    n_head = arch_int("attention.head_count", 1)
    head_dim = arch_int("embedding_length") // max(n_head, 1)
    return GgufInfo(
        path=path,
        architecture=arch,
        n_layers=arch_int("block_count"),
        context_length=arch_int("context_length"),
        embedding_length=arch_int("embedding_length"),
        n_head=n_head,
        n_head_kv=arch_int("attention.head_count_kv", n_head),
        key_length=arch_int("attention.key_length", head_dim),
        value_length=arch_int("attention.value_length", head_dim),
        file_bytes=path.stat().st_size,
        metadata=metadata,
        n_vocab=_array_length(metadata.get("tokenizer.ggml.tokens")) or arch_int("vocab_size"),
    )


def _array_length(value: Any) -> int:
    """The count of an array value as this reader keeps it ("<array of 262144>"), else 0."""
    text = str(value or "")
    return int(text[len("<array of ") : -1]) if text.startswith("<array of ") and text.endswith(">") else 0


def _read(handle: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    data = handle.read(size)
    if len(data) != size:
        raise struct.error("unexpected end of file")
    return struct.unpack(fmt, data)[0]


def _read_string(handle: BinaryIO) -> str:
    length = _read(handle, "<Q")
    data = handle.read(length)
    if len(data) != length:
        raise struct.error("unexpected end of file")
    return data.decode("utf-8")


def _read_value(handle: BinaryIO, kind: int) -> Any:
    if kind in _SCALARS:
        return _read(handle, _SCALARS[kind])
    if kind == _STRING:
        return _read_string(handle)
    if kind == _ARRAY:
        item_kind, count = _read(handle, "<I"), _read(handle, "<Q")
        if item_kind in _SCALARS:
            handle.seek(struct.calcsize(_SCALARS[item_kind]) * count, 1)
        else:
            for _ in range(count):
                _read_value(handle, item_kind)
        return f"<array of {count}>"
    raise struct.error(f"unknown GGUF value type {kind}")
