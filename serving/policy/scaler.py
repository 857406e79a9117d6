"""The replica count: when the deployment gains a replica and which one it gives up.

:func:`~serving.policy.manager.desired_replicas` says how many replicas the total load calls for;
:class:`ReplicaScaler` turns it into one step at a time. The real app
(:mod:`serving.policy_router`) and the simulator (:mod:`serving.sim`) run this same code; only
they start and stop replicas.

* **add** one replica when the count wanted at the target utilisation is above the replicas
  serving plus those being added, none is being added already, and ``max`` allows.
* **drain** one replica when the count wanted even at *half* the target utilisation (hysteresis)
  has stayed below the replicas serving for ``cooldown_ticks`` ticks in a row, no replica was
  added within ``cooldown_ticks``, and ``min`` allows. The replica drained is one whose removal
  leaves every model with traffic (and every model with ``min_replicas``) enough *loaded* copies
  elsewhere, so that no request waits for a load: the fewest requests first, then the newest.
  The caller stops routing to it at once, lets its requests finish, then removes it.
* **copies**: when a drain is due but every removable replica holds a last copy of a model with
  traffic, the copies that would free the replica with the fewest of them (on replicas with room,
  evicting nothing); a later tick drains it once they are loaded.

This is our controller, not Serve's autoscaler: Serve scales a deployment by its ongoing requests,
but cannot know which models a new replica should load, nor that removing one may remove a
model's last copy.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field

from serving.policy.demand import ModelDemand
from serving.policy.manager import desired_replicas
from serving.policy.router import _NO_DEMAND, Route, new_copy
from serving.policy.view import ClusterView, ModelTargets, ReplicaView


class ScaleStep(BaseModel):
    """What one tick changes in the replica count (at most one of ``add`` and ``drain``).

    Attributes:
        add: start one more replica.
        drain: the replica to drain and remove (None: none).
        copies: copies to load first so that a replica can be drained on a later tick.
        desired: replicas the load calls for (at the target utilisation), for reports.
    """

    add: bool = False
    drain: str | None = None
    copies: list[Route] = Field(default_factory=list)
    desired: int = 0


class ReplicaScaler:
    """Decides the replica count, one step per tick (see the module docstring).

    Args:
        bounds: ``(min, max)`` replicas.
        capacity: room on one replica (the unit of :attr:`ModelTargets.size`).
        concurrency: requests one replica runs at the target (before another is wanted).
        utilisation: share of ``concurrency`` aimed at; replicas are removed only when the load
            would fit at half of it.
        cooldown_ticks: ticks the low load must last before a replica is removed, and ticks
            after an added replica before any is removed.
        fixed: replicas that are never removed (e.g. those the app was deployed with).
    """

    def __init__(
        self,
        bounds: tuple[int, int],
        capacity: float,
        concurrency: float,
        utilisation: float = 0.7,
        cooldown_ticks: int = 30,
        fixed: frozenset[str] = frozenset(),
    ) -> None:
        low, high = bounds
        if not 1 <= low <= high:
            raise ValueError(f"bounds must satisfy 1 <= min <= max, got {bounds}")
        if not 0 < utilisation <= 1:
            raise ValueError(f"utilisation must be in (0, 1], got {utilisation}")
        if capacity <= 0 or concurrency <= 0 or cooldown_ticks < 0:
            raise ValueError("capacity and concurrency must be > 0, cooldown_ticks >= 0")
        self.bounds = bounds
        self.capacity = capacity
        self.concurrency = concurrency
        self.utilisation = utilisation
        self.cooldown_ticks = cooldown_ticks
        self.fixed = fixed
        self._tick = 0
        self._added = -cooldown_ticks
        self._low_since: int | None = None

    def desired(
        self,
        demand: Mapping[str, ModelDemand],
        targets: Mapping[str, ModelTargets],
        utilisation: float | None = None,
    ) -> int:
        """Replicas the load calls for, within the bounds."""
        return desired_replicas(
            demand,
            targets,
            self.capacity,
            self.concurrency,
            self.bounds,
            self.utilisation if utilisation is None else utilisation,
        )

    def step(
        self,
        cluster: ClusterView,
        demand: Mapping[str, ModelDemand],
        targets: Mapping[str, ModelTargets],
        adding: int = 0,
    ) -> ScaleStep:
        """This tick's step; ``adding``: replicas started and not yet serving."""
        self._tick += 1
        serving = [r for r in cluster.replicas if r.accepting]
        want = self.desired(demand, targets)
        if want > len(serving) + adding:
            self._low_since = None
            if adding or len(serving) + adding >= self.bounds[1]:
                return ScaleStep(desired=want)
            self._added = self._tick
            return ScaleStep(add=True, desired=want)
        keep = self.desired(demand, targets, self.utilisation / 2)
        if adding or keep >= len(serving) or len(serving) <= self.bounds[0]:
            self._low_since = None
            return ScaleStep(desired=want)
        if self._low_since is None:
            self._low_since = self._tick
        quiet = self._tick - self._low_since >= self.cooldown_ticks
        if not quiet or self._tick - self._added < self.cooldown_ticks:
            return ScaleStep(desired=want)
        removable = [r for r in serving if r.replica_id not in self.fixed]
        if not removable:
            return ScaleStep(desired=want)
        blocked = {r.replica_id: self.last_copies(r, cluster, demand, targets) for r in removable}
        free = [r for r in removable if not blocked[r.replica_id]]
        if free:
            chosen = min(free, key=lambda r: (r.queue, -serving.index(r)))
            self._low_since = None
            return ScaleStep(drain=chosen.replica_id, desired=want)
        return ScaleStep(
            copies=self._moves(removable, blocked, cluster, demand, targets), desired=want
        )

    @staticmethod
    def last_copies(
        replica: ReplicaView,
        cluster: ClusterView,
        demand: Mapping[str, ModelDemand],
        targets: Mapping[str, ModelTargets],
    ) -> list[str]:
        """Models held by ``replica`` that would have too few loaded copies without it: those
        with traffic (one copy elsewhere needed) and those with ``min_replicas``."""
        short = []
        for model_id in sorted(set(replica.resident) | set(replica.loading)):
            target = targets.get(model_id) or ModelTargets(model_id=model_id)
            need = max(target.min_replicas, 1 if demand.get(model_id, _NO_DEMAND).active else 0)
            elsewhere = sum(
                1
                for r in cluster.replicas
                if r is not replica and r.accepting and model_id in r.resident
            )
            if elsewhere < need:
                short.append(model_id)
        return short

    @staticmethod
    def _moves(
        removable: list[ReplicaView],
        blocked: dict[str, list[str]],
        cluster: ClusterView,
        demand: Mapping[str, ModelDemand],
        targets: Mapping[str, ModelTargets],
    ) -> list[Route]:
        for replica in sorted(removable, key=lambda r: (len(blocked[r.replica_id]), r.queue)):
            routes = []
            for model_id in blocked[replica.replica_id]:
                if any(r is not replica and r.holds(model_id) for r in cluster.replicas):
                    continue  # a copy is loading elsewhere already
                route = new_copy(model_id, cluster, demand, targets, evicting=False)
                if route is None:
                    break
                routes.append(route)
            else:
                return routes
        return []
