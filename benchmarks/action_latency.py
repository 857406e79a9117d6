"""Action round trip and throughput: academy_ray's in-process and remote paths against plain Ray, same run.

Usage: ``python -m benchmarks.action_latency [--rounds 10] [--academy-python /tmp/acvenv/bin/python]``.

Rows (1 KB and 1 MB arguments, echoed back):

- ``in_process``: an agent calling another agent co-hosted in its pool (the handle runs the call in the
  callee's runner, `academy_ray.local_calls`), timed inside the pool process;
- ``plain_ray_actor_to_actor``: a plain async Ray actor calling another, timed inside the first: what the
  in-process path replaces;
- ``remote``: the driver calling an agent through its handle (Ray);
- ``plain_ray``: the driver calling a plain async Ray actor: the floor for one hop;
- ``academy_py_inproc``: academy-py 1.0's in-process exchange (an agent in the caller's event loop), run by
  ``--academy-python`` (an interpreter of a separate environment with ``pip install academy-py``); left out
  when not given.

Then actions per second with 100 calls in flight (remote vs plain Ray) and the cost of copying arguments
(the in-process path must not share mutable objects: a pickle round trip, Ray's cloudpickle, and
``copy.deepcopy``). The measurements alternate in blocks so that background load hits all sides alike.
Prints rich tables and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import pickle
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import ray
from ray import cloudpickle
from rich.console import Console
from rich.table import Table

from academy_ray import Agent, Handle, Runtime, action


class EchoAgent(Agent):
    """The academy_ray side: one validated action."""

    @action
    async def echo(self, payload: bytes) -> bytes:
        return payload


class Prober(Agent):
    """Times calls to another agent from inside its host process."""

    @action(checkpoint=False)
    async def measure(self, target: Handle[Any], payload: bytes, count: int) -> list[float]:
        return await _latencies(target.echo, payload, count)


class PlainEcho:
    """The baseline: a plain async Ray actor."""

    async def echo(self, payload: bytes) -> bytes:
        return payload


class PlainProber:
    """A plain async Ray actor timing calls to another."""

    async def measure(self, target: Any, payload: bytes, count: int) -> list[float]:
        async def call(value: bytes) -> bytes:
            return await target.echo.remote(value)  # type: ignore[no-any-return]

        return await _latencies(call, payload, count)


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


def copy_costs(repeat: int = 2000) -> dict[str, float]:
    """Microseconds per copy of typical arguments by each safe way of copying (median of ``repeat``)."""
    values: dict[str, Any] = {
        "1KB_dict": {"name": "x" * 512, "values": list(range(64)), "meta": {"a": 1.5, "b": [1, 2]}},
        "1MB_bytearray": bytearray(1_048_576),
    }
    ways: dict[str, Any] = {
        "pickle": lambda v: pickle.loads(pickle.dumps(v, protocol=5)),
        "cloudpickle": lambda v: cloudpickle.loads(cloudpickle.dumps(v, protocol=5)),
        "deepcopy": copy.deepcopy,
    }
    costs: dict[str, float] = {}
    for label, value in values.items():
        count = repeat if label.startswith("1KB") else max(20, repeat // 100)
        for way, function in ways.items():
            samples = []
            for _ in range(count):
                start = time.perf_counter()
                function(value)
                samples.append(time.perf_counter() - start)
            costs[f"copy.{label}.{way}_us"] = statistics.median(samples) * 1e6
    return costs


def academy_py_inproc(python: str | None) -> dict[str, Any]:
    """academy-py's in-process round trip, measured by ``python`` (another environment's interpreter)."""
    if python is None:
        return {"academy_py_inproc.skipped": "no --academy-python given"}
    script = Path(__file__).with_name("academy_py_inproc.py")
    done = subprocess.run(
        [python, str(script)], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        return {"academy_py_inproc.skipped": done.stderr.strip().splitlines()[-1:]}
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {f"academy_py_inproc.1KB.{key}": value for key, value in figures.items()}


async def run(rounds: int) -> dict[str, Any]:
    rt = Runtime(namespace="bench-latency", init_kwargs={"num_cpus": 2, "include_dashboard": False})
    agent = await rt.launch(EchoAgent, name="echo", pool="bench", get_if_exists=True)
    prober = await rt.launch(Prober, name="prober", pool="bench", get_if_exists=True)
    plain_actor = ray.remote(PlainEcho).options(num_cpus=0).remote()
    plain_prober = ray.remote(PlainProber).options(num_cpus=0).remote()

    async def plain(payload: bytes) -> bytes:
        return await plain_actor.echo.remote(payload)  # type: ignore[no-any-return]

    async def in_process(payload: bytes, count: int) -> list[float]:
        return await prober.measure(agent, payload, count)  # type: ignore[no-any-return]

    async def plain_actor_to_actor(payload: bytes, count: int) -> list[float]:
        return await plain_prober.measure.remote(plain_actor, payload, count)  # type: ignore[no-any-return]

    async def remote(payload: bytes, count: int) -> list[float]:
        return await _latencies(agent.echo, payload, count)

    async def plain_ray(payload: bytes, count: int) -> list[float]:
        return await _latencies(plain, payload, count)

    sides = {
        "in_process": in_process,
        "plain_ray_actor_to_actor": plain_actor_to_actor,
        "remote": remote,
        "plain_ray": plain_ray,
    }
    for measure in sides.values():  # warm up: workers, validators, object store
        await measure(b"x" * 1024, 100)
        await measure(b"x" * 1_048_576, 5)

    results: dict[str, Any] = {}
    for label, size, per_round in (("1KB", 1024, 200), ("1MB", 1_048_576, 20)):
        payload = b"x" * size
        samples: dict[str, list[float]] = {name: [] for name in sides}
        for _ in range(rounds):
            for name, measure in sides.items():
                samples[name].extend(await measure(payload, per_round))
        for name, values in samples.items():
            results[f"{name}.{label}.median_ms"] = statistics.median(values) * 1e3
            results[f"{name}.{label}.p99_ms"] = _percentile(values, 0.99) * 1e3
        for pair, (side, baseline) in {
            "in_process_vs_plain_actor_to_actor": ("in_process", "plain_ray_actor_to_actor"),
            "remote_vs_plain": ("remote", "plain_ray"),
        }.items():
            results[f"ratio.{pair}.{label}.median"] = (
                results[f"{side}.{label}.median_ms"] / results[f"{baseline}.{label}.median_ms"]
            )

    rates: dict[str, list[float]] = {"remote": [], "plain_ray": []}
    calls = {"remote": agent.echo, "plain_ray": plain}
    for _ in range(max(3, rounds // 2)):
        for name, call in calls.items():
            rates[name].append(await _throughput(call, b"x" * 1024, in_flight=100, batches=5))
    for name, values in rates.items():
        results[f"{name}.actions_per_s_100_in_flight"] = statistics.median(values)
    results["ratio.remote_vs_plain.throughput"] = (
        results["remote.actions_per_s_100_in_flight"]
        / results["plain_ray.actions_per_s_100_in_flight"]
    )
    await rt.stop("echo")
    await rt.stop("prober")
    ray.kill(plain_actor)
    ray.kill(plain_prober)
    rt.stop_placement()
    return results


def _print(results: dict[str, Any]) -> None:
    console = Console()
    latency = Table(title="1 KB / 1 MB action round trip (ms)")
    for column in ("path", "1KB p50", "1KB p99", "1MB p50", "1MB p99"):
        latency.add_column(column, justify="left" if column == "path" else "right")
    for path in (
        "in_process",
        "plain_ray_actor_to_actor",
        "remote",
        "plain_ray",
        "academy_py_inproc",
    ):
        cells = [
            results.get(f"{path}.{size}.{q}_ms")
            for size in ("1KB", "1MB")
            for q in ("median", "p99")
        ]
        if all(cell is None for cell in cells):
            continue
        latency.add_row(path, *("-" if c is None else f"{c:.3f}" for c in cells))
    console.print(latency)
    ratios = Table(title="ratios and throughput")
    ratios.add_column("figure")
    ratios.add_column("value", justify="right")
    ratios.add_column("goal", justify="right")
    goals = {
        "ratio.in_process_vs_plain_actor_to_actor.1KB.median": "<= 0.1",
        "ratio.remote_vs_plain.1KB.median": "<= 1.1",
        "ratio.remote_vs_plain.throughput": ">= 1.0",
    }
    for key, value in results.items():
        if key.startswith(("ratio.", "remote.actions", "plain_ray.actions", "copy.")):
            ratios.add_row(key, f"{value:.3f}", goals.get(key, ""))
    console.print(ratios)
    if "academy_py_inproc.skipped" in results:
        console.print(f"academy-py: skipped ({results['academy_py_inproc.skipped']})")


def main() -> None:
    """Runs the benchmark and prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--academy-python", help="interpreter of an environment with academy-py installed"
    )
    options = parser.parse_args()
    results = asyncio.run(run(options.rounds))
    results.update(academy_py_inproc(options.academy_python))
    results.update(copy_costs())
    _print(results)
    print(json.dumps({"benchmark": "action_latency", **results}))


if __name__ == "__main__":
    main()
