"""Agents as detached, named Ray actors: launch, calls, errors, lifecycle (real local Ray)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from academy_ray import (
    ActionArgumentError,
    ActionNotFoundError,
    ActionTimeoutError,
    AgentExistsError,
    AgentNotFoundError,
    AgentStartupError,
    AgentTerminatedError,
    AgentUnavailableError,
    Handle,
    Runtime,
)
from tests.academy_ray.agents import (
    BadStartup,
    Counter,
    Doubler,
    FailingLoop,
    FailingLoopIgnored,
    FailingLoopRestarted,
    Lifecycle,
    Watcher,
)
from tests.academy_ray.waiting import until, wait_name_freed

pytestmark = pytest.mark.usefixtures("local_ray")


@pytest.fixture
def namespace(module_namespace: str) -> str:
    return module_namespace  # one for the module: its tests name their agents apart


@pytest.fixture
def rt(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime()


async def test_launch_call_and_concurrent_timer(rt: Runtime) -> None:
    counter = await rt.launch(Counter, args=(5,), name="counter")
    assert await counter.add(3) == 8
    assert await counter.get() == 8

    async def ticked() -> bool:
        return await counter.get_ticks() >= 3

    await until(ticked, "the timer loop did not run beside the actions")


async def test_actions_run_concurrently_and_blocking_code_does_not_freeze(rt: Runtime) -> None:
    counter = await rt.launch(Counter, name="concurrent")
    start = time.monotonic()
    results = await asyncio.gather(
        counter.sleep(0.5), counter.sleep(0.5), counter.block(0.5), counter.get()
    )
    assert results == ["slept", "slept", 0.5, 0]
    assert time.monotonic() - start < 1.4  # not 1.5 s of serialised calls


async def test_action_exception_keeps_type_and_remote_traceback(rt: Runtime) -> None:
    counter = await rt.launch(Counter, name="failing")
    with pytest.raises(KeyError) as caught:
        await counter.fail("missing-sample")
    assert type(caught.value) is KeyError
    assert caught.value.args == ("missing-sample",)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert "raised in action 'fail' of agent 'failing'" in notes
    assert "agents.py" in notes and "in fail" in notes
    assert await counter.add(1) == 1  # the agent keeps serving


async def test_unknown_action_names_agent_and_its_actions(rt: Runtime) -> None:
    counter = await rt.launch(Counter, name="named")
    with pytest.raises(ActionNotFoundError) as caught:
        await counter.does_not_exist()
    message = str(caught.value)
    assert "'named'" in message and "does_not_exist" in message and "add" in message
    assert "get_ticks" in caught.value.actions


async def test_wrong_arguments_rejected_before_the_action_runs(rt: Runtime) -> None:
    counter = await rt.launch(Counter, name="typed")
    with pytest.raises(ActionArgumentError) as wrong_type:
        await counter.add("three")
    assert wrong_type.value.parameter == "n"
    with pytest.raises(ActionArgumentError) as missing:
        await counter.add()
    assert missing.value.parameter == "n"
    with pytest.raises(ActionArgumentError) as unexpected:
        await counter.add(1, bogus=2)
    assert unexpected.value.parameter == "bogus"
    with pytest.raises(ActionArgumentError) as nested:
        await counter.norm({"x": 1.0, "y": "north"})
    assert nested.value.parameter == "point" and "y" in str(nested.value)
    assert await counter.get() == 0  # nothing ran
    # pydantic coercion, as in lax mode: a dict becomes the model, "4" the int
    assert await counter.norm({"x": 3, "y": 4}) == 5.0
    assert await counter.add("4") == 4


async def test_name_in_use_errors_or_reattaches(rt: Runtime) -> None:
    first = await rt.launch(Counter, name="unique")
    await first.add(7)
    with pytest.raises(AgentExistsError):
        await rt.launch(Counter, name="unique")
    again = await rt.launch(Counter, name="unique", get_if_exists=True)
    assert await again.get() == 7


async def test_get_and_namespace_isolation(
    rt: Runtime, namespace: str, make_runtime: Callable[..., Runtime]
) -> None:
    await rt.launch(Counter, name="visible")
    assert await rt.get("visible").add(1) == 1
    other = make_runtime(namespace=namespace + "-other")
    with pytest.raises(AgentNotFoundError):
        other.get("visible")
    assert await other.list() == []


async def test_stopped_agent_gives_typed_error_quickly(rt: Runtime) -> None:
    counter = await rt.launch(Counter, name="stopme")
    await rt.stop(counter)
    start = time.monotonic()
    with pytest.raises((AgentTerminatedError, AgentNotFoundError)):
        await counter.get()
    assert time.monotonic() - start < 10
    with pytest.raises(AgentNotFoundError):
        rt.get("stopme")


async def test_crashed_agent_without_restarts_gives_typed_error(rt: Runtime) -> None:
    counter = await rt.launch(Counter, name="crashy", max_restarts=0)
    with pytest.raises((AgentTerminatedError, AgentUnavailableError)):
        await asyncio.wait_for(counter.crash(), 30)
    with pytest.raises((AgentTerminatedError, AgentNotFoundError)):
        await asyncio.wait_for(counter.get(), 30)


async def test_crashed_agent_is_restarted_by_ray(rt: Runtime) -> None:
    counter = await rt.launch(Counter, args=(1,), name="phoenix")
    pid = (await counter.info()).pid
    with pytest.raises(AgentUnavailableError):
        await asyncio.wait_for(counter.crash(), 30)
    info = await asyncio.wait_for(counter.info(), 60)
    assert info.status == "running" and info.restarted and info.pid != pid
    assert (
        await counter.get() == 1
    )  # in-memory state is gone without a checkpoint: back to __init__


async def test_caller_cancellation_cancels_remote_action(rt: Runtime) -> None:
    counter = await rt.launch(Counter, name="cancel")
    call = asyncio.ensure_future(counter.sleep(30))
    await asyncio.sleep(0.5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    for _ in range(50):
        if await counter.cancelled_count() == 1:
            break
        await asyncio.sleep(0.1)
    assert await counter.cancelled_count() == 1


async def test_handle_timeout_cancels_and_raises(rt: Runtime) -> None:
    counter = await rt.launch(Counter, name="slow")
    with pytest.raises(ActionTimeoutError):
        await counter.with_timeout(0.3).sleep(30)
    for _ in range(50):
        if await counter.cancelled_count() == 1:
            break
        await asyncio.sleep(0.1)
    assert await counter.cancelled_count() == 1


async def test_agent_to_agent_pipeline_with_passed_handle(rt: Runtime) -> None:
    sink = await rt.launch(Counter, name="sink")
    stage = await rt.launch(Doubler, args=(sink,), name="stage")
    assert [await stage.push(n) for n in (1, 2, 3)] == [2, 6, 12]
    assert await sink.get() == 12


async def test_event_loop_runs_on_each_set(rt: Runtime) -> None:
    watcher = await rt.launch(Watcher, name="watcher")
    for expected in (1, 2):
        await watcher.raise_alert()
        for _ in range(50):
            if await watcher.seen_count() == expected:
                break
            await asyncio.sleep(0.05)
        assert await watcher.seen_count() == expected


async def test_lifecycle_hooks_and_graceful_stop(rt: Runtime, tmp_path: Path) -> None:
    log = tmp_path / "life.log"
    agent = await rt.launch(Lifecycle, args=(str(log),), name="life")
    assert await agent.ping_me() == "pong"
    await rt.stop("life")
    assert log.read_text().split() == ["startup", "loop-start", "loop-end", "shutdown"]


async def test_agent_shuts_itself_down_and_wait_returns(rt: Runtime) -> None:
    counter = await rt.launch(Counter, name="selfstop")
    waiter = asyncio.ensure_future(rt.wait([counter], timeout=30))
    await counter.stop_myself()
    await waiter
    await wait_name_freed(rt, "selfstop", "the stopped agent's actor was not removed")


async def test_wait_times_out_while_agents_run(rt: Runtime) -> None:
    counter = await rt.launch(Counter, name="runs-on")
    with pytest.raises(TimeoutError):
        await rt.wait([counter], timeout=0.3)


async def test_loop_error_policy_shutdown(rt: Runtime) -> None:
    agent = await rt.launch(FailingLoop, name="loop-shutdown")
    await asyncio.wait_for(agent.wait(), 30)
    with pytest.raises((AgentTerminatedError, AgentNotFoundError)):
        await agent.loop_runs()


async def test_loop_error_policy_ignore_keeps_serving(rt: Runtime) -> None:
    agent = await rt.launch(FailingLoopIgnored, name="loop-ignore")
    await asyncio.sleep(0.5)
    assert await agent.loop_runs() == 1


async def test_loop_error_policy_restart_runs_loop_again(rt: Runtime) -> None:
    agent = await rt.launch(FailingLoopRestarted, name="loop-restart")

    async def ran_again() -> bool:
        return (
            await agent.loop_runs() >= 3
        )  # the third run: ~0.3 s after the first (backoff 0.1, 0.2 s)

    await until(ran_again, "the failed loop was not run again")


async def test_startup_failure_is_reported_and_frees_the_name(rt: Runtime) -> None:
    with pytest.raises(AgentStartupError, match="cannot open the instrument"):
        await rt.launch(BadStartup, name="bad")
    await wait_name_freed(rt, "bad", "a failed launch left its actor behind")


async def test_list_reports_class_status_node(rt: Runtime) -> None:
    await rt.launch(Counter, name="a1")
    await rt.launch(Watcher, name="a2")
    infos = {info.name: info for info in await rt.list()}
    assert set(infos) == {"a1", "a2"}
    assert infos["a1"].agent_class.endswith("Counter") and infos["a1"].status == "running"
    assert infos["a2"].node_id and infos["a2"].pid and infos["a2"].since is not None


# Each agent a process of its own: five times the embedded Ray's CPUs and ten times the worker processes its
# node starts at once (2 on a 2-core machine), so launches, calls and stops overlap and queue (50 took 28 s).
# Thousands of agents: benchmarks.agent_density.
MANY_AGENTS = 20


async def test_many_agents_launch_and_stop_cleanly(rt: Runtime) -> None:
    handles = await asyncio.gather(
        *(rt.launch(Counter, args=(i,), name=f"many-{i}") for i in range(MANY_AGENTS))
    )
    assert await asyncio.gather(*(h.add(1) for h in handles)) == [i + 1 for i in range(MANY_AGENTS)]
    assert len(await rt.list()) == MANY_AGENTS
    await asyncio.gather(*(rt.stop(h) for h in handles))
    for _ in range(50):
        if not await rt.list():
            break
        await asyncio.sleep(0.2)
    assert await rt.list() == []


def test_blocking_forms(namespace: str) -> None:
    rt = Runtime(namespace=namespace, placement=False)
    counter = rt.sync.launch(Counter, name="blocking")
    assert counter.sync.add(2) == 2
    with pytest.raises(ActionArgumentError):
        counter.sync.add("x")
    with pytest.raises(KeyError):
        counter.sync.fail("k")
    assert [info.name for info in rt.sync.list()] == ["blocking"]
    rt.sync.stop("blocking")
    with pytest.raises((AgentTerminatedError, AgentNotFoundError)):
        counter.sync.get()


def test_handle_pickles_by_name() -> None:
    import pickle

    handle: Handle[Counter] = Handle("x", "ns", timeout=2.0)
    clone = pickle.loads(pickle.dumps(handle))
    assert clone == handle and clone.timeout == 2.0
