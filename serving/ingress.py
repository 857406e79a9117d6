"""The OpenAI-compatible HTTP ingress: authentication, bounds, validation, routing to the model replicas.

No ``from __future__ import annotations`` here on purpose: ``@serve.ingress`` rewrites the route
methods' signatures and FastAPI then cannot resolve string annotations (``request: Request``
became a required query parameter, answered with 422).
"""

import asyncio
import json
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.auth import ANONYMOUS_KEY_ID, SHARED_KEY_ID, Caller, KeyRing
from serving.config import ServingConfig
from serving.deployment import ReplicaStats, as_serving_error
from serving.errors import (
    EngineError,
    InvalidRequestError,
    OverloadedError,
    PayloadTooLargeError,
    QueueFullError,
    RateLimitError,
    ReplicaLostError,
    ServingError,
    WeightsError,
)
from serving.fairness import FairGate, Ticket
from serving.metrics import get_metrics, model_label
from serving.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    error_body,
    parse_request,
)
from serving.quota import RateLimiter, Refusal, Settlement
from serving.spec import ModelRegistry, ModelSpec
from serving.usage import USAGE_REPORT_S, UsageLedger, usage_keeper

logger = logging.getLogger(__name__)

KEEPER_TIMEOUT_S = 2.0
"""Longest wait for the app's keeper actor to admit a request (``shared_limits``); then the
replica's own buckets decide, so that a lost keeper never stops the service."""


def _find(exc: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``types`` in ``exc``'s chain (Ray's ``cause``, then ``__cause__``)."""
    current: BaseException | None = exc
    for _ in range(8):
        if current is None:
            return None
        if isinstance(current, types):
            return current
        cause = getattr(current, "cause", None)
        current = cause if isinstance(cause, BaseException) else current.__cause__
    return None


def _backpressure_types() -> tuple[type[BaseException], ...]:
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    return (BackPressureError, DeploymentUnavailableError)


def serving_error_of(exc: BaseException, request_id: str) -> ServingError:
    """The :class:`ServingError` a failure is answered with (unexpected ones are logged).

    Serve's backpressure (the replicas' queue is full) becomes :class:`OverloadedError`, a lost
    replica :class:`ReplicaLostError`, a stray validation error a ``400``, anything else a ``500``.
    """
    err = as_serving_error(exc)
    if err is not None:
        return err
    if _find(exc, _backpressure_types()) is not None:
        return OverloadedError("the model replicas are saturated; retry later")
    if _find(exc, (RayActorError,)) is not None:
        logger.warning("request %s: its model replica was lost", request_id, exc_info=exc)
        return ReplicaLostError("the model replica failed during the request; retry the request")
    if isinstance(exc, ValidationError):
        return InvalidRequestError(f"invalid request: {exc.errors()[0]['msg']}"[:200])
    logger.error("request %s failed", request_id, exc_info=exc)
    return ServingError("internal error")


def public_error(error: ServingError, request_id: str) -> ServingError:
    """What a client is told about ``error``.

    Client errors (4xx), overload and lost-replica answers are told as they are: their messages
    are the server's own. Any other 5xx gets a generic reason and the request id, never the internal
    message (bucket paths, URIs, storage errors); that goes to the log under the request id.
    """
    if error.status < 500 or isinstance(error, (OverloadedError, ReplicaLostError)):
        return error
    logger.error(
        "request %s: %s (%s): %s", request_id, error.code, type(error).__name__, error.message
    )
    if isinstance(error, WeightsError):
        reason = "the model's weights are unavailable in storage"
    elif error.status == 507:
        reason = "the model does not fit this server's model cache"
    elif isinstance(error, EngineError):
        reason = "the inference engine failed"
    else:
        reason = "internal server error"
    public = ServingError(f"{reason} (request id {request_id}; details in the server log)")
    public.status, public.code, public.type = error.status, error.code, error.type
    return public


async def _ending_cleanly(events: AsyncIterator[bytes], request_id: str) -> AsyncIterator[bytes]:
    """Ends a stream that fails midway (e.g. its replica died) with an OpenAI error event, not a cut."""
    try:
        async for event in events:
            yield event
    except Exception as exc:  # reported to the client in the stream itself
        err = as_serving_error(exc)
        if err is None:
            logger.warning("request %s: the stream stopped midway", request_id, exc_info=exc)
            err = ReplicaLostError("the generation stopped midway; retry the request")
        yield _sse(error_body(public_error(err, request_id)))


def _sse(data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()


async def _collect(stream: Any) -> tuple[str, int, str | None]:
    parts: list[str] = []
    tokens, finish = 0, None
    async for item in stream:
        parts.append(item.get("text", ""))
        tokens += item.get("tokens", 0)
        finish = item.get("finish_reason") or finish
    return "".join(parts), tokens, finish


def _fingerprint(first: dict[str, Any]) -> dict[str, str]:
    """OpenAI's ``system_fingerprint``: the model version that answered (versioned models)."""
    version = first.get("model_version")
    return {"system_fingerprint": version} if version else {}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


api = FastAPI(
    title="academy-ray serving (OpenAI-compatible)",
    docs_url=None,  # served by the ingress itself, behind the API key
    redoc_url=None,
    openapi_url=None,
)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Unknown routes and methods get an OpenAI-shaped error body too."""
    error = InvalidRequestError(
        "no such route" if exc.status_code == 404 else f"HTTP {exc.status_code}"
    )
    error.status = exc.status_code
    error.code = "not_found" if exc.status_code == 404 else "invalid_request"
    headers = getattr(exc, "headers", None)
    return JSONResponse(error_body(error), status_code=exc.status_code, headers=headers)


def _request_id(incoming: str | None) -> str:
    """The request's id: Serve's ``x-request-id`` (the client's or the proxy's), else a new one."""
    if incoming and len(incoming) <= 128 and incoming.isprintable():
        return incoming
    return f"req-{uuid.uuid4().hex}"


class _Call:
    """One API request: its id and caller, the model it named, and what it used.

    Filled in as it goes (caller: authentication; model: its handler; ``reserved`` and ``ticket``:
    admission; tokens: the generation) for limits, fair queueing, usage and metrics.
    """

    __slots__ = (
        "caller",
        "completion_tokens",
        "finished",
        "model",
        "prompt_tokens",
        "request_id",
        "reserved",
        "shared",
        "started",
        "ticket",
    )

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.model: Any = None
        self.caller: Caller | None = None
        self.reserved: int | None = None  # tokens reserved at admission (None: not admitted)
        self.ticket: Ticket | None = None
        self.shared = False  # admitted by the app's keeper actor (shared_limits), not locally
        self.started = False  # the generation began (its prompt was counted)
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.finished = False


Handler = Callable[[_Call], Awaitable[Any]]


class _Slot:
    """A streaming request's place in the ingress's in-flight count, given back once."""

    __slots__ = ("_call", "_held", "_ingress")

    def __init__(self, ingress: Any, call: _Call) -> None:
        self._ingress = ingress
        self._call = call
        self._held = True

    def release(self) -> None:
        """Gives the place back and settles the request (only the first call counts)."""
        if self._held:
            self._held = False
            self._ingress._in_flight -= 1
            self._ingress._finish(self._call)


async def _releasing(events: AsyncIterable[Any], slot: _Slot) -> AsyncIterator[Any]:
    """Passes a stream on; its slot is given back when it ends, fails or is cancelled."""
    try:
        async for event in events:
            yield event
    finally:
        slot.release()


@serve.deployment
@serve.ingress(api)
class OpenAIIngress:
    """``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` over the model replicas."""

    def __init__(self, server: Any, specs: list[ModelSpec], config: ServingConfig) -> None:
        self._server = server
        self._registry = ModelRegistry(specs)
        users = config.users
        self._keys = KeyRing(
            shared_key=config.api_key,
            path=users.keys_file,
            defaults=users.default_limits,
            reload_interval_s=users.reload_interval_s,
        )
        self._limiter = RateLimiter()
        self._key_generation = self._keys.reloads
        self._shared_limits = users.shared_limits
        self._app_name = config.app_name
        self._keeper: Any = None
        self._keeper_warned = -float("inf")
        self._unreported = UsageLedger()  # usage not yet sent to the keeper
        self._reporter: asyncio.Task[None] | None = None
        self._unsettled: list[Settlement] = []  # shared_limits: ended requests' tokens to charge
        replicas = max(config.replicas, config.max_replicas or 0)  # policy routing may add some
        slots = users.engine_slots or replicas * config.max_ongoing_requests
        self._gate = FairGate(slots, users.max_queued_per_key)
        self._max_body = config.max_body_bytes
        self._max_prompt = config.max_prompt_bytes
        self._max_in_flight = config.ingress_max_requests
        self._retry_after = config.retry_after_seconds
        self._in_flight = 0
        self._created = int(time.time())

    # ------------------------------------------------------------------ helpers
    def _authorize(self, request: Request, call: _Call) -> None:
        """Names the caller by its API key (:class:`~serving.auth.KeyRing`), or raises a ``401``."""
        call.caller = self._keys.authenticate(request.headers.get("authorization"))
        if self._keys.reloads != self._key_generation:  # keys removed: their buckets go too
            self._key_generation = self._keys.reloads
            kept = {key.id for key in self._keys.entries()} | {SHARED_KEY_ID, ANONYMOUS_KEY_ID}
            self._limiter.forget(kept)

    def _usage_keeper(self) -> Any:
        """The app's usage keeper actor (looked up or made on first use)."""
        if self._keeper is None:
            self._keeper = usage_keeper(self._app_name)
        return self._keeper

    async def _admit(self, call: _Call, max_tokens: int) -> None:
        """Per-key limits, then the key's turn in the fair queue.

        Raises:
            RateLimitError: the key's requests or tokens per minute are used up.
            QueueFullError: the key's queue is full.
        """
        caller = call.caller
        assert caller is not None
        refusal: Refusal | None = None
        call.shared = False
        if self._shared_limits:
            try:
                settled, self._unsettled = self._unsettled, []
                admit = self._usage_keeper().admit.remote(
                    caller.key_id, caller.limits, max_tokens, settled
                )
                refusal = await asyncio.wait_for(admit, timeout=KEEPER_TIMEOUT_S)
                call.shared = True
            except Exception as exc:  # noqa: BLE001 - the keeper is down or slow: limit locally
                self._keeper = None  # looked up (or made) again by the next request
                now = time.monotonic()
                if now - self._keeper_warned > 60:
                    self._keeper_warned = now
                    logger.warning(
                        "the usage keeper did not answer (%s); limiting with this replica's buckets",
                        type(exc).__name__,
                    )
        if not call.shared:
            refusal = self._limiter.admit(caller.key_id, caller.limits, max_tokens)
        if refusal is not None:
            get_metrics().limited(caller.key_id, refusal.reason)
            raise RateLimitError(
                f"key {caller.key_id!r} is over its {refusal.reason} per minute; retry after "
                f"{refusal.retry_after} s",
                retry_after=refusal.retry_after,
            )
        call.reserved = max_tokens
        try:
            call.ticket = await self._gate.acquire(caller.key_id)
        except QueueFullError as exc:
            get_metrics().limited(caller.key_id, "queue")
            exc.retry_after = self._retry_after
            raise

    def _finish(self, call: _Call) -> None:
        """Ends a request once: gives its fair-queue slot back, settles its tokens, counts usage."""
        if call.finished:
            return
        call.finished = True
        if call.ticket is not None:
            call.ticket.release()
        caller = call.caller
        if caller is None or call.reserved is None:
            return
        used = call.prompt_tokens + call.completion_tokens
        if call.shared:
            if caller.limits.tokens_per_minute is not None:  # sent with the next keeper call
                self._unsettled.append(
                    Settlement(caller.key_id, caller.limits, call.reserved, used)
                )
                self._start_reporter()
        else:
            self._limiter.settle(caller.key_id, caller.limits, call.reserved, used)
        if call.started:
            model = model_label(call.model, self._registry)
            get_metrics().usage(caller.key_id, model, call.prompt_tokens, call.completion_tokens)
            self._unreported.add(caller.key_id, model, call.prompt_tokens, call.completion_tokens)
            self._start_reporter()

    def _start_reporter(self) -> None:
        if self._reporter is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a stream's finalizer outside the loop: the next request will
                return
            self._reporter = loop.create_task(self._report_usage())

    async def _report_usage(self) -> None:
        """Sends usage totals and settlements to the app's keeper every ``USAGE_REPORT_S`` (one
        call each time, whatever the traffic)."""
        while True:
            await asyncio.sleep(USAGE_REPORT_S)
            if self._unreported or self._unsettled:
                rows = [record.model_dump() for record in self._unreported.records()]
                settled, self._unsettled = self._unsettled, []
                self._unreported = UsageLedger()
                try:
                    self._usage_keeper().record_many.remote(rows, settled)
                except Exception:  # noqa: BLE001 - the CLI's view misses them; metrics have them
                    logger.warning("usage of %d keys and models not reported", len(rows))

    def _check_prompt(self, req: Any, field: str) -> None:
        """Refuses a prompt over ``max_prompt_bytes`` (413) before it reaches a replica."""
        size = req.prompt_bytes()
        if size > self._max_prompt:
            raise PayloadTooLargeError(
                f"the prompt has {size} bytes; this server accepts at most {self._max_prompt}",
                param=field,
            )

    async def _start(
        self, model: str, payload: dict[str, Any], call: _Call
    ) -> tuple[Any, dict[str, Any]]:
        """Starts a generation; returns the stream and its first item (errors surface here).

        The first item counts the prompt's tokens (``call.prompt_tokens``).
        """
        self._registry.get(model)
        stream = self._server.options(multiplexed_model_id=model, stream=True).generate.remote(
            payload
        )
        try:
            first = await stream.__anext__()
        except Exception as exc:
            err = as_serving_error(exc)
            if err is None:
                raise
            raise err from None
        call.started = True
        call.prompt_tokens = int(first.get("prompt_tokens", 0))
        return stream, first

    def _error(self, error: ServingError, request_id: str) -> JSONResponse:
        """An OpenAI error response (5xx: generic, see :func:`public_error`)."""
        headers = {}
        if isinstance(error, OverloadedError):
            headers["Retry-After"] = str(self._retry_after)
        elif isinstance(error, RateLimitError):
            headers["Retry-After"] = str(error.retry_after)
        public = public_error(error, request_id)
        return JSONResponse(error_body(public), status_code=public.status, headers=headers)

    async def _guard(self, request: Request, route: str, handler: Handler) -> Response:
        """Answers one API request: overload bound, API key, errors, request id and metrics.

        Args:
            request: the HTTP request.
            route: its route template (the ``route`` label of the metrics, never the raw path).
            handler: produces the answer; it records the model it was asked for in its
                :class:`_Call`.
        """
        incoming = request.headers.get("x-request-id")  # Serve's proxy sets one (and answers it)
        request_id = _request_id(incoming)
        call = _Call(request_id)
        if self._in_flight >= self._max_in_flight:
            message = f"more than {self._max_in_flight} requests in flight; retry later"
            response: Response = self._error(OverloadedError(message), request_id)
        else:
            self._in_flight += 1
            try:
                response = await self._answer(request, handler, call, request_id)
            except BaseException:
                self._in_flight -= 1
                self._finish(call)
                raise
            if isinstance(response, StreamingResponse):
                slot = _Slot(self, call)
                response.body_iterator = _releasing(response.body_iterator, slot)
                weakref.finalize(response, slot.release)  # a stream that never started
            else:
                self._in_flight -= 1
                self._finish(call)
        if incoming is None:
            response.headers["x-request-id"] = request_id
        model = model_label(call.model, self._registry)
        get_metrics().request(route, response.status_code, model)
        return response

    async def _answer(
        self, request: Request, handler: Handler, call: _Call, request_id: str
    ) -> Response:
        try:
            self._authorize(request, call)
            result = await handler(call)
        except Exception as exc:  # noqa: BLE001 - every failure is an OpenAI error answer
            return self._error(serving_error_of(exc, request_id), request_id)
        return result if isinstance(result, Response) else JSONResponse(result)

    async def _body(self, request: Request) -> bytes:
        """The request body, refused with 413 once it grows past the configured limit."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise PayloadTooLargeError(
                f"request body of {declared} bytes exceeds {self._max_body} bytes"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_body:
                raise PayloadTooLargeError(f"request body exceeds {self._max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # ------------------------------------------------------------------ routes
    @api.get("/health")
    async def health(self) -> Any:
        """Liveness probe; the only route that needs no API key."""
        return {"status": "ok"}

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi(self, request: Request) -> Any:
        """The OpenAPI schema (behind the API key when one is set)."""

        async def handler(call: _Call) -> Any:
            return api.openapi()

        return await self._guard(request, "/openapi.json", handler)

    @api.get("/docs", include_in_schema=False)
    async def docs(self, request: Request) -> Any:
        """Swagger UI (behind the API key when one is set)."""

        async def handler(call: _Call) -> Any:
            schema = request.scope.get("root_path", "") + "/openapi.json"
            return get_swagger_ui_html(openapi_url=schema, title=f"{api.title} - docs")

        return await self._guard(request, "/docs", handler)

    @api.get("/redoc", include_in_schema=False)
    async def redoc(self, request: Request) -> Any:
        """ReDoc (behind the API key when one is set)."""

        async def handler(call: _Call) -> Any:
            schema = request.scope.get("root_path", "") + "/openapi.json"
            return get_redoc_html(openapi_url=schema, title=f"{api.title} - ReDoc")

        return await self._guard(request, "/redoc", handler)

    @api.get("/v1/models")
    async def list_models(self, request: Request) -> Any:
        """OpenAI's model list."""

        async def handler(call: _Call) -> Any:
            return {"object": "list", "data": [self._model_card(s) for s in self._registry]}

        return await self._guard(request, "/v1/models", handler)

    @api.get("/v1/models/{model_id:path}")
    async def get_model(self, model_id: str, request: Request) -> Any:
        """One model card (404 if unknown)."""

        async def handler(call: _Call) -> Any:
            call.model = model_id
            return self._model_card(self._registry.get(model_id))

        return await self._guard(request, "/v1/models/{model_id}", handler)

    def _model_card(self, spec: ModelSpec) -> dict[str, Any]:
        return {
            "id": spec.id,
            "object": "model",
            "created": self._created,
            "owned_by": spec.owned_by,
            "engine": spec.engine,
            "max_context": spec.max_context,
        }

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Any:
        """OpenAI text completions (``stream`` supported)."""

        async def handler(call: _Call) -> Any:
            req: CompletionRequest = parse_request(CompletionRequest, await self._body(request))
            call.model = req.model
            self._check_prompt(req, "prompt")
            payload = {
                "prompt": req.prompt_text(),
                "params": req.params(req.max_tokens or 16).model_dump(),
                "max_tokens_given": req.max_tokens is not None,
            }
            await self._admit(call, req.max_tokens or 16)
            stream, first = await self._start(req.model, payload, call)
            ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

            def chunk(text: str, finish: str | None) -> dict[str, Any]:
                return {
                    "id": ident,
                    "object": "text_completion",
                    "created": created,
                    "model": req.model,
                    **_fingerprint(first),
                    "choices": [
                        {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
                    ],
                }

            if req.stream:

                async def events() -> AsyncIterator[bytes]:
                    async for item in stream:
                        call.completion_tokens += item.get("tokens", 0)
                        if item.get("text") or item.get("finish_reason"):
                            yield _sse(chunk(item.get("text", ""), item.get("finish_reason")))
                    yield _sse("[DONE]")

                return StreamingResponse(
                    _ending_cleanly(events(), call.request_id), media_type="text/event-stream"
                )
            text, tokens, finish = await _collect(stream)
            call.completion_tokens = tokens
            body = chunk(text, finish)
            body["usage"] = _usage(first["prompt_tokens"], tokens)
            return body

        return await self._guard(request, "/v1/completions", handler)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Any:
        """OpenAI chat completions (``stream`` supported)."""

        async def handler(call: _Call) -> Any:
            req: ChatCompletionRequest = parse_request(
                ChatCompletionRequest, await self._body(request)
            )
            call.model = req.model
            self._check_prompt(req, "messages")
            limit = req.max_completion_tokens or req.max_tokens
            payload = {
                "messages": [m.model_dump() for m in req.messages],
                "params": req.params(limit or 16).model_dump(),
                "max_tokens_given": limit is not None,
            }
            await self._admit(call, limit or 16)
            stream, first = await self._start(req.model, payload, call)
            ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

            if req.stream:

                def delta(content: dict[str, Any], finish: str | None) -> dict[str, Any]:
                    return {
                        "id": ident,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": req.model,
                        **_fingerprint(first),
                        "choices": [{"index": 0, "delta": content, "finish_reason": finish}],
                    }

                async def events() -> AsyncIterator[bytes]:
                    yield _sse(delta({"role": "assistant", "content": ""}, None))
                    async for item in stream:
                        call.completion_tokens += item.get("tokens", 0)
                        if item.get("text"):
                            yield _sse(delta({"content": item["text"]}, None))
                        if item.get("finish_reason"):
                            yield _sse(delta({}, item["finish_reason"]))
                    yield _sse("[DONE]")

                return StreamingResponse(
                    _ending_cleanly(events(), call.request_id), media_type="text/event-stream"
                )
            text, tokens, finish = await _collect(stream)
            call.completion_tokens = tokens
            return {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": req.model,
                **_fingerprint(first),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                ],
                "usage": _usage(first["prompt_tokens"], tokens),
            }

        return await self._guard(request, "/v1/chat/completions", handler)

    async def replica_stats(self) -> ReplicaStats:
        """Stats of one model replica (for tests and benchmarks; not an HTTP route)."""
        return await self._server.stats.remote()
