"""What the every-action checkpoint policy adds to a small action's round trip (file:// store).

Usage: ``python -m benchmarks.checkpoint_overhead [--calls 300] [--uri file:///tmp/x]``. The same agent class
runs twice on one embedded Ray, once without checkpoints (baseline) and once with a checkpoint after every
action; calls alternate between the two in blocks. Prints a table and one JSON line. Goal: < 5 ms added.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from typing import Any

from academy_ray import Agent, Runtime, action


class Tally(Agent):
    """A small state (a dict of counters), changed by every call."""

    agent_state_fields = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    @action
    async def bump(self, key: str) -> int:
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


async def _timed(call: Any, calls: int) -> list[float]:
    samples = []
    for index in range(calls):
        start = time.perf_counter()
        await call(f"k{index % 16}")
        samples.append(time.perf_counter() - start)
    return samples


async def run(calls: int, uri: str) -> dict[str, Any]:
    rt = Runtime(namespace="bench-ckpt", init_kwargs={"num_cpus": 2, "include_dashboard": False})
    plain = await rt.launch(Tally, name="plain", get_if_exists=True, checkpoint=False)
    durable = await rt.launch(Tally, name="durable", get_if_exists=True, checkpoint=uri)
    for handle in (plain, durable):
        await _timed(handle.bump, 30)
    samples: dict[str, list[float]] = {"no_checkpoint": [], "every_action": []}
    block = 25
    for _ in range(max(1, calls // block)):
        samples["no_checkpoint"].extend(await _timed(plain.bump, block))
        samples["every_action"].extend(await _timed(durable.bump, block))
    results: dict[str, Any] = {"store": uri, "calls_each": len(samples["every_action"])}
    for name, values in samples.items():
        ordered = sorted(values)
        results[f"{name}.median_ms"] = statistics.median(values) * 1e3
        results[f"{name}.p99_ms"] = ordered[int(0.99 * (len(ordered) - 1))] * 1e3
    results["added.median_ms"] = results["every_action.median_ms"] - results["no_checkpoint.median_ms"]
    results["ratio.median"] = results["every_action.median_ms"] / results["no_checkpoint.median_ms"]
    info = await durable.info()
    results["checkpoints_written_seq"] = info.last_checkpoint_seq
    await rt.stop("plain")
    await rt.stop("durable")
    return results


def main() -> None:
    """Runs the benchmark and prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--uri", default=None, help="checkpoint store (default: a new temporary directory)")
    options = parser.parse_args()
    uri = options.uri or f"file://{tempfile.mkdtemp(prefix='academy-ckpt-bench-')}"
    results = asyncio.run(run(options.calls, uri))
    for key, value in results.items():
        print(f"{key:32s} {value:>14.3f}" if isinstance(value, float) else f"{key:32s} {value!s:>14s}")
    print("goal: added.median_ms < 5")
    print(json.dumps({"benchmark": "checkpoint_overhead", **results}))


if __name__ == "__main__":
    main()
