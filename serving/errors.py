"""Typed errors of the serving package; each maps to one OpenAI-style HTTP error."""

from __future__ import annotations


class ServingError(Exception):
    """Base class of serving errors.

    Attributes:
        status: the HTTP status the OpenAI-compatible API answers with.
        code: OpenAI's ``error.code`` string.
        type: OpenAI's ``error.type`` string.
        param: the request field at fault, when there is one.
    """

    status = 500
    code = "internal_error"
    type = "server_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def __reduce__(self):
        return (self.__class__, (self.message, self.param))


class ModelNotFoundError(ServingError):
    """No model with this id is registered."""

    status = 404
    code = "model_not_found"
    type = "invalid_request_error"


class InvalidRequestError(ServingError):
    """A request field is missing, malformed or out of range."""

    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class PayloadTooLargeError(InvalidRequestError):
    """The request body is larger than the server accepts."""

    status = 413
    code = "payload_too_large"


class ContextLengthError(InvalidRequestError):
    """The prompt (plus requested tokens) does not fit the model's context."""

    code = "context_length_exceeded"


class OverloadedError(ServingError):
    """Too many requests in flight or queued: retry after the ``Retry-After`` header's seconds."""

    status = 503
    code = "server_overloaded"
    type = "server_error"


class ReplicaLostError(ServingError):
    """The model replica serving a request failed or was lost midway: retrying is safe."""

    status = 503
    code = "replica_unavailable"
    type = "server_error"


class AuthenticationError(ServingError):
    """Missing or wrong API key."""

    status = 401
    code = "invalid_api_key"
    type = "authentication_error"


class RateLimitError(ServingError):
    """A key's requests or tokens per minute are used up, or its queue is full.

    Answered ``429`` with a ``Retry-After`` header (the ``openai`` client raises its
    ``RateLimitError``).

    Attributes:
        retry_after: whole seconds until a retry can succeed.
    """

    status = 429
    code = "rate_limit_exceeded"
    type = "requests"

    def __init__(self, message: str, param: str | None = None, retry_after: int = 1) -> None:
        super().__init__(message, param)
        self.retry_after = retry_after

    def __reduce__(self):
        return (self.__class__, (self.message, self.param, self.retry_after))


class QueueFullError(RateLimitError):
    """A key has as many requests waiting for the model replicas as it may: retry later."""

    code = "queue_full"


class KeyFileError(ServingError):
    """A key file cannot be read or is invalid (the message names the file and the first problem)."""

    code = "key_file_invalid"


class WeightsError(ServingError):
    """A model's weights are missing, incomplete or corrupt (checksum mismatch) in storage."""

    status = 503
    code = "model_weights_unavailable"
    type = "server_error"


class UnsafeModelFileError(WeightsError):
    """A model's manifest (or a folder being published) names a file outside the model folder.

    Raised for ``..`` components, absolute paths, backslashes or drive letters, empty components,
    control characters, reserved names and names that normalise differently, before any byte is
    written.
    """

    code = "unsafe_model_file"


class DiskFullError(ServingError):
    """The node cache's disk is full: the model does not fit even after evicting other models."""

    status = 507
    code = "disk_full"
    type = "server_error"


class UnsafeCacheRootError(ServingError):
    """The node cache folder belongs to another user or is writable by others."""

    status = 500
    code = "unsafe_cache_root"
    type = "server_error"


class CacheBudgetError(ServingError):
    """A model does not fit the node cache's byte budget even after evicting everything else."""

    status = 507
    code = "cache_budget_exceeded"
    type = "server_error"


class EngineError(ServingError):
    """The inference engine failed to load a model or to generate."""

    status = 500
    code = "engine_error"
    type = "server_error"
