"""A model's vocabulary alone (llama.cpp's vocab-only load: no weights, no compute): tokens and
chat prompts rendered as llama-cpp-python renders them. Turns a user's requests into token counts.
"""

from __future__ import annotations

from pathlib import Path

from tuner.errors import ModelError
from tuner.llama_log import quiet_llama_logs

__all__ = ["Vocab"]


class Vocab:
    """A model's vocabulary alone (llama.cpp's vocab-only load: no weights, no compute): token
    counts, and chat prompts rendered with the model's own template, as llama-cpp-python does."""

    def __init__(self, model_path: str | Path) -> None:
        import llama_cpp
        from llama_cpp import _internals

        quiet_llama_logs(False)
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        try:
            self._model = _internals.LlamaModel(path_model=str(model_path), params=params, verbose=False)
        except ValueError as exc:
            raise ModelError(f"llama.cpp could not read the vocabulary of {model_path} ({exc})", "check that the file is a complete GGUF model") from exc
        self._metadata = self._model.metadata()

    def tokenize(self, text: str, *, add_bos: bool = True) -> list[int]:
        """``text`` tokenized as llama-cpp-python does (special tokens parsed)."""
        return list(self._model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def chat_prompt(self, messages: list[dict[str, str]], *, generation_prompt: bool) -> tuple[str, bool]:
        """``messages`` rendered as ``Llama.create_chat_completion`` renders them, and whether a
        BOS token is added when the text is tokenized.

        Llama's choice, mirrored: a built-in format when the GGUF's template is one it recognizes,
        else the GGUF's ``tokenizer.chat_template`` (Jinja), else its fallback format, llama-2.
        """
        from llama_cpp import llama_chat_format as formats

        builtin = {
            "chatml": formats.format_chatml,
            "mistral-instruct": formats.format_mistral_instruct,
            "llama-3": formats.format_llama3,
            "llama-2": formats.format_llama2,
        }
        template = self._metadata.get("tokenizer.chat_template")
        name = formats.guess_chat_format_from_gguf_metadata(self._metadata) or ("" if template else "llama-2")
        if name:
            result = builtin[name](messages=messages)
        else:
            eos, bos = self._model.token_eos(), self._model.token_bos()
            result = formats.Jinja2ChatFormatter(
                template=template,
                eos_token=self._model.token_get_text(eos) if eos != -1 else "",
                bos_token=self._model.token_get_text(bos) if bos != -1 else "",
                add_generation_prompt=generation_prompt,
                stop_token_ids=[eos],
            )(messages=messages)
        return result.prompt, not result.added_special

    def close(self) -> None:
        self._model.close()

    def __enter__(self) -> Vocab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
