"""`NodeTable`: a column-oriented (numpy) view of nodes that policies score in one vectorised pass.

Both the real scheduler (built from Ray's state by :class:`placement.cluster.ClusterView`) and the
simulator (:mod:`placement.sim`) fill the same table, so the same policy classes run in both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from placement.demand import Demand

_EPS = 1e-9
GPU_TYPE_LABEL = "ray.io/accelerator-type"
NODE_ID_LABEL = "ray.io/node-id"


class NodeTable:
    """Resources per node as numpy arrays (row ``i`` is node ``ids[i]``).

    Attributes:
        ids: Node ids, row order.
        cpu_total, cpu_free, gpu_total, gpu_free, mem_total, mem_free: float64 arrays.
        gpu_type: int32 array of GPU type codes (-1: no GPU type known), see :attr:`gpu_type_codes`.
        alive: bool array.
        custom_total, custom_free: custom resource name -> float64 array.
        labels: per-row label dicts.
    """

    def __init__(self, capacity: int = 16) -> None:
        self.ids: list[str] = []
        self.index: dict[str, int] = {}
        self.gpu_type_codes: dict[str, int] = {}
        self.labels: list[dict[str, str]] = []
        self._label_index: dict[str, list[int]] | None = None
        self._n = 0
        self._cap = max(1, capacity)
        self.cpu_total = np.zeros(self._cap)
        self.cpu_free = np.zeros(self._cap)
        self.gpu_total = np.zeros(self._cap)
        self.gpu_free = np.zeros(self._cap)
        self.mem_total = np.zeros(self._cap)
        self.mem_free = np.zeros(self._cap)
        self.gpu_type = np.full(self._cap, -1, dtype=np.int32)
        self.alive = np.zeros(self._cap, dtype=bool)
        self.custom_total: dict[str, np.ndarray] = {}
        self.custom_free: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ building
    def __len__(self) -> int:
        return self._n

    _ARRAYS = ("cpu_total", "cpu_free", "gpu_total", "gpu_free", "mem_total", "mem_free")

    def _grow(self) -> None:
        new_cap = self._cap * 2
        for name in self._ARRAYS:
            setattr(self, name, np.resize(getattr(self, name), new_cap))
        self.gpu_type = np.resize(self.gpu_type, new_cap)
        self.alive = np.resize(self.alive, new_cap)
        for d in (self.custom_total, self.custom_free):
            for key in d:
                d[key] = np.resize(d[key], new_cap)
        self._cap = new_cap
        for name in self._ARRAYS:  # zero the new tail
            getattr(self, name)[self._n :] = 0
        self.gpu_type[self._n :] = -1
        self.alive[self._n :] = False

    def add_node(
        self,
        node_id: str,
        *,
        cpus: float,
        gpus: float = 0.0,
        memory: float = 0.0,
        gpu_type: str | None = None,
        custom: Mapping[str, float] | None = None,
        labels: Mapping[str, str] | None = None,
        free: Mapping[str, float] | None = None,
        alive: bool = True,
    ) -> int:
        """Adds a node (all free unless ``free`` gives Ray-style available amounts); returns its row."""
        if node_id in self.index:
            raise ValueError(f"node {node_id!r} already in the table")
        if self._n == self._cap:
            self._grow()
        i = self._n
        self._n += 1
        self.ids.append(node_id)
        self.index[node_id] = i
        free = free or {}
        self.cpu_total[i] = cpus
        self.cpu_free[i] = free.get("CPU", cpus)
        self.gpu_total[i] = gpus
        self.gpu_free[i] = free.get("GPU", gpus)
        self.mem_total[i] = memory
        self.mem_free[i] = free.get("memory", memory)
        self.gpu_type[i] = self._gpu_code(gpu_type) if gpu_type else -1
        self.alive[i] = alive
        for key, amount in (custom or {}).items():
            if key not in self.custom_total:
                self.custom_total[key] = np.zeros(self._cap)
                self.custom_free[key] = np.zeros(self._cap)
            self.custom_total[key][i] = amount
            self.custom_free[key][i] = free.get(key, amount)
        lab = dict(labels or {})
        lab.setdefault(NODE_ID_LABEL, node_id)
        if gpu_type:
            lab.setdefault(GPU_TYPE_LABEL, gpu_type)
        self.labels.append(lab)
        self._label_index = None
        return i

    def _gpu_code(self, gpu_type: str) -> int:
        return self.gpu_type_codes.setdefault(gpu_type, len(self.gpu_type_codes))

    # ------------------------------------------------------------------ bookkeeping
    def allocate(self, i: int, demand: Demand, sign: float = 1.0) -> None:
        """Takes (``sign=1``) or gives back (``sign=-1``) ``demand``'s resources on row ``i``."""
        self.cpu_free[i] -= sign * demand.cpus
        self.gpu_free[i] -= sign * demand.gpus
        self.mem_free[i] -= sign * demand.memory_bytes
        for key, amount in demand.resources.items():
            if key in self.custom_free:
                self.custom_free[key][i] -= sign * amount

    def release(self, i: int, demand: Demand) -> None:
        """Gives ``demand``'s resources back on row ``i``."""
        self.allocate(i, demand, -1.0)

    def set_alive(self, node_id: str, alive: bool) -> None:
        """Marks a node alive or dead (dead rows are never candidates)."""
        self.alive[self.index[node_id]] = alive

    # ------------------------------------------------------------------ queries
    def label_rows(self, selector: str) -> list[int]:
        """Rows matching a selector: a node id or ``"key=value"`` label."""
        if self._label_index is None:
            index: dict[str, list[int]] = {}
            for i, lab in enumerate(self.labels):
                for k, v in lab.items():
                    index.setdefault(f"{k}={v}", []).append(i)
            self._label_index = index
        if "=" not in selector:
            row = self.index.get(selector)
            return [] if row is None else [row]
        return self._label_index.get(selector, [])

    def _selector_mask(self, selectors: Iterable[str]) -> np.ndarray:
        mask = np.zeros(self._n, dtype=bool)
        for sel in selectors:
            mask[self.label_rows(sel)] = True
        return mask

    def _fits(self, demand: Demand, *, now: bool) -> np.ndarray:
        n = self._n
        cpu = self.cpu_free[:n] if now else self.cpu_total[:n]
        mask = self.alive[:n].copy()
        if demand.cpus > 0:
            mask &= cpu + _EPS >= demand.cpus
        if demand.gpus > 0:
            gpu = self.gpu_free[:n] if now else self.gpu_total[:n]
            mask &= gpu + _EPS >= demand.gpus
            if demand.gpu_type is not None:
                code = self.gpu_type_codes.get(demand.gpu_type, -2)
                mask &= self.gpu_type[:n] == code
        if demand.memory_bytes > 0:
            mem = self.mem_free[:n] if now else self.mem_total[:n]
            mask &= mem + _EPS >= demand.memory_bytes
        for key, amount in demand.resources.items():
            if amount <= 0:
                continue
            arr = (self.custom_free if now else self.custom_total).get(key)
            if arr is None:
                return np.zeros(n, dtype=bool)
            mask &= arr[:n] + _EPS >= amount
        if demand.affinity:
            mask &= self._selector_mask(demand.affinity)
        if demand.anti_affinity:
            mask &= ~self._selector_mask(demand.anti_affinity)
        return mask

    def feasible_now(self, demand: Demand) -> np.ndarray:
        """Bool mask of live rows with enough *free* resources for ``demand`` right now."""
        return self._fits(demand, now=True)

    def feasible_ever(self, demand: Demand) -> np.ndarray:
        """Bool mask of live rows whose *total* resources could fit ``demand`` (when empty)."""
        return self._fits(demand, now=False)

    def why_infeasible(self, demand: Demand) -> str:
        """Human-readable reason no live node can ever fit ``demand`` ("" if some node can)."""
        n = self._n
        alive = self.alive[:n]
        if not alive.any():
            return "the cluster has no live node"
        if self.feasible_ever(demand).any():
            return ""
        reasons = []
        if demand.cpus > 0 and not (self.cpu_total[:n][alive] + _EPS >= demand.cpus).any():
            reasons.append(
                f"{demand.cpus:g} CPUs (largest node: {self.cpu_total[:n][alive].max():g})"
            )
        if demand.gpus > 0:
            if demand.gpu_type is not None:
                code = self.gpu_type_codes.get(demand.gpu_type, -2)
                typed = alive & (self.gpu_type[:n] == code)
                best = self.gpu_total[:n][typed].max() if typed.any() else 0.0
                if best + _EPS < demand.gpus:
                    known = ", ".join(sorted(self.gpu_type_codes)) or "none"
                    reasons.append(
                        f"{demand.gpus:g} GPUs of type {demand.gpu_type} "
                        f"(largest such node: {best:g}; known GPU types: {known})"
                    )
            elif not (self.gpu_total[:n][alive] + _EPS >= demand.gpus).any():
                split = (
                    f" on one node ({demand.gpu_bundles} bundles of "
                    f"{demand.gpus_per_bundle():g} GPU, STRICT_PACK)"
                    if demand.gpu_bundles > 1
                    else ""
                )
                reasons.append(
                    f"{demand.gpus:g} GPUs{split} (largest node: "
                    f"{self.gpu_total[:n][alive].max():g})"
                )
        if (
            demand.memory_bytes > 0
            and not (self.mem_total[:n][alive] + _EPS >= demand.memory_bytes).any()
        ):
            reasons.append(f"{demand.memory_bytes} bytes of memory")
        for key, amount in demand.resources.items():
            arr = self.custom_total.get(key)
            if amount > 0 and (arr is None or not (arr[:n][alive] + _EPS >= amount).any()):
                reasons.append(f"{amount:g} of custom resource {key!r}")
        if demand.affinity and not (alive & self._selector_mask(demand.affinity)).any():
            reasons.append(f"affinity {list(demand.affinity)} (no live node matches)")
        if not reasons:
            reasons.append("the combination of resources and (anti-)affinity")
        return f"no live node can ever fit demand {demand.name!r}: needs " + "; ".join(reasons)
