"""A real multi-node Ray cluster (``ray.cluster_utils.Cluster``) shared by a test module."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

# Fast node-loss detection (see shared/DESIGN.md, "Ray placement facts").
FAST_HEALTH_CHECKS = {
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
    "health_check_timeout_ms": 500,
    "health_check_initial_delay_ms": 0,
}


@dataclass
class SimCluster:
    """The running cluster and the ids of its named nodes."""

    cluster: Any
    nodes: dict[str, str] = field(default_factory=dict)  # role -> node id (hex)
    handles: dict[str, Any] = field(default_factory=dict)  # role -> ray Node

    def add(self, role: str, **node_args: Any) -> str:
        """Adds a worker node under ``role`` and returns its id."""
        node = self.cluster.add_node(**node_args)
        self.cluster.wait_for_nodes()
        self.nodes[role] = node.node_id
        self.handles[role] = node
        return str(node.node_id)

    def kill(self, role: str) -> str:
        """Removes (kills, no graceful drain) the node ``role``; returns its id."""
        self.cluster.remove_node(self.handles.pop(role), allow_graceful=False)
        return self.nodes.pop(role)


def _wait_alive(expected: int, timeout: float = 60.0) -> None:
    import ray

    deadline = time.monotonic() + timeout
    while sum(1 for n in ray.nodes() if n["Alive"]) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {expected} live nodes after {timeout} s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def sim_cluster() -> Iterator[SimCluster]:
    """Head (1 CPU) + cpu-a (2 CPU, zone a) + cpu-b (2 CPU, ``ssd`` resource, zone b) + gpu (2 CPU, 1 T4).

    ``ray.shutdown()`` runs first (the session's embedded Ray, if any, is re-created on demand by
    the shared ``local_ray`` fixture) and the cluster is shut down at the end of the module.
    """
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "include_dashboard": False,
            "_system_config": FAST_HEALTH_CHECKS,
        },
    )
    sim = SimCluster(cluster)
    sim.nodes["head"] = cluster.head_node.node_id
    try:
        sim.add("cpu-a", num_cpus=2, labels={"zone": "a"})
        sim.add("cpu-b", num_cpus=2, resources={"ssd": 2}, labels={"zone": "b"})
        sim.add("gpu", num_cpus=2, num_gpus=1, resources={"accelerator_type:T4": 1})
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        _wait_alive(4)
        yield sim
    finally:
        ray.shutdown()
        cluster.shutdown()
