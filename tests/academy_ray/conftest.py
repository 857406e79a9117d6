"""Fixtures of the academy_ray tests."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from academy_ray import AgentNotFoundError, Runtime
from academy_ray.names import POOL_PREFIX
from academy_ray.registry import registry_actor
from placement import PlacementClient
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


# Namespaces whose registry and placement controller outlive a test (see `module_namespace`).
_MODULE_NAMESPACES: set[str] = set()


@pytest.fixture(scope="module")
def module_namespace() -> Iterator[str]:
    """One namespace for all the tests of a module (on whichever Ray the module's tests use).

    A module opts in by overriding ``namespace`` with it. Its registry, placement controller and secrets
    holder (three processes, ~1.5 s to start on 2 cores) then start once per module instead of once per
    test; each test's agents, pool hosts and reservations are still removed after it (`make_runtime`), so
    a test finds the namespace as empty as a new one, apart from those three.
    """
    namespace = f"test-{uuid.uuid4().hex[:10]}"
    _MODULE_NAMESPACES.add(namespace)
    yield namespace
    _MODULE_NAMESPACES.discard(namespace)
    if ray.is_initialized():
        _remove_namespace(namespace)


@pytest.fixture
async def make_runtime(namespace: str) -> AsyncIterator[Callable[..., Runtime]]:
    """Makes runtimes (default: the test's namespace); at the end stops their agents and pool hosts, and
    (unless the namespace is a `module_namespace`) their registries and placement controllers."""
    made: list[Runtime] = []

    def make(**options: Any) -> Runtime:
        options.setdefault("namespace", namespace)
        runtime = Runtime(**options)
        made.append(runtime)
        return runtime

    yield make
    for runtime in made:
        await _stop_agents(runtime)
    for namespace_made in {runtime.namespace for runtime in made}:
        if namespace_made not in _MODULE_NAMESPACES:
            _remove_namespace(namespace_made)


async def _stop_agents(runtime: Runtime) -> None:
    """Stops the runtime's agents (all at once), kills its namespace's pool hosts and releases what the
    namespace's placement controller still holds for them (crashed agents, a stopped pool's host)."""
    stopped = await asyncio.gather(
        *(runtime.stop(info.name, timeout=5) for info in await runtime.list()),
        return_exceptions=True,
    )
    for outcome in stopped:  # one that went away meanwhile is stopped as well
        if isinstance(outcome, BaseException) and not isinstance(outcome, AgentNotFoundError):
            raise outcome
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] == runtime.namespace and entry["name"].startswith(POOL_PREFIX):
            ray.kill(ray.get_actor(entry["name"], namespace=runtime.namespace))
    placement = PlacementClient.attach(runtime.namespace)
    if placement is not None:
        await placement.release_all()


def _remove_namespace(namespace: str) -> None:
    """Removes the namespace's placement controller (with its secrets holder) and registry."""
    placement = PlacementClient.attach(namespace)
    if placement is not None:
        placement.shutdown()
    registry = registry_actor(namespace, create=False)
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
