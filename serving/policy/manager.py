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
  copy with the fewest of its requests: a load between the two thresholds changes nothing. A
  model without traffic is consolidated to ``max(min_replicas, 1)`` copies and is evicted
  altogether only when its room is needed (by the router or a scale-up).
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

    def empty(self) -> bool:
        """Nothing to do."""
        return not self.loads and not self.evictions


class ReplicaManager:
    """Decides copies per model from demand (see the module docstring).

    Args:
        utilisation: share of a copy's ``concurrency`` the scale-up rule aims at (headroom for
            bursts); scale-down waits until the model would fit at half of it.
    """

    def __init__(self, utilisation: float = 0.7) -> None:
        if not 0 < utilisation <= 1:
            raise ValueError(f"utilisation must be in (0, 1], got {utilisation}")
        self.utilisation = utilisation

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
        replicas = sum(1 for r in cluster.replicas if r.accepting)
        models = sorted(
            set(targets) | set(demand),
            key=lambda m: -demand.get(m, _NO_DEMAND).rate,
        )
        for model_id in models:
            target = targets.get(model_id) or ModelTargets(model_id=model_id)
            d = demand.get(model_id, _NO_DEMAND)
            copies = cluster.copies(model_id)
            have = len(copies)
            want = self.wanted(d, target, replicas, copies=have)
            if have < want:
                route = new_copy(model_id, cluster, demand, targets)
                if route is None:
                    continue
                plan.loads.append(route)
                replica = cluster.replica(route.replica_id)
                for victim in route.evict:
                    replica.resident.pop(victim, None)
                    plan.evictions.append(Eviction(replica_id=replica.replica_id, model_id=victim))
                replica.parked.discard(model_id)
                replica.loading[model_id] = target.size
                continue
            keep = self.wanted(d, target, replicas, utilisation=self.utilisation / 2, copies=have)
            keep = max(keep, target.min_replicas, 1 if d.active or have else 0)
            if have > keep:
                idle = [r for r in copies if model_id in r.resident]
                if not idle:
                    continue
                replica = min(idle, key=lambda r: (r.model_queue.get(model_id, 0), -r.queue))
                if replica.model_queue.get(model_id, 0) > 0 and not d.active:
                    continue
                replica.resident.pop(model_id)
                plan.evictions.append(Eviction(replica_id=replica.replica_id, model_id=model_id))
        return plan


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
