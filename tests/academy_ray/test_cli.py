"""The academy-ray command against agents in a running cluster."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from rich.console import Console

from academy_ray import Agent, Runtime, action, cli
from tests.academy_ray.agents import Counter
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


class Chatty(Agent):
    """Logs and prints what it is told."""

    @action
    async def say(self, text: str) -> str:
        logging.getLogger("chatty").warning("chatty says %s", text)
        print(f"chatty printed {text}", flush=True)
        return text

    @action
    async def block(self, seconds: float) -> None:
        time.sleep(seconds)  # holds the host's event loop: the host does not answer meanwhile


def _top_once(namespace: str) -> str:
    """One frame of ``academy-ray top`` for ``namespace``, run in this process (its Ray is joined)."""
    out = io.StringIO()
    console = cli.console
    cli.console = Console(file=out, width=220)
    try:
        assert cli.main(["--namespace", namespace, "top", "--once"]) == 0
    finally:
        cli.console = console
    return out.getvalue()


async def test_top_once_renders_a_running_pipeline(
    local_ray: None, make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = make_runtime()
    first = await rt.launch(Counter, name="stage-a")
    second = await rt.launch(Counter, name="stage-b", pool="top-pool")
    chatty = await rt.launch(Chatty, name="stage-c", pool="top-pool")
    for n in range(3):
        await first.add(n)
    await second.add(5)
    with pytest.raises(KeyError):
        await second.fail("on purpose")
    frame = await asyncio.to_thread(_top_once, rt.namespace)
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in frame.splitlines()]
    rows = {row[0]: row for row in cells if row and row[0].startswith("stage-")}
    assert set(rows) == {"stage-a", "stage-b", "stage-c"}, frame
    assert all(row[1] == "running" for row in rows.values()), frame
    # name, status, calls, failed: stage-b made one good call and one that raised
    assert rows["stage-a"][2:4] == ["3", ""] and rows["stage-b"][2:4] == ["2", "1"], frame
    assert "3 agents, 0 unreachable" in frame

    # a host that does not answer in time is shown as such, and the frame still comes
    monkeypatch.setattr("academy_ray.runtime.LIST_TIMEOUT_S", 0.5)
    blocked = asyncio.ensure_future(chatty.block(3.0))
    await asyncio.sleep(0.3)
    frame = await asyncio.to_thread(_top_once, rt.namespace)
    assert "2 agents, 1 unreachable" in frame, frame  # the pool's two agents are one host
    await blocked


def test_logs_prints_a_line_the_agent_logged(standalone_cluster: str, namespace: str) -> None:
    run_driver(
        standalone_cluster,
        namespace,
        """
        from tests.academy_ray.test_cli import Chatty
        chatty = await rt.launch(Chatty, name="chatty")
        await chatty.say("hello-logs")
        """,
    )
    logged = _cli(standalone_cluster, namespace, "logs", "chatty", "--tail", "100")
    assert logged.returncode == 0, logged.stdout + logged.stderr[-2000:]
    assert "chatty says hello-logs" in logged.stdout
    _cli(standalone_cluster, namespace, "stop", "chatty")
