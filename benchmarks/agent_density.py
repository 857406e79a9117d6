"""How many agents fit on one machine: launch time, memory per agent and call latency, up to 10,000 agents.

Usage: ``python -m benchmarks.agent_density [--dedicated 10] [--pooled 1000,10000] [--pool-size 2500]``.

For each population it launches that many small agents (``--dedicated``: one host process each, the
baseline; ``--pooled``: co-hosted, ``--pool-size`` agents per host process), then measures:

- launch time (50 launches in flight);
- resident memory (RSS, psutil) of the host processes per agent, and the marginal memory of one more
  agent (RSS growth after each pool's first agent, divided by the agents added since);
- the round trip of one action called from the driver on agents picked at random (through Ray);
- for pooled populations, the round trip of calls between co-hosted agents (an agent calling agents picked
  at random in its own pool: the in-process path) and how many of those calls took it.

A pooled population lives in a namespace of its own and is torn down by removing its pool hosts and
registry (stopping 10,000 agents one by one is not what is measured). Prints a rich table and one JSON
line.
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
import ray
from rich.console import Console
from rich.table import Table

from academy_ray import Agent, Handle, Runtime, action
from academy_ray.registry import POOL_PREFIX, registry_actor

LAUNCHES_IN_FLIGHT = 50
DRIVER_CALLS = 1000
CO_HOSTED_CALLS = 2000


class Sensor(Agent):
    """A small stateful agent: a reading and a counter."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.reads = 0

    @action(checkpoint=False)
    async def read(self, scale: float) -> float:
        self.reads += 1
        return self.index * scale

    @action(checkpoint=False)
    async def probe(self, names: list[str], count: int) -> dict[str, Any]:
        """Calls ``count`` agents picked at random from ``names`` (co-hosted with this one) and times them."""
        handles = [Handle(name, self.agent_context.namespace) for name in names]
        samples = await _time_reads(handles, count, seed=1)
        return {"samples": samples, "in_process": sum(h.calls_in_process for h in handles)}


async def _time_reads(handles: list[Any], count: int, seed: int) -> list[float]:
    """Round trips of ``count`` reads, each on an agent picked at random."""
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        handle = rng.choice(handles)
        start = time.perf_counter()
        await handle.read(2.0)
        samples.append(time.perf_counter() - start)
    return samples


def _rss_of(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def _quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[int(0.99 * (len(ordered) - 1))] * 1e3


async def _launch(rt: Runtime, indices: list[int], label: str, pool_size: int | None) -> list[Any]:
    handles: list[Any] = []
    for first in range(0, len(indices), LAUNCHES_IN_FLIGHT):
        handles += await asyncio.gather(
            *(
                rt.launch(
                    Sensor,
                    args=(i,),
                    name=f"{label}-{i}",
                    pool=None if pool_size is None else f"{label}-pool-{i // pool_size}",
                    resources={"num_cpus": 0.001},
                    checkpoint=False,
                )
                for i in indices[first : first + LAUNCHES_IN_FLIGHT]
            )
        )
    return handles


async def _population(count: int, pool_size: int | None, label: str) -> dict[str, Any]:
    rt = Runtime(namespace=f"bench-density-{label}")
    firsts = list(range(0, count, pool_size)) if pool_size else []
    start = time.perf_counter()
    handles = await _launch(rt, firsts, label, pool_size)  # each pool's first agent
    pids = {(await h.info()).pid for h in handles}
    base_rss = _rss_of(pids)
    first_set = set(firsts)
    rest = [i for i in range(count) if i not in first_set]
    handles = sorted(handles + await _launch(rt, rest, label, pool_size), key=lambda h: h.name)
    launch_s = time.perf_counter() - start
    if pool_size is None:
        pids = {(await h.info()).pid for h in handles}
    rss = _rss_of(pids)
    rng = random.Random(0)
    for handle in rng.sample(handles, min(20, count)):  # warm up
        await handle.read(1.0)
    p50, p99 = _quantiles(await _time_reads(handles, DRIVER_CALLS, seed=2))
    result: dict[str, Any] = {
        "mode": "pooled" if pool_size else "dedicated",
        "agents": count,
        "processes": len(pids),
        "launch_s": launch_s,
        "launches_per_s": count / launch_s,
        "rss_total_mib": rss / 2**20,
        "rss_per_agent_mib": rss / 2**20 / count,
        "driver_p50_ms": p50,
        "driver_p99_ms": p99,
    }
    if pool_size:
        added = count - len(firsts)
        result["marginal_kib_per_agent"] = (rss - base_rss) / 1024 / added if added else None
        in_pool = [f"{label}-{i}" for i in range(min(pool_size, count))]
        probe = await Handle(in_pool[0], rt.namespace).probe(in_pool, CO_HOSTED_CALLS)
        result["co_hosted_p50_ms"], result["co_hosted_p99_ms"] = _quantiles(probe["samples"])
        result["co_hosted_in_process_calls"] = probe["in_process"]
        await _tear_down_pools(rt, label, len(firsts))
    else:
        for first in range(0, count, LAUNCHES_IN_FLIGHT):
            await asyncio.gather(*(rt.stop(h) for h in handles[first : first + LAUNCHES_IN_FLIGHT]))
    rt.stop_placement()
    return result


async def _tear_down_pools(rt: Runtime, label: str, pools: int) -> None:
    for index in range(pools):
        try:
            ray.kill(
                ray.get_actor(f"{POOL_PREFIX}{label}-pool-{index}", namespace=rt.namespace),
                no_restart=True,
            )
        except ValueError:
            continue
    registry = registry_actor(rt.namespace, create=False)
    if registry is not None:
        ray.kill(registry, no_restart=True)


async def run(dedicated: list[int], pooled: list[int], pool_size: int) -> list[dict[str, Any]]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = []
    for count in dedicated:
        results.append(await _population(count, None, f"d{count}"))
        print(results[-1], flush=True)
    for count in pooled:
        results.append(await _population(count, pool_size, f"p{count}"))
        print(results[-1], flush=True)
    ray.shutdown()
    return results


def _int_list(text: str) -> list[int]:
    """Parses a comma-separated list of integers."""
    return [int(x) for x in text.split(",") if x]


def _print(results: list[dict[str, Any]]) -> None:
    table = Table(title="agents on one machine")
    columns = {
        "mode": "mode",
        "agents": "agents",
        "processes": "procs",
        "launch_s": "launch s",
        "launches_per_s": "launch/s",
        "rss_per_agent_mib": "MiB/agent",
        "marginal_kib_per_agent": "KiB/+agent",
        "driver_p50_ms": "driver p50",
        "driver_p99_ms": "driver p99",
        "co_hosted_p50_ms": "co-hosted p50",
        "co_hosted_p99_ms": "co-hosted p99",
    }
    for title in columns.values():
        table.add_column(title, justify="left" if title == "mode" else "right")
    for result in results:
        cells = []
        for key in columns:
            value = result.get(key)
            if value is None:
                cells.append("-")
            elif isinstance(value, float):
                cells.append(f"{value:.3f}" if value < 10 else f"{value:.1f}")
            else:
                cells.append(str(value))
        table.add_row(*cells)
    Console(width=160).print(table)
    print("latencies in ms; co-hosted: an agent calling agents of its own pool (in process)")


def main() -> None:
    """Runs the benchmark and prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dedicated", default="10")
    parser.add_argument("--pooled", default="1000,10000")
    parser.add_argument("--pool-size", type=int, default=2500)
    options = parser.parse_args()
    results = asyncio.run(
        run(_int_list(options.dedicated), _int_list(options.pooled), options.pool_size)
    )
    _print(results)
    print(json.dumps({"benchmark": "agent_density", "results": results}))


if __name__ == "__main__":
    main()
