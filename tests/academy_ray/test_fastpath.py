"""In-process calls: co-hosted agents (and an agent calling itself) skip Ray, with the remote path's semantics."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from academy_ray import (
    Agent,
    AgentNotFoundError,
    AgentUnavailableError,
    Handle,
    Runtime,
    action,
)
from academy_ray.local_calls import copy_arguments, copy_error, copy_value, hosted, register
from tests.academy_ray.agents import Counter


class Keeper(Agent):
    """Keeps what it is given (mutating it first) and can call itself through its own handle."""

    agent_state_fields = ("kept",)

    def __init__(self) -> None:
        self.kept: list[int] = []

    @action
    async def keep(self, items: list[int]) -> list[int]:
        items.append(99)  # a callee that mutates its argument must not reach the caller's list
        self.kept = items
        return self.kept  # nor may the caller reach this agent's state through the result

    @action(checkpoint=False)
    async def kept_now(self) -> list[int]:
        return self.kept

    @action
    async def keep_through_myself(self, item: int) -> dict[str, int]:
        own = self.agent_handle
        await own.keep([item])
        return {"in_process": own.calls_in_process, "through_ray": own.calls_through_ray}


class Caller(Agent):
    """Calls a target agent and reports what happened, and by which path."""

    def __init__(self, target: Handle[Any]) -> None:
        self.target = target

    @action(checkpoint=False)
    async def relay(
        self, name: str, args: list[Any], timeout: float | None = None
    ) -> dict[str, Any]:
        handle = self.target.with_timeout(timeout)  # a new handle: its counts are this call's
        try:
            outcome: dict[str, Any] = {"value": await handle.action(name, *args)}
        except Exception as error:  # noqa: BLE001 - reported to the test to compare paths
            outcome = {"error": type(error).__name__, "message": str(error)}
        return {
            **outcome,
            "in_process": handle.calls_in_process,
            "through_ray": handle.calls_through_ray,
        }

    @action(checkpoint=False)
    async def probe_copies(self) -> dict[str, Any]:
        mine = [1]
        returned = await self.target.keep(mine)
        after_call = list(mine)
        returned.append(7)
        mine.append(8)
        return {
            "after_call": after_call,
            "kept": await self.target.kept_now(),
            "in_process": self.target.calls_in_process,
        }

    @action(checkpoint=False)
    async def add_then_die(self, n: int) -> None:
        await self.target.add(n)  # acknowledged: durable before it returned
        os.kill(os.getpid(), signal.SIGKILL)


# ---- Ray-free: copies and the in-process table --------------------------------------------------------------


def test_copies_share_no_mutable_object_and_pass_immutable_values_as_they_are() -> None:
    payload = b"x" * 1024
    assert copy_value(payload) is payload
    assert copy_value(("a", 1, None)) == ("a", 1, None)
    nested = {"a": [1, {"b": bytearray(b"z")}]}
    copied = copy_value(nested)
    assert copied == nested
    assert copied["a"] is not nested["a"] and copied["a"][1]["b"] is not nested["a"][1]["b"]
    local = copy_value(lambda x: x + 1)  # plain pickle refuses it; cloudpickle copies it
    assert local(1) == 2
    args, kwargs = copy_arguments(([1],), {"k": {"v": 2}}) or ((), {})
    assert args == ([1],) and kwargs == {"k": {"v": 2}}
    error = KeyError("boom")
    error.add_note("raised in the agent")
    copied_error = copy_error(error)
    assert copied_error is not error and isinstance(copied_error, KeyError)
    assert copied_error.__notes__ == ["raised in the agent"]


async def test_an_agent_is_only_called_in_process_from_its_own_event_loop() -> None:
    class Runner:
        async def call(self, action: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return action

    runner = Runner()
    register("ns-local", "here", runner)
    assert hosted("ns-local", "here") is runner
    assert hosted("ns-local", "elsewhere") is None
    assert await asyncio.to_thread(lambda: asyncio.run(_hosted_async("ns-local", "here"))) is None


async def _hosted_async(namespace: str, name: str) -> Any:
    return hosted(namespace, name)


# ---- with Ray ---------------------------------------------------------------------------------------------


@pytest.fixture
def namespace(module_namespace: str) -> str:
    return module_namespace  # one for the module: its tests name their agents apart


@pytest.fixture
def rt(local_ray: None, make_runtime: Callable[..., Runtime], tmp_path: Path) -> Runtime:
    return make_runtime(checkpoint=f"file://{tmp_path}/ckpt")


async def test_co_hosted_calls_run_in_process_and_copy_both_ways(rt: Runtime) -> None:
    keeper = await rt.launch(Keeper, name="keeper", pool="near")
    caller = await rt.launch(
        Caller, args=(Handle("keeper", rt.namespace),), name="caller", pool="near", checkpoint=False
    )
    copies = await caller.probe_copies()
    assert copies["after_call"] == [1]  # the callee appended 99 to its own copy
    assert copies["kept"] == [1, 99]  # the caller's later changes to both lists did not reach it
    assert copies["in_process"] == 2
    assert await keeper.keep_through_myself(5) == {"in_process": 1, "through_ray": 0}
    assert await keeper.kept_now() == [5, 99]
    assert keeper.calls_through_ray == 2 and keeper.calls_in_process == 0  # the driver uses Ray


async def test_errors_and_timeouts_are_those_of_the_remote_path(rt: Runtime) -> None:
    await rt.launch(Counter, name="target", pool="near", max_payload_bytes=1000)
    target = Handle("target", rt.namespace)
    near = await rt.launch(Caller, args=(target,), name="near", pool="near", checkpoint=False)
    far = await rt.launch(Caller, args=(target,), name="far", pool="far", checkpoint=False)
    cases: list[tuple[str, list[Any], float | None]] = [
        ("add", [2], None),
        ("fail", ["boom"], None),  # the action's own error
        ("add", ["not a number"], None),  # ActionArgumentError
        ("no_such_action", [], None),  # ActionNotFoundError
        ("echo", [b"x" * 2000], None),  # PayloadError from the agent's own limit
        ("sleep", [30.0], 0.3),  # ActionTimeoutError, and the action is cancelled
    ]
    for name, args, timeout in cases:
        in_process = await near.relay(name, args, timeout)
        remote = await far.relay(name, args, timeout)
        assert in_process.pop("in_process") == 1 and in_process.pop("through_ray") == 0
        assert remote.pop("in_process") == 0 and remote.pop("through_ray") == 1
        if "value" not in remote:  # the same type and message (the remote traceback note aside)
            assert in_process == remote, name
    assert (await near.relay("get", []))["value"] == 4
    for _ in range(50):
        if await Handle("target", rt.namespace).cancelled_count() == 2:
            break
        await asyncio.sleep(0.1)
    assert await Handle("target", rt.namespace).cancelled_count() == 2


async def _until_back(call: Callable[[], Any]) -> Any:
    for _ in range(100):
        try:
            return await asyncio.wait_for(call(), 10)
        except (AgentUnavailableError, AgentNotFoundError, TimeoutError):
            await asyncio.sleep(0.3)
    pytest.fail("the pool did not come back")


async def test_an_acknowledged_in_process_call_survives_kill_9_of_the_pool(rt: Runtime) -> None:
    counter = await rt.launch(Counter, name="durable", pool="doomed")
    caller = await rt.launch(
        Caller,
        args=(Handle("durable", rt.namespace),),
        name="killer",
        pool="doomed",
        checkpoint=False,
    )
    pid = (await counter.info()).pid
    with pytest.raises(AgentUnavailableError):
        await caller.add_then_die(5)  # SIGKILL right after the in-process call was acknowledged
    assert await _until_back(counter.get) == 5
    assert (await counter.info()).pid != pid
    after = await _until_back(lambda: caller.relay("get", []))
    assert after == {"value": 5, "in_process": 1, "through_ray": 0}  # co-hosted again, in process


async def test_the_handle_falls_back_to_ray_when_the_callee_moves(rt: Runtime) -> None:
    await rt.launch(Counter, name="mover", pool="first")
    caller = await rt.launch(
        Caller, args=(Handle("mover", rt.namespace),), name="stay", pool="first", checkpoint=False
    )
    assert await caller.relay("add", [3]) == {"value": 3, "in_process": 1, "through_ray": 0}
    await rt.stop("mover")
    await rt.launch(Counter, name="mover", pool="second")  # restores its checkpoint elsewhere
    assert await caller.relay("add", [4]) == {"value": 7, "in_process": 0, "through_ray": 1}
    await rt.stop("mover")
    await rt.launch(Counter, name="mover", pool="first")  # and back: in process again
    assert await caller.relay("add", [1]) == {"value": 8, "in_process": 1, "through_ray": 0}
