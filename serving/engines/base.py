"""The ``Engine`` protocol every inference engine implements, and its wire types."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from serving.errors import WeightsError

FinishReason = Literal["stop", "length"]


class GenerationParams(BaseModel):
    """Sampling settings of one request (the OpenAI fields an engine honours)."""

    max_tokens: int = Field(default=16, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list, max_length=4)
    seed: int | None = None


class GenerationChunk(BaseModel):
    """A piece of streamed output.

    Attributes:
        text: new text since the previous chunk.
        tokens: new tokens since the previous chunk.
        finish_reason: set on the last chunk only.
    """

    text: str = ""
    tokens: int = 0
    finish_reason: FinishReason | None = None


@runtime_checkable
class Engine(Protocol):
    """An inference engine holding at most one model.

    Lifecycle: ``load`` (from a local folder) -> any number of concurrent ``generate`` calls ->
    ``unload``. Engines that can keep weights off the accelerator while idle implement
    ``sleep``/``wake`` and say so in ``supports_sleep``.
    """

    max_context: int

    @property
    def supports_sleep(self) -> bool:
        """Whether :meth:`sleep`/:meth:`wake` work (may change once the model is loaded)."""

    async def load(self, path: str) -> None:
        """Loads the model in ``path`` (safetensors + config + tokenizer)."""

    def count_tokens(self, prompt: str) -> int:
        """Number of prompt tokens ``prompt`` becomes."""

    def chat_prompt(self, messages: list[dict[str, Any]]) -> str:
        """Renders chat messages into a prompt with the model's chat template."""

    def generate(self, prompt: str, params: GenerationParams) -> AsyncIterator[GenerationChunk]:
        """Streams the completion of ``prompt``; the last chunk carries ``finish_reason``."""

    def unload(self) -> None:
        """Frees the model (idempotent)."""

    async def sleep(self) -> None:
        """Moves weights off the accelerator, keeping the engine (only if ``supports_sleep``)."""

    async def wake(self) -> None:
        """Undoes :meth:`sleep`."""


PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
"""Suffixes of pickle-based weight files, which the engines never load."""


def require_safetensors(path: str) -> None:
    """Checks that ``path`` is a model folder with safetensors weights.

    The engines load weights as safetensors only: pickle-based weights (``.bin``, ``.pt``,
    ``.pth``...) can run code when loaded, so a folder holding only those is refused.

    Raises:
        WeightsError: ``path`` is not a folder or holds no ``*.safetensors`` file.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise WeightsError(f"cannot load model from {path}: not a local folder")
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED_WEIGHTS)
        found = f" (found pickled weights {pickled}, which are never loaded)" if pickled else ""
        raise WeightsError(
            f"cannot load model from {path}: no safetensors weights{found}; the engines load "
            "safetensors only (convert the weights, e.g. save_pretrained(safe_serialization=True))"
        )


def find_stop(text: str, stops: list[str]) -> int:
    """Index of the earliest stop string in ``text``, or -1."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else -1


def fallback_chat_prompt(messages: list[dict[str, Any]]) -> str:
    """A plain ``role: content`` chat rendering for tokenizers without a chat template."""
    lines = [f"{m.get('role', 'user')}: {m.get('content', '')}" for m in messages]
    return "\n".join(lines) + "\nassistant:"


class TokenizerPrompts:
    """Prompt helpers shared by engines that hold a Hugging Face tokenizer in ``self._tokenizer``."""

    _tokenizer: Any

    def count_tokens(self, prompt: str) -> int:
        """Tokens of ``prompt`` under the model's tokenizer."""
        return len(self._tokenizer(prompt)["input_ids"])

    def chat_prompt(self, messages: list[dict[str, Any]]) -> str:
        """Renders chat messages with the tokenizer's chat template, or `fallback_chat_prompt`."""
        if getattr(self._tokenizer, "chat_template", None):
            return str(
                self._tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
            )
        return fallback_chat_prompt(messages)
