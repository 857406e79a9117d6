"""Simulated clusters: CPU and GPU nodes, background load, network bandwidth."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from placement.table import NodeTable


class ClusterSpec(BaseModel):
    """Shape of a simulated cluster.

    Attributes:
        nodes: Number of nodes.
        gpu_fraction: Fraction of nodes that carry GPUs.
        cpus_per_node: CPUs per node (GPU nodes too).
        gpus_per_gpu_node: GPUs per GPU node.
        gpu_types: GPU types, assigned round robin to GPU nodes.
        memory_per_node: Bytes of memory per node.
        bandwidth_bytes_per_s: Network bandwidth of each node's link (staging speed).
        background_cpu: Mean fraction of CPUs already busy with other work (spread at random).
        background_gpu: Mean fraction of GPUs already busy with other work.
        seed: Random seed.
    """

    nodes: int = Field(default=1000, ge=1)
    gpu_fraction: float = Field(default=0.1, ge=0, le=1)
    cpus_per_node: float = 16
    gpus_per_gpu_node: float = 4
    gpu_types: tuple[str, ...] = ("A100", "H100")
    memory_per_node: float = 128e9
    bandwidth_bytes_per_s: float = 1.25e9
    background_cpu: float = Field(default=0.5, ge=0, lt=1)
    background_gpu: float = Field(default=0.3, ge=0, lt=1)
    seed: int = 0


def build_cluster(spec: ClusterSpec) -> NodeTable:
    """A :class:`NodeTable` of ``spec.nodes`` nodes (ids ``n00000``...), GPU nodes spread evenly.

    Background load takes a random share of every node's CPUs (and GPU nodes' GPUs), mean
    ``background_cpu`` / ``background_gpu``; the simulator only sees what is left.
    """
    rng = np.random.default_rng(spec.seed)
    table = NodeTable(capacity=spec.nodes)
    n_gpu = round(spec.nodes * spec.gpu_fraction)
    gpu_rows = set(np.linspace(0, spec.nodes - 1, n_gpu).astype(int).tolist()) if n_gpu else set()
    k = 0
    for i in range(spec.nodes):
        if i in gpu_rows:
            gtype = spec.gpu_types[k % len(spec.gpu_types)] if spec.gpu_types else None
            k += 1
            table.add_node(
                f"n{i:05d}",
                cpus=spec.cpus_per_node,
                gpus=spec.gpus_per_gpu_node,
                memory=spec.memory_per_node,
                gpu_type=gtype,
            )
        else:
            table.add_node(f"n{i:05d}", cpus=spec.cpus_per_node, memory=spec.memory_per_node)
    n = len(table)
    busy = np.floor(rng.uniform(0, 2 * spec.background_cpu, n).clip(0, 1) * table.cpu_total[:n])
    table.cpu_free[:n] -= busy
    gbusy = np.floor(
        rng.uniform(0, 2 * spec.background_gpu, n).clip(0, 1) * table.gpu_total[:n] + 0.5
    )
    table.gpu_free[:n] -= np.minimum(gbusy, table.gpu_total[:n])
    return table
