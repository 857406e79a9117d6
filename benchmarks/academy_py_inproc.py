"""academy-py's in-process exchange: 1 KB action round trip, for `benchmarks.action_latency` to compare with.

Run by `benchmarks.action_latency` with the interpreter of a separate environment holding ``academy-py``
(``--academy-python``); it imports nothing from this repository. Prints one JSON line:
``{"median_ms": ..., "p99_ms": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

from academy.agent import Agent, action
from academy.exchange import LocalExchangeFactory
from academy.manager import Manager


class Echo(Agent):
    """Returns its argument."""

    @action
    async def echo(self, payload: bytes) -> bytes:
        return payload


async def _measure(count: int) -> dict[str, float]:
    async with await Manager.from_exchange_factory(LocalExchangeFactory()) as manager:
        handle = await manager.launch(Echo)
        payload = b"x" * 1024
        for _ in range(200):
            await handle.echo(payload)
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            await handle.echo(payload)
            samples.append(time.perf_counter() - start)
        await manager.shutdown(handle, blocking=True)
    samples.sort()
    return {
        "median_ms": statistics.median(samples) * 1e3,
        "p99_ms": samples[int(0.99 * (len(samples) - 1))] * 1e3,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_measure(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))))
