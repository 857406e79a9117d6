"""Fixtures of the academy_ray tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def standalone_cluster() -> Iterator[str]:
    """A Ray head started apart from this process, as ``ray start --head`` would; yields its address."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 2})
    yield cluster.address
    cluster.shutdown()
