"""Tier-aware routing: which replica serves a request, and what it evicts to make room.

Order of preference (ties broken by the replica's queue, then by what must be evicted):

1. a replica where the model is **resident** (least loaded first); while every copy is saturated
   (``spill_factor * concurrency`` requests queued on each) and the model may have more copies, a
   copy parked on another replica with room to spare is woken for the request (a wake is a copy,
   cheaper than the queue; it evicts nothing, or spills would chase each other); slower new
   copies (disk, object storage) are the replica manager's to start, in the background, while
   requests stay with the resident copies;
2. a replica already **loading** it (join that load rather than start a second one);
3. a replica where it is **parked** (asleep in host memory: waking is a copy, not a restart);
4. a replica whose node's **disk** cache holds the weights;
5. any replica (**remote**: the weights come from object storage).

A model is evicted from a replica only if the rules of :func:`evictable` allow it: never the last
loaded copy of a model that had traffic within the demand window (unless a request has waited
``patience_s`` for room: when more models have traffic than the replicas can hold, they take
turns, least recently used out first), never below its
``min_replicas``, never while it has requests on that replica. When no replica can take the model
without breaking them, or every copy is full (``slots`` requests on it), :meth:`Router.route`
answers ``None`` and the caller waits (and asks again when a slot frees or a load ends).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, Field

from serving.policy.demand import ModelDemand
from serving.policy.view import ClusterView, ModelTargets, ReplicaView, Tier

QUEUE_BUCKET = 8
"""Queues shorter than this count as equal when a new copy's replica is chosen."""

_NO_DEMAND = ModelDemand(
    model_id="", rate=0.0, in_flight=0, latency_s=0.0, last_request_s=None, active=False
)


class Route(BaseModel):
    """Where one request goes.

    Attributes:
        replica_id: the replica chosen.
        model_id: the model asked for.
        tier: where that replica gets the model from.
        evict: models the replica evicts (parks or unloads) first, to make room.
    """

    replica_id: str
    model_id: str
    tier: Tier
    evict: list[str] = Field(default_factory=list)


def evictable(
    model_id: str,
    replica: ReplicaView,
    cluster: ClusterView,
    demand: Mapping[str, ModelDemand],
    targets: Mapping[str, ModelTargets],
    keep: Mapping[str, int] | None = None,
    force: bool = False,
) -> bool:
    """Whether ``replica`` may evict ``model_id`` now (see the module docstring for the rules;
    ``keep``: copies each model keeps, e.g. the replica manager's wanted copies; ``force``: the
    last copy of a model with traffic may go too, if it has no request on this replica)."""
    if model_id not in replica.resident or replica.model_queue.get(model_id, 0) > 0:
        return False
    copies = sum(1 for r in cluster.replicas if model_id in r.resident)
    target = targets.get(model_id)
    if target is not None and copies <= target.min_replicas:
        return False
    if force:
        return True
    if keep is not None and copies <= keep.get(model_id, 0):
        return False
    return not (demand.get(model_id, _NO_DEMAND).active and copies <= 1)


def victims(
    replica: ReplicaView,
    room: float,
    cluster: ClusterView,
    demand: Mapping[str, ModelDemand],
    targets: Mapping[str, ModelTargets],
    keep: Mapping[str, int] | None = None,
    force: bool = False,
) -> list[str] | None:
    """The models ``replica`` evicts to free ``room``: ``[]`` if it has room, ``None`` if it cannot.

    Idle models go first, then those with more copies elsewhere, then the least requested, then the
    least recently used here.
    """
    missing = room - replica.free
    if missing <= 1e-9:
        return []

    def order(model_id: str) -> tuple[bool, int, float, float]:
        d = demand.get(model_id, _NO_DEMAND)
        copies = sum(1 for r in cluster.replicas if model_id in r.resident)
        if force:  # the least recently used first: every waiting model gets its turn
            return (False, 0, 0.0, replica.last_used.get(model_id, -math.inf))
        return (d.active, -copies, d.rate, replica.last_used.get(model_id, -math.inf))

    chosen: list[str] = []
    for model_id in sorted(replica.resident, key=order):
        if not evictable(model_id, replica, cluster, demand, targets, keep, force):
            continue
        chosen.append(model_id)
        missing -= replica.resident[model_id]
        if missing <= 1e-9:
            return chosen
    return None


def new_copy(
    model_id: str,
    cluster: ClusterView,
    demand: Mapping[str, ModelDemand],
    targets: Mapping[str, ModelTargets],
    slowest: Tier = Tier.REMOTE,
    evicting: bool = True,
    keep: Mapping[str, int] | None = None,
    force: bool = False,
) -> Route | None:
    """The best replica to start a new copy of ``model_id`` on, or None.

    Parked > disk > remote (none slower than ``slowest``; only where there is room without
    evictions unless ``evicting``), then the shortest queue (in steps of
    ``QUEUE_BUCKET`` requests: lightly loaded replicas count as equal), the fewest evictions, and
    the tightest fit (so that whole replicas stay free for large models and bursts).
    """
    target = targets.get(model_id) or ModelTargets(model_id=model_id)
    best: tuple[tuple[int, int, int, float], Route] | None = None
    for replica in cluster.replicas:
        if not replica.accepting or replica.holds(model_id) or replica.capacity < target.size:
            continue
        tier = replica.tier(model_id, cluster.disk_of(replica))
        if tier > slowest:
            continue
        evict = victims(replica, target.size, cluster, demand, targets, keep, force)
        if evict is None or (evict and not evicting):
            continue
        key = (int(tier), replica.queue // QUEUE_BUCKET, len(evict), replica.free)
        if best is None or key < best[0]:
            best = (
                key,
                Route(replica_id=replica.replica_id, model_id=model_id, tier=tier, evict=evict),
            )
    return None if best is None else best[1]


class Router:
    """Chooses a replica for each request (see the module docstring).

    Args:
        spill_factor: a resident copy counts as saturated once the model has ``spill_factor *
            concurrency`` requests on it; when every copy is, a new copy is started (if the
            model's ``max_replicas`` allows and some replica can take it).
    """

    def __init__(self, spill_factor: float = 2.0, patience_s: float = 10.0) -> None:
        if spill_factor <= 0:
            raise ValueError(f"spill_factor must be > 0, got {spill_factor}")
        if patience_s < 0:
            raise ValueError(f"patience_s must be >= 0, got {patience_s}")
        self.spill_factor = spill_factor
        self.patience_s = patience_s

    def route(
        self,
        model_id: str,
        cluster: ClusterView,
        demand: Mapping[str, ModelDemand],
        targets: Mapping[str, ModelTargets],
        keep: Mapping[str, int] | None = None,
        waited_s: float = 0.0,
    ) -> Route | None:
        """The replica for one request of ``model_id``; ``None`` when none can take it now.

        ``keep``: copies each model keeps (:attr:`ReplicaManager.keep`); their copies are not
        evicted for this request. ``waited_s``: how long the request has waited for a route;
        past ``patience_s`` it may evict the least recently used model without requests on a
        replica even if that is the last copy of a model with traffic (more models have
        traffic than the replicas hold: they take turns rather than starve).
        """
        target = targets.get(model_id) or ModelTargets(model_id=model_id)
        live = [r for r in cluster.replicas if r.accepting]
        resident = [r for r in live if model_id in r.resident]
        if resident:
            best = min(resident, key=lambda r: (r.full, r.model_queue.get(model_id, 0), r.queue))
            saturated = (
                best.full
                or best.model_queue.get(model_id, 0) >= self.spill_factor * target.concurrency
            )
            copies = len(cluster.copies(model_id))
            may_grow = target.max_replicas is None or copies < target.max_replicas
            if saturated and may_grow:
                spill = new_copy(
                    model_id, cluster, demand, targets, slowest=Tier.PARKED, evicting=False
                )
                if spill is not None:
                    return spill
            if best.full:
                return None  # wait for a slot on any copy
            return Route(replica_id=best.replica_id, model_id=model_id, tier=Tier.RESIDENT)
        loading = [r for r in live if model_id in r.loading]
        if loading:
            joined = min(loading, key=lambda r: r.queue)
            if joined.full:
                return None
            return Route(replica_id=joined.replica_id, model_id=model_id, tier=Tier.LOADING)
        route = new_copy(model_id, cluster, demand, targets, keep=keep)
        if route is None and waited_s >= self.patience_s:
            route = new_copy(model_id, cluster, demand, targets, force=True)
        return route
