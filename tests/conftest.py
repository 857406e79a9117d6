"""Shared fixtures: a real local Ray, unique namespaces, and a real S3 server (SeaweedFS)."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import S3Server, SimCluster, fast_cluster, wait_alive

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

LOCAL_RAY_CPUS = 4


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remembers the session's exit status for :func:`pytest_unconfigure`."""
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Ends the test process right after pytest's summary, skipping interpreter teardown.

    Native extensions (Ray's core worker and gRPC threads, torch) occasionally segfault while the
    interpreter tears down after every test passed (seen once in a CI dry run: exit 139 after
    "306 passed"). The Ray instances the fixtures started are shut down already; the exit status
    is pytest's own.
    """
    status = config.stash.get(_EXIT_STATUS, None)
    if status is None:
        return
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception as error:  # noqa: BLE001 - exiting anyway
        print(f"ray.shutdown at exit failed: {error!r}", file=sys.stderr)
    os._exit(status)


_EXIT_STATUS = pytest.StashKey[int]()


@pytest.fixture(scope="session")
def ray_local() -> Iterator[None]:
    """A real embedded Ray instance shared by the tests that do not need several nodes.

    Fixtures that build a ``ray.cluster_utils.Cluster`` call ``ray.shutdown()`` first and this fixture
    re-initialises on demand, so the two kinds of tests can follow each other in one session.
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local", num_cpus=LOCAL_RAY_CPUS, include_dashboard=False, log_to_driver=False
        )
    yield
    ray.shutdown()


@pytest.fixture
def local_ray(ray_local: None) -> None:
    """Per-test guard: re-initialises the embedded Ray if a cluster test shut it down."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local", num_cpus=LOCAL_RAY_CPUS, include_dashboard=False, log_to_driver=False
        )


@pytest.fixture
def namespace() -> str:
    """A Ray namespace of the test's own, so agent names never collide between tests."""
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 server (SeaweedFS) for the whole session, stopped at the end."""
    data_dir = Path(tempfile.mkdtemp(prefix="academy-ray-s3-"))
    server = S3Server(data_dir)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


# ---- a simulated multi-node cluster ------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim_cluster() -> Iterator[SimCluster]:
    """Head (1 CPU) + cpu-a (2 CPU, zone a) + cpu-b (2 CPU, ``ssd`` resource, zone b) + gpu (2 CPU, 1 T4).

    ``ray.shutdown()`` runs first (the session's embedded Ray, if any, is re-created on demand by
    the shared ``local_ray`` fixture) and the cluster is shut down at the end of the module.
    """
    import ray

    ray.shutdown()
    cluster = fast_cluster()
    sim = SimCluster(cluster)
    sim.nodes["head"] = cluster.head_node.node_id
    try:
        sim.add("cpu-a", num_cpus=2, labels={"zone": "a"})
        sim.add("cpu-b", num_cpus=2, resources={"ssd": 2}, labels={"zone": "b"})
        sim.add("gpu", num_cpus=2, num_gpus=1, resources={"accelerator_type:T4": 1})
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        wait_alive(4)
        yield sim
    finally:
        ray.shutdown()
        cluster.shutdown()
