"""Helpers of the example tests: the examples run as separate processes, as a scientist runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from tests.harness import free_port

REPO = Path(__file__).resolve().parents[2]

MOF_JOB_BUDGET = 30
"""Candidates of the shared MOF run (`mof_job`): at ``--retrain-every 5`` at least 5 are scored, so that
the Database retrains the Generator at least once."""


@pytest.fixture(scope="package", autouse=True)
def _this_process_leaves_ray() -> None:
    """The examples run as processes of their own: the embedded Ray the tests before left running in this
    process (idle, four CPUs) is stopped so that it takes no CPU time from them; the tests after start it
    again on demand (`tests.harness.use_local_ray`)."""
    import ray

    ray.shutdown()


def example_env() -> dict[str, str]:
    """The environment of an example process (token auth when this machine's Ray uses it)."""
    env = dict(os.environ)
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env["OPENBLAS_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(REPO)
    # `python` in a job's entrypoint is this interpreter (as with an activated virtual environment)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("RAY_ADDRESS", None)
    if (Path.home() / ".ray" / "auth_token").exists():
        env["RAY_AUTH_MODE"] = "token"
    return env


def run_module(module: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Runs ``python -m module args`` in the repository; fails the test with its output if it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        check=False,
        cwd=REPO,
        env=example_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{module} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def read_summary(out: Path) -> dict[str, Any]:
    """The run's summary.json."""
    return json.loads((out / "summary.json").read_text())


@contextmanager
def cluster_host() -> Iterator[str]:
    """A head node with the dashboard's job server, in a process of its own; yields the dashboard URL."""
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
                time.sleep(0.2)
        yield url
    finally:
        assert host.stdin is not None
        host.stdin.close()
        try:
            host.wait(timeout=60)
        except subprocess.TimeoutExpired:
            host.kill()
            host.wait()


class MofJob(BaseModel):
    """What the shared MOF run left: ``ray job submit``'s output and the run's output directory."""

    out: Path
    stdout: str
    returncode: int
    stderr: str


@pytest.fixture(scope="package")
def mof_job(tmp_path_factory: pytest.TempPathFactory) -> MofJob:
    """One MOF run shared by the tests of its command line (`test_mof`), of the Generator's fallback when
    serving is down (`test_mof_llm`) and of job submission (`test_job_submit`): ``ray job submit
    --working-dir . -- python -m examples.mof --llm-url <nothing listens> ...`` against a running cluster
    (which is stopped once the job ended). Each of those tests checks the same files it checked when it
    started a run of its own; the embedded-Ray path of ``python -m examples.mof`` is run by
    `test_mof_llm`'s retraining test.
    """
    out = tmp_path_factory.mktemp("mof-job") / "out"
    down = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: the fallback
    ray = str(Path(sys.executable).with_name("ray"))
    with cluster_host() as url:
        command = [
            ray, "job", "submit", "--address", url, "--working-dir", ".",
            "--", "python", "-m", "examples.mof", "--llm", "--llm-url", down,
            "--budget", str(MOF_JOB_BUDGET), "--retrain-every", "5", "--insertions", "300",
            "--out", str(out), "--quiet",
        ]  # fmt: skip
        deadline = (
            time.monotonic() + 180
        )  # generous: on a loaded 2-core machine the job agent is late
        while True:
            proc = subprocess.run(
                command, check=False, cwd=REPO, env=example_env(), capture_output=True, text=True,
                timeout=300,
            )  # fmt: skip
            # The job server takes a few seconds after the head is up to have a job agent.
            if "No available agent to submit job" not in proc.stderr or time.monotonic() > deadline:
                break
            time.sleep(1)
    return MofJob(out=out, stdout=proc.stdout, stderr=proc.stderr, returncode=proc.returncode)


def mof_run(job: MofJob) -> Path:
    """The shared run's output directory; fails the test with the job's output if the job failed."""
    if job.returncode != 0 or not (job.out / "summary.json").exists():
        pytest.fail(
            f"the MOF job failed ({job.returncode})\n{job.stdout[-4000:]}\n{job.stderr[-4000:]}"
        )
    return job.out
