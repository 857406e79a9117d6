"""Action round-trip latency and throughput: academy_ray handle vs a plain Ray actor call, same run.

Usage: ``python -m benchmarks.action_latency [--rounds 10]``. Prints a table and one JSON line. Both sides use
an async Ray actor with zero CPUs on the same embedded Ray; the measurements alternate in blocks so that
background load hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import ray

from academy_ray import Agent, Runtime, action


class EchoAgent(Agent):
    """The academy_ray side: one validated action."""

    @action
    async def echo(self, payload: bytes) -> bytes:
        return payload


class PlainEcho:
    """The baseline: a plain async Ray actor."""

    async def echo(self, payload: bytes) -> bytes:
        return payload


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _latencies(call: Any, payload: bytes, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        await call(payload)
        samples.append(time.perf_counter() - start)
    return samples


async def _throughput(call: Any, payload: bytes, in_flight: int, batches: int) -> float:
    start = time.perf_counter()
    for _ in range(batches):
        await asyncio.gather(*(call(payload) for _ in range(in_flight)))
    return in_flight * batches / (time.perf_counter() - start)


async def run(rounds: int) -> dict[str, Any]:
    rt = Runtime(namespace="bench-latency", init_kwargs={"num_cpus": 2, "include_dashboard": False})
    agent = await rt.launch(EchoAgent, name="echo", get_if_exists=True)
    plain_actor = ray.remote(PlainEcho).options(num_cpus=0).remote()

    async def plain(payload: bytes) -> bytes:
        return await plain_actor.echo.remote(payload)  # type: ignore[no-any-return]

    sides = {"academy_ray": agent.echo, "plain_ray": plain}
    for call in sides.values():  # warm up: workers, validators, object store
        await _latencies(call, b"x" * 1024, 50)
        await _latencies(call, b"x" * 1_048_576, 5)

    results: dict[str, Any] = {}
    for label, size, per_round in (("1KB", 1024, 100), ("1MB", 1_048_576, 20)):
        payload = b"x" * size
        samples: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(rounds):
            for name, call in sides.items():
                samples[name].extend(await _latencies(call, payload, per_round))
        for name, values in samples.items():
            results[f"{name}.{label}.median_ms"] = statistics.median(values) * 1e3
            results[f"{name}.{label}.p99_ms"] = _percentile(values, 0.99) * 1e3
        results[f"ratio.{label}.median"] = (
            results[f"academy_ray.{label}.median_ms"] / results[f"plain_ray.{label}.median_ms"]
        )
        results[f"ratio.{label}.p99"] = (
            results[f"academy_ray.{label}.p99_ms"] / results[f"plain_ray.{label}.p99_ms"]
        )

    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(max(3, rounds // 2)):
        for name, call in sides.items():
            rates[name].append(await _throughput(call, b"x" * 1024, in_flight=100, batches=5))
    for name, values in rates.items():
        results[f"{name}.actions_per_s_100_in_flight"] = statistics.median(values)
    results["ratio.throughput"] = (
        results["academy_ray.actions_per_s_100_in_flight"]
        / results["plain_ray.actions_per_s_100_in_flight"]
    )
    await rt.stop("echo")
    ray.kill(plain_actor)
    return results


def main() -> None:
    """Runs the benchmark and prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    options = parser.parse_args()
    results = asyncio.run(run(options.rounds))
    print(f"{'figure':48s} {'value':>12s}")
    for key, value in results.items():
        print(f"{key:48s} {value:12.3f}")
    print("goal: latency ratio <= 1.2, throughput ratio >= 0.8")
    print(json.dumps({"benchmark": "action_latency", **results}))


if __name__ == "__main__":
    main()
