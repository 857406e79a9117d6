"""Fair queueing ahead of the model replicas: one user's burst does not starve the others.

An ingress lets at most ``slots`` requests reach the model replicas at once. Requests beyond that wait
in a bounded FIFO queue per key id, and the queues are served round robin: when a slot frees up, the
next key in turn (not the next request overall) gets it. A key that sends 100 requests at once and a
key that sends one then share the slots one for one, and the second key's request waits behind at
most one request of each other waiting key. A key whose queue is full gets
:class:`~serving.errors.QueueFullError` (``429``) at once: memory stays bounded by
``keys x max_queued_per_key`` and nothing waits without end behind a full queue.

:class:`FairQueue` is the Ray-free, synchronous core (tested alone); :class:`FairGate` puts it in
front of asyncio requests (a waiting request is a future; a cancelled one leaves its queue or gives
its slot back).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from serving.errors import QueueFullError

T = TypeVar("T", bound=Hashable)


class FairQueue(Generic[T]):
    """Bounded per-key FIFO queues served round robin, in front of ``slots`` places.

    Args:
        slots: requests let through at once.
        max_queued_per_key: requests one key may have waiting.
    """

    def __init__(self, slots: int, max_queued_per_key: int) -> None:
        if slots < 1 or max_queued_per_key < 0:
            raise ValueError("slots must be >= 1 and max_queued_per_key >= 0")
        self.slots = slots
        self.max_queued_per_key = max_queued_per_key
        self.running = 0
        self._queues: dict[str, deque[T]] = {}
        self._turn: deque[str] = deque()  # keys with waiting items, in round-robin order

    def arrive(self, key: str, item: T) -> bool:
        """An item of ``key`` arrives.

        Returns:
            True when it may go now (it holds a slot), False when it waits in ``key``'s queue.

        Raises:
            QueueFullError: ``key`` already has ``max_queued_per_key`` items waiting.
        """
        if self.running < self.slots and not self._turn:
            self.running += 1
            return True
        queue = self._queues.get(key)
        if queue is None:
            if self.max_queued_per_key == 0:
                raise QueueFullError(self._full_message(key))
            queue = self._queues[key] = deque()
            self._turn.append(key)
        elif len(queue) >= self.max_queued_per_key:
            raise QueueFullError(self._full_message(key))
        queue.append(item)
        return False

    def _full_message(self, key: str) -> str:
        return (
            f"key {key!r} already has {self.max_queued_per_key} requests waiting for the models; "
            "retry later"
        )

    def leave(self, key: str, item: T) -> bool:
        """Removes a waiting item (e.g. its client went away).

        Returns:
            Whether it was waiting (False: it was let through already, or never queued).
        """
        queue = self._queues.get(key)
        if queue is None:
            return False
        try:
            queue.remove(item)
        except ValueError:
            return False
        if not queue:
            del self._queues[key]
            self._turn.remove(key)
        return True

    def release(self) -> tuple[str, T] | None:
        """A slot is given back; returns the item let through in its place (it holds the slot)."""
        if self.running <= 0:
            raise RuntimeError("release() without a slot held")
        self.running -= 1
        if not self._turn or self.running >= self.slots:
            return None
        key = self._turn.popleft()
        queue = self._queues[key]
        item = queue.popleft()
        if queue:
            self._turn.append(key)
        else:
            del self._queues[key]
        self.running += 1
        return key, item

    def waiting(self, key: str | None = None) -> int:
        """Items waiting (of ``key``, or of all keys)."""
        if key is not None:
            return len(self._queues.get(key, ()))
        return sum(len(queue) for queue in self._queues.values())


class Ticket:
    """A request's slot; give it back once with :meth:`release` (later calls do nothing)."""

    __slots__ = ("_gate", "_held")

    def __init__(self, gate: FairGate) -> None:
        self._gate = gate
        self._held = True

    def release(self) -> None:
        """Gives the slot back to the gate."""
        if self._held:
            self._held = False
            self._gate._release()


class FairGate:
    """:class:`FairQueue` for asyncio requests (one event loop).

    Args:
        slots: requests let through at once.
        max_queued_per_key: requests one key may have waiting.
    """

    def __init__(self, slots: int, max_queued_per_key: int) -> None:
        self.queue: FairQueue[asyncio.Future[None]] = FairQueue(slots, max_queued_per_key)

    async def acquire(self, key: str) -> Ticket:
        """Waits for ``key``'s turn and returns its slot.

        Raises:
            QueueFullError: ``key``'s queue is full (raised at once).
        """
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.queue.arrive(key, waiter):
            return Ticket(self)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # let through just as it was cancelled: pass the slot on
            else:
                self.queue.leave(key, waiter)
            raise
        return Ticket(self)

    def _release(self) -> None:
        while True:
            nxt = self.queue.release()
            if nxt is None:
                return
            waiter = nxt[1]
            if not waiter.done():
                waiter.set_result(None)
                return
            # cancelled while queued (its task has not run its cleanup yet): pass the slot on
