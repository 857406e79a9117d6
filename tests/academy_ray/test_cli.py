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


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", "COLUMNS": "200"}


def _python(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Runs this Python with ``args`` as a process of its own, in the repository, output captured."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        check=False,
        text=True,
        timeout=timeout,
    )


def _cli(address: str, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs ``academy-ray --address ... --namespace ... *args`` as a process of its own."""
    return _python(
        "-m", "academy_ray.cli", "--address", address, "--namespace", namespace, *args, timeout=120
    )


_COMMANDS_IN_TURN = """
import contextlib, io, json, sys
from academy_ray import cli
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    results.append([status, out.getvalue(), err.getvalue()])
print(json.dumps(results))
"""


def _cli_in_turn(
    address: str, namespace: str, *commands: tuple[str, ...]
) -> list[subprocess.CompletedProcess[str]]:
    """Runs each command of ``academy-ray`` in turn, each as `_cli` would: ``cli.main`` with the same
    arguments joins the cluster, runs the command and leaves, and its exit status and output are recorded.

    All of them in one new process: one Python start-up (~0.7 s) for all instead of one each; `_cli` covers
    the ``python -m academy_ray.cli`` entry point itself.
    """
    argvs = [["--address", address, "--namespace", namespace, *command] for command in commands]
    done = _python("-c", _COMMANDS_IN_TURN, json.dumps(argvs), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [
        subprocess.CompletedProcess(argv, status, out, err)
        for argv, (status, out, err) in zip(
            argvs, json.loads(done.stdout.splitlines()[-1]), strict=True
        )
    ]


def test_list_call_stop(standalone_cluster: str, namespace: str) -> None:
    run_driver(
        standalone_cluster, namespace, 'await rt.launch(Counter, args=(3,), name="cli-agent")'
    )
    listed = _cli(standalone_cluster, namespace, "list", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    [info] = json.loads(listed.stdout)
    assert info["name"] == "cli-agent" and info["status"] == "running"
    called, bad, missing, explained, explained_json, table, stopped, listed_after = _cli_in_turn(
        standalone_cluster,
        namespace,
        ("call", "cli-agent", "add", "--args", "[4]"),
        ("call", "cli-agent", "add", "--args", '["x"]'),
        ("call", "cli-agent", "nope"),
        ("explain", "cli-agent"),
        ("explain", "cli-agent", "--json"),
        ("list",),
        ("stop", "cli-agent"),
        ("list", "--json"),
    )
    assert called.returncode == 0 and json.loads(called.stdout) == 7
    assert bad.returncode == 1 and "parameter 'n'" in bad.stdout
    assert missing.returncode == 1 and "no action 'nope'" in missing.stdout
    assert (
        explained.returncode == 0
        and "cli-agent: node" in explained.stdout
        and "candidates" in explained.stdout
    )
    as_json = json.loads(explained_json.stdout)
    assert as_json["name"] == "cli-agent" and as_json["node_id"] == info["node_id"]
    assert "cli-agent" in table.stdout and "running" in table.stdout
    assert stopped.returncode == 0
    assert json.loads(listed_after.stdout) == []


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
    listed, inspected, rolled, got, _, offline, missing = _cli_in_turn(
        standalone_cluster,
        namespace,
        ("checkpoints", "ckpt-agent"),
        ("inspect", "ckpt-agent", "1"),
        ("rollback", "ckpt-agent", "1"),
        ("call", "ckpt-agent", "get"),
        ("stop", "ckpt-agent"),
        ("checkpoints", "ckpt-agent", "--uri", uri),
        ("inspect", "ckpt-agent", "99", "--uri", uri),
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr[-2000:]
    assert "count:json" in listed.stdout
    assert inspected.returncode == 0, inspected.stdout
    assert json.loads(inspected.stdout)["fields"] == {"count": 1}
    assert rolled.returncode == 0, rolled.stdout
    assert json.loads(got.stdout) == 1
    assert offline.returncode == 0 and "rollback of 1" in offline.stdout
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
    logged, stopped = _cli_in_turn(
        standalone_cluster, namespace, ("logs", "chatty", "--tail", "100"), ("stop", "chatty")
    )
    assert logged.returncode == 0, logged.stdout + logged.stderr[-2000:]
    assert "chatty says hello-logs" in logged.stdout
    assert stopped.returncode == 0
