"""The policy router's view against replica reports that cross its own operations.

The replica here is a stand-in whose state report is delayed (the injected fault): it is
taken when asked for and delivered after the router has evicted a model. Without Ray.
"""

from __future__ import annotations

import asyncio
from typing import Any

from serving.managed_replica import ReplicaState
from serving.policy_router import PolicyRouter
from serving.spec import ModelSpec


class _Call:
    def __init__(self, fn: Any) -> None:
        self.remote = fn


class SlowReportingReplica:
    """Holds models; ``state`` snapshots at once and answers when ``release`` is set."""

    def __init__(self) -> None:
        self.resident = {"a"}
        self.release = asyncio.Event()
        self.release.set()
        self.state = _Call(self._state)
        self.evict = _Call(self._evict)
        self.ensure = _Call(self._ensure)

    async def _state(self) -> ReplicaState:
        snapshot = sorted(self.resident)
        await self.release.wait()
        return ReplicaState(
            node_id="n",
            resident=snapshot,
            loading=[],
            parked=[],
            disk=[],
            in_flight={},
            served_by_tier={},
        )

    async def _evict(self, model_id: str) -> bool:
        self.resident.discard(model_id)
        return True

    async def _ensure(self, model_id: str) -> str:
        self.resident.add(model_id)
        return "disk"


async def test_a_state_taken_before_an_eviction_does_not_bring_the_model_back() -> None:
    replica = SlowReportingReplica()
    specs = [ModelSpec(id=m, weights_uri=f"file:///models/{m}") for m in ("a", "b")]
    router = PolicyRouter([replica], specs, slots=4, max_models=1, tick_s=3600)
    router._start()
    await router._refresh()
    view = router.cluster.replicas[0]
    assert set(view.resident) == {"a"}
    replica.release.clear()
    stale = asyncio.create_task(router._refresh())  # snapshot: a resident
    await asyncio.sleep(0)
    router._evict("0", "a")  # the manager evicts a meanwhile
    view.resident.pop("a")
    await asyncio.sleep(0.01)
    replica.release.set()
    await stale
    assert "a" not in view.resident  # the late report is older than the eviction
    await router._refresh()
    assert "a" not in view.resident  # and the next one agrees
    router._ticker.cancel()
