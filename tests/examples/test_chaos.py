"""CI-sized chaos runs of the MOF pipeline on a simulated 3-node cluster (``benchmarks/chaos.py``).

Each scenario runs as a process of its own (it builds its own `ray.cluster_utils.Cluster` and, for the
storage outage, its own SeaweedFS), with a smaller budget than the benchmark and, for the storage outage,
a 4 s outage instead of the benchmark's 30 s. The full-size figures come from ``python -m benchmarks.chaos``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.examples.conftest import run_module

pytestmark = [pytest.mark.slow, pytest.mark.chaos]

SEED = "9"  # kills two agents, then loses a node, then kills the placement controller


def run_chaos(*args: str) -> dict[str, Any]:
    """Runs one scenario of the harness and returns its result (the test fails with its output if it fails)."""
    proc = run_module("benchmarks.chaos", "--seed", SEED, "--timeout-s", "120", *args, timeout=280)
    line = next(x for x in reversed(proc.stdout.splitlines()) if x.startswith('{"benchmark"'))
    (result,) = json.loads(line)["results"]
    return result  # type: ignore[no-any-return]


def test_kills_and_node_loss_lose_nothing() -> None:
    # Faults come one after the other, each once the previous one recovered (a node loss takes ~5 s),
    # while the pipeline goes on: the budget leaves room after the last fault point (40% of it), or
    # on an idle machine the run could end before the third fault (seen: faults_mid_run failed).
    result = run_chaos(
        "--scenario", "kill", "--budget", "160", "--last", "0.4", "--kills", "2",
        "--node-losses", "1", "--controller-kills", "1",
    )  # fmt: skip
    failed = [name for name, ok in result["checks"].items() if not ok]
    assert not failed, (failed, result)
    kinds = sorted(fault["kind"] for fault in result["faults"])
    assert kinds == ["controller", "kill", "kill", "node"]
    (controller,) = [f for f in result["faults"] if f["kind"] == "controller"]
    assert controller["collateral"] == [] and controller["restored"] >= 5
    assert all(fault["mid_run"] for fault in result["faults"])
    node_loss = next(f for f in result["faults"] if f["kind"] == "node")
    assert node_loss["agents"], "the removed node hosted no agent"
    assert result["recovery_s"]["n"] == 2 + len(node_loss["agents"])
    assert result["records"] == 160
    assert all(agent["status"] == "running" for agent in result["agents"].values())


def test_storage_outage_keeps_agents_serving_and_checkpoints_intact() -> None:
    # 4 s down outlasts the agents' first three checkpoint retries (back-off 0.5, 1, 2 s), and the harness's
    # probes (a read of each agent, a state change that must be refused) run in it once or twice (8 s
    # only waited longer); on 30 candidates the outage (seeded at 9 final) finds 7 in flight and most of
    # the run still to come
    result = run_chaos("--scenario", "storage", "--budget", "30", "--outage-s", "4")
    failed = [name for name, ok in result["checks"].items() if not ok]
    assert not failed, (failed, result)
    outage = result["outage"]
    assert outage["down_s"] >= 4
    assert outage["read_failures"] == 0 and outage["reads"] >= 5
    assert outage["storage_errors"] >= 1 and outage["other_errors"] == 0
    assert set(outage["pending_agents"]) <= set(result["checkpoint_resume_s"])
    assert result["checkpoints_verified"] > 0 and result["corrupt"] == []
    assert result["records"] == 30
