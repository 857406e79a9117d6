"""``serving.Client``: the OpenAI-compatible API for agents, async and blocking."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from pydantic import BaseModel

from serving.errors import (
    AuthenticationError,
    ContextLengthError,
    InvalidRequestError,
    ModelNotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    QueueFullError,
    RateLimitError,
    ReplicaLostError,
    ServingError,
    WeightsError,
)

T = TypeVar("T")

_BY_CODE: dict[str, type[ServingError]] = {
    cls.code: cls
    for cls in (
        ModelNotFoundError,
        InvalidRequestError,
        ContextLengthError,
        AuthenticationError,
        WeightsError,
        OverloadedError,
        PayloadTooLargeError,
        ReplicaLostError,
        RateLimitError,
        QueueFullError,
    )
}


class Completion(BaseModel):
    """A finished completion."""

    model: str
    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model_version: str | None = None


def _raise_for(status: int, body: bytes, retry_after: str | None = None) -> None:
    try:
        error = json.loads(body)["error"]
        message, code, param = error["message"], error.get("code") or "", error.get("param")
    except (ValueError, KeyError, TypeError):
        message, code, param = body.decode(errors="replace")[:500], "", None
    cls = _BY_CODE.get(code, ServingError)
    exc = cls(f"HTTP {status}: {message}", param=param)
    exc.status = status
    if isinstance(exc, RateLimitError) and retry_after and retry_after.isdigit():
        exc.retry_after = int(retry_after)
    raise exc


class Client:
    """Talks to the serving app over HTTP.

    Async methods are ``a``-prefixed (``acomplete``, ``achat``, ``astream``, ``amodels``); the
    unprefixed ones block (they run on a private event loop thread, so they also work inside
    a running event loop's thread pool or a notebook).

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        api_key: sent as ``Authorization: Bearer``.
        timeout: seconds per request.

    Raises (from every call):
        ModelNotFoundError, InvalidRequestError, ContextLengthError, PayloadTooLargeError,
        AuthenticationError, WeightsError, OverloadedError (retry after a while),
        ReplicaLostError (retry) or ServingError: the server's OpenAI error, typed by its code.
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 300.0):
        self.base_url = base_url.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ async
    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout, headers=self._headers) as session:
            data = json.dumps(body) if body is not None else None
            async with session.request(method, self.base_url + path, data=data) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    _raise_for(resp.status, raw, resp.headers.get("Retry-After"))
                return json.loads(raw)

    async def amodels(self) -> list[str]:
        """Ids of the served models."""
        body = await self._request("GET", "/models")
        return [m["id"] for m in body["data"]]

    async def acomplete(self, model: str, prompt: str, **params: Any) -> Completion:
        """A text completion (OpenAI parameters such as ``max_tokens``, ``temperature``)."""
        body = await self._request(
            "POST", "/completions", {"model": model, "prompt": prompt, **params}
        )
        choice = body["choices"][0]
        return Completion(
            model=model,
            text=choice["text"],
            finish_reason=choice["finish_reason"],
            model_version=body.get("system_fingerprint"),
            prompt_tokens=body["usage"]["prompt_tokens"],
            completion_tokens=body["usage"]["completion_tokens"],
        )

    async def achat(self, model: str, messages: list[dict[str, str]], **params: Any) -> Completion:
        """A chat completion; ``messages`` as in OpenAI (``role``, ``content``)."""
        body = await self._request(
            "POST", "/chat/completions", {"model": model, "messages": messages, **params}
        )
        choice = body["choices"][0]
        return Completion(
            model=model,
            text=choice["message"]["content"],
            finish_reason=choice["finish_reason"],
            model_version=body.get("system_fingerprint"),
            prompt_tokens=body["usage"]["prompt_tokens"],
            completion_tokens=body["usage"]["completion_tokens"],
        )

    async def astream(self, model: str, prompt: str, **params: Any) -> AsyncIterator[str]:
        """Streams a text completion's pieces as they are generated."""
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self._timeout)
        body = json.dumps({"model": model, "prompt": prompt, "stream": True, **params})
        async with (
            aiohttp.ClientSession(timeout=timeout, headers=self._headers) as session,
            session.post(self.base_url + "/completions", data=body) as resp,
        ):
            if resp.status >= 400:
                _raise_for(resp.status, await resp.read(), resp.headers.get("Retry-After"))
            async for line in resp.content:
                text = line.decode().strip()
                if not text.startswith("data:"):
                    continue
                data = text[5:].strip()
                if data == "[DONE]":
                    return
                piece = json.loads(data)["choices"][0]["text"]
                if piece:
                    yield piece

    # ------------------------------------------------------------------ blocking
    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="serving-client", daemon=True
                )
                self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def models(self) -> list[str]:
        """Blocking :meth:`amodels`."""
        return self._run(self.amodels())

    def complete(self, model: str, prompt: str, **params: Any) -> Completion:
        """Blocking :meth:`acomplete`."""
        return self._run(self.acomplete(model, prompt, **params))

    def chat(self, model: str, messages: list[dict[str, str]], **params: Any) -> Completion:
        """Blocking :meth:`achat`."""
        return self._run(self.achat(model, messages, **params))

    def stream(self, model: str, prompt: str, **params: Any) -> Iterator[str]:
        """Blocking :meth:`astream` (collects the pieces, then yields them)."""

        async def collect() -> list[str]:
            return [piece async for piece in self.astream(model, prompt, **params)]

        yield from self._run(collect())

    def close(self) -> None:
        """Stops the blocking helper's event loop thread (if it was started)."""
        with self._lock:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                if self._thread is not None:
                    self._thread.join(timeout=5)
                self._loop = None
                self._thread = None
