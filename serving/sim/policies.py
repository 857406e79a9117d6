"""The deployments the simulator compares.

* :class:`OursPolicy`: :class:`~serving.policy.Router` per request, :class:`~serving.policy.
  ReplicaManager` every tick: the code the real app runs. With ``autoscale=(min, max)`` the
  :class:`~serving.policy.ReplicaScaler` also sets how many of the GPUs serve, as in the real
  app: a replica added serves ``replica_start_s`` later; a drained one takes no new requests,
  and unloads its models once its queue is empty.
* :class:`ServeMultiplexPolicy`: Serve's multiplexing as it is: a fixed set of replicas, each
  keeping up to ``max_models`` models (least recently used evicted; an evicted engine is parked
  when host memory allows, as ``ServingConfig.max_parked_engines`` does); a request goes to a replica
  that has its model loaded (the less loaded of two at random), else to the less loaded of two
  random replicas, which loads it from whatever tier it has: the router knows nothing of tiers.
* :class:`StaticPolicy`: every model pinned to GPUs once, copies in proportion to its expected
  rate (as far as memory allows), never moved; requests go to the least loaded copy.
"""

from __future__ import annotations

import numpy as np

from serving.policy import (
    DemandTracker,
    ModelTargets,
    ReplicaManager,
    ReplicaScaler,
    Router,
    Tier,
)
from serving.sim.engine import Request, SimReplica, Simulation
from serving.sim.workload import copies_for, expected_rates


class OursPolicy:
    """Our router and replica manager (see the module docstring)."""

    name = "ours"

    def __init__(
        self,
        concurrency: float = 16.0,
        utilisation: float = 0.7,
        standby: int = 2,
        patience_s: float = 10.0,
        cooldown_ticks: int = 30,
        autoscale: tuple[int, int] | None = None,
        replica_start_s: float = 0.0,
    ) -> None:
        self.concurrency = concurrency
        self.utilisation = utilisation
        self.cooldown_ticks = cooldown_ticks
        self.router = Router(patience_s=patience_s)
        self.manager = ReplicaManager(
            utilisation=utilisation, standby=standby, cooldown_ticks=cooldown_ticks
        )
        self.tracker = DemandTracker()
        self.targets: dict[str, ModelTargets] = {}
        self.autoscale = autoscale
        self.replica_start_s = replica_start_s
        self.scaler: ReplicaScaler | None = None
        self._starting: dict[int, float] = {}  # replica index -> serving from
        self._draining: set[int] = set()
        self.replica_counts: list[tuple[float, int]] = []
        """(time, replicas serving or starting or draining) at each change."""

    def start(self, sim: Simulation) -> None:
        self.tracker = DemandTracker(window_s=sim.config.window_s)
        self.targets = {
            m.model_id: ModelTargets(
                model_id=m.model_id, size=m.footprint, concurrency=self.concurrency
            )
            for m in sim.models
        }
        if self.autoscale is not None:
            low, high = self.autoscale
            high = min(high, len(sim.replicas))
            self.scaler = ReplicaScaler(
                bounds=(low, high),
                capacity=sim.config.gpu_memory_gb,
                concurrency=self.concurrency,
                utilisation=self.utilisation,
                cooldown_ticks=self.cooldown_ticks,
            )
            for replica in sim.replicas[low:]:
                replica.view.accepting = False
            self.replica_counts.append((sim.now, low))

    def _in_use(self, sim: Simulation) -> int:
        serving = sum(1 for r in sim.replicas if r.view.accepting)
        return serving + len(self._starting) + len(self._draining)

    def _scale(self, sim: Simulation, scaler: ReplicaScaler) -> None:
        before = self._in_use(sim)
        for index, ready in list(self._starting.items()):
            if sim.now >= ready:
                sim.replicas[index].view.accepting = True
                del self._starting[index]
        for index in list(self._draining):
            replica = sim.replicas[index]
            if replica.view.queue == 0:
                for model_id in list(replica.view.resident) + list(replica.view.loading):
                    replica.view.resident.pop(model_id, None)
                    replica.view.loading.pop(model_id, None)
                self._draining.discard(index)
        step = scaler.step(
            sim.cluster, self.tracker.live(sim.now), self.targets, adding=len(self._starting)
        )
        if step.add:
            idle = [
                r.index
                for r in sim.replicas
                if not r.view.accepting
                and r.index not in self._starting
                and r.index not in self._draining
            ]
            if idle:
                self._starting[idle[0]] = sim.now + self.replica_start_s
        if step.drain is not None:
            replica = sim.index[step.drain]
            replica.view.accepting = False
            self._draining.add(replica.index)
        for copy in step.copies:
            sim.load(sim.index[copy.replica_id], copy.model_id)
        if self._in_use(sim) != before:
            self.replica_counts.append((sim.now, self._in_use(sim)))

    def route(self, sim: Simulation, request: Request) -> bool:
        model_id = sim.models[request.model].model_id
        if request.replica == -1:
            self.tracker.arrived(model_id, sim.now)
            request.replica = -2  # counted once, however often it is routed again
        route = self.router.route(
            model_id,
            sim.cluster,
            self.tracker.live(sim.now),
            self.targets,
            self.manager.keep,
            waited_s=sim.now - request.arrive,
        )
        if route is None:
            return False
        replica = sim.index[route.replica_id]
        delay = sum(sim.evict(replica, victim) for victim in route.evict)
        if route.tier >= Tier.PARKED:
            sim.load(replica, model_id, delay)
        sim.enqueue(replica, request)
        return True

    def finished(self, model_id: str, latency: float) -> None:
        self.tracker.finished(model_id, latency)

    def tick(self, sim: Simulation) -> None:
        plan = self.manager.plan(sim.cluster, self.tracker.live(sim.now), self.targets)
        for eviction in plan.evictions:
            sim.evict(sim.index[eviction.replica_id], eviction.model_id)
        for load in plan.loads:
            sim.load(sim.index[load.replica_id], load.model_id)
        for warm in plan.standby:
            sim.load(sim.index[warm.replica_id], warm.model_id, standby=True)
        if self.scaler is not None:
            self._scale(sim, self.scaler)


class ServeMultiplexPolicy:
    """Serve's multiplexing with LRU per replica (see the module docstring)."""

    name = "serve-multiplex"

    def __init__(self, max_models: int = 3, seed: int = 7) -> None:
        self.max_models = max_models
        self.rng = np.random.default_rng(seed)

    def start(self, sim: Simulation) -> None:
        return

    def tick(self, sim: Simulation) -> None:
        return

    def _two(self, sim: Simulation, replicas: list[SimReplica]) -> SimReplica:
        if len(replicas) == 1:
            return replicas[0]
        a, b = self.rng.choice(len(replicas), size=2, replace=False)
        return min(replicas[a], replicas[b], key=lambda r: r.view.queue)

    def _room(self, sim: Simulation, replica: SimReplica, model_id: str) -> list[str] | None:
        """LRU victims so that ``model_id`` fits (count and memory); None: in use, cannot."""
        view = replica.view
        size = sim.models[sim.by_id[model_id]].footprint
        if size > view.capacity:
            return None
        held = sorted(view.resident, key=lambda m: view.last_used.get(m, -1.0))
        count, free, chosen = len(view.resident) + len(view.loading), view.free, []
        for victim in held:
            if count < self.max_models and free >= size:
                break
            if view.model_queue.get(victim):
                continue  # requests still on it: its close waits for them
            chosen.append(victim)
            count -= 1
            free += view.resident[victim]
        return chosen if count < self.max_models and free >= size else None

    def route(self, sim: Simulation, request: Request) -> bool:
        model_id = sim.models[request.model].model_id
        slots = sim.config.slots
        holding = [r for r in sim.replicas if r.view.holds(model_id)]
        free = [r for r in holding if r.view.queue < slots]
        if free:
            sim.enqueue(self._two(sim, free), request)
            return True
        candidates = [r for r in sim.replicas if not r.view.holds(model_id)]
        open_ = [r for r in candidates if r.view.queue < slots] or candidates
        if not open_:
            sim.enqueue(self._two(sim, holding), request)
            return True
        order = [self._two(sim, open_)] + list(self.rng.permutation(open_))  # type: ignore[arg-type]
        for replica in order:
            victims = self._room(sim, replica, model_id)
            if victims is None:
                continue
            delay = sum(sim.evict(replica, v) for v in victims)
            sim.load(replica, model_id, delay)
            sim.enqueue(replica, request)
            return True
        if holding:
            sim.enqueue(self._two(sim, holding), request)
            return True
        return False


class StaticPolicy:
    """Each model pinned to GPUs by its expected rate (see the module docstring)."""

    name = "static"

    def __init__(self, rate_per_min: float) -> None:
        self.rate_per_min = rate_per_min
        self.copies: dict[str, list[SimReplica]] = {}

    def start(self, sim: Simulation) -> None:
        rates = expected_rates(sim.models, self.rate_per_min)
        room = sum(r.view.capacity for r in sim.replicas)
        total = len(sim.models)
        while total < len(sim.models) * len(sim.replicas):  # the most copies memory may allow
            counts = copies_for(rates, total + 1)
            need = sum(c * m.footprint for c, m in zip(counts, sim.models, strict=True))
            if need > room * 0.95:
                break
            total += 1
        counts = copies_for(rates, total)
        load = {r.index: 0.0 for r in sim.replicas}
        items = sorted(
            ((m, c) for m, c in zip(sim.models, counts, strict=True)),
            key=lambda mc: -mc[0].footprint,
        )
        for model, count in items:
            placed: list[SimReplica] = []
            per_copy = rates[sim.by_id[model.model_id]] / count
            for _ in range(count):
                fits = [
                    r for r in sim.replicas if r.view.free >= model.footprint and r not in placed
                ]
                if not fits:
                    break
                best = min(fits, key=lambda r: (load[r.index], -r.view.free))
                best.view.resident[model.model_id] = model.footprint
                sim.cluster.disk.setdefault(best.view.node_id, set()).add(model.model_id)
                load[best.index] += per_copy
                placed.append(best)
            if not placed:
                raise ValueError(f"static partitioning cannot place {model.model_id}")
            self.copies[model.model_id] = placed

    def tick(self, sim: Simulation) -> None:
        return

    def route(self, sim: Simulation, request: Request) -> bool:
        copies = self.copies[sim.models[request.model].model_id]
        sim.enqueue(min(copies, key=lambda r: r.view.queue), request)
        return True
