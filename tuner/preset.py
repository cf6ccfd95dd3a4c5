"""Preset YAML: the tuned configuration, in a form the engine itself loads.

::

    model: /path/to/model.gguf
    engine:   {...}   # keywords for llama_cpp.Llama(model_path=model, **engine)
    sampling: {...}   # keywords for Llama.create_completion(prompt, **sampling)
    server:   {...}   # llama-server only, where it differs from one slot: n_parallel (-np; -1: auto), kv_unified, spec_type
    draft:    {...}   # when speculation paid on the user's text: keywords for LlamaPromptLookupDecoding
                      # (and the engine section then has logits_all: true); see llama_from_preset
    measured: {...}   # medians, spread and ratios behind the choice
    provenance: {...} # study, trial, machine, llama_cpp version, date

Unknown keys and wrong types are errors: llama-cpp-python would silently ignore them.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tuner.config import CONTEXT_KEYS, KV_TYPE_NAMES, LOAD_KEYS, SAMPLING_KEYS, SERVER_KEYS, EngineConfig
from tuner.engine import Engine
from tuner.errors import ConfigError, PresetError

__all__ = ["Preset", "engine_from_preset", "llama_from_preset"]

SECTIONS = ("model", "engine", "sampling", "server", "draft", "measured", "provenance")
# The draft section's keys (LlamaPromptLookupDecoding's) and the EngineConfig fields they set.
DRAFT_FIELDS = {"num_pred_tokens": "draft_tokens", "max_ngram_size": "draft_ngram"}
# What Llama(draft_model=...) needs in the engine section too: llama-cpp-python 0.3.36 sizes its
# scores array by this argument, and without it a draft fails past n_batch positions (tuner.replay).
DRAFT_ENGINE = {"logits_all": True}
# An engine section's KV-type line, e.g. "  type_k: 8" (the engine section is indented by two).
_KV_LINE = re.compile(r"^  (type_k|type_v): (" + "|".join(str(i) for i in KV_TYPE_NAMES) + r")$", re.MULTILINE)


class _PlainDumper(yaml.SafeDumper):
    """A safe dumper that repeats a shared value instead of writing `&id001` / `*id001`: a preset
    is read by people, and the measured section shares the workload's shape dicts."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


@dataclass
class Preset:
    """A preset file's content."""

    model: str
    engine: dict[str, Any]
    sampling: dict[str, Any]
    server: dict[str, Any] = field(default_factory=dict)  # written only when not llama-server's one slot
    draft: dict[str, Any] = field(default_factory=dict)  # written only when speculation earned its keep
    measured: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, model: str | Path, config: EngineConfig, **extra: dict[str, Any]) -> Preset:
        """A preset for the effective values of ``config`` (nothing left for the library to guess)."""
        effective = config.effective()
        engine = {key: getattr(effective, key) for key in LOAD_KEYS + CONTEXT_KEYS}
        sampling = {key: getattr(effective, key) for key in SAMPLING_KEYS if getattr(effective, key) is not None}
        own = EngineConfig()  # the server section holds what differs from one slot without speculation
        server = {key: getattr(effective, key) for key in SERVER_KEYS if getattr(effective, key) != getattr(own, key)}
        draft = {key: getattr(effective, name) for key, name in DRAFT_FIELDS.items()} if effective.draft_tokens else {}
        if draft:
            engine.update(DRAFT_ENGINE)
        return cls(model=str(model), engine=engine, sampling=sampling, server=server, draft=draft, **extra)

    def llama(self, *, draft_model: Any = None, **overrides: Any) -> Any:
        """A plain ``llama_cpp.Llama`` as the preset's users build it: ``Llama(model_path=model,
        **engine)`` and, when the preset has a draft, ``draft_model=LlamaPromptLookupDecoding(**draft)``
        (or the ``draft_model`` given: one that counts its proposals, see tuner.replay)."""
        import llama_cpp
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        if draft_model is None and self.draft:
            draft_model = LlamaPromptLookupDecoding(**self.draft)
        return llama_cpp.Llama(model_path=self.model, draft_model=draft_model, **{**self.engine, "verbose": False, **overrides})

    def config(self) -> EngineConfig:
        """The engine config this preset describes."""
        engine = {key: value for key, value in self.engine.items() if key not in DRAFT_ENGINE}
        draft = {DRAFT_FIELDS[key]: value for key, value in self.draft.items()}
        try:
            return EngineConfig.from_dict({**engine, **self.sampling, **self.server, **draft}, where="preset")
        except ConfigError as exc:
            raise PresetError(f"preset: {exc.what}", exc.fix) from None

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.dumps(), encoding="utf-8")
        except OSError as exc:
            raise PresetError(f"cannot write preset {path}: {exc.strerror}", "choose a writable --out path") from exc
        return path

    def dumps(self) -> str:
        """The preset as YAML, every value written out where it belongs (no anchors and aliases).

        KV-cache types stay ggml ids (what ``llama_cpp.Llama(type_k=...)`` takes), each named in
        a comment: ``type_k: 8  # q8_0``.
        """
        data = {name: getattr(self, name) for name in SECTIONS if name not in ("server", "draft") or getattr(self, name)}
        text = yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True)  # "±", not "\\xB1"
        return _KV_LINE.sub(lambda m: f"{m.group(0)}  # {KV_TYPE_NAMES[int(m.group(2))]}", text)

    @classmethod
    def load(cls, path: str | Path) -> Preset:
        """Read and validate a preset file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PresetError(f"preset file {path} does not exist", "export one with `tune export NAME --out FILE`") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise PresetError(f"cannot read preset {path}: {exc}", "check the path") from exc
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise PresetError(f"preset {path}: YAML syntax error{where}", "fix the YAML syntax") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "preset") -> Preset:
        if not isinstance(data, dict):
            raise PresetError(f"{source}: a preset must be a mapping with model/engine/sampling", "export one with `tune export`")
        for key in data:
            if key not in SECTIONS:
                raise PresetError(f"{source}: unknown top-level key '{key}'", f"allowed: {', '.join(SECTIONS)}")
        if not isinstance(data.get("model"), str) or not data["model"]:
            raise PresetError(f"{source}: 'model' must be the path of a .gguf file", "add model: /path/to/model.gguf")
        sections = {}
        kinds = (("engine", LOAD_KEYS + CONTEXT_KEYS + tuple(DRAFT_ENGINE)), ("sampling", SAMPLING_KEYS), ("server", SERVER_KEYS), ("draft", tuple(DRAFT_FIELDS)))
        for name, allowed in kinds:
            section = data.get(name) or {}
            if not isinstance(section, dict):
                raise PresetError(f"{source}: '{name}' must be a mapping", "see `tune export` output")
            for key in section:
                if key not in allowed:
                    guess = difflib.get_close_matches(str(key), allowed, n=1)
                    fix = f"did you mean '{guess[0]}'?" if guess else f"allowed {name} keys: {', '.join(allowed)}"
                    raise PresetError(f"{source}: unknown {name} key '{key}'", fix)
            sections[name] = dict(section)
        preset = cls(
            model=data["model"],
            engine=sections["engine"],
            sampling=sections["sampling"],
            server=sections["server"],
            draft=sections["draft"],
            measured=dict(data.get("measured") or {}),
            provenance=dict(data.get("provenance") or {}),
        )
        if bool(preset.draft) != (preset.engine.get("logits_all") is True):
            raise PresetError(
                f"{source}: a draft section and engine logits_all: true go together",
                "Llama(draft_model=...) needs logits_all=True (without it a draft fails past n_batch positions); without a draft it only costs",
            )
        try:
            preset.config()
        except PresetError as exc:
            raise PresetError(f"{source}: {exc.what.removeprefix('preset: ')}", exc.fix) from None
        return preset


def engine_from_preset(path: str | Path, *, verbose: bool = False) -> Engine:
    """An engine configured by an exported preset YAML file.

    Example:
        >>> engine = engine_from_preset("best.yaml")
        >>> print(engine.generate("The capital of France is", max_tokens=8))
    """
    preset = Preset.load(path)
    return Engine(preset.model, preset.config(), verbose=verbose)


def llama_from_preset(path: str | Path, **overrides: Any) -> Any:
    """A plain ``llama_cpp.Llama`` for an exported preset, as its users build it: the engine
    section's keywords and, when the preset has a draft, its prompt-lookup draft model.

    Example:
        >>> llm = llama_from_preset("best.yaml")
        >>> llm.create_completion("def add(a, b):", max_tokens=32, **Preset.load("best.yaml").sampling)
    """
    return Preset.load(path).llama(**overrides)
