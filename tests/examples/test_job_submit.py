"""``ray job submit --working-dir . -- python -m examples.mof`` against a running cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.examples.conftest import REPO, example_env
from tests.harness import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head node with the dashboard's job server; yields the dashboard URL."""
    port = free_port()
    host = subprocess.Popen(
        [sys.executable, "-m", "tests.examples.cluster_host", str(port)],
        cwd=REPO,
        env=example_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert host.stdout is not None
        line = host.stdout.readline()
        if not line.startswith("READY"):
            pytest.fail(f"cluster did not start: {line!r}")
        url = line.split()[2]
        deadline = time.monotonic() + 60
        while True:  # the job server answers a little after the head is up
            try:
                urllib.request.urlopen(f"{url}/api/version", timeout=5).read()
                break
            except urllib.error.HTTPError:  # it answers (401 where token auth is on)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield url
    finally:
        assert host.stdin is not None
        host.stdin.close()
        try:
            host.wait(timeout=60)
        except subprocess.TimeoutExpired:
            host.kill()
            host.wait()


def test_mof_runs_as_a_ray_job(cluster: str, tmp_path: Path) -> None:
    ray = str(Path(sys.executable).with_name("ray"))
    out = tmp_path / "mof-job"
    env = example_env()
    command = [
        ray, "job", "submit", "--address", cluster, "--working-dir", ".",
        "--", "python", "-m", "examples.mof", "--budget", "16", "--insertions", "300", "--learned", "trigram",
        "--out", str(out), "--quiet",
    ]  # fmt: skip
    deadline = (
        time.monotonic() + 180
    )  # generous: on a loaded 2-core machine the job agent comes up late
    while True:
        proc = subprocess.run(
            command, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
        )
        # The job server takes a few seconds after the head is up to have a job agent.
        if "No available agent to submit job" not in proc.stderr or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "succeeded" in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["funnel"]["generated"] == 16
    assert (out / "candidates.csv").exists() and (out / "best_uptake.png").exists()
    assert os.path.basename(summary["namespace"]).startswith("mof-")
