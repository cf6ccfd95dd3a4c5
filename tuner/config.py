"""Typed, validated llama.cpp settings: :class:`EngineConfig` and the key lists that split them.

Settings are split the way llama.cpp splits them:

* load-time params need a model reload (:data:`LOAD_KEYS`),
* context params need only a new context (:data:`CONTEXT_KEYS`),
* sampling params need neither (:data:`SAMPLING_KEYS`),
* server settings exist only in llama-server (:data:`SERVER_KEYS`: its parallel slots), not in
  ``llama_cpp.Llama``, which serves one request at a time.

llama-cpp-python's ``Llama(**kwargs)`` silently ignores unknown keywords and its ctypes structs
accept misspelled attribute names, so :class:`EngineConfig` rejects every unknown key loudly.
This module never imports llama_cpp: presets, spaces and the CLI validate settings without it.
"""

from __future__ import annotations

import difflib
import multiprocessing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from tuner.errors import ConfigError

__all__ = [
    "AUTO_SLOTS",
    "AUTO_SLOT_COUNT",
    "CONTEXT_KEYS",
    "DRAFT_KEYS",
    "KV_TYPES",
    "KV_TYPE_NAMES",
    "LOAD_KEYS",
    "SAMPLING_KEYS",
    "SERVER_KEYS",
    "SPEC_TYPES",
    "EngineConfig",
]

LOAD_KEYS = ("n_gpu_layers", "use_mmap", "use_mlock", "main_gpu", "split_mode")
CONTEXT_KEYS = (
    "n_ctx",
    "n_batch",
    "n_ubatch",
    "n_threads",
    "n_threads_batch",
    "flash_attn",
    "offload_kqv",
    "type_k",
    "type_v",
    "op_offload",
    "swa_full",
)
SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "seed")
SERVER_KEYS = ("n_parallel", "kv_unified", "spec_type")
# n_parallel's "auto", llama-server's default (-np -1): AUTO_SLOT_COUNT slots sharing one KV cache
# of n_ctx cells (unified), so one request may use all n_ctx, but requests at once share them.
AUTO_SLOTS = -1
AUTO_SLOT_COUNT = 4  # what auto resolves to (llama.cpp tools/server/server.cpp)
# llama-server's n-gram speculation (--spec-type): drafts from n-grams its context already holds.
SPEC_TYPES = ("none", "ngram-simple", "ngram-mod", "ngram-map-k", "ngram-map-k4v", "ngram-cache")
# llama-cpp-python's speculation: Llama(draft_model=LlamaPromptLookupDecoding(num_pred_tokens=
# draft_tokens, max_ngram_size=draft_ngram)); draft_tokens 0 is none. Decided on the user's text
# (tuner.study.speculation), not by the shapes every trial times.
DRAFT_KEYS = ("draft_tokens", "draft_ngram")

# ggml type ids of the KV-cache types people use (llama_cpp.GGML_TYPE_*).
KV_TYPES = {"f16": 1, "q8_0": 8, "q4_0": 2}
KV_TYPE_NAMES = {value: name for name, value in KV_TYPES.items()}



@dataclass(frozen=True)
class EngineConfig:
    """Every setting the tuner varies, with llama-cpp-python's own defaults.

    ``None`` for n_threads / n_threads_batch / type_k / type_v means "llama-cpp-python decides";
    :meth:`effective` resolves those to the values that actually run.
    """

    # load-time (model) params
    n_gpu_layers: int = 0
    use_mmap: bool = True
    use_mlock: bool = False
    main_gpu: int = 0
    split_mode: int = 1  # LLAMA_SPLIT_MODE_LAYER
    # context params
    n_ctx: int = 512
    n_batch: int = 512
    n_ubatch: int = 512
    n_threads: int | None = None
    n_threads_batch: int | None = None
    flash_attn: bool = False
    offload_kqv: bool = True
    type_k: int | None = None
    type_v: int | None = None
    # llama.cpp's context defaults, which Llama leaves as they are: host tensor operations run
    # on the GPU when layers stay on the CPU (op_offload), and sliding-window layers keep a
    # full-size cache (swa_full: more memory, prefixes reusable; False: a window-sized cache)
    op_offload: bool = True
    swa_full: bool = True
    # sampling params (create_completion's defaults)
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    seed: int | None = None
    # llama-server's parallel slots (-np): requests decoded together in one batch. n_ctx is what
    # each request may use (server_ctx: the server's -c). AUTO_SLOTS is llama-server's own default,
    # its "defaults" baseline.
    n_parallel: int = 1
    # llama-server's --kv-unified with n_parallel >= 2 slots: they share one cache of n_ctx cells,
    # as auto slots always do (shares_cache), instead of n_ctx each.
    kv_unified: bool = False
    spec_type: str = "none"  # llama-server's --spec-type (SPEC_TYPES), decided like the draft below
    # prompt-lookup speculation (DRAFT_KEYS): draft tokens per step (0: none), longest n-gram looked up
    draft_tokens: int = 0
    draft_ngram: int = 2

    def __post_init__(self) -> None:
        for spec in fields(self):
            object.__setattr__(self, spec.name, _coerce(spec.name, spec.type, getattr(self, spec.name)))
        self._check_ranges()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, where: str = "settings") -> EngineConfig:
        """Build a config from a mapping; unknown keys are errors, with a suggestion."""
        known = {spec.name for spec in fields(cls)}
        for key in values:
            if key not in known:
                guess = difflib.get_close_matches(str(key), sorted(known), n=1)
                fix = f"did you mean '{guess[0]}'?" if guess else f"known keys: {', '.join(sorted(known))}"
                raise ConfigError(f"unknown key '{key}' in {where}", fix)
        values = dict(values)
        for key in ("type_k", "type_v"):
            if isinstance(values.get(key), str):
                values[key] = _kv_type_id(values[key], key)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_params(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in LOAD_KEYS}

    def context_params(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in CONTEXT_KEYS}

    def sampling_params(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in SAMPLING_KEYS}

    def effective(self) -> EngineConfig:
        """The values handed to llama.cpp, resolved and clamped exactly as ``llama_cpp.Llama`` does.

        Llama clamps n_batch to n_ctx and n_ubatch to n_batch silently, defaults n_threads to
        half of ``multiprocessing.cpu_count()`` and n_threads_batch to all of it. What llama.cpp
        then runs with is read back from the context (:func:`tuner.llama_params.read_back`).
        """
        cpus = multiprocessing.cpu_count()
        n_batch = min(self.n_batch, self.n_ctx) if self.n_ctx > 0 else self.n_batch
        return replace(
            self,
            n_batch=n_batch,
            n_ubatch=min(self.n_ubatch, n_batch),
            n_threads=self.n_threads or max(cpus // 2, 1),
            n_threads_batch=self.n_threads_batch or cpus,
            type_k=self.type_k if self.type_k is not None else KV_TYPES["f16"],
            type_v=self.type_v if self.type_v is not None else KV_TYPES["f16"],
            kv_unified=self.kv_unified and self.n_parallel >= 2,  # the flag: one slot shares nothing, auto shares without it
        )

    @property
    def slot_count(self) -> int:
        """llama-server's slots: n_parallel, auto resolved."""
        return AUTO_SLOT_COUNT if self.n_parallel == AUTO_SLOTS else self.n_parallel

    @property
    def shares_cache(self) -> bool:
        """True when the slots share one cache of n_ctx cells (auto, or --kv-unified)."""
        return self.n_parallel == AUTO_SLOTS or (self.kv_unified and self.n_parallel >= 2)

    @property
    def server_ctx(self) -> int:
        """llama-server's -c: n_ctx for slots sharing one cache, else n_ctx for each slot."""
        return self.n_ctx if self.shares_cache else self.n_ctx * self.n_parallel

    def context_needed(self, tokens: int, users: int = 1) -> int:
        """The n_ctx that ``users`` requests of ``tokens`` at once need: ``tokens`` each in slots
        of their own; in one shared cache, all of them that run together."""
        return tokens * min(users, self.slot_count) if self.shares_cache else tokens

    @property
    def kv_type(self) -> str:
        """Name of the KV-cache type pair, e.g. 'f16' or 'q8_0/q4_0' when asymmetric."""
        k = KV_TYPE_NAMES.get(self.type_k or 1, str(self.type_k))
        v = KV_TYPE_NAMES.get(self.type_v or 1, str(self.type_v))
        return k if k == v else f"{k}/{v}"

    def _check_ranges(self) -> None:
        def need(ok: bool, what: str, fix: str) -> None:
            if not ok:
                raise ConfigError(what, fix)

        need(self.n_gpu_layers >= -1, f"n_gpu_layers={self.n_gpu_layers} is negative", "use -1 (all layers) or >= 0")
        need(self.n_ctx >= 0, f"n_ctx={self.n_ctx} is negative", "use 0 (the model's training context) or a positive size")
        for key in ("n_batch", "n_ubatch"):
            need(getattr(self, key) >= 1, f"{key}={getattr(self, key)} must be at least 1", f"set {key} to 1 or more")
        for key in ("n_threads", "n_threads_batch"):
            value = getattr(self, key)
            need(value is None or value >= 1, f"{key}={value} must be at least 1", f"set {key} to 1 or more, or leave it out")
        for key in ("type_k", "type_v"):
            value = getattr(self, key)
            need(
                value is None or value in KV_TYPE_NAMES,
                f"{key}={value} is not a supported KV-cache type",
                f"use one of {', '.join(KV_TYPES)} (ggml ids {sorted(KV_TYPE_NAMES)})",
            )
        quantized_v = self.type_v is not None and self.type_v != KV_TYPES["f16"]
        need(
            not quantized_v or self.flash_attn,
            f"a quantized V cache (type_v={KV_TYPE_NAMES.get(self.type_v or 1)}) needs flash_attn: true",
            "set flash_attn: true or use type_v f16 (llama.cpp cannot create this context)",
        )
        need(self.temperature >= 0, f"temperature={self.temperature} is negative", "use 0 (greedy) or more")
        need(self.top_k >= 0, f"top_k={self.top_k} is negative", "use 0 (off) or more")
        need(0 <= self.top_p <= 1, f"top_p={self.top_p} is outside [0, 1]", "use a value between 0 and 1")
        need(0 <= self.min_p <= 1, f"min_p={self.min_p} is outside [0, 1]", "use a value between 0 and 1")
        need(
            self.n_parallel >= 1 or self.n_parallel == AUTO_SLOTS,
            f"n_parallel={self.n_parallel} must be -1 (auto) or at least 1",
            "use 1 slot (one request at a time), more, or -1 (llama-server's auto: 4 slots sharing the context)",
        )
        need(self.spec_type in SPEC_TYPES, f"spec_type={self.spec_type!r} is not a llama-server speculation type", f"use one of {', '.join(SPEC_TYPES)}")
        need(self.draft_tokens >= 0, f"draft_tokens={self.draft_tokens} is negative", "use 0 (no speculation) or the tokens drafted per step, e.g. 10")
        need(self.draft_ngram >= 1, f"draft_ngram={self.draft_ngram} must be at least 1", "use the longest n-gram looked up, e.g. 2")
        need(self.repeat_penalty > 0, f"repeat_penalty={self.repeat_penalty} must be positive", "use 1.0 for no penalty")


def _kv_type_id(name: str, key: str) -> int:
    try:
        return KV_TYPES[name.lower()]
    except KeyError:
        raise ConfigError(f"{key}='{name}' is not a supported KV-cache type", f"use one of {', '.join(KV_TYPES)}") from None


def _coerce(name: str, annotation: str, value: Any) -> Any:
    """Check one value against its field's annotation (a string, under `from __future__`)."""
    if value is None and "None" in annotation:
        return None
    expected = annotation.split("|")[0].strip()
    if expected == "bool":
        if isinstance(value, bool):
            return value
    elif expected == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif expected == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif expected == "str":
        if isinstance(value, str):
            return value
    raise ConfigError(
        f"{name}={value!r} has the wrong type (expected {annotation.replace(' | None', ' or null')})",
        f"write {name} as {'true/false' if expected == 'bool' else 'text' if expected == 'str' else 'a number'}",
    )

