"""Holds a real Ray cluster (head with dashboard and job server) for a test, in a process of its own.

``python -m tests.examples.cluster_host DASHBOARD_PORT`` prints ``READY <gcs address> <dashboard url>``
and keeps the cluster until its stdin closes; then ``Cluster.shutdown`` stops exactly the processes it
started (never ``ray stop``, which would kill every Ray on the machine).
"""

from __future__ import annotations

import sys

from examples.common.runtime import prepare_environment

prepare_environment()

from ray.cluster_utils import Cluster

from tests.harness import free_port


def main(dashboard_port: int) -> None:
    # The job server needs the head's dashboard agent; its default port (52365) is taken when
    # another Ray runs on this machine, and the agent then serves no jobs ("No available agent").
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 2,
            "include_dashboard": True,
            "dashboard_port": dashboard_port,
            "dashboard_host": "127.0.0.1",
            "dashboard_agent_listen_port": free_port(),
        },
    )
    try:
        cluster.wait_for_nodes()
        print(f"READY {cluster.address} http://127.0.0.1:{dashboard_port}", flush=True)
        sys.stdin.read()  # until the test closes our stdin (or dies)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]))
