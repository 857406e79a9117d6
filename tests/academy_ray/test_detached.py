"""Agents outlive the driver that launched them: a second driver process re-attaches by name."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_driver(address: str, namespace: str, body: str) -> str:
    """Runs ``body`` inside ``async def main()`` of a new driver process with ``rt`` connected; its stdout."""
    script = (
        textwrap.dedent(
            f"""
        import asyncio
        from academy_ray import Runtime
        from tests.academy_ray.agents import Counter

        async def main():
            rt = Runtime(address={address!r}, namespace={namespace!r})
        """
        )
        + textwrap.indent(textwrap.dedent(body), " " * 4)
        + "\nasyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_agent_survives_its_driver_and_is_reattached(
    standalone_cluster: str, namespace: str
) -> None:
    first = run_driver(
        standalone_cluster,
        namespace,
        """
        counter = await rt.launch(Counter, args=(10,), name="survivor")
        print(await counter.add(5))
        """,
    )
    assert first.split()[-1] == "15"
    second = run_driver(
        standalone_cluster,
        namespace,
        """
        counter = rt.get("survivor")
        print(await counter.add(1))
        print([info.name for info in await rt.list()])
        await rt.stop("survivor")
        """,
    )
    assert second.split("\n")[-3:-1] == ["16", "['survivor']"]
