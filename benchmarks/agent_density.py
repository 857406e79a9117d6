"""How many agents fit on one machine: memory per agent and action latency, one process per agent vs co-hosted.

Usage: ``python -m benchmarks.agent_density [--dedicated 10,100] [--pooled 10,100,1000] [--pool-size 250]``.
For each population it launches that many small agents, measures the resident memory (RSS, with psutil) of
their host processes divided by the number of agents, and the median / p99 round trip of one action
called on agents picked at random; then stops them. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from typing import Any

import psutil

from academy_ray import Agent, Runtime, action


class Sensor(Agent):
    """A small stateful agent: a reading and a counter."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.reads = 0

    @action(checkpoint=False)
    async def read(self, scale: float) -> float:
        self.reads += 1
        return self.index * scale


def _rss_of(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


async def _population(rt: Runtime, count: int, pool_size: int | None, label: str) -> dict[str, Any]:
    start = time.perf_counter()
    handles = []
    batch = 50
    for first in range(0, count, batch):
        names = range(first, min(count, first + batch))
        handles += await asyncio.gather(
            *(
                rt.launch(
                    Sensor,
                    args=(i,),
                    name=f"{label}-{i}",
                    pool=None if pool_size is None else f"{label}-pool-{i // pool_size}",
                    resources={"num_cpus": 0.001},
                )
                for i in names
            )
        )
    launch_s = time.perf_counter() - start
    infos = [await h.info() for h in handles]
    pids = {info.pid for info in infos if info.pid}
    rss = _rss_of(pids)
    rng = random.Random(0)
    for handle in rng.sample(handles, min(20, count)):  # warm up
        await handle.read(1.0)
    samples = []
    for _ in range(300):
        handle = rng.choice(handles)
        t0 = time.perf_counter()
        await handle.read(2.0)
        samples.append(time.perf_counter() - t0)
    ordered = sorted(samples)
    result = {
        "mode": "pooled" if pool_size else "dedicated",
        "agents": count,
        "processes": len(pids),
        "rss_total_mib": rss / 2**20,
        "rss_per_agent_mib": rss / 2**20 / count,
        "launch_s": launch_s,
        "latency_median_ms": statistics.median(samples) * 1e3,
        "latency_p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1e3,
    }
    for first in range(0, count, batch):
        await asyncio.gather(*(rt.stop(h) for h in handles[first : first + batch]))
    return result


async def run(dedicated: list[int], pooled: list[int], pool_size: int) -> list[dict[str, Any]]:
    rt = Runtime(namespace="bench-density", init_kwargs={"num_cpus": 2, "include_dashboard": False})
    results = []
    for count in dedicated:
        results.append(await _population(rt, count, None, f"d{count}"))
        print(results[-1], flush=True)
    for count in pooled:
        results.append(await _population(rt, count, pool_size, f"p{count}"))
        print(results[-1], flush=True)
    rt.stop_placement()
    return results


def _int_list(text: str) -> list[int]:
    """Parses a comma-separated list of integers."""
    return [int(x) for x in text.split(",") if x]


def main() -> None:
    """Runs the benchmark and prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dedicated", default="10,100")
    parser.add_argument("--pooled", default="10,100,1000")
    parser.add_argument("--pool-size", type=int, default=250)
    options = parser.parse_args()
    results = asyncio.run(
        run(_int_list(options.dedicated), _int_list(options.pooled), options.pool_size)
    )
    header = (
        f"{'mode':10s} {'agents':>6s} {'procs':>6s} {'MiB/agent':>10s} {'launch s':>9s} "
        f"{'p50 ms':>7s} {'p99 ms':>7s}"
    )
    print(header)
    for r in results:
        print(
            f"{r['mode']:10s} {r['agents']:6d} {r['processes']:6d} {r['rss_per_agent_mib']:10.2f} "
            f"{r['launch_s']:9.1f} {r['latency_median_ms']:7.2f} {r['latency_p99_ms']:7.2f}"
        )
    print(json.dumps({"benchmark": "agent_density", "results": results}))


if __name__ == "__main__":
    main()
