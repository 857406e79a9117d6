"""Agent classes shared by the academy_ray tests (importable by Ray workers)."""

from __future__ import annotations

import asyncio
import os
import time

from pydantic import BaseModel

from academy_ray import Agent, Handle, action, event, loop, timer


class Point(BaseModel):
    """A typed argument."""

    x: float
    y: float


class Counter(Agent):
    """Counts; its ``count`` is its state."""

    agent_state_fields = ("count",)

    def __init__(self, start: int = 0) -> None:
        self.count = start
        self.ticks = 0
        self.cancelled = 0

    @action
    async def add(self, n: int) -> int:
        self.count += n
        return self.count

    @action(checkpoint=False)
    async def get(self) -> int:
        return self.count

    @action
    async def norm(self, point: Point) -> float:
        return float((point.x**2 + point.y**2) ** 0.5)

    @action
    async def echo(self, payload: bytes) -> bytes:
        return payload

    @action
    async def fail(self, message: str) -> None:
        raise KeyError(message)

    @action
    async def sleep(self, seconds: float) -> str:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return "slept"

    @action(checkpoint=False)
    async def cancelled_count(self) -> int:
        return self.cancelled

    @action
    async def block(self, seconds: float) -> float:
        """Blocks a thread (not the event loop) for ``seconds``."""
        return await self.agent_run_sync(_blocking_sleep, seconds)

    @action
    async def crash(self) -> None:
        os._exit(1)

    @action
    async def stop_myself(self) -> None:
        self.agent_shutdown()

    @timer(0.05)
    async def tick(self) -> None:
        self.ticks += 1

    @action(checkpoint=False)
    async def get_ticks(self) -> int:
        return self.ticks


def _blocking_sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


class Doubler(Agent):
    """Calls a downstream agent: an agent-to-agent pipeline stage."""

    def __init__(self, downstream: Handle[Counter]) -> None:
        self.downstream = downstream

    @action
    async def push(self, n: int) -> int:
        return int(await self.downstream.add(2 * n))


class Watcher(Agent):
    """Reacts to an event set by an action."""

    def __init__(self) -> None:
        self.alert = asyncio.Event()
        self.seen = 0

    @action
    async def raise_alert(self) -> None:
        self.alert.set()

    @event("alert")
    async def on_alert(self) -> None:
        self.seen += 1

    @action
    async def seen_count(self) -> int:
        return self.seen


class Lifecycle(Agent):
    """Records its life-cycle hooks in a file so the test can read them after the agent is gone."""

    def __init__(self, log_path: str) -> None:
        self.log_path = log_path

    def _log(self, line: str) -> None:
        with open(self.log_path, "a") as log:
            log.write(line + "\n")

    async def agent_on_startup(self) -> None:
        self._log("startup")

    async def agent_on_shutdown(self) -> None:
        self._log("shutdown")

    @loop
    async def run(self, shutdown: asyncio.Event) -> None:
        self._log("loop-start")
        await shutdown.wait()
        self._log("loop-end")

    @action
    async def ping_me(self) -> str:
        return "pong"


class FailingLoop(Agent):
    """A loop that raises; the policy comes from the class attribute set by subclasses."""

    def __init__(self) -> None:
        self.runs = 0

    @loop
    async def explode(self, shutdown: asyncio.Event) -> None:
        self.runs += 1
        raise RuntimeError("loop failed")

    @action
    async def loop_runs(self) -> int:
        return self.runs


class FailingLoopIgnored(FailingLoop):
    agent_loop_error_policy = "ignore"


class FailingLoopRestarted(FailingLoop):
    agent_loop_error_policy = "restart"


class BadStartup(Agent):
    async def agent_on_startup(self) -> None:
        raise RuntimeError("cannot open the instrument")

    @action
    async def hello(self) -> str:
        return "hi"


class Journal(Agent):
    """Appends entries; its entries (a list) and an embedding matrix (numpy) are its persistent state."""

    agent_state_fields = ("entries", "weights")

    def __init__(self, dim: int = 4) -> None:
        import numpy as np

        self.entries: list[int] = []
        self.weights = np.zeros((2, dim), dtype=np.float32)

    @action
    async def append(self, entry: int) -> int:
        self.entries.append(entry)
        self.weights = self.weights + 1
        return len(self.entries)

    @action(checkpoint=False)
    async def read(self) -> list[int]:
        return list(self.entries)

    @action(checkpoint=False)
    async def weight_sum(self) -> float:
        return float(self.weights.sum())


class InPlaceLearner(Agent):
    """Updates a large array in place from a loop while actions checkpoint (a snapshot must not tear).

    Its state: ``weights`` (every element equals ``updates``, if the snapshot is consistent), ``updates``
    (how many in-place updates the loop made) and ``steps`` (acknowledged actions).
    """

    agent_state_fields = ("weights", "updates", "steps")

    def __init__(self, megabytes: int = 32) -> None:
        import numpy as np

        self.weights = np.zeros(megabytes * (1 << 20) // 8, dtype=np.float64)
        self.updates = 0
        self.steps = 0

    @loop
    async def train(self, shutdown: asyncio.Event) -> None:
        import numpy as np

        while not shutdown.is_set():
            np.add(self.weights, 1.0, out=self.weights)  # in place, as optimisers do
            self.updates += 1
            await asyncio.sleep(0)

    @action
    async def step(self) -> int:
        self.steps += 1
        return self.steps

    @action(checkpoint=False)
    async def acknowledged(self) -> int:
        return self.steps
