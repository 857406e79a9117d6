"""Academy 1.0 programs run on academy_ray with only their imports changed (``academy.`` -> ``academy_ray.compat.``).

The programs are written the way Academy's documentation and examples write them: a manager made from an
exchange factory and executors, agents that set their state up in ``agent_on_startup``, handles passed to
other agents, loops that shut their agent down, timers and events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from academy_ray.compat.agent import Agent, action, event, loop, timer
from academy_ray.compat.exception import AgentExitError, BadEntityIdError
from academy_ray.compat.exchange import LocalExchangeFactory
from academy_ray.compat.handle import Handle
from academy_ray.compat.logging.recommended import recommended_logging
from academy_ray.compat.manager import Manager
from academy_ray.exception import AgentNotFoundError, AgentTerminatedError
from academy_ray.runtime import Runtime
from tests.academy_ray.waiting import until

# ---- the programs' agents ----------------------------------------------------------------------------------


class Counter(Agent):
    count: int

    async def agent_on_startup(self) -> None:
        self.count = 0

    @action
    async def increment(self, value: int = 1) -> None:
        self.count += value

    @action
    async def get_count(self) -> int:
        return self.count


class Lowerer(Agent):
    @action
    async def lower(self, text: str) -> str:
        return text.lower()


class Reverser(Agent):
    @action
    async def reverse(self, text: str) -> str:
        return text[::-1]


class Coordinator(Agent):
    def __init__(self, lowerer: Handle[Lowerer], reverser: Handle[Reverser]) -> None:
        super().__init__()
        self.lowerer = lowerer
        self.reverser = reverser

    @action
    async def process(self, text: str) -> str:
        text = await self.lowerer.lower(text)
        return await self.reverser.reverse(text)


class Recorder(Agent):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    @action
    async def record(self, what: str) -> None:
        self.events.append(what)

    @action
    async def recorded(self) -> list[str]:
        return self.events


class Countdown(Agent):
    """Counts down in a loop, then shuts itself down and tells the recorder."""

    def __init__(self, steps: int, recorder: Handle[Recorder]) -> None:
        super().__init__()
        self.steps = steps
        self.recorder = recorder

    @loop
    async def count_down(self, shutdown: asyncio.Event) -> None:
        while not shutdown.is_set():
            self.steps -= 1
            if self.steps == 0:
                self.agent_shutdown()
            await asyncio.sleep(0.01)

    async def agent_on_shutdown(self) -> None:
        await self.recorder.record(f"{self.agent_id} done")


class Heartbeat(Agent):
    def __init__(self) -> None:
        super().__init__()
        self.beats = 0
        self.pokes = 0
        self.poked = asyncio.Event()

    @timer(0.05)
    async def beat(self) -> None:
        self.beats += 1

    @event("poked")
    async def on_poke(self) -> None:
        self.pokes += 1

    @action
    async def poke(self) -> None:
        self.poked.set()

    @action
    async def counts(self) -> dict[str, int]:
        return {"beats": self.beats, "pokes": self.pokes}


class Stumbler(Agent):
    """Its loop raises: under Academy's default policy the agent shuts down with that error."""

    @loop
    async def work(self, shutdown: asyncio.Event) -> None:
        raise RuntimeError("the instrument is gone")


class Preset(Agent):
    def __init__(self, start: int) -> None:
        super().__init__()
        self.value = start

    @action
    async def get(self) -> int:
        return self.value


# ---- the programs -------------------------------------------------------------------------------------------


@pytest.fixture
def namespace(module_namespace: str) -> str:
    return module_namespace  # one for the module: its tests name their agents apart


@pytest.fixture
def in_namespace(
    local_ray: None, make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> Runtime:
    """Points the programs' managers at the test's namespace (as ``ACADEMY_RAY_NAMESPACE`` would a user's);
    a runtime of that namespace, which cleans it up at the end."""
    runtime = make_runtime()
    monkeypatch.setenv("ACADEMY_RAY_NAMESPACE", runtime.namespace)
    return runtime


async def test_counter_program(in_namespace: Runtime) -> None:
    async with await Manager.from_exchange_factory(
        factory=LocalExchangeFactory(),
        executors=ThreadPoolExecutor(),
        log_config=recommended_logging(),
    ) as manager:
        agent_handle = await manager.launch(Counter)
        assert await agent_handle.get_count() == 0
        await agent_handle.increment()
        await agent_handle.increment(value=4)
        assert await agent_handle.get_count() == 5
        assert manager.running() == {agent_handle.agent_id}
        assert await agent_handle.ping(timeout=10) > 0
    assert manager.running() == set()
    with pytest.raises(AgentNotFoundError):
        in_namespace.get(agent_handle.agent_id)


async def test_agents_calling_agents(in_namespace: Runtime) -> None:
    async with await Manager.from_exchange_factory(factory=LocalExchangeFactory()) as manager:
        lowerer = await manager.launch(Lowerer)
        reverser = await manager.launch(Reverser)
        coordinator = await manager.launch(Coordinator, args=(lowerer, reverser))
        assert await coordinator.process("DEADBEEF") == "feebdaed"
        assert len(manager.running()) == 3


async def test_loop_agent_shuts_itself_down(in_namespace: Runtime) -> None:
    async with await Manager.from_exchange_factory(factory=LocalExchangeFactory()) as manager:
        recorder = await manager.launch(Recorder, name="recorder")
        countdown = await manager.launch(Countdown, kwargs={"steps": 5, "recorder": recorder})
        await manager.wait([countdown], timeout=30, raise_error=True)
        assert manager.running() == {recorder.agent_id}
        assert await recorder.recorded() == [f"{countdown.agent_id} done"]
        with pytest.raises((AgentTerminatedError, AgentNotFoundError)):
            await countdown.action("anything")


async def test_timer_event_and_shutdown(in_namespace: Runtime) -> None:
    async with await Manager.from_exchange_factory(factory=LocalExchangeFactory()) as manager:
        heart = await manager.launch(Heartbeat)

        async def beating() -> bool:
            return (await heart.counts())["beats"] >= 3

        await until(beating, "the timer did not beat")
        await heart.poke()

        async def poked() -> bool:
            return (await heart.counts())["pokes"] == 1

        await until(poked, "the event handler did not run")
        await manager.shutdown(heart, blocking=True, timeout=30)
        assert manager.running() == set()
        with pytest.raises(BadEntityIdError):
            await manager.shutdown("never-launched")


async def test_instances_and_failing_agents(in_namespace: Runtime) -> None:
    with pytest.raises(AgentExitError, match="the instrument is gone"):
        async with await Manager.from_exchange_factory(factory=LocalExchangeFactory()) as manager:
            preset = await manager.launch(Preset(start=41))
            assert await preset.get() == 41
            stumbler = await manager.launch(Stumbler)
            with pytest.raises(AgentExitError, match="the instrument is gone"):
                await manager.wait([stumbler], raise_error=True, timeout=30)
            assert manager.running() == {preset.agent_id}
    # leaving the block raised the stumbler's failure too, as Academy's manager does, and stopped the rest
    assert manager.running() == set()
