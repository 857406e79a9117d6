"""The serving simulator's event loop: GPUs as replicas, models loaded by tier, requests served.

Each replica is one GPU with ``gpu_memory_gb`` for loaded engines (weights + KV cache, see
:func:`serving.sim.workload.footprint_gb`) and ``slots`` requests at once across them; a node of
``gpus_per_node`` GPUs has one disk cache (never full here: a node disk holds all 64 models) and
``park_gb_per_gpu`` of host memory per GPU for parked engines (least recently parked dropped
first). Loads of different models on one replica run at the same time; a request waits on its
replica until its model is loaded and a slot is free. A policy (:mod:`serving.sim.policies`)
decides where each request goes and which models load or leave; the state it sees is the same
:class:`~serving.policy.ClusterView` the real router sees.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel, Field

from serving.policy import ClusterView, ReplicaView, Tier
from serving.sim.costs import Costs
from serving.sim.workload import SimModel, Trace


class SimConfig(BaseModel):
    """The simulated cluster and the measurement.

    Attributes:
        gpus: GPUs (one replica each).
        gpus_per_node: GPUs sharing a node's disk cache.
        gpu_memory_gb: memory for engines per GPU (141 GB H200 at 90 %).
        park_gb_per_gpu: host memory for parked engines per GPU.
        slots: requests one GPU runs at once (Serve's ``max_ongoing_requests``).
        tick_s: period of the replica manager.
        window_s: demand window ("recent traffic").
        warmup_s: arrivals before this are served but not measured.
        ttft_target_s: the p99 time to first token (queueing plus model switch: what a policy
            changes; generation time is the model's own) a sustained rate must stay under.
        staged: every node's disk cache starts with every model's weights (the node caches fill
            once at deploy: 1.8 TB per node for the 64-model mix), so no policy pays the object
            storage fetch; False: disks start empty.
    """

    gpus: int = Field(default=32, ge=1)
    gpus_per_node: int = Field(default=8, ge=1)
    gpu_memory_gb: float = Field(default=141 * 0.9, gt=0)
    park_gb_per_gpu: float = Field(default=200.0, ge=0)
    slots: int = Field(default=32, ge=1)
    tick_s: float = Field(default=1.0, gt=0)
    window_s: float = Field(default=60.0, gt=0)
    warmup_s: float = Field(default=300.0, ge=0)
    ttft_target_s: float = Field(default=10.0, gt=0)
    staged: bool = True


class SimResult(BaseModel):
    """What one run measured (arrivals after the warm-up only)."""

    policy: str
    rate_per_min: float
    requests: int
    finished: int
    ttft_p50_s: float = Field(description="arrival to first token (queue + switch), median")
    ttft_p99_s: float
    latency_p50_s: float = Field(description="arrival to last token")
    latency_p99_s: float
    goodput_ok: bool = Field(description="p99 TTFT under the target and every request finished")
    switches_per_min: float
    switches_by_tier: dict[str, int]
    gpu_switch_s_per_min: float = Field(description="GPU-seconds spent loading/waking/parking")
    wall_s: float


@dataclass
class Request:
    """One request in the simulator."""

    model: int
    arrive: float
    tokens: int
    replica: int = -1
    start: float = -1.0


@dataclass
class SimReplica:
    """One GPU: the policy's view of it plus what only the simulator tracks."""

    view: ReplicaView
    index: int
    running: int = 0
    waiting: list[Request] = field(default_factory=list)
    parked: OrderedDict[str, float] = field(default_factory=OrderedDict)


class Policy(Protocol):
    """How a simulated deployment decides (see :mod:`serving.sim.policies`)."""

    name: str

    def start(self, sim: Simulation) -> None:
        """Sets the initial state."""

    def route(self, sim: Simulation, request: Request) -> bool:
        """Sends ``request`` to a replica (``sim.enqueue``); False: it waits and is retried."""

    def tick(self, sim: Simulation) -> None:
        """Runs every ``tick_s``."""


class Simulation:
    """One run of a policy on a trace (see the module docstring)."""

    def __init__(
        self, models: list[SimModel], config: SimConfig, costs: Costs, policy: Policy
    ) -> None:
        self.models = models
        self.by_id = {m.model_id: i for i, m in enumerate(models)}
        self.config = config
        self.costs = costs
        self.policy = policy
        self.now = 0.0
        self.replicas = [
            SimReplica(
                ReplicaView(
                    replica_id=f"gpu{i:03d}",
                    node_id=f"node{i // config.gpus_per_node:02d}",
                    capacity=config.gpu_memory_gb,
                    slots=config.slots,
                ),
                i,
            )
            for i in range(config.gpus)
        ]
        self.index = {r.view.replica_id: r for r in self.replicas}
        self.cluster = ClusterView(replicas=[r.view for r in self.replicas], disk={})
        self.fetch_ready: dict[tuple[str, str], float] = {}  # (node, model) -> on disk at
        self.pending: list[Request] = []
        self._events: list[tuple[float, int, str, Any]] = []
        self._seq = itertools.count()
        self.latencies: list[float] = []
        self.waits: list[float] = []
        self.measured = 0
        self.switches: dict[str, int] = {t.label: 0 for t in (Tier.PARKED, Tier.DISK, Tier.REMOTE)}
        self.switch_seconds = 0.0
        self._loading: set[tuple[int, str]] = set()
        self._standby: set[tuple[int, str]] = set()

    # ------------------------------------------------------------------ events
    def at(self, when: float, kind: str, payload: Any) -> None:
        """Schedules an event."""
        heapq.heappush(self._events, (when, next(self._seq), kind, payload))

    def run(self, trace: Trace) -> SimResult:
        """Replays ``trace`` and returns the measurements."""
        started = time.perf_counter()
        if self.config.staged:
            everything = {m.model_id for m in self.models}
            for replica in self.replicas:
                self.cluster.disk[replica.view.node_id] = set(everything)
        for replica in self.replicas:
            self._park_room(replica)
        self.policy.start(self)
        for t, model, tokens in zip(trace.times, trace.models, trace.tokens, strict=True):
            self.at(t, "arrive", Request(model, t, tokens))
        tick = 0.0
        while tick <= trace.horizon:
            self.at(tick, "tick", None)
            tick += self.config.tick_s
        while self._events or self.pending:
            if not self._events:  # past the horizon with requests still waiting: keep ticking
                if self.now > trace.horizon + 3600:
                    break  # they stay unfinished (counted as such)
                self.at(self.now + self.config.tick_s, "tick", None)
            self.now, _, kind, payload = heapq.heappop(self._events)
            if kind == "arrive":
                if payload.arrive >= self.config.warmup_s:
                    self.measured += 1
                if not self.policy.route(self, payload):
                    self.pending.append(payload)
            elif kind == "finish":
                self._finish(*payload)
            elif kind == "loaded":
                self._loaded(*payload)
            else:
                self.policy.tick(self)
                self._retry()
        return self._result(trace, time.perf_counter() - started)

    def _retry(self) -> None:
        if not self.pending:
            return
        waiting, self.pending = self.pending, []
        stuck: set[int] = set()  # models whose oldest waiting request found no replica
        for request in waiting:
            if request.model in stuck or not self.policy.route(self, request):
                stuck.add(request.model)
                self.pending.append(request)

    # ------------------------------------------------------------------ actions
    def enqueue(self, replica: SimReplica, request: Request) -> None:
        """Queues ``request`` on ``replica``; it starts once its model is loaded and a slot frees."""
        view, model_id = replica.view, self.models[request.model].model_id
        request.replica = replica.index
        view.queue += 1
        view.model_queue[model_id] = view.model_queue.get(model_id, 0) + 1
        view.last_used[model_id] = self.now
        replica.waiting.append(request)
        self._pump(replica)

    def evict(self, replica: SimReplica, model_id: str) -> float:
        """Removes ``model_id`` from ``replica`` (parked if host memory allows); returns the park time."""
        view = replica.view
        view.resident.pop(model_id, None)
        view.loading.pop(model_id, None)
        model = self.models[self.by_id[model_id]]
        nbytes = model.weight_bytes / 1e9
        if nbytes > self.config.park_gb_per_gpu:
            return 0.0
        while (
            replica.parked and sum(replica.parked.values()) + nbytes > self.config.park_gb_per_gpu
        ):
            old, _ = replica.parked.popitem(last=False)
            view.parked.discard(old)
            self._park_room(replica)
        replica.parked[model_id] = nbytes
        view.parked.add(model_id)
        self._park_room(replica)
        seconds = self.costs.park_s(model.weight_bytes)
        if self.now >= self.config.warmup_s:
            self.switch_seconds += seconds
        return seconds

    def _park_room(self, replica: SimReplica) -> None:
        replica.view.park_room = self.config.park_gb_per_gpu - sum(replica.parked.values())

    def load(
        self, replica: SimReplica, model_id: str, delay: float = 0.0, standby: bool = False
    ) -> None:
        """Starts loading ``model_id`` on ``replica`` from the best tier it has (after ``delay``);
        ``standby``: park it as soon as it is loaded (a warm copy for later)."""
        view = replica.view
        if standby:
            view.parked.discard(model_id)  # the plan marked it parked ahead of the load
            self._standby.add((replica.index, model_id))
        if model_id in view.resident:
            return
        model = self.models[self.by_id[model_id]]
        if (replica.index, model_id) in self._loading:
            return
        if model_id in view.parked:
            tier = Tier.PARKED
        elif model_id in self.cluster.disk_of(view):
            tier = Tier.DISK
        else:
            tier = Tier.REMOTE
        if tier == Tier.PARKED:
            seconds = self.costs.wake_s(model.weight_bytes)
            replica.parked.pop(model_id, None)
            view.parked.discard(model_id)
            self._park_room(replica)
        else:
            seconds = self.costs.disk_load_s(model.weight_bytes)
            if tier == Tier.REMOTE:
                key = (view.node_id, model_id)
                ready = self.fetch_ready.get(key)
                if ready is None:
                    ready = self.now + delay + self.costs.fetch_s(model.weight_bytes)
                    self.fetch_ready[key] = ready
                seconds += max(0.0, ready - self.now - delay)
        view.loading[model_id] = model.footprint
        self._loading.add((replica.index, model_id))
        if self.now >= self.config.warmup_s:
            self.switches[tier.label] += 1
            self.switch_seconds += seconds
        self.at(self.now + delay + seconds, "loaded", (replica.index, model_id))

    def _loaded(self, index: int, model_id: str) -> None:
        replica = self.replicas[index]
        self._loading.discard((index, model_id))
        view = replica.view
        size = view.loading.pop(model_id, None)
        if size is None:
            return  # evicted while loading
        view.resident[model_id] = size
        self.cluster.disk.setdefault(view.node_id, set()).add(model_id)
        if (index, model_id) in self._standby:
            self._standby.discard((index, model_id))
            alone = sum(1 for r in self.replicas if model_id in r.view.resident) <= 1
            if not view.model_queue.get(model_id) and not alone:
                self.evict(replica, model_id)  # parked: the warm copy it was loaded to be
        self._pump(replica)
        self._retry()

    def _pump(self, replica: SimReplica) -> None:
        view = replica.view
        if replica.running >= self.config.slots or not replica.waiting:
            return
        still: list[Request] = []
        for request in replica.waiting:
            model = self.models[request.model]
            if replica.running < self.config.slots and model.model_id in view.resident:
                busy = replica.running / self.config.slots
                replica.running += 1
                request.start = self.now
                service = self.costs.service_s(model.weight_bytes, request.tokens, busy)
                self.at(self.now + service, "finish", (replica.index, request))
            else:
                still.append(request)
        replica.waiting = still

    def _finish(self, index: int, request: Request) -> None:
        replica = self.replicas[index]
        view, model_id = replica.view, self.models[request.model].model_id
        replica.running -= 1
        view.queue -= 1
        left = view.model_queue.get(model_id, 0) - 1
        if left > 0:
            view.model_queue[model_id] = left
        else:
            view.model_queue.pop(model_id, None)
        latency = self.now - request.arrive
        self.policy_finished(model_id, latency)
        if request.arrive >= self.config.warmup_s:
            self.latencies.append(latency)
            self.waits.append(request.start - request.arrive)
        self._pump(replica)
        if self.pending:
            self._retry()

    def policy_finished(self, model_id: str, latency: float) -> None:
        """Tells the policy a request ended (its demand tracker, if it has one)."""
        finished = getattr(self.policy, "finished", None)
        if finished is not None:
            finished(model_id, latency)

    # ------------------------------------------------------------------ result
    def _result(self, trace: Trace, wall: float) -> SimResult:
        minutes = max(trace.horizon - self.config.warmup_s, 1e-9) / 60.0
        unfinished = self.measured - len(self.latencies)

        def pct(values: list[float], q: float) -> float:
            data = np.concatenate([np.array(values, dtype=float), np.full(unfinished, math.inf)])
            return round(float(np.percentile(data, q)), 3) if len(data) else 0.0

        ttft_p99 = pct(self.waits, 99)
        return SimResult(
            policy=self.policy.name,
            rate_per_min=round(self.measured / minutes, 1),
            requests=self.measured,
            finished=len(self.latencies),
            ttft_p50_s=pct(self.waits, 50),
            ttft_p99_s=ttft_p99,
            latency_p50_s=pct(self.latencies, 50),
            latency_p99_s=pct(self.latencies, 99),
            goodput_ok=unfinished == 0 and ttft_p99 <= self.config.ttft_target_s,
            switches_per_min=round(sum(self.switches.values()) / minutes, 2),
            switches_by_tier=dict(self.switches),
            gpu_switch_s_per_min=round(self.switch_seconds / minutes, 2),
            wall_s=round(wall, 2),
        )
