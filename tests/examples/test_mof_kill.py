"""Kill -9 the Database and the Validator mid-run: the pipeline resumes from their checkpoints and the
Database's final counts equal what every stage acknowledged (nothing lost, nothing counted twice)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.examples.conftest import run_module

pytestmark = [pytest.mark.slow, pytest.mark.chaos]


def test_killed_agents_resume_and_lose_nothing(tmp_path: Path) -> None:
    proc = run_module("tests.examples.mof_chaos", str(tmp_path), timeout=300)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT ") :])
    for name in ("database", "validator"):
        assert result["restarted"][name]["restarted"], result
        assert result["restarted"][name]["pid"] != result["killed"][name]["pid"]
        assert result["killed"][name]["funnel_before"]["pending"] > 0  # killed mid-run
    funnel = result["funnel"]
    assert funnel["pending"] == 0
    assert funnel["generated"] == result["issued"] == result["budget"] == result["records"]
    # every candidate a stage acknowledged is in the Database exactly once, at the right step
    assert funnel["valid"] == result["accepted"]["assembler"]
    assert funnel["assembled"] == result["accepted"]["validator"]
    assert funnel["stable"] == result["accepted"]["estimator"]
    assert funnel["scored"] == funnel["stable"]
    assert result["assembler_throttled"] >= 1  # the Validator's backpressure (high water 2) acted
    assert result["retrains"] >= 1  # the restarted Database still knows whom to retrain
