"""Co-hosted agents: many agents share one host process (a pool)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from academy_ray import (
    AgentExistsError,
    AgentNotFoundError,
    AgentStartupError,
    AgentUnavailableError,
    Runtime,
)
from tests.academy_ray.agents import BadStartup, Counter, Doubler, Journal
from tests.academy_ray.waiting import wait_name_freed

pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture
def namespace(module_namespace: str) -> str:
    return module_namespace  # one for the module: its tests name their agents apart


@pytest.fixture
def rt(make_runtime: Callable[..., Runtime], tmp_path: Path) -> Runtime:
    return make_runtime(checkpoint=f"file://{tmp_path}/ckpt")


async def test_agents_share_one_process_and_stay_independent(rt: Runtime, namespace: str) -> None:
    counters = [await rt.launch(Counter, args=(i,), name=f"pooled-{i}", pool="p") for i in range(5)]
    infos = [await counter.info() for counter in counters]
    assert len({info.pid for info in infos}) == 1
    assert [await counter.add(10) for counter in counters] == [10, 11, 12, 13, 14]
    listed = {info.name for info in await rt.list()}
    assert listed == {f"pooled-{i}" for i in range(5)}
    # another runtime (as another driver would) resolves pooled names
    other = Runtime(namespace=namespace)
    assert await other.get("pooled-3").get() == 13
    await rt.stop("pooled-3")
    with pytest.raises(AgentNotFoundError):
        rt.get("pooled-3")
    assert await counters[4].get() == 14  # the others keep running in the same process
    again = await rt.launch(Counter, name="pooled-3", pool="p")  # the name is free again...
    assert await again.get() == 13  # ...and relaunching by name restores its checkpointed state


async def test_pooled_names_are_unique_and_pipelines_work(rt: Runtime) -> None:
    sink = await rt.launch(Counter, name="sink", pool="q")
    with pytest.raises(AgentExistsError):
        await rt.launch(Counter, name="sink", pool="q")
    with pytest.raises(AgentExistsError):
        await rt.launch(Counter, name="sink")  # nor as an agent of its own
    stage = await rt.launch(Doubler, args=(sink,), name="stage", pool="q")
    assert await stage.push(4) == 8


async def test_pooled_startup_failure_frees_the_name(rt: Runtime) -> None:
    with pytest.raises(AgentStartupError, match="cannot open the instrument"):
        await rt.launch(BadStartup, name="bad", pool="r")
    await wait_name_freed(rt, "bad", "the failed pooled agent is still registered")


async def test_pool_process_crash_restarts_every_agent_from_its_checkpoint(rt: Runtime) -> None:
    journals = [await rt.launch(Journal, name=f"j{i}", pool="crashy") for i in range(3)]
    for index, journal in enumerate(journals):
        await journal.append(index)
    pid = (await journals[0].info()).pid
    os.kill(pid, signal.SIGKILL)
    for index, journal in enumerate(journals):
        for _ in range(100):
            try:
                entries = await asyncio.wait_for(journal.read(), 10)
                break
            except (AgentUnavailableError, AgentNotFoundError, TimeoutError):
                await asyncio.sleep(0.3)
        else:
            pytest.fail(f"pooled agent j{index} did not come back")
        assert entries == [index]
    assert (await journals[0].info()).pid != pid


async def test_hundreds_of_agents_share_a_few_processes(rt: Runtime) -> None:
    count, per_pool = 300, 100
    handles = []
    for first in range(0, count, 50):
        handles += await asyncio.gather(
            *(
                rt.launch(
                    Counter,
                    args=(i,),
                    name=f"many-{i}",
                    pool=f"crowd-{i // per_pool}",
                    checkpoint=False,
                )
                for i in range(first, first + 50)
            )
        )
    assert await asyncio.gather(*(h.add(1) for h in handles)) == [i + 1 for i in range(count)]
    pids = {(await h.info()).pid for h in handles[::25]}
    assert len(pids) == count // per_pool
    assert len(await rt.list()) == count
