"""Quickstart: three agents on an embedded local Ray: a generator feeds a scorer, a tracker keeps the best.

Run with ``python -m examples.quickstart``. No cluster, no cloud: Ray starts inside this process.
"""

from __future__ import annotations

import asyncio
import random

from academy_ray import Agent, Handle, Runtime, action, loop


class Tracker(Agent):
    """Keeps the best candidates it is told about (its state is checkpointable)."""

    agent_state_fields = ("best",)

    def __init__(self, keep: int = 3) -> None:
        self.keep = keep
        self.best: list[tuple[float, str]] = []

    @action
    async def record(self, candidate: str, score: float) -> int:
        self.best = sorted([*self.best, (score, candidate)], reverse=True)[: self.keep]
        return len(self.best)

    @action
    async def top(self) -> list[tuple[float, str]]:
        return self.best


class Scorer(Agent):
    """Scores a candidate (a stand-in for a simulation) and reports it to the tracker."""

    def __init__(self, tracker: Handle[Tracker]) -> None:
        self.tracker = tracker

    @action
    async def score(self, candidate: str) -> float:
        value = await self.agent_run_sync(lambda: sum(map(ord, candidate)) % 97 / 97)
        await self.tracker.record(candidate, value)
        return value


class Generator(Agent):
    """Proposes candidates in a loop until its budget is spent, then shuts itself down."""

    def __init__(self, scorer: Handle[Scorer], budget: int = 20, seed: int = 0) -> None:
        self.scorer = scorer
        self.budget = budget
        self.rng = random.Random(seed)

    @loop
    async def propose(self, shutdown: asyncio.Event) -> None:
        while self.budget > 0 and not shutdown.is_set():
            candidate = "".join(self.rng.choice("CNOS") for _ in range(8))
            await self.scorer.score(candidate)
            self.budget -= 1
        self.agent_shutdown()


async def main() -> None:
    """Launches the three agents, waits for the generator to finish, prints the top candidates."""
    async with Runtime(namespace="quickstart") as rt:
        tracker = await rt.launch(Tracker, name="tracker", get_if_exists=True)
        scorer = await rt.launch(Scorer, args=(tracker,), name="scorer", get_if_exists=True)
        generator = await rt.launch(
            Generator, args=(scorer,), kwargs={"budget": 20}, name="generator"
        )
        for info in await rt.list():
            print(
                f"{info.name:10s} {info.agent_class:32s} {info.status:8s} "
                f"node {info.node_id[:8] if info.node_id else '?'}"
            )
        await rt.wait([generator], timeout=120)
        for score, candidate in await tracker.top():
            print(f"best: {candidate}  score {score:.3f}")
        await rt.stop(scorer)
        await rt.stop(tracker)


if __name__ == "__main__":
    asyncio.run(main())
