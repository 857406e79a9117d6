"""What every-action durability costs, judged against the floor of the same bytes (file:// store).

Usage: ``python -m benchmarks.checkpoint_overhead [--calls 300] [--sizes 1,64,256] [--uri file:///tmp/x]``.

Two parts, one run, one JSON line:

1. **A small action through Ray.** The same agent class runs twice on one embedded Ray, once without
   checkpoints (baseline) and once with a checkpoint after every action; calls alternate between the two
   in blocks. *Added* = the median difference. The **floor** is what any durable write of the same bytes
   costs on this disk: a new file with the manifest's bytes, ``fsync`` of the file and of its folder
   (measured here, interleaved, in a tight loop of this process). ``floor_action`` writes the same bytes
   the same way inside an action of a third agent (no checkpoints), so ``floor_action - no_checkpoint`` is
   the floor where the real save runs (same process wake-ups, same Ray reply path). Goal: added <= 1.5x
   the floor (an absolute figure says more about the disk than about the code). A small save on a local
   folder fills a manifest name reserved ahead (one write + ``fdatasync``; the folder's fsync is paid once
   per 16 names) on the agent's event loop, so it can cost less than the floor's new file.
   Also measured: the **atomic-create floor**, the cheapest write that a write-once
   checkpoint can use at all (temporary file, fsync, hard link that refuses an existing name, fsync of the
   folder): a bare write is not exclusive, and two copies of an agent could both "win" a sequence number.
2. **Large states, in-process.** For 1 / 64 / 256 MB arrays: the **snapshot copy** taken on the agent's
   event loop at the commit point (so loops that change the array in place cannot tear the checkpoint),
   the whole save an action waits for (snapshot, checksum, write-once payload + manifest, fsyncs, fencing
   checks), and the floor for the same bytes (write + fsync of file and folder).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from academy_ray import Agent, Runtime, action
from academy_ray.state import encode_state_segments
from academy_ray.store import CheckpointStore


class Tally(Agent):
    """A small state (a dict of counters), changed by every call."""

    agent_state_fields = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    @action
    async def bump(self, key: str) -> int:
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key]


class FloorWriter(Agent):
    """No checkpoints: each call writes the checkpoint's bytes to a new file itself (write, fsync of the
    file and its folder) on its event loop: the floor measured where the real save runs, inside an
    action answered through Ray."""

    def __init__(self, folder: str, payload: bytes) -> None:
        self.folder, self.payload = Path(folder), payload

    @action
    async def bump(self, key: str) -> int:
        durable_write_floor(self.folder, self.payload)
        return 1


def _write_new_file(path: Path, payload: bytes | memoryview) -> None:
    """Creates ``path`` (exclusively) with ``payload`` and fsyncs it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(payload)
        while view.nbytes:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_write_floor(folder: Path, payload: bytes | memoryview) -> float:
    """Seconds to write ``payload`` to a new file in ``folder`` and fsync the file and the folder."""
    path = folder / f"floor-{uuid.uuid4().hex}"
    start = time.perf_counter()
    _write_new_file(path, payload)
    _fsync_folder(folder)
    elapsed = time.perf_counter() - start
    path.unlink()
    return elapsed


def atomic_create_floor(folder: Path, payload: bytes | memoryview) -> float:
    """Seconds for the cheapest crash-safe *exclusive* create of ``payload`` (what a write-once object
    needs): a temporary file written and fsynced, hard-linked to its name (refused if it exists), the
    temporary name removed, the folder fsynced."""
    tmp, path = folder / f".tmp-{uuid.uuid4().hex}", folder / f"atomic-{uuid.uuid4().hex}"
    start = time.perf_counter()
    _write_new_file(tmp, payload)
    os.link(tmp, path)
    os.unlink(tmp)
    _fsync_folder(folder)
    elapsed = time.perf_counter() - start
    path.unlink()
    return elapsed


async def _timed(call: Any, calls: int) -> list[float]:
    samples = []
    for index in range(calls):
        start = time.perf_counter()
        await call(f"k{index % 16}")
        samples.append(time.perf_counter() - start)
    return samples


def _manifest_bytes(uri: str, name: str) -> bytes:
    """The newest checkpoint's manifest object (what a small checkpoint writes: the payload is inline)."""
    store = CheckpointStore(uri)
    info = store.for_agent("bench-ckpt", name).list()[-1]
    return Path(info.path.removeprefix("file://")).read_bytes()


async def small_action(calls: int, uri: str, floor_dir: Path) -> dict[str, Any]:
    """Part 1: the every-action policy on a small action vs no checkpoint vs the floor."""
    rt = Runtime(namespace="bench-ckpt", init_kwargs={"num_cpus": 2, "include_dashboard": False})
    plain = await rt.launch(Tally, name="plain", get_if_exists=True, checkpoint=False)
    durable = await rt.launch(Tally, name="durable", get_if_exists=True, checkpoint=uri)
    for handle in (plain, durable):
        await _timed(handle.bump, 30)
    manifest = _manifest_bytes(uri, "durable")
    in_action_dir = floor_dir / "in-action"
    in_action_dir.mkdir()
    writer = await rt.launch(
        FloorWriter,
        args=(str(in_action_dir), manifest),
        name="floor",
        get_if_exists=True,
        checkpoint=False,
    )
    await _timed(writer.bump, 30)
    samples: dict[str, list[float]] = {
        "no_checkpoint": [],
        "every_action": [],
        "floor_action": [],
        "floor": [],
        "atomic_floor": [],
    }
    block = 25
    for _ in range(max(1, calls // block)):
        samples["no_checkpoint"].extend(await _timed(plain.bump, block))
        samples["every_action"].extend(await _timed(durable.bump, block))
        samples["floor_action"].extend(await _timed(writer.bump, block))
        samples["floor"].extend(durable_write_floor(floor_dir, manifest) for _ in range(block))
        samples["atomic_floor"].extend(
            atomic_create_floor(floor_dir, manifest) for _ in range(block)
        )
    results: dict[str, Any] = {"store": uri, "calls_each": len(samples["every_action"])}
    for name, values in samples.items():
        ordered = sorted(values)
        results[f"{name}.median_ms"] = statistics.median(values) * 1e3
        results[f"{name}.p99_ms"] = ordered[int(0.99 * (len(ordered) - 1))] * 1e3
    results["checkpoint_bytes"] = len(manifest)
    results["added.median_ms"] = (
        results["every_action.median_ms"] - results["no_checkpoint.median_ms"]
    )
    results["added_over_floor"] = results["added.median_ms"] / results["floor.median_ms"]
    results["added_over_atomic_floor"] = (
        results["added.median_ms"] / results["atomic_floor.median_ms"]
    )
    results["floor_in_action.median_ms"] = (
        results["floor_action.median_ms"] - results["no_checkpoint.median_ms"]
    )
    results["added_over_floor_in_action"] = (
        results["added.median_ms"] / results["floor_in_action.median_ms"]
    )
    info = await durable.info()
    results["checkpoints_written_seq"] = info.last_checkpoint_seq
    for name in ("plain", "durable", "floor"):
        await rt.stop(name)
    rt.stop_placement()
    rt.close()
    return results


def large_state(megabytes: int, uri: str, floor_dir: Path, repeats: int) -> dict[str, float]:
    """Part 2: snapshot copy, full save and the floor for one array of ``megabytes`` MB."""
    weights = np.random.default_rng(megabytes).random(megabytes * (1 << 20) // 8)
    checkpoints = CheckpointStore(uri, keep_last=2).for_agent("bench-ckpt", f"large-{megabytes}")
    epoch = checkpoints.acquire_epoch()
    copy_s, reference_s, save_s, floor_s = [], [], [], []
    for _ in range(max(repeats, 256 // megabytes)):  # small copies are quick: more samples
        start = time.perf_counter()
        encode_state_segments({"weights": weights}, copy=False)
        reference_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        encode_state_segments({"weights": weights})  # the commit point's snapshot
        copy_s.append(time.perf_counter() - start)
    for _ in range(repeats):
        start = time.perf_counter()
        encoded = encode_state_segments({"weights": weights})
        checkpoints.save_encoded(encoded, epoch=epoch, agent_class="bench.Large")
        save_s.append(time.perf_counter() - start)
        floor_s.append(durable_write_floor(floor_dir, encoded.to_bytes()))
    snapshot_ms = (statistics.median(copy_s) - statistics.median(reference_s)) * 1e3
    return {
        "snapshot_copy_ms": snapshot_ms,
        "save_ms": statistics.median(save_s) * 1e3,
        "floor_ms": statistics.median(floor_s) * 1e3,
        "save_over_floor": statistics.median(save_s) / statistics.median(floor_s),
        "snapshot_share_of_save": snapshot_ms / (statistics.median(save_s) * 1e3),
    }


def main() -> None:
    """Runs the benchmark and prints the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--sizes", default="1,64,256", help="large-state sizes in MB")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--uri", default=None, help="checkpoint store (default: a new temporary directory)"
    )
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="academy-ckpt-bench-"))
    uri = options.uri or f"file://{root / 'store'}"
    floor_dir = root / "floor"
    floor_dir.mkdir()
    small = asyncio.run(small_action(options.calls, uri, floor_dir))
    print(f"{'small action (through Ray)':34s} {'median ms':>10s} {'p99 ms':>10s}")
    for name in ("no_checkpoint", "every_action", "floor_action", "floor", "atomic_floor"):
        print(f"  {name:32s} {small[f'{name}.median_ms']:10.3f} {small[f'{name}.p99_ms']:10.3f}")
    print(
        f"  added by every-action durability: {small['added.median_ms']:.3f} ms = "
        f"{small['added_over_floor']:.2f}x the floor ({small['checkpoint_bytes']} B; goal <= 1.5x), "
        f"{small['added_over_atomic_floor']:.2f}x the atomic-create floor, "
        f"{small['added_over_floor_in_action']:.2f}x the floor written inside an action "
        f"({small['floor_in_action.median_ms']:.3f} ms added by floor_action)"
    )
    large: dict[str, dict[str, float]] = {}
    print(
        f"\n{'state':>8s} {'snapshot ms':>12s} {'save ms':>10s} {'floor ms':>10s} {'save/floor':>11s}"
    )
    for megabytes in (int(size) for size in options.sizes.split(",")):
        figures = large_state(megabytes, uri, floor_dir, options.repeats)
        large[f"{megabytes}MB"] = figures
        print(
            f"{megabytes:>6d}MB {figures['snapshot_copy_ms']:12.2f} {figures['save_ms']:10.2f} "
            f"{figures['floor_ms']:10.2f} {figures['save_over_floor']:11.2f}"
        )
    print(
        json.dumps(
            {"benchmark": "checkpoint_overhead", "small_action": small, "large_state": large}
        )
    )


if __name__ == "__main__":
    main()
