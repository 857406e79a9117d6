"""``ray job submit --working-dir . -- python -m examples.mof`` against a running cluster (the shared run
of `tests.examples.conftest.mof_job`)."""

from __future__ import annotations

import json
import os

import pytest

from tests.examples.conftest import MOF_JOB_BUDGET, MofJob, mof_run

pytestmark = pytest.mark.slow


def test_mof_runs_as_a_ray_job(mof_job: MofJob) -> None:
    out = mof_run(mof_job)
    assert "succeeded" in mof_job.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["funnel"]["generated"] == MOF_JOB_BUDGET
    assert (out / "candidates.csv").exists() and (out / "best_uptake.png").exists()
    assert os.path.basename(summary["namespace"]).startswith("mof-")
