"""Fair queueing (Ray-free): per-key bounded queues served round robin, and their asyncio gate."""

from __future__ import annotations

import asyncio

import pytest

from serving.errors import QueueFullError
from serving.fairness import FairGate, FairQueue


def test_a_burst_of_one_key_does_not_starve_another() -> None:
    queue: FairQueue[str] = FairQueue(slots=1, max_queued_per_key=10)
    assert queue.arrive("a", "a0")
    for i in range(1, 11):
        assert not queue.arrive("a", f"a{i}")
    assert not queue.arrive("b", "b0")
    assert not queue.arrive("b", "b1")
    order = []
    while (nxt := queue.release()) is not None:
        order.append(nxt[1])
    # b's first request went second, not after a's ten
    assert order[:4] == ["a1", "b0", "a2", "b1"]
    assert order[4:] == [f"a{i}" for i in range(3, 11)]
    assert queue.running == 0 and queue.waiting() == 0


def test_a_full_key_queue_is_refused_at_once_and_others_still_queue() -> None:
    queue: FairQueue[int] = FairQueue(slots=2, max_queued_per_key=3)
    assert queue.arrive("a", 0) and queue.arrive("a", 1)
    for i in range(3):
        assert not queue.arrive("a", 10 + i)
    with pytest.raises(QueueFullError, match="3 requests waiting"):
        queue.arrive("a", 99)
    assert not queue.arrive("b", 0)
    assert queue.waiting("a") == 3 and queue.waiting("b") == 1


def test_no_queue_at_all_refuses_beyond_the_slots() -> None:
    queue: FairQueue[int] = FairQueue(slots=1, max_queued_per_key=0)
    assert queue.arrive("a", 0)
    with pytest.raises(QueueFullError):
        queue.arrive("b", 1)


def test_a_waiting_item_can_leave_and_new_arrivals_wait_behind_the_queued() -> None:
    queue: FairQueue[int] = FairQueue(slots=1, max_queued_per_key=5)
    assert queue.arrive("a", 0)
    assert not queue.arrive("a", 1)
    assert not queue.arrive("b", 2)
    assert queue.leave("a", 1) and not queue.leave("a", 1)
    assert queue.release() == ("b", 2)
    assert queue.release() is None
    assert queue.running == 0
    with pytest.raises(RuntimeError):
        queue.release()


def test_round_robin_over_many_keys_is_one_each_per_turn() -> None:
    queue: FairQueue[tuple[str, int]] = FairQueue(slots=1, max_queued_per_key=100)
    queue.arrive("x", ("x", -1))
    for key, count in (("a", 50), ("b", 5), ("c", 1)):
        for i in range(count):
            queue.arrive(key, (key, i))
    served = []
    while (nxt := queue.release()) is not None:
        served.append(nxt[0])
    assert served[:7] == ["a", "b", "c", "a", "b", "a", "b"]
    assert served.count("a") == 50 and served[-45:] == ["a"] * 45


def test_gate_serves_keys_in_turn_and_cancelled_waiters_pass_their_turn_on() -> None:
    async def scenario() -> list[str]:
        gate = FairGate(slots=1, max_queued_per_key=4)
        order: list[str] = []
        first = await gate.acquire("a")

        async def request(key: str, tag: str) -> None:
            ticket = await gate.acquire(key)
            order.append(tag)
            await asyncio.sleep(0)
            ticket.release()

        tasks = [asyncio.create_task(request("a", f"a{i}")) for i in range(4)]
        tasks.append(asyncio.create_task(request("b", "b0")))
        gone = asyncio.create_task(request("c", "c-cancelled"))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):  # a's four are waiting: refused at once
            await gate.acquire("a")
        first.release()
        first.release()  # a second release does nothing
        await asyncio.gather(*tasks)
        assert gate.queue.running == 0 and gate.queue.waiting() == 0
        return order

    order = asyncio.run(scenario())
    assert order == ["a0", "b0", "a1", "a2", "a3"]


def test_gate_waiter_cancelled_just_after_its_turn_gives_the_slot_on() -> None:
    async def scenario() -> None:
        gate = FairGate(slots=1, max_queued_per_key=8)
        held = await gate.acquire("a")
        late = asyncio.create_task(gate.acquire("b"))
        after = asyncio.create_task(gate.acquire("c"))
        await asyncio.sleep(0)
        held.release()  # b's turn: its future has a result, its task has not resumed yet
        late.cancel()
        with pytest.raises(asyncio.CancelledError):
            await late
        ticket = await asyncio.wait_for(after, timeout=5)  # the slot went on to c
        ticket.release()
        assert gate.queue.running == 0

    asyncio.run(scenario())
