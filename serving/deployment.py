"""The model replica: a Ray Serve deployment multiplexing models (LRU) over the node cache."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from serving.cache import CacheConfig, node_cache
from serving.engines import Engine, GenerationParams, import_libraries, make_engine
from serving.errors import ContextLengthError, PayloadTooLargeError, ServingError
from serving.metrics import get_metrics
from serving.spec import ModelRegistry, ModelSpec
from serving.versions import VersionFollower, resolve_version

logger = logging.getLogger(__name__)

T = TypeVar("T")

WARM_UP_TIMEOUT_S = 60.0
"""Longest wait at replica start for the node cache to answer."""


class ReplicaConfig(BaseModel):
    """What one model replica does.

    Attributes:
        max_models: models kept loaded per replica (Serve's ``max_num_models_per_replica``).
        max_parked: evicted engines that can sleep (vLLM on CUDA) are put to sleep and kept, up to
            this many, instead of being shut down; waking one avoids an engine restart.
        cache: the node cache the replica loads through.
        max_prompt_bytes: largest prompt (UTF-8 bytes; a chat's message contents together)
            accepted; larger ones get 413 before they are tokenised.
        history: model switches (loads and unloads) kept in :class:`ReplicaStats`; older ones
            are only counted.
        tokenizer_threads: threads that tokenise prompts and render chat templates, off the
            replica's event loop (a multi-MB prompt takes seconds).
    """

    max_models: int = Field(default=2, ge=1)
    max_parked: int = Field(default=0, ge=0)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    max_prompt_bytes: int = Field(default=1 << 20, ge=1)
    history: int = Field(default=256, ge=1)
    tokenizer_threads: int = Field(default=2, ge=1)


class LoadEvent(BaseModel):
    """One model switch on a replica."""

    model_id: str
    version: str | None = Field(default=None, description="the version loaded (versioned models)")
    tier: str = Field(description="'object_storage' (cold), 'disk' (node cache) or 'parked'")
    seconds: float = Field(description="total switch time")
    cache_seconds: float = Field(description="time spent in the node cache (fetch included)")
    engine_seconds: float = Field(description="time the engine took to load from local disk")
    started_at: float = Field(default=0.0, description="wall-clock time the switch began (epoch s)")


class ReplicaStats(BaseModel):
    """Counters of one replica (``loads``/``unloads``: the latest ``ReplicaConfig.history``)."""

    resident: list[str] = Field(description="loaded models, least recently used first")
    versions: dict[str, str] = Field(
        default_factory=dict, description="versioned models: the version new requests go to"
    )
    parked: list[str]
    loads: list[LoadEvent] = Field(description="the latest model loads, oldest first")
    unloads: list[str] = Field(description="the latest unloaded models, oldest first")
    load_count: int = Field(default=0, description="model loads since the replica started")
    unload_count: int = Field(default=0, description="model unloads since the replica started")
    hot_hits: int
    failures: int
    node_id: str


class LoadedModel:
    """An engine loaded for one model, as held by Serve's multiplexer.

    Serve calls ``__del__`` on eviction (and Python may call it again at garbage collection):
    :meth:`close` runs once, and waits for requests still generating on this model.

    A new version of the model supersedes it (:meth:`supersede`): new requests go to the
    successor (:meth:`newest`), this one drains and unloads; Serve keeps holding the first of the
    chain, and evicting it closes the successors too.
    """

    def __init__(self, spec: ModelSpec, engine: Engine, owner: ModelServer) -> None:
        self.spec = spec
        self.engine = engine
        self._owner = owner
        self._active = 0
        self._closing = False
        self._closed = False
        self._lock = threading.Lock()
        self.successor: LoadedModel | None = None

    def acquire(self) -> bool:
        """Marks a request in flight; False when the model is already being evicted."""
        with self._lock:
            if self._closing:
                return False
            self._active += 1
            return True

    def release(self) -> None:
        """Ends a request; finishes a pending close after the last one."""
        with self._lock:
            self._active -= 1
            finish = self._closing and self._active == 0 and not self._closed
            if finish:
                self._closed = True
        if finish:
            self._owner._finish_unload(self)

    def newest(self) -> LoadedModel:
        """The latest version loaded in this chain (``self`` unless superseded)."""
        loaded = self
        while loaded.successor is not None:
            loaded = loaded.successor
        return loaded

    def supersede(self, successor: LoadedModel) -> bool:
        """Hands new requests to ``successor``; this one unloads once drained.

        Returns:
            False when this model is being evicted already (the successor is not attached).
        """
        with self._lock:
            if self._closing:
                return False
            self.successor = successor
        self._drain()
        return True

    def close(self) -> None:
        """Evicts the model and its successors: parks or unloads once in-flight requests end."""
        if self.successor is not None:
            self.successor.close()
        self._drain()

    def _drain(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
            finish = self._active == 0
            if finish:
                self._closed = True
        if finish:
            self._owner._finish_unload(self)

    def __del__(self) -> None:
        self.close()


class ModelServer:
    """Serve deployment body: multiplexes the registry's models, loading through the node cache.

    ``generate`` is an async generator (call it with ``stream=True``): the first item is
    ``{"prompt_tokens": n}``, then ``{"text", "tokens"}`` deltas, the last carries
    ``finish_reason``.
    """

    def __init__(self, specs: list[ModelSpec], config: ReplicaConfig) -> None:
        import ray
        from ray import serve

        self._registry = ModelRegistry(specs)
        self._config = config
        self._node_id = ray.get_runtime_context().get_node_id()
        self._cache = node_cache(config.cache, self._node_id)
        self._warm_up(specs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resident: OrderedDict[str, LoadedModel] = OrderedDict()
        self._parked: OrderedDict[str, Engine] = OrderedDict()
        self._loads: deque[LoadEvent] = deque(maxlen=config.history)
        self._unloads: deque[str] = deque(maxlen=config.history)
        self._load_count = 0
        self._unload_count = 0
        self._tokenizer_pool = ThreadPoolExecutor(
            max_workers=config.tokenizer_threads, thread_name_prefix="tokenize"
        )
        self._hot_hits = 0
        self._unreported_hits = 0
        self._failures = 0
        self._inflight = 0
        self._metrics = get_metrics()
        self._follower = VersionFollower(specs, self._loaded_version, self._upgrade)

        async def load(model_id: str) -> LoadedModel:
            return await self._load(model_id)

        self._get_model = serve.multiplexed(max_num_models_per_replica=config.max_models)(load)

    def _warm_up(self, specs: list[ModelSpec]) -> None:
        """Starts this node's cache and imports the engines' libraries before the replica is
        ready, so that no request pays them (see :func:`serving.engines.import_libraries`).

        Neither is needed to start: a cache that does not answer in time or a library that is
        missing is logged, and the first load meets it again (with its own error).
        """
        import ray

        try:
            ray.get(self._cache.node_id.remote(), timeout=WARM_UP_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the first load waits for it or fails clearly
            logger.warning("node cache did not answer at replica start: %r", exc)
        for engine in sorted({spec.engine for spec in specs}):
            try:
                import_libraries(engine)
            except ImportError as exc:
                logger.warning("engine %s cannot be prepared here: %r", engine, exc)

    # ------------------------------------------------------------------ loading
    async def _load(self, model_id: str) -> LoadedModel:
        self._loop = asyncio.get_running_loop()
        self._follower.start()
        spec = self._registry.get(model_id)
        if spec.versioned:
            spec = await asyncio.to_thread(resolve_version, spec)
        loaded = await self._load_spec(spec)
        self._resident[model_id] = loaded
        return loaded

    def _loaded_version(self, model_id: str) -> str | None:
        loaded = self._resident.get(model_id)
        return None if loaded is None else loaded.spec.version

    async def _upgrade(self, model_id: str, spec: ModelSpec) -> None:
        """Loads version ``spec`` of a resident model beside the old one, then switches to it."""
        current = self._resident.get(model_id)
        if current is None:
            return
        loaded = await self._load_spec(spec)
        if current.supersede(loaded):
            self._resident[model_id] = loaded
        else:  # evicted while the new version loaded
            loaded.close()

    async def _load_spec(self, spec: ModelSpec) -> LoadedModel:
        model_id = spec.id
        if self._unreported_hits:
            self._report_hits()
        start, started_at = time.perf_counter(), time.time()
        cache_seconds = 0.0
        engine = self._parked.pop(model_id, None)
        if engine is not None and spec.version is not None:  # a parked engine may be stale
            engine.unload()
            self._cache.engine_unloaded.remote(model_id)
            engine = None
        try:
            if engine is not None:
                tier = "parked"
                await engine.wake()
            else:
                local = await self._cache.ensure.remote(spec)
                tier, cache_seconds = local.tier, local.seconds
                self._metrics.cache("disk", tier == "disk")
                engine = make_engine(spec)
                try:
                    await engine.load(local.path)
                finally:
                    self._cache.release.remote(spec)
                self._cache.engine_loaded.remote(model_id, tier == "disk")
        except BaseException:
            self._failures += 1
            if engine is not None:
                engine.unload()
            raise
        seconds = time.perf_counter() - start
        self._metrics.switch(tier, spec.engine, seconds)
        self._metrics.cache("engine", False)
        self._load_count += 1
        self._loads.append(
            LoadEvent(
                model_id=model_id,
                version=spec.version,
                tier=tier,
                seconds=seconds,
                cache_seconds=cache_seconds,
                engine_seconds=seconds - cache_seconds,
                started_at=started_at,
            )
        )
        return LoadedModel(spec, engine, self)

    def _finish_unload(self, loaded: LoadedModel) -> None:
        """Parks (sleep mode) or unloads an evicted engine; runs once per loaded model."""
        model_id = loaded.spec.id
        if self._resident.get(model_id) is loaded:
            del self._resident[model_id]
        self._unloads.append(model_id)
        self._unload_count += 1
        engine = loaded.engine
        if engine.supports_sleep and self._config.max_parked > 0 and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._park(model_id, engine), self._loop)
            return
        try:
            engine.unload()
        finally:
            self._cache.engine_unloaded.remote(model_id)

    async def _park(self, model_id: str, engine: Engine) -> None:
        try:
            await engine.sleep()
        except Exception:
            logger.exception("could not put %s to sleep; unloading it", model_id)
            engine.unload()
            self._cache.engine_unloaded.remote(model_id)
            return
        self._parked[model_id] = engine
        while len(self._parked) > self._config.max_parked:
            old_id, old = self._parked.popitem(last=False)
            old.unload()
            self._cache.engine_unloaded.remote(old_id)

    # ------------------------------------------------------------------ serving
    async def generate(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Streams one completion; see the class docstring for the items.

        Args:
            request: ``{"prompt": str}`` or ``{"messages": [...]}``, plus ``"params"`` (a
                :class:`GenerationParams` dict) and ``"max_tokens_given"`` (False when the client
                left ``max_tokens`` out: the rest of the context is then used).
        """
        from ray import serve

        model_id = serve.get_multiplexed_model_id()
        self._registry.get(model_id)
        self._check_prompt_size(request)
        self._inflight += 1
        self._metrics.queue(self._inflight)
        try:
            while True:
                hot = model_id in self._resident
                loaded = (await self._get_model(model_id)).newest()
                if loaded.acquire():
                    break
            if model_id in self._resident:
                self._resident.move_to_end(model_id)  # mirror Serve's LRU order
            if hot:
                self._hot_hits += 1
                self._unreported_hits += 1
                self._metrics.cache("engine", True)
                if self._unreported_hits >= 32:
                    self._report_hits()
            try:
                async for item in self._run(loaded.spec, loaded.engine, request):
                    yield item
            finally:
                loaded.release()
        finally:
            self._inflight -= 1
            self._metrics.queue(self._inflight)

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs ``fn(*args)`` on the tokenizer threads: the event loop keeps serving meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(self._tokenizer_pool, fn, *args)

    def _check_prompt_size(self, request: dict[str, Any]) -> None:
        """Refuses a prompt over ``max_prompt_bytes`` before any tokenising."""
        if "messages" in request:
            field = "messages"
            size = sum(len(str(m.get("content", "")).encode()) for m in request["messages"])
        else:
            field, size = "prompt", len(request["prompt"].encode())
        limit = self._config.max_prompt_bytes
        if size > limit:
            raise PayloadTooLargeError(
                f"the prompt has {size} bytes; this server accepts at most {limit}", param=field
            )

    async def _run(
        self, spec: ModelSpec, engine: Engine, request: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        if "messages" in request:
            prompt = await self._off_loop(engine.chat_prompt, request["messages"])
            field = "messages"
        else:
            prompt, field = request["prompt"], "prompt"
        params = GenerationParams.model_validate(request.get("params", {}))
        prompt_tokens = await self._off_loop(engine.count_tokens, prompt)
        context = engine.max_context
        if prompt_tokens >= context:
            raise ContextLengthError(
                f"This model's maximum context length is {context} tokens, but the prompt has "
                f"{prompt_tokens} tokens",
                param=field,
            )
        room = context - prompt_tokens
        if not request.get("max_tokens_given", True):
            params = params.model_copy(update={"max_tokens": room})
        elif params.max_tokens > room:
            raise ContextLengthError(
                f"This model's maximum context length is {context} tokens; the prompt has "
                f"{prompt_tokens} tokens and max_tokens asks for {params.max_tokens} more",
                param="max_tokens",
            )
        yield {"prompt_tokens": prompt_tokens, "model_version": spec.version}
        start, tokens = time.perf_counter(), 0
        async for chunk in engine.generate(prompt, params):
            tokens += chunk.tokens
            yield chunk.model_dump()
        elapsed = time.perf_counter() - start
        if tokens and elapsed > 0:
            self._metrics.tokens_per_second.observe(tokens / elapsed, tags={"model": spec.id})

    def _report_hits(self) -> Any:
        """Sends the hot (engine tier) hits not yet reported to the node cache, in one call."""
        count, self._unreported_hits = self._unreported_hits, 0
        return self._cache.engine_hits.remote(count)

    async def stats(self) -> ReplicaStats:
        """This replica's counters (after reporting pending hot hits to the node cache)."""
        await self._report_hits()
        return ReplicaStats(
            resident=list(self._resident),
            versions={
                m: loaded.spec.version
                for m, loaded in self._resident.items()
                if loaded.spec.version is not None
            },
            parked=list(self._parked),
            loads=list(self._loads),
            unloads=list(self._unloads),
            load_count=self._load_count,
            unload_count=self._unload_count,
            hot_hits=self._hot_hits,
            failures=self._failures,
            node_id=self._node_id,
        )

    def check_health(self) -> None:
        """Serve health check: the replica is healthy while its event loop answers."""
        return


def as_serving_error(exc: BaseException) -> ServingError | None:
    """The :class:`ServingError` inside an exception that crossed Ray (or None)."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        cause = getattr(current, "cause", None)
        if isinstance(cause, ServingError):
            return cause
        if isinstance(current, ServingError) and not hasattr(current, "cause"):
            return current
        current = cause if isinstance(cause, BaseException) else current.__cause__
        seen += 1
    return None
