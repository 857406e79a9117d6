"""The discrete-event loop: arrivals, placement through a policy, staging, completion, queueing."""

from __future__ import annotations

import heapq
import time
from collections import deque

import numpy as np
from pydantic import BaseModel

from placement.core import choose, note_placed
from placement.errors import InfeasibleDemandError, NoCapacityError
from placement.inventory import Inventory, ItemKind
from placement.policy import Policy
from placement.sim.traces import Activation, Trace
from placement.table import NodeTable

_EPS = 1e-9
RETRY_WINDOW = 64  # queued demands examined per completion


class Metrics(BaseModel):
    """Results of one simulated run.

    Attributes:
        bytes_moved: Bytes staged onto nodes (arguments, data sets and checkpoints not already local).
        start_delay_*: Arrival to start of execution (queueing + staging), seconds.
        gpu_utilisation: Busy GPU-seconds / total GPU-seconds over the trace's window (background
            load included).
        misplaced_gpu: GPU demands placed on a node without enough free GPUs of the asked type
            (should be 0 for every policy: the feasibility filter is shared).
        gpu_blocked_by_cpu: GPU demands that had to queue while some node had the free GPUs it
            needed but not the CPUs/memory (taken by other work).
        cpu_on_gpu_nodes: CPU-only placements on GPU nodes.
        decision_ms_*: Wall time of each successful policy decision (feasibility + scoring).
    """

    policy: str
    trace: str
    nodes: int
    activations: int
    placed: int
    infeasible: int
    bytes_moved: int
    start_delay_median_s: float
    start_delay_mean_s: float
    start_delay_p99_s: float
    gpu_utilisation: float
    gpu_demands: int
    misplaced_gpu: int
    gpu_blocked_by_cpu: int
    cpu_on_gpu_nodes: int
    max_queue: int
    decision_ms_median: float
    decision_ms_p99: float
    sim_wall_s: float


def simulate(
    table: NodeTable, trace: Trace, policy: Policy, bandwidth_bytes_per_s: float = 1.25e9
) -> Metrics:
    """Runs ``trace`` on ``table`` (mutated) with ``policy``; returns the metrics.

    Staging is serialised per node link: a placement's missing bytes arrive after
    ``max(now, link free) + bytes / bandwidth``. Data sets staged to a node stay cached there (no
    eviction); a checkpoint moves to the node where its agent last ran.
    """
    wall0 = time.perf_counter()
    inv = Inventory()
    for node, key, nbytes, item_kind in trace.initial:
        inv.record(node, key, nbytes, item_kind)
    n = len(table)
    link_free = np.zeros(n)
    gpu_total = float(table.gpu_total[:n].sum())
    gpu_busy = float((table.gpu_total[:n] - table.gpu_free[:n]).sum())
    gpu_area = 0.0
    last_t = 0.0
    horizon = trace.horizon

    events: list[
        tuple[float, int, int, Activation, int]
    ] = []  # t, seq, kind(0 finish,1 arrive), act, row
    seq = 0
    for act in trace.activations:
        events.append((act.arrive, seq, 1, act, -1))
        seq += 1
    heapq.heapify(events)
    queue: deque[tuple[Activation, float]] = deque()
    delays: list[float] = []
    latencies: list[float] = []
    blocked_ids: set[int] = set()
    bytes_moved = 0
    placed = infeasible = misplaced = cpu_on_gpu = gpu_demands = max_queue = 0
    total = trace.count()

    def try_place(act: Activation, arrived: float, now: float) -> bool:
        nonlocal seq, bytes_moved, placed, infeasible, misplaced, cpu_on_gpu, gpu_busy
        d = act.demand
        t0 = time.perf_counter()
        try:
            ranked = choose(d, table, inv, policy, k=1)
        except NoCapacityError:
            if d.gpus > 0:
                has = table.alive[:n] & (table.gpu_free[:n] + _EPS >= d.gpus)
                if d.gpu_type is not None:
                    has &= table.gpu_type[:n] == table.gpu_type_codes.get(d.gpu_type, -2)
                if has.any():
                    blocked_ids.add(id(act))
            return False
        except InfeasibleDemandError:
            infeasible += 1
            return True
        latencies.append(time.perf_counter() - t0)
        row = table.index[ranked[0].node_id]
        if d.gpus > 0:
            code = table.gpu_type_codes.get(d.gpu_type, -2) if d.gpu_type else None
            if table.gpu_free[row] + _EPS < d.gpus or (
                code is not None and table.gpu_type[row] != code
            ):
                misplaced += 1
        elif table.gpu_total[row] > 0:
            cpu_on_gpu += 1
        table.allocate(row, d)
        gpu_busy += d.gpus
        missing = act.arg_bytes
        node = table.ids[row]
        for key in d.locality_keys():
            size = trace.key_bytes.get(key, 0)
            have = inv.local_bytes(node, (key,))
            missing += max(0, size - have)
            if key not in (d.checkpoint_key,) and have < size:
                inv.record(node, key, size, ItemKind.DATA)
        note_placed(inv, d, node, act.checkpoint_bytes or None)
        start = max(now, link_free[row]) + missing / bandwidth_bytes_per_s if missing else now
        if missing:
            link_free[row] = start
        bytes_moved += missing
        delays.append(start - arrived)
        placed += 1
        heapq.heappush(events, (start + act.duration, seq, 0, act, row))
        seq += 1
        return True

    while events:
        t, _, kind, act, row = heapq.heappop(events)
        if t > last_t:
            if last_t < horizon:
                gpu_area += gpu_busy * (min(t, horizon) - last_t)
            last_t = t
        if kind == 1:
            if not try_place(act, t, t):
                queue.append((act, t))
                max_queue = max(max_queue, len(queue))
            continue
        d = act.demand
        table.release(row, d)
        gpu_busy -= d.gpus
        if d.gpus > 0:
            gpu_demands += 1
        if act.then is not None:
            nxt = act.then
            heapq.heappush(events, (t + nxt.gap, seq, 1, nxt, -1))
            seq += 1
        # Retry queued work that could use what was just freed: like Ray's per-shape queues, a
        # waiting demand does not block others of another shape. Scan a bounded window, oldest first.
        if queue:
            kept: deque[tuple[Activation, float]] = deque()
            scanned = 0
            while queue and scanned < RETRY_WINDOW:
                qa, arrived = queue.popleft()
                scanned += 1
                qd = qa.demand
                if (
                    table.cpu_free[row] + _EPS >= qd.cpus
                    and table.gpu_free[row] + _EPS >= qd.gpus
                    and table.mem_free[row] + _EPS >= qd.memory_bytes
                    and try_place(qa, arrived, t)
                ):
                    continue
                kept.append((qa, arrived))
            kept.extend(queue)
            queue = kept
    if last_t < horizon:
        gpu_area += gpu_busy * (horizon - last_t)
    lat = np.array(latencies) * 1e3 if latencies else np.zeros(1)
    dl = np.array(delays) if delays else np.zeros(1)
    return Metrics(
        policy=policy.name,
        trace=trace.name,
        nodes=n,
        activations=total,
        placed=placed,
        infeasible=infeasible,
        bytes_moved=int(bytes_moved),
        start_delay_median_s=float(np.median(dl)),
        start_delay_mean_s=float(dl.mean()),
        start_delay_p99_s=float(np.percentile(dl, 99)),
        gpu_utilisation=float(gpu_area / (gpu_total * horizon)) if gpu_total and horizon else 0.0,
        gpu_demands=gpu_demands,
        misplaced_gpu=misplaced,
        gpu_blocked_by_cpu=len(blocked_ids),
        cpu_on_gpu_nodes=cpu_on_gpu,
        max_queue=max_queue,
        decision_ms_median=float(np.median(lat)),
        decision_ms_p99=float(np.percentile(lat, 99)),
        sim_wall_s=time.perf_counter() - wall0,
    )
