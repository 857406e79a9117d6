"""Routing by :mod:`serving.policy` in the ingress (``ServingConfig.routing = "policy"``).

The ingress is handed a :class:`PolicyRouter` where it would hold the model deployment's handle:
it answers the same calls (``options(multiplexed_model_id=..., stream=True).generate.remote(...)``
and ``stats.remote()``), but sends each request to the replica the Ray-free
:class:`~serving.policy.Router` chooses, among single-replica deployments (one per replica, so
that a request can be sent to one replica). Every ``policy_tick_s`` it reads each replica's state
(:class:`~serving.managed_replica.ReplicaState`) and runs the
:class:`~serving.policy.ReplicaManager`, whose loads and evictions it sends to the replicas.
A request no replica can take now (every copy full, or no room without evicting a model that
still has traffic) waits here and is routed again as soon as something changes, up to
``wait_s``; then it is answered ``503`` with ``Retry-After``.

With a :class:`~serving.replica_pool.ReplicaPool` and ``max_replicas`` above the replicas it
started with, each tick also runs the :class:`~serving.policy.ReplicaScaler` and applies its
step: an added replica joins the view once it runs; a drained one leaves the view at once
(nothing new is routed there), and is removed once the requests already on it have finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from serving.errors import OverloadedError
from serving.policy import (
    ClusterView,
    DemandTracker,
    ModelTargets,
    ReplicaManager,
    ReplicaScaler,
    ReplicaView,
    Route,
    Router,
    Tier,
)
from serving.spec import ModelSpec

if TYPE_CHECKING:
    from serving.replica_pool import ReplicaPool

logger = logging.getLogger(__name__)


COOLDOWN_S = 3.0
"""How long a model that gained a copy keeps it at least (the manager's cooldown, in seconds)."""


LOST_TICKS = 10
"""An added replica that did not report its state this many ticks in a row is removed."""


def cooldown_ticks(tick_s: float) -> int:
    """The manager's ``cooldown_ticks`` for a tick of ``tick_s`` (:data:`COOLDOWN_S`)."""
    return max(1, round(COOLDOWN_S / tick_s))


def targets_of(specs: list[ModelSpec], concurrency: float) -> dict[str, ModelTargets]:
    """The policy's targets of each model: one unit of room, bounds from its spec."""
    return {
        spec.id: ModelTargets(
            model_id=spec.id,
            min_replicas=spec.min_replicas,
            max_replicas=spec.max_replicas,
            latency_target_s=spec.latency_target_s,
            concurrency=concurrency,
        )
        for spec in specs
    }


class _Method:
    def __init__(self, call: Any) -> None:
        self.remote = call


class _Bound:
    """What ``router.options(...)`` returns: ``.generate.remote(payload)``."""

    def __init__(self, router: PolicyRouter, model_id: str) -> None:
        self.generate = _Method(lambda payload: router.generate(model_id, payload))


class PolicyRouter:
    """The ingress's side of policy routing (see the module docstring).

    Args:
        replicas: the replica deployments (handles once Serve has built the app).
        specs: the models.
        slots: requests each replica runs at once (its ``max_ongoing_requests``).
        max_models: models each replica holds.
        concurrency: requests one copy of a model runs before more copies are wanted.
        window_s: demand window.
        tick_s: period of the replica manager.
        wait_s: longest wait of a request no replica can take.
        patience_s: wait after which a request may evict the last copy of another model with
            traffic (see :class:`~serving.policy.Router`).
        pool: adds and removes replicas (None: the replica count is fixed).
        max_replicas: most replicas; the least is ``len(replicas)``.
    """

    def __init__(
        self,
        replicas: list[Any],
        specs: list[ModelSpec],
        slots: int,
        max_models: int,
        concurrency: float = 8.0,
        window_s: float = 60.0,
        tick_s: float = 1.0,
        wait_s: float = 30.0,
        patience_s: float = 10.0,
        pool: ReplicaPool | None = None,
        max_replicas: int | None = None,
    ) -> None:
        self.replicas = replicas
        self.pool = pool
        self.max_replicas = max(len(replicas), max_replicas or 0)
        self.specs = specs
        self.slots = slots
        self.max_models = max_models
        self.concurrency = concurrency
        self.window_s = window_s
        self.tick_s = tick_s
        self.wait_s = wait_s
        self.patience_s = patience_s
        self._started = False

    # ------------------------------------------------------------------ state
    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        self.targets = targets_of(self.specs, self.concurrency)
        self.tracker = DemandTracker(window_s=self.window_s)
        self.router = Router(patience_s=self.patience_s)
        self.manager = ReplicaManager(cooldown_ticks=cooldown_ticks(self.tick_s))
        self.handles: dict[str, Any] = {str(i): r for i, r in enumerate(self.replicas)}
        self.cluster = ClusterView(replicas=[self._view(rid) for rid in self.handles])
        self.scaler: ReplicaScaler | None = None
        if self.pool is not None and self.max_replicas > len(self.replicas):
            self.scaler = ReplicaScaler(
                bounds=(len(self.replicas), self.max_replicas),
                capacity=float(self.max_models),
                concurrency=self.concurrency,
                cooldown_ticks=cooldown_ticks(self.tick_s),
                fixed=frozenset(self.handles),
            )
        self._next_index = len(self.replicas)
        self._adding: set[str] = set()
        self._draining: dict[str, ReplicaView] = {}
        self._silent: Counter[str] = Counter()
        self._evicting: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._loading: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._ops: Counter[str] = Counter()  # operations sent to each replica
        self._add_after = 0.0
        self.desired = len(self.replicas)
        self.scaled: Counter[str] = Counter()
        self.routed: Counter[str] = Counter()
        self.changed = asyncio.Event()
        self._pending_ops: set[asyncio.Task[Any]] = set()
        self._ticker = asyncio.get_running_loop().create_task(self._tick_forever())

    def _view(self, replica_id: str) -> ReplicaView:
        return ReplicaView(replica_id=replica_id, capacity=float(self.max_models), slots=self.slots)

    def options(self, multiplexed_model_id: str = "", **_: Any) -> _Bound:
        """Mirrors ``DeploymentHandle.options``: the model id is what matters here."""
        return _Bound(self, multiplexed_model_id)

    @property
    def stats(self) -> _Method:
        """``stats.remote()``: the first replica's :class:`~serving.deployment.ReplicaStats`."""
        return _Method(lambda: self.replicas[0].stats.remote())

    async def router_stats(self) -> dict[str, Any]:
        """Requests routed by tier, each replica's models, and copies per model."""
        self._start()
        await self._refresh()
        return {
            "routed": dict(self.routed),
            "desired_replicas": self.desired,
            "adding": sorted(self._adding),
            "draining": sorted(self._draining),
            "scaled": dict(self.scaled),
            "replicas": [
                {
                    "replica_id": r.replica_id,
                    "resident": sorted(r.resident),
                    "loading": sorted(r.loading),
                    "parked": sorted(r.parked),
                    "node_id": r.node_id,
                    "queue": r.queue,
                }
                for r in self.cluster.replicas
            ],
            "copies": {s.id: len(self.cluster.copies(s.id)) for s in self.specs},
        }

    async def _refresh(self) -> None:
        """Reads every replica's state into the views (queues stay the router's own counts)."""
        views = list(self.cluster.replicas)
        sent = {v.replica_id: self._ops[v.replica_id] for v in views}
        states = await asyncio.gather(
            *(self.handles[v.replica_id].state.remote() for v in views), return_exceptions=True
        )
        for view, state in zip(views, states, strict=True):
            if isinstance(state, BaseException):
                logger.info("replica %s did not report its state: %r", view.replica_id, state)
                self._silent[view.replica_id] += 1
                continue
            self._silent.pop(view.replica_id, None)
            view.node_id = state.node_id
            view.parked = set(state.parked)
            self.cluster.disk[state.node_id] = set(state.disk)
            # A state read before the replica saw the router's latest evictions and loads would
            # undo them in the view (a model shown resident again is routed to and loaded beside
            # the new one: more models than the replica holds): a state older than the router's
            # last operation on the replica is not applied, and operations in flight win.
            if self._ops[view.replica_id] != sent[view.replica_id]:
                continue
            evicting = {m for m, n in self._evicting[view.replica_id].items() if n > 0}
            loading = {m for m, n in self._loading[view.replica_id].items() if n > 0}
            view.resident = {m: 1.0 for m in state.resident if m not in evicting}
            view.loading = {m: 1.0 for m in {*state.loading, *loading} if m not in view.resident}
        self.changed.set()

    async def _adopt(self) -> None:
        """Takes over the replicas an earlier incarnation of this router added (an ingress
        replica that restarted), so that they serve and can be removed again."""
        assert self.pool is not None
        from serving.replica_pool import extra_replica_apps

        try:
            running = await asyncio.to_thread(extra_replica_apps, self.pool.config.app_name)
        except Exception:  # noqa: BLE001 - nothing adopted; stop_models still removes them
            logger.exception("listing the added replicas failed")
            return
        for index in sorted(running):
            replica_id = str(index)
            if replica_id not in self.handles:
                self.handles[replica_id] = self.pool.handle(index)
                self.cluster.replicas.append(self._view(replica_id))
            self._next_index = max(self._next_index, index + 1)

    async def _tick_forever(self) -> None:
        if self.scaler is not None:
            await self._adopt()
        while True:
            try:
                await self._refresh()
                plan = self.manager.plan(
                    self.cluster, self.tracker.live(time.monotonic()), self.targets
                )
                for eviction in plan.evictions:
                    self._evict(eviction.replica_id, eviction.model_id)
                for load in plan.loads:
                    self._ensure(load.replica_id, load.model_id)
                if self.scaler is not None:
                    self._scale(self.scaler)
            except Exception:  # noqa: BLE001 - the next tick tries again
                logger.exception("policy tick failed")
            await asyncio.sleep(self.tick_s)

    # ------------------------------------------------------------------ replica count
    def _scale(self, scaler: ReplicaScaler) -> None:
        """Applies one :class:`~serving.policy.ReplicaScaler` step (and drops lost replicas)."""
        for replica_id, silent in list(self._silent.items()):
            if silent >= LOST_TICKS and replica_id not in scaler.fixed:
                logger.warning("added replica %s stopped answering: removing it", replica_id)
                self.scaled["lost"] += 1
                self._drain(replica_id)
        now = time.monotonic()
        adding = len(self._adding) + (1 if now < self._add_after else 0)
        step = scaler.step(self.cluster, self.tracker.live(now), self.targets, adding=adding)
        self.desired = step.desired
        if step.add:
            self._background(self._add_replica())
        if step.drain is not None:
            self._drain(step.drain)
        for copy in step.copies:
            self.cluster.replica(copy.replica_id).loading[copy.model_id] = 1.0
            self._ensure(copy.replica_id, copy.model_id)

    async def _add_replica(self) -> None:
        assert self.pool is not None
        replica_id = str(self._next_index)
        self._next_index += 1
        self._adding.add(replica_id)
        try:
            avoid = tuple(sorted({r.node_id for r in self.cluster.replicas if r.node_id}))
            self.handles[replica_id] = await self.pool.add(int(replica_id), avoid)
            self.cluster.replicas.append(self._view(replica_id))
            self.scaled["added"] += 1
            await self._refresh()
        except Exception:  # noqa: BLE001 - tried again after a cooldown
            logger.exception("adding replica %s failed", replica_id)
            self.scaled["add_failed"] += 1
            self._add_after = time.monotonic() + COOLDOWN_S
        finally:
            self._adding.discard(replica_id)

    def _drain(self, replica_id: str) -> None:
        """Takes the replica out of the view now; removes it once its requests have finished."""
        view = self.cluster.replica(replica_id)
        self.cluster.replicas.remove(view)
        self._silent.pop(replica_id, None)
        self._draining[replica_id] = view
        self.changed.set()  # requests waiting for a route look again
        self._background(self._remove_replica(replica_id, view))

    async def _remove_replica(self, replica_id: str, view: ReplicaView) -> None:
        assert self.pool is not None
        try:
            while view.queue > 0:
                await asyncio.sleep(self.tick_s)
            await self.pool.remove(int(replica_id))
            self.scaled["removed"] += 1
        except Exception:  # noqa: BLE001 - the app's removal deletes what is left
            logger.exception("removing replica %s failed", replica_id)
        finally:
            self.handles.pop(replica_id, None)
            self._draining.pop(replica_id, None)

    def _background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._pending_ops.add(task)
        task.add_done_callback(self._pending_ops.discard)

    def _evict(self, replica_id: str, model_id: str) -> None:
        """Sends an eviction; until it is answered the view never shows the model resident."""
        self._evicting[replica_id][model_id] += 1
        self._ops[replica_id] += 1
        self._send(
            self.handles[replica_id].evict.remote(model_id),
            lambda: self._evicting[replica_id].subtract([model_id]),
        )

    def _ensure(self, replica_id: str, model_id: str) -> None:
        """Sends a load; until it is answered the view shows the model loading."""
        self._loading[replica_id][model_id] += 1
        self._ops[replica_id] += 1
        self._send(
            self.handles[replica_id].ensure.remote(model_id),
            lambda: self._loading[replica_id].subtract([model_id]),
        )

    def _send(self, response: Any, done: Any = None) -> None:
        async def wait() -> None:
            try:
                await response
            except Exception as exc:  # noqa: BLE001 - logged; the next tick sees the state
                logger.warning("replica operation failed: %r", exc)
            finally:
                if done is not None:
                    done()
            self.changed.set()

        self._background(wait())

    # ------------------------------------------------------------------ requests
    async def _route(self, model_id: str) -> Route:
        started = time.monotonic()
        deadline = started + self.wait_s
        while True:
            now = time.monotonic()
            route = self.router.route(
                model_id,
                self.cluster,
                self.tracker.live(now),
                self.targets,
                self.manager.keep,
                waited_s=now - started,
            )
            if route is not None:
                return route
            if now >= deadline:
                raise OverloadedError(
                    f"no model replica can take a request for {model_id!r} now; retry later"
                )
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(0.5, deadline - now))

    async def generate(self, model_id: str, payload: dict[str, Any]) -> AsyncIterator[Any]:
        """Routes one request and streams its items."""
        self._start()
        start = time.monotonic()
        self.tracker.arrived(model_id, start)
        latency: float | None = None
        try:
            route = await self._route(model_id)
            view = self.cluster.replica(route.replica_id)
            replica = self.handles[route.replica_id]
            view.queue += 1  # counted before any await: a drain waits for it
            view.model_queue[model_id] = view.model_queue.get(model_id, 0) + 1
            view.last_used[model_id] = start
            loads = route.tier >= Tier.PARKED
            for victim in route.evict:
                view.resident.pop(victim, None)
                self._evicting[route.replica_id][victim] += 1
                self._ops[route.replica_id] += 1
            if loads:  # shown loading here until this request ends (see _refresh)
                view.loading[model_id] = 1.0
                self._loading[route.replica_id][model_id] += 1
                self._ops[route.replica_id] += 1
            try:
                try:
                    for victim in route.evict:
                        await replica.evict.remote(victim)
                finally:
                    self._evicting[route.replica_id].subtract(route.evict)
                self.routed[route.tier.label] += 1
                stream = replica.options(stream=True).generate.remote(payload, model_id)
                async for item in stream:
                    yield item
                latency = time.monotonic() - start
            finally:
                view.queue -= 1
                view.model_queue[model_id] -= 1
                if not view.model_queue[model_id]:
                    del view.model_queue[model_id]
                if loads:
                    self._loading[route.replica_id].subtract([model_id])
                    if model_id in view.loading:
                        view.resident[model_id] = view.loading.pop(model_id)
                self.changed.set()
        finally:
            self.tracker.finished(model_id, latency)
