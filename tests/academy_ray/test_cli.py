"""The academy-ray command against agents in a running cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.academy_ray.test_detached import REPO, run_driver


def _cli(address: str, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "COLUMNS": "200"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "academy_ray.cli",
            "--address",
            address,
            "--namespace",
            namespace,
            *args,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )


def test_list_call_stop(standalone_cluster: str, namespace: str) -> None:
    run_driver(
        standalone_cluster, namespace, 'await rt.launch(Counter, args=(3,), name="cli-agent")'
    )
    listed = _cli(standalone_cluster, namespace, "list", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    [info] = json.loads(listed.stdout)
    assert info["name"] == "cli-agent" and info["status"] == "running"
    called = _cli(standalone_cluster, namespace, "call", "cli-agent", "add", "--args", "[4]")
    assert called.returncode == 0 and json.loads(called.stdout) == 7
    bad = _cli(standalone_cluster, namespace, "call", "cli-agent", "add", "--args", '["x"]')
    assert bad.returncode == 1 and "parameter 'n'" in bad.stdout
    missing = _cli(standalone_cluster, namespace, "call", "cli-agent", "nope")
    assert missing.returncode == 1 and "no action 'nope'" in missing.stdout
    explained = _cli(standalone_cluster, namespace, "explain", "cli-agent")
    assert (
        explained.returncode == 0
        and "cli-agent: node" in explained.stdout
        and "candidates" in explained.stdout
    )
    as_json = json.loads(
        _cli(standalone_cluster, namespace, "explain", "cli-agent", "--json").stdout
    )
    assert as_json["name"] == "cli-agent" and as_json["node_id"] == info["node_id"]
    table = _cli(standalone_cluster, namespace, "list")
    assert "cli-agent" in table.stdout and "running" in table.stdout
    stopped = _cli(standalone_cluster, namespace, "stop", "cli-agent")
    assert stopped.returncode == 0
    assert json.loads(_cli(standalone_cluster, namespace, "list", "--json").stdout) == []


def test_checkpoints_inspect_rollback(standalone_cluster: str, namespace: str, tmp_path) -> None:
    uri = f"file://{tmp_path}/store"
    run_driver(
        standalone_cluster,
        namespace,
        f"""
        counter = await rt.launch(Counter, name="ckpt-agent", checkpoint={uri!r})
        await counter.add(1)
        await counter.add(10)
        """,
    )
    listed = _cli(standalone_cluster, namespace, "checkpoints", "ckpt-agent")
    assert listed.returncode == 0, listed.stdout + listed.stderr[-2000:]
    assert "count:json" in listed.stdout
    inspected = _cli(standalone_cluster, namespace, "inspect", "ckpt-agent", "1")
    assert inspected.returncode == 0, inspected.stdout
    assert json.loads(inspected.stdout)["fields"] == {"count": 1}
    rolled = _cli(standalone_cluster, namespace, "rollback", "ckpt-agent", "1")
    assert rolled.returncode == 0, rolled.stdout
    got = _cli(standalone_cluster, namespace, "call", "ckpt-agent", "get")
    assert json.loads(got.stdout) == 1
    _cli(standalone_cluster, namespace, "stop", "ckpt-agent")
    offline = _cli(standalone_cluster, namespace, "checkpoints", "ckpt-agent", "--uri", uri)
    assert offline.returncode == 0 and "rollback of 1" in offline.stdout
    missing = _cli(standalone_cluster, namespace, "inspect", "ckpt-agent", "99", "--uri", uri)
    assert missing.returncode == 1 and "error" in missing.stdout
