"""What the many-users path costs per request: keys, limits, fair queue, usage; local vs shared buckets.

Usage: ``python -m benchmarks.serving_quota [--requests 2000]``.

Measured inside an async Ray actor (as the ingress is), per request, median and p99:

- ``local``: what every request pays with the default (one ingress replica, buckets in it): the key
  looked up by SHA-256 in a 1,000-key ring (with its reload check), the request and token buckets,
  the fair queue's turn and release, the settlement, and the usage counted for the next report to
  the keeper (one call per second per ingress replica, not per request: left out here);
- ``shared``: the same with ``UsersConfig(shared_limits=True)``: the admission is a call to the app's
  keeper actor (so that limits hold across ingress replicas), which also carries the settlements of
  the requests that ended since the last call;
- ``actor_round_trip``: the baseline, a no-op call to the same actor: the floor of any design that
  keeps the buckets in one place.

Then the keeper's admissions per second with 64 in flight (its ceiling for the whole app with
``shared_limits``). Prints a rich table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from rich.console import Console
from rich.table import Table

from serving.auth import KeyLimits, KeyRing, hash_key
from serving.fairness import FairGate
from serving.quota import RateLimiter, Settlement
from serving.usage import UsageKeeper, UsageLedger

KEYS = 1000
LIMITS = KeyLimits(requests_per_minute=10**9, tokens_per_minute=10**12)


class Probe:
    """Times the ingress's per-request steps inside an async actor."""

    def __init__(self, keys_file: str, keeper: Any) -> None:
        self.ring = KeyRing(path=keys_file, reload_interval_s=1.0)
        self.limiter = RateLimiter()
        self.gate = FairGate(slots=64, max_queued_per_key=32)
        self.keeper = keeper
        self.unreported = UsageLedger()
        self.unsettled: list[Settlement] = []

    async def local(self, count: int) -> list[float]:
        samples = []
        for i in range(count):
            start = time.perf_counter()
            caller = self.ring.authenticate(f"Bearer sk-{i % KEYS}")
            assert self.limiter.admit(caller.key_id, LIMITS, 16) is None
            ticket = await self.gate.acquire(caller.key_id)
            ticket.release()
            self.limiter.settle(caller.key_id, LIMITS, 16, 20)
            self.unreported.add(caller.key_id, "m", 4, 16)
            samples.append(time.perf_counter() - start)
        return samples

    async def shared(self, count: int) -> list[float]:
        samples = []
        for i in range(count):
            start = time.perf_counter()
            caller = self.ring.authenticate(f"Bearer sk-{i % KEYS}")
            settled, self.unsettled = self.unsettled, []
            assert await self.keeper.admit.remote(caller.key_id, LIMITS, 16, settled) is None
            ticket = await self.gate.acquire(caller.key_id)
            ticket.release()
            self.unsettled.append(Settlement(caller.key_id, LIMITS, 16, 20))
            self.unreported.add(caller.key_id, "m", 4, 16)
            samples.append(time.perf_counter() - start)
        return samples

    async def round_trip(self, count: int) -> list[float]:
        samples = []
        for _ in range(count):
            start = time.perf_counter()
            await self.keeper.ping.remote()
            samples.append(time.perf_counter() - start)
        return samples

    async def shared_throughput(self, in_flight: int, batches: int) -> float:
        start = time.perf_counter()
        for batch in range(batches):
            await asyncio.gather(
                *(
                    self.keeper.admit.remote(f"k{(batch * in_flight + i) % KEYS}", LIMITS, 16)
                    for i in range(in_flight)
                )
            )
        return in_flight * batches / (time.perf_counter() - start)


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(requests: int) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-keys-"))
    keys_file = folder / "keys.json"
    entries = [{"id": f"k{i}", "sha256": hash_key(f"sk-{i}")} for i in range(KEYS)]
    keys_file.write_text(json.dumps({"keys": entries}))
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        keeper = ray.remote(UsageKeeper).options(num_cpus=0).remote()
        probe = ray.remote(Probe).options(num_cpus=0).remote(str(keys_file), keeper)
        ray.get(probe.round_trip.remote(50))  # warm both actors
        figures: dict[str, Any] = {"requests": requests, "keys": KEYS}
        rows = {"local": probe.local, "shared": probe.shared, "actor_round_trip": probe.round_trip}
        samples: dict[str, list[float]] = {name: [] for name in rows}
        for _ in range(4):  # alternate in blocks so that background load hits all alike
            for name, method in rows.items():
                samples[name] += ray.get(method.remote(requests // 4))
        for name, values in samples.items():
            figures[f"{name}.median_us"] = statistics.median(values) * 1e6
            figures[f"{name}.p99_us"] = _percentile(values, 0.99) * 1e6
        figures["shared.admissions_per_s_64_in_flight"] = ray.get(
            probe.shared_throughput.remote(64, max(1, requests // 64))
        )
        figures["shared_minus_round_trip.median_us"] = (
            figures["shared.median_us"] - figures["actor_round_trip.median_us"]
        )
        return figures
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    options = parser.parse_args()
    figures = run(options.requests)
    table = Table(title=f"many-users path per request ({figures['keys']} keys, inside an actor)")
    for column in ("path", "median (us)", "p99 (us)"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for name in ("local", "shared", "actor_round_trip"):
        table.add_row(
            name, f"{figures[f'{name}.median_us']:.1f}", f"{figures[f'{name}.p99_us']:.1f}"
        )
    console = Console()
    console.print(table)
    console.print(
        f"keeper admissions/s with 64 in flight: "
        f"{figures['shared.admissions_per_s_64_in_flight']:.0f}"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
