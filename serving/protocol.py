"""OpenAI-compatible wire types (the subset this server implements) and error bodies.

Every field is bounded as OpenAI documents it (``stop``: at most 4 strings, ``seed``: a signed
64-bit integer, ``temperature``: 0-2, ...): a value out of range is a ``400`` naming the field,
never an error deeper down. Options the server does not implement (``n`` > 1, ``best_of`` > 1,
log probabilities) are refused rather than ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from serving.engines.base import GenerationParams
from serving.errors import InvalidRequestError, ServingError

MAX_STOP = 4
"""Stop strings per request (OpenAI's limit)."""

MAX_TOKENS = 2**31 - 1
"""Largest ``max_tokens`` accepted on the wire (the model's context bounds it further)."""

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def _string_or_list(value: Any) -> Any:
    """``"x"`` -> ``["x"]`` (OpenAI accepts a string or a list of strings); lists pass through."""
    if isinstance(value, str):
        return [value]
    if value is None or isinstance(value, list):
        return value
    raise ValueError("must be a string or a list of strings")


StringOrList = Annotated[list[str], BeforeValidator(_string_or_list)]


class _Request(BaseModel):
    # Strict types: "5" for an int is a 400, as with OpenAI. Unknown fields are ignored (clients
    # send options such as ``stream_options`` or ``user``).
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str = Field(min_length=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stream: bool = False
    stop: StringOrList | None = Field(default=None, max_length=MAX_STOP)
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    n: int = Field(default=1, ge=1, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)

    def params(self, max_tokens: int) -> GenerationParams:
        """The engine's generation parameters for this request."""
        return GenerationParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=list(self.stop or []),
            seed=self.seed,
        )

    def prompt_bytes(self) -> int:
        """UTF-8 size of the prompt text (bounded before the replica tokenises it)."""
        raise NotImplementedError


class CompletionRequest(_Request):
    """``POST /v1/completions`` (``prompt``: a string or a one-element list of strings)."""

    prompt: StringOrList
    max_tokens: int | None = Field(default=16, ge=1, le=MAX_TOKENS)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    best_of: int | None = Field(default=None, ge=1, le=20)

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: int | None) -> int | None:
        if value:
            raise ValueError("log probabilities are not supported by this server")
        return value

    @field_validator("best_of")
    @classmethod
    def _one_best_of(cls, value: int | None) -> int | None:
        if value is not None and value > 1:
            raise ValueError("best_of > 1 is not supported by this server")
        return value

    def prompt_text(self) -> str:
        """The single prompt (a one-element list is accepted, as OpenAI does)."""
        if len(self.prompt) != 1:
            raise InvalidRequestError("only one prompt per request is supported", param="prompt")
        return self.prompt[0]

    def prompt_bytes(self) -> int:
        """UTF-8 size of the prompt(s)."""
        return sum(len(text.encode()) for text in self.prompt)


class ChatMessage(BaseModel):
    """One chat message."""

    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class ChatCompletionRequest(_Request):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @field_validator("logprobs", "top_logprobs")
    @classmethod
    def _no_logprobs(cls, value: Any) -> Any:
        if value:
            raise ValueError("log probabilities are not supported by this server")
        return value

    def prompt_bytes(self) -> int:
        """UTF-8 size of all messages' contents."""
        return sum(len(message.content.encode()) for message in self.messages)


def parse_request(model_cls: type[_Request], body: bytes) -> Any:
    """Parses a JSON body into ``model_cls``.

    Raises:
        InvalidRequestError: malformed JSON, or a field missing / of a wrong type / out of range
            (the message and ``param`` name the field).
    """
    import json

    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"malformed JSON body: {str(exc)[:100]}") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        reason = str(first["msg"]).removeprefix("Value error, ")[:200]
        raise InvalidRequestError(f"invalid field {field!r}: {reason}", param=field) from None


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
