"""Checkpoint save/restore throughput against raw fsspec writes/reads of the same bytes, in one run.

For 1 KB, 10 MB and 256 MB states (one float64 numpy array each) on ``file://`` and ``s3://`` (a SeaweedFS
server this script starts), measures the median time of

* ``store_save``: ``AgentCheckpoints.save`` (encode, xxh3_128 checksum, write-once payload + manifest, fsync
  locally, fencing checks, retention), and ``raw_write``: ``fs.pipe_file`` of the encoded payload bytes (no
  fsync: the bytes may still be only in the page cache when it returns);
* ``store_load``: ``AgentCheckpoints.load_latest`` (listing, manifest, read, checksum, zero-copy decode), and
  ``raw_read``: ``fs.cat_file`` of the same object;

and prints one JSON document with the figures and the ratios ``save_ratio = raw_write / store_save`` and
``load_ratio = raw_read / store_load`` (store throughput over raw throughput; goal >= 0.8 at 256 MB).
Locally it also reports ``raw_write_fsync`` (the same bytes written to a new file followed by fsync: the
cheapest *durable* raw write, which is what a checkpoint must be) and ``save_ratio_vs_fsync =
raw_write_fsync / store_save``; the gap between ``raw_write`` and ``raw_write_fsync`` is what durability
costs on this disk. On s3 a PUT is durable when it returns, so there is no separate column. The
operations are measured round robin so that drift hits both sides alike.

Run from the repository root: ``python -m benchmarks.checkpoint_io [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from academy_ray.state import encode_state
from academy_ray.store import CheckpointStore

SIZES = {"1KB": 1 << 10, "10MB": 10 << 20, "256MB": 256 << 20}
REPEATS = {"1KB": 30, "10MB": 7, "256MB": 5}


def _bench_size(
    label: str, store: CheckpointStore, size_label: str, nbytes: int, quick: bool
) -> dict[str, Any]:
    """Times raw fsspec writes/reads against store saves/loads for one state size."""
    fs, root = store.fs, store.root
    repeats = 1 if quick and size_label == "256MB" else REPEATS[size_label]
    state = {"weights": np.random.default_rng(0).random(nbytes // 8)}
    agent = store.for_agent("bench", f"{label}-{size_label}-{uuid.uuid4().hex[:6]}")
    epoch = agent.acquire_epoch()
    payload = encode_state(state)
    raw_path = f"{root}/raw-{uuid.uuid4().hex}"

    def raw_write() -> None:
        # A new object each time, as the store writes (overwriting one file locally would let the
        # kernel drop the previous dirty pages and never write them).
        path = f"{root}/raw-{uuid.uuid4().hex}"
        fs.pipe_file(path, payload)
        fs.rm_file(path)

    def raw_read() -> None:
        fs.cat_file(raw_path)

    def store_save() -> None:
        agent.save(state, epoch=epoch, agent_class="bench.Agent")

    def store_load() -> None:
        loaded = agent.load_latest()
        assert loaded is not None

    # Warm up each path once (connections, page cache, imports).
    fs.pipe_file(raw_path, payload)
    raw_write()
    raw_read()
    store_save()
    store_load()
    ops: dict[str, Callable[[], Any]] = {
        "raw_write_s": raw_write,
        "store_save_s": store_save,
        "raw_read_s": raw_read,
        "store_load_s": store_load,
    }
    if label == "file":

        def raw_write_fsync() -> None:
            fsync_path = f"{root}/raw-fsync-{uuid.uuid4().hex}"
            with open(fsync_path, "wb") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            os.unlink(fsync_path)

        raw_write_fsync()
        ops["raw_write_fsync_s"] = raw_write_fsync
    # Round robin (raw, store, raw, store, ...) so that drift in a shared machine or in the S3
    # server hits both sides alike; the median of each is reported.
    times: dict[str, list[float]] = {key: [] for key in ops}
    for _ in range(repeats):
        for key, op in ops.items():
            start = time.perf_counter()
            op()
            times[key].append(time.perf_counter() - start)
    row: dict[str, Any] = {
        "backend": label,
        "size": size_label,
        "payload_bytes": len(payload),
        "repeats": repeats,
        **{key: statistics.median(values) for key, values in times.items()},
    }
    if label == "file":
        row["save_ratio_vs_fsync"] = round(row["raw_write_fsync_s"] / row["store_save_s"], 3)
    row["save_ratio"] = round(row["raw_write_s"] / row["store_save_s"], 3)
    row["load_ratio"] = round(row["raw_read_s"] / row["store_load_s"], 3)
    row["store_save_MBps"] = round(len(payload) / row["store_save_s"] / 1e6, 1)
    row["store_load_MBps"] = round(len(payload) / row["store_load_s"] / 1e6, 1)
    for key in (
        "raw_write_s",
        "store_save_s",
        "raw_read_s",
        "store_load_s",
        "raw_write_fsync_s",
    ):
        if key in row:
            row[key] = round(row[key], 5)
    fs.rm_file(raw_path)
    agent.delete_all()
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def _bench_backend(
    label: str, uri: str, options: dict[str, Any] | None, quick: bool
) -> list[dict[str, Any]]:
    store = CheckpointStore(uri, options, keep_last=2)
    return [
        _bench_size(label, store, size_label, nbytes, quick) for size_label, nbytes in SIZES.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one 256 MB repeat instead of three")
    parser.add_argument("--backends", default="file,s3", help="comma-separated: file,s3")
    args = parser.parse_args()
    backends = args.backends.split(",")

    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="academy-ckpt-bench-"))
    try:
        if "file" in backends:
            rows += _bench_backend("file", f"file://{work}/file-store", None, args.quick)
        if "s3" in backends:
            from tests.harness import S3Server

            (work / "s3").mkdir()
            server = S3Server(work / "s3")
            server.start()
            try:
                bucket = server.new_bucket()
                rows += _bench_backend(
                    "s3", f"s3://{bucket}/store", server.storage_options, args.quick
                )
            finally:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    goal = {
        f"{r['backend']}_256MB": {
            "save_ratio": r["save_ratio"],
            "load_ratio": r["load_ratio"],
            "meets_0.8x": r["save_ratio"] >= 0.8 and r["load_ratio"] >= 0.8,
            **(
                {
                    "save_ratio_vs_fsync": r["save_ratio_vs_fsync"],
                    "meets_0.8x_vs_durable_raw": r["save_ratio_vs_fsync"] >= 0.8
                    and r["load_ratio"] >= 0.8,
                }
                if "save_ratio_vs_fsync" in r
                else {}
            ),
        }
        for r in rows
        if r["size"] == "256MB"
    }
    print(
        json.dumps(
            {
                "benchmark": "checkpoint_io",
                "ratio": "raw time / store time (= store throughput / raw throughput)",
                "results": rows,
                "goal_256MB": goal,
                "total_s": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
