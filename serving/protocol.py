"""OpenAI-compatible wire types (the subset this server implements) and error bodies."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serving.engines.base import GenerationParams
from serving.errors import InvalidRequestError, ServingError


class _Request(BaseModel):
    # Strict types: "5" for an int is a 400, as with OpenAI. Unknown fields are ignored (clients
    # send options such as ``stream_options`` or ``user``).
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str = Field(min_length=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)

    def params(self, max_tokens: int) -> GenerationParams:
        """The engine's generation parameters for this request."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return GenerationParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop,
            seed=self.seed,
        )


class CompletionRequest(_Request):
    """``POST /v1/completions``."""

    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)

    def prompt_text(self) -> str:
        """The single prompt (a one-element list is accepted, as OpenAI does)."""
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise InvalidRequestError("only one prompt per request is supported", param="prompt")
        return self.prompt[0]


class ChatMessage(BaseModel):
    """One chat message."""

    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatCompletionRequest(_Request):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


def parse_request(model_cls: type[_Request], body: bytes) -> Any:
    """Parses a JSON body into ``model_cls``.

    Raises:
        InvalidRequestError: malformed JSON, or a field missing / of a wrong type (the message
            and ``param`` name the field).
    """
    import json

    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"malformed JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidRequestError(f"invalid field {field!r}: {first['msg']}", param=field) from None


def error_body(error: ServingError) -> dict[str, Any]:
    """OpenAI's error JSON: ``{"error": {"message", "type", "param", "code"}}``."""
    return {
        "error": {
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "code": error.code,
        }
    }
