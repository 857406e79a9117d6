"""A model replica that loads and evicts what the policy router tells it (``routing="policy"``).

Unlike :class:`~serving.deployment.ModelServer` under Serve's multiplexing, nothing here chooses:
the router in the ingress (:mod:`serving.policy_router`) sends each request with its model id and
asks for loads (:meth:`ManagedModelServer.ensure`) and evictions (:meth:`ManagedModelServer.evict`).
Loads of different models run at the same time (one task per model: a second caller of the same
model joins the first); an eviction never waits for a load of another model.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, Field

from serving.deployment import LoadedModel, ModelServer, ReplicaConfig
from serving.spec import ModelSpec


class ReplicaState(BaseModel):
    """What one managed replica holds, as the router reads it."""

    node_id: str
    resident: list[str]
    loading: list[str]
    parked: list[str]
    disk: list[str] = Field(description="models on this node's disk cache")
    in_flight: dict[str, int]
    served_by_tier: dict[str, int] = Field(
        description="requests by where their model came from: resident, parked, disk, "
        "object_storage"
    )


class ManagedModelServer(ModelServer):
    """Serve deployment body of one managed replica (see the module docstring)."""

    def __init__(self, specs: list[ModelSpec], config: ReplicaConfig) -> None:
        super().__init__(specs, config)
        self._loads_by_model: dict[str, asyncio.Task[str]] = {}
        self._model_in_flight: Counter[str] = Counter()
        self._served: Counter[str] = Counter()

    async def ensure(self, model_id: str) -> str:
        """Loads ``model_id`` unless it is resident; returns the tier it came from."""
        self._registry.get(model_id)
        if model_id in self._resident:
            return "resident"
        task = self._loads_by_model.get(model_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_tier(model_id))
            self._loads_by_model[model_id] = task
            task.add_done_callback(lambda _: self._loads_by_model.pop(model_id, None))
        return await asyncio.shield(task)

    async def _load_tier(self, model_id: str) -> str:
        before = self._load_count
        await self._load(model_id)
        event = self._loads[-1] if self._load_count > before and self._loads else None
        return event.tier if event is not None and event.model_id == model_id else "disk"

    def evict(self, model_id: str) -> bool:
        """Evicts ``model_id`` (parked if the engine can sleep); requests on it finish first.

        Returns whether it was resident.
        """
        loaded = self._resident.get(model_id)
        if loaded is None:
            return False
        loaded.close()  # removes it from the residents once drained
        self._resident.pop(model_id, None)
        return True

    async def state(self) -> ReplicaState:
        """This replica's models, requests in flight and tier counts."""
        try:
            disk = sorted(await self._cache.inventory.remote())
        except Exception:  # noqa: BLE001 - a cache being replaced: report no disk copies
            disk = []
        return ReplicaState(
            node_id=self._node_id,
            resident=list(self._resident),
            loading=list(self._loads_by_model),
            parked=list(self._parked),
            disk=disk,
            in_flight={m: n for m, n in self._model_in_flight.items() if n},
            served_by_tier=dict(self._served),
        )

    async def generate(  # type: ignore[override]
        self, request: dict[str, Any], model_id: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Streams one completion of ``model_id`` (see :meth:`ModelServer.generate`)."""
        if model_id is None:
            from ray import serve

            model_id = serve.get_multiplexed_model_id()
        self._registry.get(model_id)
        self._check_prompt_size(request)
        self._inflight += 1
        self._model_in_flight[model_id] += 1
        self._metrics.queue(self._inflight)
        try:
            while True:
                tier = await self.ensure(model_id)
                loaded: LoadedModel | None = self._resident.get(model_id)
                if loaded is not None and loaded.acquire():
                    break
            self._served[tier] += 1
            if tier == "resident":
                self._hot_hits += 1
            try:
                async for item in self._run(loaded.spec, loaded.engine, request):
                    yield item
            finally:
                loaded.release()
        finally:
            self._inflight -= 1
            self._model_in_flight[model_id] -= 1
            self._metrics.queue(self._inflight)
