"""Placement policies: score the nodes that can fit a demand now, best first.

A :class:`Policy` sees a :class:`~placement.table.NodeTable` (numpy columns) and the
:class:`~placement.inventory.Inventory`, and returns up to ``k`` :class:`Candidate` s. The same
classes drive the real :class:`~placement.scheduler.Scheduler` and the simulator.

Policies never check whether a demand could *ever* fit (the scheduler does that first, see
:meth:`NodeTable.why_infeasible`); an empty ranking means "nothing fits right now".
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from placement.demand import Demand
from placement.inventory import Inventory
from placement.table import NodeTable


class Candidate(BaseModel):
    """One scored node: higher ``score`` is better; ``terms`` add up to ``score``."""

    model_config = ConfigDict(frozen=True)

    node_id: str
    score: float
    terms: dict[str, float] = Field(default_factory=dict)
    local_bytes: int = 0
    missing_bytes: int = 0


@runtime_checkable
class Policy(Protocol):
    """Chooses among the nodes that fit a demand now."""

    name: str

    def rank(
        self, demand: Demand, table: NodeTable, inventory: Inventory, k: int = 3
    ) -> list[Candidate]:
        """Returns up to ``k`` candidates, best first; ``[]`` when no live node fits now."""
        ...


def _utilisation_after(
    demand: Demand, table: NodeTable, rows: np.ndarray | None = None
) -> np.ndarray:
    """Critical-resource utilisation (max over CPU, GPU, memory) after placing ``demand``.

    Only resources the demand asks for count, CPU always. Computed on ``rows`` (all if None).
    """
    sel = slice(0, len(table)) if rows is None else rows
    util: np.ndarray | None = None
    for total, free, need in (
        (table.cpu_total, table.cpu_free, demand.cpus),
        (table.gpu_total, table.gpu_free, demand.gpus),
        (table.mem_total, table.mem_free, float(demand.memory_bytes)),
    ):
        if need <= 0 and total is not table.cpu_total:
            continue
        tot = total[sel]
        frac = 1.0 - (free[sel] - need) / np.maximum(tot, 1e-12)
        frac[tot <= 0] = 0.0
        util = frac if util is None else np.maximum(util, frac)
    assert util is not None
    return util


def _locality(demand: Demand, table: NodeTable, inventory: Inventory) -> tuple[np.ndarray, int]:
    """(bytes of the demand's keys local on each row, total bytes of those keys)."""
    local = np.zeros(len(table))
    total = 0
    for key in dict.fromkeys(demand.locality_keys()):
        holders = inventory.holders(key)
        if not holders:
            continue
        total += max(holders.values())
        for node_id, nbytes in holders.items():
            row = table.index.get(node_id)
            if row is not None:
                local[row] += nbytes
    return local, total


class LocalityWeights(BaseModel):
    """Tunable weights of :class:`LocalityPolicy`. Every term is in "seconds-equivalent" units.

    Attributes:
        bandwidth_bytes_per_s: Network bandwidth used to turn missing bytes into transfer seconds
            (default 1.25 GB/s, i.e. 10 Gbit/s).
        transfer: Weight of the transfer time of the bytes not already local (per second).
        load: Weight of the node's critical-resource utilisation after placement (0..1), the
            load-balancing term: 1.0 means a full node costs as much as 1 s of transfer. Only the
            resources the demand asks for count (so GPU demands spread over GPU nodes).
        gpu_guard: Penalty for putting a demand that needs no GPU on a node that has GPUs, applied
            only while some node without GPUs can fit it (keeps scarce GPU nodes' CPUs and memory
            for GPU work). 20 means a CPU agent leaves a GPU node unless more than 20 s of
            transfer (25 GB at 10 Gbit/s) would be saved by staying.
        gpu_fit: Weight of the fraction of a GPU node's GPUs left idle after placing a GPU demand
            (best fit: fill partly used GPU nodes first, keep whole ones for large multi-GPU
            demands). Off by default: in the simulated stateful trace best fit exhausted the CPUs
            of busy GPU nodes and made more GPU demands wait (see benchmarks/placement_sim.py).
        sample_nodes: On clusters with more fitting nodes than this, score only the nodes that
            hold some of the demand's bytes plus this many sampled at random from the rest (the
            idea of Kubernetes' ``percentageOfNodesToScore``); 0 scores every node.
    """

    bandwidth_bytes_per_s: float = Field(default=1.25e9, gt=0)
    transfer: float = Field(default=1.0, ge=0)
    load: float = Field(default=1.0, ge=0)
    gpu_guard: float = Field(default=20.0, ge=0)
    gpu_fit: float = Field(default=0.0, ge=0)
    sample_nodes: int = Field(default=1024, ge=0)


class LocalityPolicy:
    """Default policy: data/model/checkpoint locality, GPU fit and load balance.

    ``score = -transfer * missing_bytes / bandwidth - load * utilisation_after
    - gpu_guard * [CPU-only demand on a GPU node while CPU nodes have room]
    - gpu_fit * idle_gpu_fraction_after`` (the last for GPU demands only). The fitting nodes are
    scored in one numpy pass; above ``weights.sample_nodes`` fitting nodes only the holders of the
    demand's bytes and a random sample of the others are scored, so a decision stays well under a
    millisecond at 10,000 nodes.
    """

    name = "locality"

    def __init__(self, weights: LocalityWeights | None = None, seed: int = 0) -> None:
        self.weights = weights or LocalityWeights()
        self._rng = np.random.default_rng(seed)

    def rank(
        self, demand: Demand, table: NodeTable, inventory: Inventory, k: int = 3
    ) -> list[Candidate]:
        n = len(table)
        fits = table.feasible_now(demand)
        rows = np.flatnonzero(fits)
        if rows.size == 0:
            return []
        w = self.weights
        local_all, total = _locality(demand, table, inventory)
        gpu_total = table.gpu_total[:n]
        guard_on = demand.gpus <= 0 and bool((fits & (gpu_total <= 0)).any())
        if 0 < w.sample_nodes < rows.size:
            # Candidate pre-filtering: every fitting node holding some of the bytes, plus a
            # random sample of the others (each decision is then O(sample), not O(nodes)).
            holders = np.flatnonzero(fits & (local_all > 0))
            sample = rows[self._rng.integers(0, rows.size, w.sample_nodes)]
            rows = np.unique(np.concatenate([holders, sample]))
        local = np.minimum(local_all[rows], total)
        missing = total - local
        t_transfer = (-w.transfer / w.bandwidth_bytes_per_s) * missing
        t_load = -w.load * _utilisation_after(demand, table, rows)
        if demand.gpus <= 0:
            t_gpu = -w.gpu_guard * (gpu_total[rows] > 0) if guard_on else np.zeros(rows.size)
            gpu_name = "gpu_guard"
        else:
            t_gpu = (
                -w.gpu_fit
                * (table.gpu_free[rows] - demand.gpus)
                / np.maximum(gpu_total[rows], 1e-9)
            )
            gpu_name = "gpu_fit"
        score = t_transfer + t_load + t_gpu
        return [
            Candidate(
                node_id=table.ids[rows[j]],
                score=float(score[j]),
                terms={
                    "transfer": float(t_transfer[j]),
                    "load": float(t_load[j]),
                    gpu_name: float(t_gpu[j]),
                },
                local_bytes=int(local[j]),
                missing_bytes=int(missing[j]),
            )
            for j in _top_k(score, k)
        ]


def _top_k(score: np.ndarray, k: int) -> list[int]:
    """Indices of the (at most ``k``) largest finite scores, best first; ties: lowest index wins.

    ``k`` is small, so ``k`` argmax passes beat a sort or ``argpartition`` (slow on many ties).
    """
    score = score.copy()
    picks: list[int] = []
    for _ in range(min(k, score.size)):
        j = int(np.argmax(score))
        if not np.isfinite(score[j]):
            break
        picks.append(j)
        score[j] = -np.inf
    return picks


def _plain(
    table: NodeTable, rows: np.ndarray, picks: list[int], score: np.ndarray | None = None
) -> list[Candidate]:
    return [
        Candidate(node_id=table.ids[rows[j]], score=float(score[j]) if score is not None else 0.0)
        for j in picks
    ]


class RayDefaultPolicy:
    """Baseline modelled on Ray's default hybrid policy (``scheduler_spread_threshold=0.5``).

    Nodes are scored by critical-resource utilisation after placement, truncated to 0 below the
    spread threshold; the first node in row order (the "local" node, row 0) is taken while it stays
    under the threshold, otherwise one of the top ``max(1, top_k_fraction * nodes)`` lowest-score
    nodes is chosen at random. Like Ray (``scheduler_avoid_gpu_nodes``) a CPU-only demand avoids GPU
    nodes when a GPU-less node fits. It ignores where data, models and checkpoints are.
    """

    name = "ray-default"

    def __init__(
        self, spread_threshold: float = 0.5, top_k_fraction: float = 0.2, seed: int = 0
    ) -> None:
        self.spread_threshold = spread_threshold
        self.top_k_fraction = top_k_fraction
        self._rng = np.random.default_rng(seed)

    def rank(
        self, demand: Demand, table: NodeTable, inventory: Inventory, k: int = 3
    ) -> list[Candidate]:
        rows = np.flatnonzero(table.feasible_now(demand))
        if rows.size == 0:
            return []
        if demand.gpus <= 0:
            cpu_only = table.gpu_total[rows] <= 0
            if cpu_only.any():
                rows = rows[cpu_only]
        util = _utilisation_after(demand, table, rows)
        score = np.where(util < self.spread_threshold, 0.0, util)
        if rows[0] == 0 and score[0] == 0.0:
            return _plain(table, rows, [0], -score)
        top_k = max(1, int(self.top_k_fraction * len(table)))
        order = np.argsort(score, kind="stable")[:top_k]
        pick = order[self._rng.permutation(order.size)[: max(1, k)]]
        return _plain(table, rows, list(pick), -score)


class SpreadPolicy:
    """Baseline modelled on Ray's ``SPREAD`` strategy: round robin over the nodes that fit."""

    name = "spread"

    def __init__(self) -> None:
        self._next = 0

    def rank(
        self, demand: Demand, table: NodeTable, inventory: Inventory, k: int = 3
    ) -> list[Candidate]:
        rows = np.flatnonzero(table.feasible_now(demand))
        if rows.size == 0:
            return []
        start = int(np.searchsorted(rows, self._next))
        picks = [(start + j) % rows.size for j in range(min(k, rows.size))]
        self._next = int(rows[picks[0]]) + 1
        return _plain(table, rows, picks)


class RandomPolicy:
    """Baseline: a uniformly random node among those that fit."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)

    def rank(
        self, demand: Demand, table: NodeTable, inventory: Inventory, k: int = 3
    ) -> list[Candidate]:
        rows = np.flatnonzero(table.feasible_now(demand))
        if rows.size == 0:
            return []
        picks = self._rng.choice(rows.size, size=min(k, rows.size), replace=False)
        return _plain(table, rows, list(picks))


POLICIES: dict[str, type] = {
    "locality": LocalityPolicy,
    "ray-default": RayDefaultPolicy,
    "spread": SpreadPolicy,
    "random": RandomPolicy,
}


def make_policy(name: str) -> Policy:
    """Builds a policy by name (``locality``, ``ray-default``, ``spread``, ``random``)."""
    try:
        return POLICIES[name]()  # type: ignore[no-any-return]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {sorted(POLICIES)}") from None
