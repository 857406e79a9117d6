"""What the policy sees of the replicas: which models each holds, in which tier, and its queue.

The real app fills these from the replicas' reports and its own in-flight counts; the simulator
from its state. Nothing here talks to Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from pydantic import BaseModel, Field


class Tier(IntEnum):
    """Where a replica would get a model from; lower is faster (and preferred)."""

    RESIDENT = 0
    LOADING = 1
    PARKED = 2
    DISK = 3
    REMOTE = 4

    @property
    def label(self) -> str:
        """Lower-case name used in metrics, stats and tables."""
        return self.name.lower()


class ModelTargets(BaseModel):
    """One model's replica bounds and latency target, as the policy uses them.

    Attributes:
        model_id: the model.
        size: room one loaded copy takes on a replica, in the replicas' capacity unit (1 per
            model in the real app, where a replica holds ``max_models``; GB in the simulator).
        min_replicas: copies kept loaded even without traffic.
        max_replicas: most copies (``None``: as many replicas as there are).
        latency_target_s: a copy is added while the model's recent latency is above this and its
            requests queue (``None``: only the concurrency rule adds copies).
        concurrency: requests one copy runs at once before more copies are wanted.
    """

    model_id: str
    size: float = Field(default=1.0, gt=0)
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    latency_target_s: float | None = Field(default=None, gt=0)
    concurrency: float = Field(default=8.0, gt=0)


@dataclass
class ReplicaView:
    """One replica as the policy sees it.

    Attributes:
        replica_id: the replica.
        node_id: its node (whose disk cache :attr:`ClusterView.disk` lists).
        capacity: room for loaded models (same unit as :attr:`ModelTargets.size`).
        resident: loaded models ready to serve, with the room each takes.
        loading: models being loaded or woken, with the room each will take.
        parked: models asleep in this replica's host memory.
        queue: requests routed to this replica and not finished (all models).
        model_queue: those requests by model.
        last_used: model -> time of its latest request here (eviction order among equals).
        accepting: False while the replica drains or is being removed: nothing new goes there.
        park_room: host memory left for parking (same unit as the sizes; ``0``: the replica's
            engines cannot sleep).
        slots: requests the replica runs at once (Serve's ``max_ongoing_requests``; 0: no
            bound). A full replica gets no more requests: they wait at the router, and go to
            whichever copy frees a slot first (a copy loaded meanwhile included).
    """

    replica_id: str
    node_id: str = ""
    capacity: float = 1.0
    resident: dict[str, float] = field(default_factory=dict)
    loading: dict[str, float] = field(default_factory=dict)
    parked: set[str] = field(default_factory=set)
    queue: int = 0
    model_queue: dict[str, int] = field(default_factory=dict)
    last_used: dict[str, float] = field(default_factory=dict)
    accepting: bool = True
    park_room: float = 0.0
    slots: int = 0

    @property
    def used(self) -> float:
        """Room taken by resident and loading models."""
        return sum(self.resident.values()) + sum(self.loading.values())

    @property
    def free(self) -> float:
        """Room left."""
        return self.capacity - self.used

    @property
    def full(self) -> bool:
        """Whether every slot is taken."""
        return 0 < self.slots <= self.queue

    def holds(self, model_id: str) -> bool:
        """Whether the model is resident or being loaded here."""
        return model_id in self.resident or model_id in self.loading

    def tier(self, model_id: str, disk: frozenset[str] | set[str]) -> Tier:
        """Where this replica would get ``model_id`` from, given its node's disk cache ``disk``."""
        if model_id in self.resident:
            return Tier.RESIDENT
        if model_id in self.loading:
            return Tier.LOADING
        if model_id in self.parked:
            return Tier.PARKED
        if model_id in disk:
            return Tier.DISK
        return Tier.REMOTE


@dataclass
class ClusterView:
    """Every replica and what each node's disk cache holds."""

    replicas: list[ReplicaView]
    disk: dict[str, set[str]] = field(default_factory=dict)  # node id -> model ids on its disk

    def disk_of(self, replica: ReplicaView) -> set[str]:
        """Model ids on the disk cache of ``replica``'s node."""
        return self.disk.get(replica.node_id, set())

    def copies(self, model_id: str) -> list[ReplicaView]:
        """Replicas where ``model_id`` is resident or loading."""
        return [r for r in self.replicas if r.holds(model_id)]

    def replica(self, replica_id: str) -> ReplicaView:
        """The replica with this id (KeyError if none)."""
        for replica in self.replicas:
            if replica.replica_id == replica_id:
                return replica
        raise KeyError(replica_id)
