"""`ClusterView`: the live nodes of the connected Ray cluster, and a `NodeTable` built from them."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, Field

from placement.table import GPU_TYPE_LABEL, NodeTable

_BUILTIN = {"CPU", "GPU", "memory", "object_store_memory"}
_ACCEL_PREFIX = "accelerator_type:"


def _is_custom(resource: str) -> bool:
    return not (
        resource in _BUILTIN
        or resource.startswith(("node:", _ACCEL_PREFIX))
        or "_group_"
        in resource  # placement-group bundle resources (CPU_group_<id>, bundle_group_...)
    )


class NodeInfo(BaseModel):
    """One Ray node as the placement layer sees it."""

    node_id: str
    alive: bool
    address: str = ""
    is_head: bool = False
    cpus: float = 0.0
    gpus: float = 0.0
    gpu_type: str | None = None
    memory: float = 0.0
    resources_total: dict[str, float] = Field(default_factory=dict)
    resources_available: dict[str, float] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)

    @property
    def custom(self) -> dict[str, float]:
        """Custom resources (not CPU/GPU/memory/node:/accelerator_type:/placement-group ones)."""
        return {k: v for k, v in self.resources_total.items() if _is_custom(k)}


class ClusterView:
    """Reads nodes from the Ray cluster this process is connected to (``ray.init`` first).

    Args:
        include_head: Whether the head node may receive placements.
    """

    def __init__(self, include_head: bool = True) -> None:
        self.include_head = include_head
        self._nodes: dict[str, NodeInfo] = {}

    def refresh(self) -> list[NodeInfo]:
        """Reads all nodes (alive and dead) with total and available resources from Ray's GCS."""
        import ray
        from ray._private import state

        available = state.available_resources_per_node()
        nodes: dict[str, NodeInfo] = {}
        for raw in ray.nodes():
            node_id = raw["NodeID"]
            total = {k: float(v) for k, v in (raw.get("Resources") or {}).items()}
            labels = {str(k): str(v) for k, v in (raw.get("Labels") or {}).items()}
            gpu_type = labels.get(GPU_TYPE_LABEL)
            if gpu_type is None:
                types = [k[len(_ACCEL_PREFIX) :] for k in total if k.startswith(_ACCEL_PREFIX)]
                gpu_type = types[0] if types else None
            alive = bool(raw.get("Alive")) and raw.get("State", "ALIVE") == "ALIVE"
            info = NodeInfo(
                node_id=node_id,
                alive=alive,
                address=str(raw.get("NodeManagerAddress", "")),
                is_head="node:__internal_head__" in total,
                cpus=total.get("CPU", 0.0),
                gpus=total.get("GPU", 0.0),
                gpu_type=gpu_type,
                memory=total.get("memory", 0.0),
                resources_total=total,
                resources_available={k: float(v) for k, v in available.get(node_id, {}).items()},
                labels=labels,
            )
            # A node id can appear twice (dead then re-registered); keep the alive record.
            if node_id not in nodes or alive:
                nodes[node_id] = info
        self._nodes = nodes
        return list(nodes.values())

    def nodes(self, alive_only: bool = True) -> list[NodeInfo]:
        """Nodes from the last :meth:`refresh`."""
        return [n for n in self._nodes.values() if n.alive or not alive_only]

    def alive_ids(self) -> set[str]:
        """Ids of live nodes from the last :meth:`refresh`."""
        return {n.node_id for n in self._nodes.values() if n.alive}

    def table(
        self,
        reserved: Mapping[str, Mapping[str, float]] | None = None,
        released: Mapping[str, Mapping[str, float]] | None = None,
    ) -> NodeTable:
        """A :class:`NodeTable` of the nodes from the last :meth:`refresh`.

        Args:
            reserved: Resources this process has reserved per node id (its own placement groups).
                Free = ``min(Ray's available + released, total - reserved)``: exact for our own
                reservations even before Ray's resource view catches up, and still sees others' usage.
            released: Resources this process released very recently per node id (Ray's view may
                not show them free yet).
        """
        reserved = reserved or {}
        released = released or {}
        table = NodeTable(capacity=max(16, len(self._nodes)))
        for info in self._nodes.values():
            mine = reserved.get(info.node_id, {})
            back = released.get(info.node_id, {})
            total = info.resources_total
            free: dict[str, float] = {}
            for key, amount in total.items():
                ray_free = (
                    info.resources_available.get(key, 0.0) + back.get(key, 0.0)
                    if info.alive
                    else 0.0
                )
                free[key] = min(ray_free, amount - mine.get(key, 0.0))
            usable = info.alive and (self.include_head or not info.is_head)
            table.add_node(
                info.node_id,
                cpus=info.cpus,
                gpus=info.gpus,
                memory=info.memory,
                gpu_type=info.gpu_type,
                custom=info.custom,
                labels=info.labels,
                free=free,
                alive=usable,
            )
        return table
