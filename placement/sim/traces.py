"""Synthetic workload traces.

* :func:`globus_trace`: shaped like the Globus Compute dataset (Bauer et al. 2024): per-endpoint
  arrival rate median 179 req/h, mean 404 req/h; argument size median 62 B, mean 17 KB, max 10 MB;
  execution time median 0.03 s, mean 49 s (heavy tailed); users use 1 to 29 endpoints. Each is a
  log-normal fitted to its median and mean (``sigma^2 = 2 ln(mean/median)``).
* :func:`stateful_trace`: long-lived stateful agents with 10 MB-10 GB checkpoints (log-uniform),
  some needing GPUs, running in sessions; between sessions the checkpoint stays warm on the node the
  agent last ran on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from placement.demand import Demand
from placement.inventory import ItemKind


def _lognormal(rng: np.random.Generator, median: float, mean: float, size: int) -> np.ndarray:
    sigma = math.sqrt(2.0 * math.log(mean / median))
    return rng.lognormal(math.log(median), sigma, size)


def node_id(i: int) -> str:
    """Simulated node id of row ``i`` (matches :func:`placement.sim.cluster.build_cluster`)."""
    return f"n{i:05d}"


@dataclass
class Activation:
    """One thing to place: arrives at ``arrive`` (or ``gap`` s after its predecessor finishes)."""

    demand: Demand
    arrive: float
    duration: float
    arg_bytes: int = 0
    checkpoint_bytes: int = 0
    gap: float = 0.0
    then: Activation | None = None


@dataclass
class Trace:
    """A workload: first activations, the bytes of every key, and where keys are at the start."""

    name: str
    activations: list[Activation]
    key_bytes: dict[str, int]
    initial: list[tuple[str, str, int, ItemKind]] = field(
        default_factory=list
    )  # node, key, bytes, kind
    horizon: float = 0.0  # end of the measurement window (s)

    def count(self) -> int:
        """Number of activations, chained sessions included."""
        total = 0
        for act in self.activations:
            a: Activation | None = act
            while a is not None:
                total += 1
                a = a.then
        return total


def globus_trace(
    nodes: int,
    endpoints: int = 100,
    window_s: float = 300.0,
    gpu_endpoint_fraction: float = 0.05,
    data_probability: float = 0.5,
    seed: int = 1,
) -> Trace:
    """Function invocations shaped like Globus Compute (see module docstring).

    Each user (1 to 29 endpoints, most few) has a data set (probability ``data_probability``,
    log-normal size median 200 MB, clipped to 1 MB-20 GB) cached on one random node at the start;
    its endpoints' tasks read it. Tasks need 1 CPU; a ``gpu_endpoint_fraction`` of endpoints need a GPU.
    """
    rng = np.random.default_rng(seed)
    key_bytes: dict[str, int] = {}
    initial: list[tuple[str, str, int, ItemKind]] = []
    owners: list[str | None] = []  # endpoint -> data key
    user = 0
    while len(owners) < endpoints:
        n_ep = int(min(29, rng.geometric(0.35)))
        key: str | None = None
        if rng.random() < data_probability:
            key = f"s3://globus/user-{user}/inputs"
            size = int(np.clip(_lognormal(rng, 200e6, 600e6, 1)[0], 1e6, 20e9))
            key_bytes[key] = size
            initial.append((node_id(int(rng.integers(nodes))), key, size, ItemKind.DATA))
        owners.extend([key] * n_ep)
        user += 1
    owners = owners[:endpoints]
    rates = _lognormal(rng, 179.0, 404.0, endpoints) / 3600.0  # per second
    acts: list[Activation] = []
    for rate, key in zip(rates, owners, strict=True):
        n = int(rng.poisson(rate * window_s))
        if n == 0:
            continue
        times = np.sort(rng.uniform(0, window_s, n))
        durations = np.clip(_lognormal(rng, 0.03, 49.0, n), 0.001, 3600.0)
        args = np.clip(_lognormal(rng, 62.0, 17e3, n), 1, 10e6).astype(int)
        gpu = rng.random() < gpu_endpoint_fraction
        for t, d, a in zip(times, durations, args, strict=True):
            demand = Demand(
                name=f"g{len(acts)}", cpus=1, gpus=1 if gpu else 0, data_uris=(key,) if key else ()
            )
            acts.append(
                Activation(demand=demand, arrive=float(t), duration=float(d), arg_bytes=int(a))
            )
    acts.sort(key=lambda a: a.arrive)
    return Trace("globus", acts, key_bytes, initial, horizon=window_s)


def stateful_trace(
    nodes: int,
    gpu_rows: list[int],
    agents: int = 1500,
    sessions: int = 2,
    window_s: float = 3600.0,
    gpu_fraction: float = 0.25,
    gpu_types: tuple[str, ...] = ("A100", "H100"),
    seed: int = 2,
) -> Trace:
    """Long-lived stateful agents, each running ``sessions`` sessions.

    Agent: checkpoint log-uniform 10 MB-10 GB, warm at the start on the node it last ran on (a GPU
    node for a GPU agent); 1, 2 or 4 CPUs; a ``gpu_fraction`` need 1 or 2 GPUs (half of them a given
    type); half read a shared data set (log-uniform 100 MB-20 GB, pool of ``agents/10``, each cached
    on one node). First session starts uniformly in the first half of ``window_s``; sessions last
    exponential(mean 1,800 s) with exponential(mean 1,200 s) gaps between them.
    """
    rng = np.random.default_rng(seed)
    key_bytes: dict[str, int] = {}
    initial: list[tuple[str, str, int, ItemKind]] = []
    pool = max(1, agents // 10)
    datasets = []
    for d in range(pool):
        key = f"s3://stateful/dataset-{d}"
        size = int(math.exp(rng.uniform(math.log(100e6), math.log(20e9))))
        key_bytes[key] = size
        datasets.append(key)
        initial.append((node_id(int(rng.integers(nodes))), key, size, ItemKind.DATA))
    acts: list[Activation] = []
    for a in range(agents):
        ckpt_key = f"ckpt:agent-{a}"
        ckpt = int(math.exp(rng.uniform(math.log(10e6), math.log(10e9))))
        key_bytes[ckpt_key] = ckpt
        needs_gpu = rng.random() < gpu_fraction and bool(gpu_rows)
        gpus = float(rng.choice([1, 2], p=[0.7, 0.3])) if needs_gpu else 0.0
        gtype = (
            str(rng.choice(gpu_types)) if needs_gpu and gpu_types and rng.random() < 0.5 else None
        )
        if needs_gpu:
            candidates = gpu_rows
            if gtype is not None:
                candidates = [
                    r for k, r in enumerate(gpu_rows) if gpu_types[k % len(gpu_types)] == gtype
                ]
            home = int(rng.choice(candidates))
        else:
            home = int(rng.integers(nodes))
        initial.append((node_id(home), ckpt_key, ckpt, ItemKind.CHECKPOINT))
        data = (datasets[int(rng.integers(pool))],) if rng.random() < 0.5 else ()
        demand = Demand(
            name=f"agent-{a}",
            cpus=float(rng.choice([1, 2, 4])),
            gpus=gpus,
            gpu_type=gtype,
            memory_bytes=int(4e9),
            data_uris=data,
            checkpoint_key=ckpt_key,
        )
        head: Activation | None = None
        for s in reversed(range(sessions)):
            head = Activation(
                demand=demand,
                arrive=float(rng.uniform(0, window_s / 2)) if s == 0 else 0.0,
                duration=float(rng.exponential(1800.0)),
                checkpoint_bytes=ckpt,
                gap=float(rng.exponential(1200.0)) if s > 0 else 0.0,
                then=head,
            )
        assert head is not None
        acts.append(head)
    acts.sort(key=lambda a: a.arrive)
    return Trace("stateful", acts, key_bytes, initial, horizon=window_s)


def model_replica_trace(
    gpu_rows: list[int],
    replicas: int = 400,
    models: int = 40,
    window_s: float = 3600.0,
    sizes: tuple[int, ...] = (1, 2, 4, 8),
    seed: int = 3,
) -> Trace:
    """Model replicas, tensor-parallel ones among them: N one-GPU bundles on one node each.

    ``models`` models, each with a tensor-parallel size from ``sizes`` (uniform) and weights of
    20 GB per GPU (a 70 B model in 16 bits over 8 GPUs is about that), cached at the start on
    one or two GPU nodes. Replicas of uniformly chosen models arrive uniformly over the first
    half of ``window_s`` and run exponential(mean 1,800 s); each needs 1 CPU and its size in GPUs.
    """
    rng = np.random.default_rng(seed)
    key_bytes: dict[str, int] = {}
    initial: list[tuple[str, str, int, ItemKind]] = []
    shapes: list[tuple[str, int]] = []
    for m in range(models):
        key, tp = f"model-{m}", int(rng.choice(sizes))
        key_bytes[key] = int(20e9) * tp
        shapes.append((key, tp))
        for row in rng.choice(gpu_rows, size=min(len(gpu_rows), 1 + m % 2), replace=False):
            initial.append((node_id(int(row)), key, key_bytes[key], ItemKind.MODEL))
    acts = []
    for r in range(replicas):
        key, tp = shapes[int(rng.integers(models))]
        demand = Demand(name=f"replica-{r}", cpus=1, gpus=tp, gpu_bundles=tp, model_ids=(key,))
        acts.append(
            Activation(
                demand=demand,
                arrive=float(rng.uniform(0, window_s / 2)),
                duration=float(rng.exponential(1800.0)),
            )
        )
    acts.sort(key=lambda a: a.arrive)
    return Trace("model-replicas", acts, key_bytes, initial, horizon=window_s)
