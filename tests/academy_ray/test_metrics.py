"""Per-agent metrics: counted in the agent's host, shown in its `AgentInfo`, exported through Ray's metrics."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid
from collections.abc import Callable

import pytest

from academy_ray import (
    ActionArgumentError,
    ActionNotFoundError,
    Agent,
    CheckpointPolicy,
    Runtime,
    loop,
)
from academy_ray.checkpoint import Persistence
from academy_ray.metrics import AgentMetrics
from tests.academy_ray.agents import Counter
from tests.harness import MetricsRay

# ---- the host-side figures (no Ray) --------------------------------------------------------------------------


def test_calls_are_counted_by_action_and_outcome() -> None:
    metrics = AgentMetrics("ns", "agent", actions=["add"], export=False)
    endings: list[tuple[str, float, BaseException | None]] = [
        ("add", 0.001, None),
        ("add", 0.003, None),
        ("add", 0.002, KeyError("raised by the action")),
        ("add", 0.0005, ActionArgumentError("agent", "add", "n", "not an int")),
        ("add", 0.004, asyncio.CancelledError()),
        ("no_such", 0.0001, ActionNotFoundError("agent", "Cls", "no_such", ["add"])),
    ]
    for action, seconds, error in endings:
        metrics.call_started()
        metrics.call_finished(action, seconds, error)
    metrics.call_started()  # one still running
    stats = metrics.snapshot()
    assert stats.actions == {"ok": 2, "error": 1, "rejected": 2, "cancelled": 1}
    assert stats.by_action == {
        "add": 5,
        "_unknown": 1,
    }  # a caller's made-up name adds no label value
    assert stats.calls == 6 and stats.in_flight == 1
    assert stats.latency_p50_s == pytest.approx(0.0015)
    assert stats.latency_p99_s == pytest.approx(0.004)


async def test_checkpoint_saves_and_pending_changes_are_followed(local_ray: None) -> None:
    # Ray only for the store check: activate() records the memory:// store's identity in Ray's KV.
    persistence = Persistence(
        CheckpointPolicy(uri=f"memory://metrics-{uuid.uuid4().hex}"), "ns", "agent", "tests.Cls"
    )
    metrics = AgentMetrics("ns", "agent", actions=[], export=False)
    metrics.track(persistence)
    assert await persistence.activate() is None
    persistence.mark_changed()
    persistence.mark_changed()
    assert metrics.snapshot().checkpoints_pending == 2
    await persistence.save(lambda: {"count": 3})
    stats = metrics.snapshot()
    assert stats.checkpoint_saves == 1 and stats.checkpoints_pending == 0
    assert stats.checkpoint_bytes > 0 and stats.last_save_s is not None and stats.last_save_s > 0
    await persistence.close(None)


# ---- Ray's metrics export ----------------------------------------------------------------------------------


class Stumbles(Agent):
    """Its loop raises once, then runs again (the ``restart`` policy)."""

    agent_loop_error_policy = "restart"

    def __init__(self) -> None:
        self.stumbled = False

    @loop
    async def work(self, shutdown: asyncio.Event) -> None:
        if not self.stumbled:
            self.stumbled = True
            raise RuntimeError("stumbled once")
        await shutdown.wait()


EXPORTED = (
    "ray_academy_agent_actions_total",
    "ray_academy_agent_action_seconds_count",
    "ray_academy_agent_actions_in_flight",
    "ray_academy_agent_loop_restarts_total",
    "ray_academy_agent_checkpoint_save_seconds_count",
    "ray_academy_agent_checkpoint_bytes_total",
    "ray_academy_agent_checkpoints_pending",
    "ray_academy_agent_restores_total",
)


@pytest.fixture(scope="module")
def metrics_port(metrics_ray: MetricsRay) -> int:
    """The export port of the session's Ray whose processes report metrics every 0.5 s."""
    return metrics_ray.connect()


def _series(port: int, namespace: str, ready: Callable[[str], bool]) -> dict[str, str]:
    """The export's lines of each `EXPORTED` metric for ``namespace``, once ``ready`` holds on all of them.

    The agents' processes report on their own clocks: poll until the figures are there (or fail).
    """
    deadline = time.monotonic() + 30
    found: dict[str, str] = {}
    while time.monotonic() < deadline:
        text = (
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        )
        mine = [line for line in text.splitlines() if f'namespace="{namespace}"' in line]
        found = {
            name: "\n".join(line for line in mine if line.startswith(name + "{"))
            for name in EXPORTED
        }
        if all(found.values()) and ready("\n".join(found.values())):
            return found
        time.sleep(0.5)
    pytest.fail(f"not exported in 30 s: {[name for name, lines in found.items() if not lines]}")


def _value(lines: str, *labels: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in lines.splitlines()
        if all(label in line for label in labels)
    )


async def test_metrics_reach_rays_prometheus_export(
    metrics_port: int, make_runtime: Callable[..., Runtime], store_uri: str
) -> None:
    rt = make_runtime(checkpoint=store_uri)
    counter = await rt.launch(Counter, name="metered")
    await counter.add(2)
    await counter.add(3)
    with pytest.raises(ActionArgumentError):
        await counter.add("three")
    with pytest.raises(ActionNotFoundError):
        await counter.action("no_such_action")
    await rt.rollback("metered", 1)  # a restore
    await rt.launch(Stumbles, name="stumbles", checkpoint=False)

    found = _series(
        metrics_port,
        rt.namespace,
        ready=lambda text: "stumbles" in text and 'source="rollback"' in text,
    )
    actions = found["ray_academy_agent_actions_total"]
    assert _value(actions, 'agent="metered"', 'action="add"', 'outcome="ok"') == 2
    assert _value(actions, 'agent="metered"', 'action="add"', 'outcome="rejected"') == 1
    assert _value(actions, 'action="_unknown"', 'outcome="rejected"') == 1
    assert "no_such_action" not in "\n".join(found.values())
    assert _value(found["ray_academy_agent_action_seconds_count"], 'action="add"') == 3
    assert _value(found["ray_academy_agent_loop_restarts_total"], 'agent="stumbles"') == 1
    assert _value(found["ray_academy_agent_checkpoint_save_seconds_count"], 'agent="metered"') >= 2
    assert _value(found["ray_academy_agent_checkpoint_bytes_total"], 'agent="metered"') > 0
    assert _value(found["ray_academy_agent_restores_total"], 'source="rollback"') == 1

    [info] = [info for info in await rt.list() if info.name == "metered"]
    assert info.stats is not None and info.stats.actions == {"ok": 2, "rejected": 2}
    assert info.stats.restores == 1 and info.stats.checkpoint_saves >= 2
