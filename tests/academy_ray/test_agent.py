"""The Agent base class and decorators, without Ray."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from academy_ray import Agent, AgentError, action, event, loop, timer
from tests.academy_ray.agents import Counter, FailingLoopIgnored, Lifecycle, Watcher


def test_action_must_be_async() -> None:
    with pytest.raises(TypeError, match="not a coroutine"):

        class Bad(Agent):
            @action  # type: ignore[arg-type]
            def sync_action(self) -> int:
                return 1


def test_loop_signature_is_checked() -> None:
    with pytest.raises(TypeError, match="signature"):

        class Bad(Agent):
            @loop  # type: ignore[arg-type]
            async def run(self) -> None:
                pass


def test_timer_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        timer(0)
    assert timer(timedelta(milliseconds=5)) is not None


def test_actions_and_loops_are_discovered_through_inheritance() -> None:
    assert {"add", "get", "fail", "sleep", "get_ticks"} <= set(Counter.agent_actions())
    assert set(Counter.agent_loops()) == {"tick"}
    assert set(Lifecycle.agent_loops()) == {"run"}
    assert set(Watcher.agent_loops()) == {"on_alert"}
    assert set(FailingLoopIgnored.agent_loops()) == {"explode"}
    assert "agent_on_startup" not in Counter.agent_actions()


def test_bare_agent_has_no_context() -> None:
    with pytest.raises(AgentError, match="not running"):
        _ = Counter().agent_name


def test_default_checkpoint_and_restore_use_state_fields() -> None:
    counter = Counter(start=3)
    assert counter.agent_checkpoint() == {"count": 3}
    fresh = Counter()
    fresh.agent_restore({"count": 9, "unrelated": 1})
    assert fresh.count == 9


async def test_event_and_timer_loops_run_and_stop() -> None:
    class Probe(Agent):
        def __init__(self) -> None:
            self.flag = asyncio.Event()
            self.events = 0
            self.ticks = 0

        @event("flag")
        async def on_flag(self) -> None:
            self.events += 1

        @timer(0.01)
        async def on_tick(self) -> None:
            self.ticks += 1

    probe = Probe()
    shutdown = asyncio.Event()
    tasks = [
        asyncio.ensure_future(probe.on_flag(shutdown)),
        asyncio.ensure_future(probe.on_tick(shutdown)),
    ]
    probe.flag.set()
    await asyncio.sleep(0.1)
    shutdown.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 2)
    assert probe.events == 1 and not probe.flag.is_set()
    assert probe.ticks >= 3


async def test_event_on_a_non_event_attribute_fails_clearly() -> None:
    class Wrong(Agent):
        def __init__(self) -> None:
            self.flag = "not an event"

        @event("flag")
        async def on_flag(self) -> None:
            pass

    with pytest.raises(TypeError, match="not an asyncio.Event"):
        await Wrong().on_flag(asyncio.Event())
