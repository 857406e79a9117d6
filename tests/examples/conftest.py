"""Helpers of the example tests: the examples run as separate processes, as a scientist runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


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
