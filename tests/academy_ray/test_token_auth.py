"""academy_ray on a Ray cluster with token authentication (RAY_AUTH_MODE=token): the right token works end to
end (launch, call, CLI), a wrong one is refused."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from tests.academy_ray.test_detached import REPO

CLUSTER_SCRIPT = textwrap.dedent(
    """
    import sys
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 2})
    print(cluster.address, flush=True)
    sys.stdin.read()
    cluster.shutdown()
    """
)


def _env(token: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture(scope="module")
def secured_cluster() -> Iterator[tuple[str, str]]:
    """A cluster whose processes all run with a token of their own; yields (address, token)."""
    token = secrets.token_hex(16)
    process = subprocess.Popen(
        [sys.executable, "-c", CLUSTER_SCRIPT],
        env=_env(token),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    address = process.stdout.readline().strip()
    assert address, "the secured cluster did not start"
    yield address, token
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=60)


def _run(code: str, token: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**_env(token), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_right_token_launches_and_calls(secured_cluster: tuple[str, str]) -> None:
    address, token = secured_cluster
    code = textwrap.dedent(
        f"""
        import asyncio
        from academy_ray import Runtime
        from tests.academy_ray.agents import Counter

        async def main():
            rt = Runtime(address={address!r}, namespace="secured")
            counter = await rt.launch(Counter, name="guarded")
            print(await counter.add(5))
        asyncio.run(main())
        """
    )
    done = _run(code, token)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "5"
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "academy_ray.cli",
            "--address",
            address,
            "--namespace",
            "secured",
            "call",
            "guarded",
            "get",
        ],
        env=_env(token),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert listed.returncode == 0 and listed.stdout.strip() == "5", listed.stderr[-2000:]


def test_wrong_token_is_refused(secured_cluster: tuple[str, str]) -> None:
    address, _ = secured_cluster
    code = f"from academy_ray import Runtime\nRuntime(address={address!r}, namespace='secured')\nprint('joined')"
    # Ray's driver retries its first connection for ~20 s (one try a second) before giving up; two tries
    # show the refusal as well.
    done = _run(code, "not-the-token", RAY_gcs_server_port_wait_time_s="2")
    assert done.returncode != 0
    assert "joined" not in done.stdout
    assert "auth" in (done.stderr + done.stdout).lower()
