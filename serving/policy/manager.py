"""Replica management: how many copies of each model, and how many replicas in all.

Each tick (:meth:`ReplicaManager.plan`) compares every model's wanted copies with the copies it
has and returns the loads and evictions that close the gap, one step per model per tick:

* **wanted copies** (:meth:`ReplicaManager.wanted`): a model with traffic within the demand window
  wants ``ceil(concurrency / (target.concurrency * utilisation))`` copies (Little's law on its rate
  and recent latency, or its requests in flight), one more while its latency is over its
  ``latency_target_s`` and its requests queue, at least one, at least ``min_replicas``, at most
  ``max_replicas`` and the replica count. A model without recent traffic wants ``min_replicas``.
* **scale up**: a new copy goes where :func:`~serving.policy.router.new_copy` says (parked >
  disk > remote, then the shortest queue), evicting only what :func:`evictable` allows.
* **scale down** with hysteresis: a copy is removed only when the model would have enough at half
  the target utilisation (``wanted`` computed with ``utilisation / 2``), one per tick, from the
  busiest replica among the copies with none of its requests: a load between the two
  thresholds changes nothing, and a model that gained a copy within ``cooldown_ticks`` loses
  none. A model without traffic is consolidated to ``max(min_replicas, 1)``
  copies and is evicted altogether only when its room is needed (by the router or a scale-up).
* **defragmentation** (consolidation): when a model with requests has no copy and no replica
  can take it (every replica holds last copies of active models), the models blocking the
  replica easiest to clear are copied to replicas with room; once they have two copies, the
  blocked model's load may evict the old ones.
* **standby** (``standby`` > 0, for engines that can sleep): each model is kept parked on up to
  ``standby`` replicas besides its loaded copies (loaded where there is room, then put to sleep,
  a few per tick, never evicting anything), so that a burst wakes a copy (a host-to-GPU copy)
  instead of starting an engine.
* **replica count** (:func:`desired_replicas`): the deployment's replicas follow the total load
  (and the room the active models need), between the configured bounds. This is our controller,
  not Serve's autoscaler: Serve scales a deployment by its ongoing requests but cannot know which
  models a new replica should load, nor that removing a replica may remove a model's last copy;
  the manager knows both.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, Field

from serving.policy.demand import ModelDemand
from serving.policy.router import _NO_DEMAND, Route, new_copy
from serving.policy.view import ClusterView, ModelTargets


class Eviction(BaseModel):
    """Remove (park or unload) one copy of a model from a replica."""

    replica_id: str
    model_id: str


class Plan(BaseModel):
    """The actions of one tick: new copies (with the evictions each needs) and removals."""

    loads: list[Route] = Field(default_factory=list)
    evictions: list[Eviction] = Field(default_factory=list)
    standby: list[Route] = Field(
        default_factory=list, description="load, then park at once (a warm copy for bursts)"
    )

    def empty(self) -> bool:
        """Nothing to do."""
        return not self.loads and not self.evictions and not self.standby


class ReplicaManager:
    """Decides copies per model from demand (see the module docstring).

    Args:
        utilisation: share of a copy's ``concurrency`` the scale-up rule aims at (headroom for
            bursts); scale-down waits until the model would fit at half of it.
        standby: parked copies kept of each model, where replicas have room and park memory.
        standby_per_tick: most standby copies started per tick.
        cooldown_ticks: a model that gained a copy (by a plan or by the router) loses none for
            this many ticks (queues swing faster than copies load).
    """

    def __init__(
        self,
        utilisation: float = 0.7,
        standby: int = 0,
        standby_per_tick: int = 2,
        cooldown_ticks: int = 30,
    ) -> None:
        if not 0 < utilisation <= 1:
            raise ValueError(f"utilisation must be in (0, 1], got {utilisation}")
        if standby < 0 or standby_per_tick < 0:
            raise ValueError("standby and standby_per_tick must be >= 0")
        self.utilisation = utilisation
        self.standby = standby
        self.standby_per_tick = standby_per_tick
        self.cooldown_ticks = cooldown_ticks
        self._tick = 0
        self._copies: dict[str, int] = {}
        self._grew: dict[str, int] = {}
        self.keep: dict[str, int] = {}
        """Copies each model wanted at the last plan: no other model's load evicts them."""

    def wanted(
        self,
        demand: ModelDemand,
        target: ModelTargets,
        replicas: int,
        utilisation: float | None = None,
        copies: int = 0,
    ) -> int:
        """Copies ``demand`` wants (``copies``: those it has, for the latency rule)."""
        if not demand.active:
            return min(target.min_replicas, replicas)
        util = self.utilisation if utilisation is None else utilisation
        want = math.ceil(demand.concurrency() / (target.concurrency * util) - 1e-9)
        late = (
            target.latency_target_s is not None
            and demand.latency_s > target.latency_target_s
            and demand.in_flight > copies
        )
        if late and utilisation is None:
            want = max(want, copies + 1)
        want = max(want, 1, target.min_replicas)
        if target.max_replicas is not None:
            want = min(want, target.max_replicas)
        return min(want, replicas)

    def plan(
        self,
        cluster: ClusterView,
        demand: Mapping[str, ModelDemand],
        targets: Mapping[str, ModelTargets],
    ) -> Plan:
        """This tick's loads and evictions. ``cluster`` is updated as if they were done."""
        plan = Plan()
        self._tick += 1
        replicas = sum(1 for r in cluster.replicas if r.accepting)
        models = sorted(
            set(targets) | set(demand),
            key=lambda m: (-demand.get(m, _NO_DEMAND).rate, m),
        )
        self.keep = {
            m: self.wanted(
                demand.get(m, _NO_DEMAND),
                targets.get(m) or ModelTargets(model_id=m),
                replicas,
                utilisation=self.utilisation / 2,
            )
            for m in models
        }
        defragmented = False
        for model_id in models:
            target = targets.get(model_id) or ModelTargets(model_id=model_id)
            d = demand.get(model_id, _NO_DEMAND)
            copies = cluster.copies(model_id)
            have = len(copies)
            if have > self._copies.get(model_id, 0):
                self._grew[model_id] = self._tick
            self._copies[model_id] = have
            want = self.wanted(d, target, replicas, copies=have)
            if have < want:
                route = new_copy(model_id, cluster, demand, targets, keep=self.keep)
                if route is None:
                    if have == 0 and not defragmented:
                        defragmented = self._defragment(plan, cluster, model_id, targets)
                    continue
                plan.loads.append(route)
                replica = cluster.replica(route.replica_id)
                for victim in route.evict:
                    replica.resident.pop(victim, None)
                    plan.evictions.append(Eviction(replica_id=replica.replica_id, model_id=victim))
                replica.parked.discard(model_id)
                replica.loading[model_id] = target.size
                self._grew[model_id] = self._tick
                self._copies[model_id] = have + 1
                continue
            if self._tick - self._grew.get(model_id, -self.cooldown_ticks) < self.cooldown_ticks:
                continue
            keep = self.wanted(d, target, replicas, utilisation=self.utilisation / 2, copies=have)
            keep = max(keep, target.min_replicas, 1 if d.active or have else 0)
            loaded = sum(1 for r in copies if model_id in r.resident)
            if have > keep and loaded > keep:  # copies still loading do not count yet
                idle = [
                    r for r in copies if model_id in r.resident and not r.model_queue.get(model_id)
                ]
                if not idle:
                    continue  # every copy has requests: try again next tick
                replica = max(idle, key=lambda r: r.queue)
                replica.resident.pop(model_id)
                self._copies[model_id] = have - 1
                plan.evictions.append(Eviction(replica_id=replica.replica_id, model_id=model_id))
        if self.standby:
            self._plan_standby(plan, cluster, models, targets)
        return plan

    def _defragment(
        self,
        plan: Plan,
        cluster: ClusterView,
        model_id: str,
        targets: Mapping[str, ModelTargets],
    ) -> bool:
        """Makes room for a model no replica can take: copies the models that block the replica
        easiest to clear to replicas with room, so that the next ticks may evict them there.

        Returns whether anything was planned (one defragmentation per tick).
        """
        size = (targets.get(model_id) or ModelTargets(model_id=model_id)).size

        def size_of(m: str) -> float:
            return (targets.get(m) or ModelTargets(model_id=m)).size

        best: tuple[float, list[tuple[str, str]]] | None = None
        for replica in cluster.replicas:
            if not replica.accepting or replica.capacity < size:
                continue
            moves: list[tuple[str, str]] = []
            room = {r.replica_id: r.free for r in cluster.replicas}
            missing = size - replica.free
            for blocker in sorted(replica.resident, key=size_of):
                if missing <= 1e-9:
                    break
                need = size_of(blocker)
                dest = next(
                    (
                        r
                        for r in sorted(cluster.replicas, key=lambda r: room[r.replica_id])
                        if r is not replica
                        and r.accepting
                        and not r.holds(blocker)
                        and room[r.replica_id] >= need
                    ),
                    None,
                )
                if dest is None:
                    break
                room[dest.replica_id] -= need
                moves.append((blocker, dest.replica_id))
                missing -= need
            if missing <= 1e-9 and moves:
                moved = sum(size_of(m) for m, _ in moves)
                if best is None or moved < best[0]:
                    best = (moved, moves)
        if best is None:
            return False
        for blocker, dest_id in best[1]:
            dest = cluster.replica(dest_id)
            tier = dest.tier(blocker, cluster.disk_of(dest))
            dest.loading[blocker] = size_of(blocker)
            self._grew[blocker] = self._tick
            plan.loads.append(Route(replica_id=dest_id, model_id=blocker, tier=tier))
        return True

    def _plan_standby(
        self,
        plan: Plan,
        cluster: ClusterView,
        models: list[str],
        targets: Mapping[str, ModelTargets],
    ) -> None:
        busy = {route.replica_id for route in plan.loads}
        for model_id in models:
            if len(plan.standby) >= self.standby_per_tick:
                return
            parked = [r for r in cluster.replicas if model_id in r.parked and not r.holds(model_id)]
            if len(parked) >= self.standby:
                continue
            size = (targets.get(model_id) or ModelTargets(model_id=model_id)).size
            hosts = [
                r
                for r in cluster.replicas
                if r.accepting
                and r.replica_id not in busy
                and not r.holds(model_id)
                and model_id not in r.parked
                and r.free >= size
                and r.park_room >= size
            ]
            if not hosts:
                continue
            host = min(
                hosts,
                key=lambda r: (r.tier(model_id, cluster.disk_of(r)), r.queue, -r.park_room),
            )
            tier = host.tier(model_id, cluster.disk_of(host))
            busy.add(host.replica_id)
            host.park_room -= size
            host.parked.add(model_id)
            plan.standby.append(Route(replica_id=host.replica_id, model_id=model_id, tier=tier))


def desired_replicas(
    demand: Mapping[str, ModelDemand],
    targets: Mapping[str, ModelTargets],
    capacity: float,
    concurrency: float,
    bounds: tuple[int, int],
    utilisation: float = 0.7,
) -> int:
    """Replicas the deployment wants for the current demand.

    Args:
        demand: every model's demand.
        targets: every model's targets.
        capacity: room on one replica (same unit as :attr:`ModelTargets.size`).
        concurrency: requests one replica runs at once.
        bounds: ``(min, max)`` replicas.
        utilisation: share of ``concurrency`` aimed at.

    Returns:
        Enough replicas for the total concurrency at ``utilisation`` and for one copy of every
        active model (and ``min_replicas`` copies of every model), within ``bounds``.
    """
    low, high = bounds
    if not 1 <= low <= high:
        raise ValueError(f"bounds must satisfy 1 <= min <= max, got {bounds}")
    load = sum(d.concurrency() for d in demand.values())
    by_load = math.ceil(load / (concurrency * utilisation) - 1e-9)
    room = 0.0
    for model_id in set(targets) | set(demand):
        target = targets.get(model_id) or ModelTargets(model_id=model_id)
        copies = max(target.min_replicas, 1 if demand.get(model_id, _NO_DEMAND).active else 0)
        room += copies * target.size
    by_room = math.ceil(room / capacity - 1e-9)
    return max(low, min(high, max(by_load, by_room)))
