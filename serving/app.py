"""The OpenAI-compatible HTTP ingress and the Serve application builder.

No ``from __future__ import annotations`` here on purpose: ``@serve.ingress`` rewrites the route
methods' signatures and FastAPI then cannot resolve string annotations (``request: Request``
became a required query parameter, answered with 422).
"""

import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from ray import serve

from placement.errors import PlacementError
from placement.table import NODE_ID_LABEL
from serving.cache import CacheConfig
from serving.deployment import ModelServer, ReplicaConfig, ReplicaStats, as_serving_error
from serving.errors import AuthenticationError, PayloadTooLargeError, ServingError
from serving.metrics import get_metrics
from serving.placer import ReplicaPlacement, remove_placer, replica_placer
from serving.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    error_body,
    parse_request,
)
from serving.spec import ModelRegistry, ModelSpec


class ServingConfig(BaseModel):
    """How the serving application is deployed.

    Attributes:
        app_name: Serve application name.
        route_prefix: HTTP route prefix of the ingress.
        replicas: model replicas.
        max_models_per_replica: models each replica keeps loaded (LRU beyond).
        max_parked_engines: sleeping engines kept per replica (vLLM on CUDA).
        replica_cpus: logical CPUs each model replica reserves (fractions are fine).
        replica_gpus: GPUs each model replica reserves.
        ingress_cpus: logical CPUs the HTTP ingress reserves.
        max_ongoing_requests: per replica.
        api_key: when set, requests need ``Authorization: Bearer <api_key>`` (every route but ``/health``).
        max_body_bytes: largest request body accepted; larger ones get 413 before they are parsed.
        runtime_env: Ray runtime env of the model replicas (e.g. the vLLM CPU venv's Python).
        cache: the node model cache settings.
        placement: how ``placement`` chooses each replica's node (where the node caches already
            hold the weights, with free GPUs) and re-places replicas of lost nodes; see
            :mod:`serving.placer`. ``None``: Serve spreads the replicas itself.
    """

    app_name: str = "academy-serving"
    route_prefix: str = "/"
    replicas: int = Field(default=1, ge=1)
    max_models_per_replica: int = Field(default=2, ge=1)
    max_parked_engines: int = Field(default=0, ge=0)
    replica_cpus: float = Field(default=0.5, ge=0)
    replica_gpus: float = Field(default=0.0, ge=0)
    ingress_cpus: float = Field(default=0.1, ge=0)
    max_ongoing_requests: int = Field(default=32, ge=1)
    api_key: str | None = Field(default=None, repr=False)
    max_body_bytes: int = Field(default=4 << 20, ge=1)
    runtime_env: dict[str, Any] | None = None
    cache: CacheConfig = Field(default_factory=CacheConfig)
    placement: ReplicaPlacement | None = Field(default_factory=ReplicaPlacement)


def _error(exc: ServingError) -> JSONResponse:
    return JSONResponse(error_body(exc), status_code=exc.status)


async def _ending_cleanly(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Ends a stream that fails midway (e.g. its replica died) with an OpenAI error event, not a cut."""
    try:
        async for event in events:
            yield event
    except Exception as exc:  # noqa: BLE001 - reported to the client in the stream itself
        err = as_serving_error(exc) or ServingError(
            f"the generation stopped midway: {type(exc).__name__}; retry the request"
        )
        yield _sse(error_body(err))


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


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


api = FastAPI(title="academy-ray serving (OpenAI-compatible)")


@serve.deployment
@serve.ingress(api)
class OpenAIIngress:
    """``/v1/models``, ``/v1/completions``, ``/v1/chat/completions`` over the model replicas."""

    def __init__(self, server: Any, specs: list[ModelSpec], config: ServingConfig) -> None:
        self._server = server
        self._registry = ModelRegistry(specs)
        self._key = config.api_key.encode() if config.api_key else None
        self._max_body = config.max_body_bytes
        self._created = int(time.time())

    # ------------------------------------------------------------------ helpers
    def _authorize(self, request: Request) -> None:
        if self._key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._key):
            raise AuthenticationError("Incorrect or missing API key")

    async def _start(self, model: str, payload: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Starts a generation; returns the stream and its first item (errors surface here)."""
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
        return stream, first

    async def _guard(self, request: Request, handler: Any) -> Any:
        response = await self._answer(request, handler)
        get_metrics().request(request.url.path, int(getattr(response, "status_code", 200)))
        return response

    async def _answer(self, request: Request, handler: Any) -> Any:
        try:
            self._authorize(request)
            return await handler()
        except ServingError as exc:
            return _error(exc)
        except Exception as exc:  # noqa: BLE001
            err = as_serving_error(exc)
            if err is not None:
                return _error(err)
            return _error(ServingError(f"internal error: {exc!r}"))

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

    @api.get("/v1/models")
    async def list_models(self, request: Request) -> Any:
        """OpenAI's model list."""

        async def handler() -> Any:
            return {"object": "list", "data": [self._model_card(s) for s in self._registry]}

        return await self._guard(request, handler)

    @api.get("/v1/models/{model_id:path}")
    async def get_model(self, model_id: str, request: Request) -> Any:
        """One model card (404 if unknown)."""

        async def handler() -> Any:
            return self._model_card(self._registry.get(model_id))

        return await self._guard(request, handler)

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

        async def handler() -> Any:
            req: CompletionRequest = parse_request(CompletionRequest, await self._body(request))
            payload = {
                "prompt": req.prompt_text(),
                "params": req.params(req.max_tokens or 16).model_dump(),
                "max_tokens_given": req.max_tokens is not None,
            }
            stream, first = await self._start(req.model, payload)
            ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

            def chunk(text: str, finish: str | None) -> dict[str, Any]:
                return {
                    "id": ident,
                    "object": "text_completion",
                    "created": created,
                    "model": req.model,
                    "choices": [
                        {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
                    ],
                }

            if req.stream:

                async def events() -> AsyncIterator[bytes]:
                    async for item in stream:
                        if item.get("text") or item.get("finish_reason"):
                            yield _sse(chunk(item.get("text", ""), item.get("finish_reason")))
                    yield _sse("[DONE]")

                return StreamingResponse(_ending_cleanly(events()), media_type="text/event-stream")
            text, tokens, finish = await _collect(stream)
            body = chunk(text, finish)
            body["usage"] = _usage(first["prompt_tokens"], tokens)
            return body

        return await self._guard(request, handler)

    @api.post("/v1/chat/completions")
    async def chat_completions(self, request: Request) -> Any:
        """OpenAI chat completions (``stream`` supported)."""

        async def handler() -> Any:
            req: ChatCompletionRequest = parse_request(
                ChatCompletionRequest, await self._body(request)
            )
            limit = req.max_completion_tokens or req.max_tokens
            payload = {
                "messages": [m.model_dump() for m in req.messages],
                "params": req.params(limit or 16).model_dump(),
                "max_tokens_given": limit is not None,
            }
            stream, first = await self._start(req.model, payload)
            ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

            if req.stream:

                def delta(content: dict[str, Any], finish: str | None) -> dict[str, Any]:
                    return {
                        "id": ident,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": req.model,
                        "choices": [{"index": 0, "delta": content, "finish_reason": finish}],
                    }

                async def events() -> AsyncIterator[bytes]:
                    yield _sse(delta({"role": "assistant", "content": ""}, None))
                    async for item in stream:
                        if item.get("text"):
                            yield _sse(delta({"content": item["text"]}, None))
                        if item.get("finish_reason"):
                            yield _sse(delta({}, item["finish_reason"]))
                    yield _sse("[DONE]")

                return StreamingResponse(_ending_cleanly(events()), media_type="text/event-stream")
            text, tokens, finish = await _collect(stream)
            return {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": req.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": finish,
                    }
                ],
                "usage": _usage(first["prompt_tokens"], tokens),
            }

        return await self._guard(request, handler)

    async def replica_stats(self) -> ReplicaStats:
        """Stats of one model replica (for tests and benchmarks; not an HTTP route)."""
        return await self._server.stats.remote()


def build_app(
    specs: list[ModelSpec],
    config: ServingConfig | None = None,
    replica_nodes: list[str] | None = None,
) -> Any:
    """The Serve application: an OpenAI ingress in front of multiplexing model replicas.

    Args:
        specs: the models served.
        config: deployment settings.
        replica_nodes: one node id per model replica, as chosen by ``placement`` (see
            :mod:`serving.placer`): the replicas are then constrained to those nodes (a
            ``ray.io/node-id`` label selector) and their count is the list's length. ``None``:
            Serve places ``config.replicas`` replicas itself.
    """
    config = config or ServingConfig()
    actor_options: dict[str, Any] = {"num_cpus": config.replica_cpus}
    if config.replica_gpus:
        actor_options["num_gpus"] = config.replica_gpus
    if config.runtime_env:
        actor_options["runtime_env"] = config.runtime_env
    placed: dict[str, Any] = {"num_replicas": config.replicas}
    if replica_nodes:
        nodes = sorted(set(replica_nodes))  # sorted: the same set must give the same Serve version
        actor_options["label_selector"] = {NODE_ID_LABEL: f"in({','.join(nodes)})"}
        per_node = max(replica_nodes.count(node) for node in nodes)
        placed = {"num_replicas": len(replica_nodes), "max_replicas_per_node": per_node}
    replica = ReplicaConfig(
        max_models=config.max_models_per_replica,
        max_parked=config.max_parked_engines,
        cache=config.cache,
    )
    server = (
        serve.deployment(ModelServer)  # type: ignore[attr-defined]
        .options(
            name="ModelServer",
            max_ongoing_requests=config.max_ongoing_requests,
            ray_actor_options=actor_options,
            **placed,
        )
        .bind(list(specs), replica)
    )
    return OpenAIIngress.options(  # type: ignore[attr-defined]
        ray_actor_options={"num_cpus": config.ingress_cpus}
    ).bind(server, list(specs), config)


def serve_models(
    specs: list[ModelSpec],
    config: ServingConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    proxy_location: str = "EveryNode",
) -> str:
    """Deploys (or updates) the application and returns its OpenAI base URL (``.../v1``).

    ``proxy_location`` is Serve's (``"EveryNode"``, ``"HeadOnly"``; simulated clusters of several
    nodes on one machine need ``"HeadOnly"``: their proxies would share one port).
    """
    config = config or ServingConfig()
    serve.start(proxy_location=proxy_location, http_options={"host": host, "port": port})
    if config.placement is not None:
        import ray

        placer = replica_placer(config.app_name, config.placement)
        try:
            ray.get(placer.deploy.remote(list(specs), config))
        except ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, PlacementError):  # e.g. no node can ever hold a replica
                raise error.cause from None
            raise
    else:
        serve.run(build_app(specs, config), name=config.app_name, route_prefix=config.route_prefix)
    prefix = config.route_prefix.rstrip("/")
    return f"http://{host}:{port}{prefix}/v1"


def stop_models(config: ServingConfig) -> None:
    """Deletes the application and, when ``placement`` placed it, releases its replica slots."""
    serve.delete(config.app_name)
    if config.placement is not None:
        remove_placer(config.app_name, config.placement)
