"""What the placement controller's journal costs, and how fast a killed controller comes back.

Usage: ``python -m benchmarks.controller_journal [--demands 200] [--restore 1000]``. Prints a table and one
JSON line.

* Place latency: the same unreserved demands (no placement group, so the figure is the controller's own
  bookkeeping plus, on one side, the journal write) placed through a journaled controller and through one
  without a journal, alternating in blocks on the same embedded Ray, medians compared.
* Restart: the journaled controller, holding ``--restore`` decisions, is SIGKILLed; the time until its new
  process answers with every decision adopted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import time
import uuid
from typing import Any

import ray

from placement import Decision, Demand, PlacementController


class NoopLauncher:
    """Launches nothing: the benchmark measures placement's own work."""

    def __call__(self, decision: Decision) -> None:
        return None


def _controller(namespace: str, journal: str | None) -> Any:
    actor_cls: Any = ray.remote(PlacementController)
    handle = actor_cls.options(
        name=f"bench-{uuid.uuid4().hex[:6]}",
        namespace=namespace,
        lifetime="detached",
        num_cpus=0,
        max_restarts=-1,
    ).remote(poll_s=5.0, journal=journal)
    ray.get(handle.ping.remote())
    return handle


async def _place(controller: Any, name: str) -> float:
    demand = Demand(name=name, cpus=1e-4, reserve=False)  # 10,000 fit in 1 CPU of the ledger
    start = time.perf_counter()
    await controller.place.remote(demand, NoopLauncher(), None)
    return time.perf_counter() - start


async def _latencies(demands: int, block: int) -> dict[str, list[float]]:
    namespace = f"bench-journal-{uuid.uuid4().hex[:6]}"
    sides = {
        "journaled": _controller(namespace, f"{namespace}/journaled"),
        "in_memory": _controller(namespace, None),
    }
    samples: dict[str, list[float]] = {side: [] for side in sides}
    for first in range(0, demands, block):
        for side, controller in sides.items():
            for i in range(first, min(first + block, demands)):
                samples[side].append(await _place(controller, f"{side}-{i}"))
    for controller in sides.values():
        await controller.release_all.remote()
        ray.kill(controller)
    return samples


async def _restart(restore: int) -> dict[str, float]:
    namespace = f"bench-restart-{uuid.uuid4().hex[:6]}"
    controller = _controller(namespace, f"{namespace}/journaled")
    await asyncio.gather(*(_place(controller, f"d-{i}") for i in range(restore)))
    before = await controller.info.remote()
    start = time.perf_counter()
    os.kill(int(before["pid"]), signal.SIGKILL)
    while True:
        try:
            info = await asyncio.wait_for(asyncio.ensure_future(controller.info.remote()), 5)
            if info["pid"] != before["pid"]:
                break
        except (ray.exceptions.RayActorError, TimeoutError):
            pass
        await asyncio.sleep(0.02)
    back_s = time.perf_counter() - start
    await controller.release_all.remote()
    ray.kill(controller)
    return {"decisions": float(restore), "restored": float(info["restored"]), "back_s": back_s}


def main() -> None:
    """Runs the benchmark and prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demands", type=int, default=200, help="placements per side")
    parser.add_argument(
        "--block", type=int, default=20, help="placements per side before switching"
    )
    parser.add_argument("--restore", type=int, default=1000, help="decisions held when killed")
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    samples = asyncio.run(_latencies(args.demands, args.block))
    restart = asyncio.run(_restart(args.restore))
    medians = {side: statistics.median(values) * 1e3 for side, values in samples.items()}
    p99 = {side: sorted(v)[int(0.99 * (len(v) - 1))] * 1e3 for side, v in samples.items()}
    print(f"{'controller':<12} {'place p50 ms':>12} {'p99 ms':>8}")
    for side in samples:
        print(f"{side:<12} {medians[side]:>12.2f} {p99[side]:>8.2f}")
    overhead = medians["journaled"] - medians["in_memory"]
    print(
        f"journal adds {overhead:.2f} ms per placement (x{medians['journaled'] / medians['in_memory']:.2f})"
    )
    print(
        f"killed with {int(restart['decisions'])} decisions: back in {restart['back_s']:.2f} s, "
        f"{int(restart['restored'])} adopted"
    )
    print(
        json.dumps(
            {
                "benchmark": "controller_journal",
                "place_p50_ms": medians,
                "place_p99_ms": p99,
                "journal_overhead_ms": overhead,
                "restart": restart,
            }
        )
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
