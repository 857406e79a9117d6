"""Fixtures of the academy_ray tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from academy_ray import Runtime
from academy_ray.registry import registry_actor
from tests.harness import free_port, stop_cluster


@pytest.fixture(scope="package")
def standalone_cluster() -> Iterator[str]:
    """A Ray head started apart from this process, as ``ray start --head`` would; yields its address.

    Stopped once this package's tests are done (left running, it would take CPU time from all the others).
    """
    from ray.cluster_utils import Cluster

    # Its own dashboard agent port: the default (52365) is taken by any other Ray on this machine (the shared
    # embedded one, another test run), and a node whose dashboard agent cannot listen has no log API.
    cluster = Cluster(
        initialize_head=True,
        connect=False,
        head_node_args={"num_cpus": 2, "dashboard_agent_listen_port": free_port()},
    )
    yield cluster.address
    stop_cluster(cluster)


@pytest.fixture
async def make_runtime(namespace: str) -> AsyncIterator[Callable[..., Runtime]]:
    """Makes runtimes (default: the test's namespace); at the end stops their agents and placement controllers."""
    made: list[Runtime] = []

    def make(**options: Any) -> Runtime:
        options.setdefault("namespace", namespace)
        runtime = Runtime(**options)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        for info in await runtime.list():
            await runtime.stop(info.name, timeout=5)
        runtime.stop_placement()
        registry = registry_actor(runtime.namespace, create=False)
        if registry is not None:
            ray.kill(registry)


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    """A fresh file:// checkpoint store."""
    return f"file://{tmp_path / 'checkpoints'}"


@pytest.fixture
def rt(make_runtime: Callable[..., Runtime], store_uri: str) -> Runtime:
    """A runtime whose agents checkpoint to ``store_uri`` by default."""
    return make_runtime(checkpoint=store_uri)
