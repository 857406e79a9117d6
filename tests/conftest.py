"""Shared fixtures: a real local Ray, unique namespaces, a real S3 server (SeaweedFS), a simulated cluster
and a Ray that exports metrics, each started once; the modules run grouped by the Ray they need."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import MetricsRay, S3Server, SimCluster, sim_cluster_of_four, use_local_ray

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


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

    The modules on the metrics Ray and on the simulated cluster run after the others
    (:func:`pytest_collection_modifyitems`), and `use_local_ray` starts the embedded Ray again on demand
    after them, so every kind of test may follow any other in one session.
    """
    import ray

    use_local_ray()
    yield
    ray.shutdown()


@pytest.fixture
def local_ray(ray_local: None) -> None:
    """Per-test guard: connects to the embedded Ray again if the test before used a shared cluster."""
    use_local_ray()


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
    # Killed: its data goes next, and with hundreds of buckets its own shutdown takes over 10 s.
    server.stop(timeout=0)
    shutil.rmtree(data_dir, ignore_errors=True)


# ---- a simulated multi-node cluster and the metrics Ray, shared by the modules that run at the end ----------


class _SharedSimCluster:
    """The session's simulated cluster, started on demand, and started anew when a module left it changed."""

    def __init__(self) -> None:
        self.sim: SimCluster | None = None

    def acquire(self) -> SimCluster:
        """The cluster (started now if there is none), with this process connected to it."""
        import ray

        if self.sim is None:
            ray.shutdown()  # a driver joins one cluster at a time
            self.sim = sim_cluster_of_four()
        self.sim.connect()
        return self.sim

    def release(self) -> None:
        """Removes the nodes the module's tests added. A module that left a node lost, or an actor or a
        placement group holding resources, would change where the next module's work lands: the cluster
        is stopped then, and the next module gets a new one."""
        if self.sim is None:
            return
        self.sim.connect()
        self.sim.remove_added()
        if not (self.sim.intact and self.sim.wait_idle()):
            warnings.warn(
                "a module left the simulated cluster changed: it starts anew", stacklevel=1
            )
            self.shutdown()

    def shutdown(self) -> None:
        if self.sim is not None:
            self.sim.shutdown()
            self.sim = None


@pytest.fixture(scope="session")
def shared_sim_cluster() -> Iterator[_SharedSimCluster]:
    """The session's simulated cluster (see `sim_cluster`); stopped at the end of the session."""
    shared = _SharedSimCluster()
    yield shared
    shared.shutdown()


@pytest.fixture(scope="module")
def sim_cluster(shared_sim_cluster: _SharedSimCluster) -> Iterator[SimCluster]:
    """Head (1 CPU) + cpu-a (2 CPU, zone a) + cpu-b (2 CPU, ``ssd`` resource, zone b) + gpu (2 CPU, 1 T4).

    One cluster for the session: its modules run one after another, at the end. This process leaves the
    embedded Ray and connects to it; at the end of the module the nodes its tests added are removed.
    """
    yield shared_sim_cluster.acquire()
    shared_sim_cluster.release()


@pytest.fixture(scope="session")
def metrics_ray() -> Iterator[MetricsRay]:
    """A local Ray whose processes report metrics every 0.5 s, shared by the modules that read the export
    (they run together, after the ones on the embedded Ray); ``connect()`` returns its export port."""
    shared = MetricsRay()
    yield shared
    shared.shutdown()


# ---- the order of the modules ------------------------------------------------------------------------------

# Which Ray a module's tests need, in the order the groups run: the embedded local Ray (and Ray-free tests),
# the metrics Ray, the simulated cluster. Each switch stops one Ray and starts another (seconds each time).
_RAY_GROUPS = ("metrics_ray", "sim_cluster")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Runs the modules on the embedded Ray first, then those on the metrics Ray, then those on the simulated
    cluster, so that each is started once; within each, the modules that share a Serve instance
    (``shared_serve``, tests/serving/conftest.py) run last, one after another. Otherwise the order of the
    modules and of the tests within a module stays as collected."""
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::", 1)[0], []).append(item)

    def group(module_items: list[pytest.Item]) -> tuple[int, bool]:
        needs = {name for item in module_items for name in getattr(item, "fixturenames", ())}
        ray_group = max(
            (rank + 1 for rank, name in enumerate(_RAY_GROUPS) if name in needs), default=0
        )
        # within a group, the modules whose apps share one Serve instance run last, one after another
        return ray_group, "shared_serve" in needs

    ordered = sorted(modules.values(), key=group)  # stable: collected order within a group
    items[:] = [item for module_items in ordered for item in module_items]
