"""Checkpointed agent state: restore after relaunch and after kill -9, corrupt checkpoints, fencing, storage
outages, interval and on-demand policies, rollback (real Ray, real files, real S3)."""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from academy_ray import AgentUnavailableError, Runtime
from academy_ray.checkpoint import (
    LOOP_SAVE_MAX_S,
    CheckpointFencedError,
    CheckpointPolicy,
    Persistence,
)
from academy_ray.store import StorageUnavailableError
from tests.academy_ray.agents import Counter, Journal
from tests.harness import S3Server

pytestmark = pytest.mark.usefixtures("local_ray")


async def _wait_running(rt: Runtime, name: str, timeout: float = 60) -> None:
    handle = rt.get(name)
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            info = await asyncio.wait_for(handle.info(), 10)
            if info.status == "running":
                return
        except (AgentUnavailableError, TimeoutError):
            pass
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"agent {name} did not come back")
        await asyncio.sleep(0.2)


async def test_state_restored_when_relaunched_by_name(rt: Runtime) -> None:
    journal = await rt.launch(Journal, name="journal")
    for entry in (1, 2, 3):
        await journal.append(entry)
    await rt.stop("journal")
    again = await rt.launch(Journal, name="journal")
    assert await again.read() == [1, 2, 3]
    assert await again.weight_sum() == 3 * 8.0  # the numpy state came back too
    info = await again.info()
    assert info.last_checkpoint_seq is not None and info.checkpoint_uri == rt.default_checkpoint.uri


async def test_readonly_actions_write_no_checkpoint(rt: Runtime) -> None:
    journal = await rt.launch(Journal, name="ro")
    await journal.append(1)
    before = len(rt.checkpoints("ro").list())
    for _ in range(5):
        await journal.read()
    assert len(rt.checkpoints("ro").list()) == before


async def test_kill_9_mid_run_loses_no_acknowledged_action(rt: Runtime) -> None:
    journal = await rt.launch(Journal, name="survivor")
    pid = (await journal.info()).pid
    acknowledged: list[int] = []
    failed = 0
    for entry in range(500):
        if entry == 150:
            os.kill(pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(journal.append(entry), 60)
            acknowledged.append(entry)
        except AgentUnavailableError:
            failed += 1
    restored = await journal.read()
    info = await journal.info()
    assert info.restarted and info.pid != pid
    assert set(acknowledged) <= set(restored), "an acknowledged action was lost"
    assert restored == sorted(restored) and len(set(restored)) == len(restored)
    assert len(acknowledged) >= 500 - failed and len(acknowledged) > 300


async def test_crash_restores_before_serving_calls(rt: Runtime) -> None:
    counter = await rt.launch(Counter, args=(0,), name="crasher")
    await counter.add(41)
    with pytest.raises(AgentUnavailableError):
        await counter.crash()
    assert await asyncio.wait_for(counter.get(), 60) == 41  # not the constructor's 0


async def test_corrupt_newest_checkpoint_falls_back_with_a_warning(
    rt: Runtime, store_uri: str
) -> None:
    journal = await rt.launch(Journal, name="corrupt")
    await journal.append(1)
    await journal.append(2)
    await rt.stop("corrupt")  # final checkpoint: entries [1, 2]
    newest = rt.checkpoints("corrupt").list()[-1]
    payload = Path(newest.path.removeprefix("file://"))
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0xFF
    payload.write_bytes(bytes(data))
    again = await rt.launch(Journal, name="corrupt")
    info = await again.info()
    assert any(str(newest.seq) in note and "corrupt" in note for note in info.notes), info.notes
    assert await again.read() in ([1, 2], [1])  # an older valid checkpoint


async def test_stale_copy_cannot_write_and_learns_it(rt: Runtime, namespace: str) -> None:
    stale = await rt.launch(Journal, name="split")
    await stale.append(1)
    # A newer activation of the same agent (as after a partition or a slow restart) takes over the store.
    newer = Persistence(
        rt.default_checkpoint, namespace, "split", "tests.academy_ray.agents.Journal"
    )
    fields = await newer.activate()
    assert fields is not None and fields["entries"] == [1]
    live = Journal()
    live.agent_restore(fields)
    live.entries.append(100)
    await newer.save(live.agent_checkpoint)
    with pytest.raises(CheckpointFencedError):
        await stale.append(2)
    latest = rt.checkpoints("split").load_latest()
    assert latest is not None and latest[1]["entries"] == [
        1,
        100,
    ]  # the live copy's state is intact
    await newer.close(None)


async def test_interval_and_on_demand_policies(
    make_runtime: Callable[..., Runtime], store_uri: str
) -> None:
    rt = make_runtime()
    policy = CheckpointPolicy(uri=store_uri, every_action=False, interval_s=0.3, on_shutdown=False)
    counter = await rt.launch(Counter, name="interval", checkpoint=policy)
    await counter.add(5)
    assert rt.checkpoints("interval", policy).list() == []  # nothing written on the action itself
    await asyncio.sleep(1.0)
    assert len(rt.checkpoints("interval", policy).list()) >= 2
    info = await rt.save("interval")
    assert info is not None and rt.checkpoints("interval", policy).load(info.seq)["count"] == 5
    await rt.stop("interval")


async def test_rollback_running_and_stopped(rt: Runtime) -> None:
    counter = await rt.launch(Counter, name="roll")
    first = await counter.add(1)
    assert first == 1
    seq_at_one = rt.checkpoints("roll").list()[-1].seq
    await counter.add(10)
    await rt.rollback("roll", seq_at_one)
    assert await counter.get() == 1
    await counter.add(5)
    await rt.stop("roll")
    await rt.rollback("roll", seq_at_one)  # not running: rolls back in the store
    folder = Path(rt.checkpoints("roll")._manifest_path(1)).parent
    # A clean stop and an offline rollback leave no manifest names reserved ahead.
    assert all(path.stat().st_size for path in folder.glob("*.json"))
    again = await rt.launch(Counter, name="roll")
    assert await again.get() == 1


async def test_s3_storage_outage_gives_typed_error_and_recovers(
    make_runtime: Callable[..., Runtime],
) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="academy-outage-"))
    server = S3Server(data_dir)
    server.start()
    bucket = server.new_bucket()
    options = {**server.storage_options, "connect_timeout": 1, "read_timeout": 2}
    policy = CheckpointPolicy(
        uri=f"s3://{bucket}/ckpt", storage_options=options, retry_initial_s=0.2, retry_max_s=1.0
    )
    rt = make_runtime()
    try:
        counter = await rt.launch(Counter, name="outage", checkpoint=policy)
        assert await counter.add(1) == 1
        server.stop()
        with pytest.raises(StorageUnavailableError):
            await asyncio.wait_for(counter.add(2), 60)
        assert await counter.get_ticks() >= 0  # the agent keeps serving
        info = await counter.info()
        assert info.checkpoint_pending and info.status == "running"
        server.start()
        for _ in range(100):
            if not (await counter.info()).checkpoint_pending:
                break
            await asyncio.sleep(0.3)
        assert not (await counter.info()).checkpoint_pending
        await rt.stop("outage")
        again = await rt.launch(Counter, name="outage", checkpoint=policy)
        assert (
            await again.get() == 3
        )  # the change whose caller saw the error was made durable later
        await rt.stop("outage")
    finally:
        server.stop()


def _recording_writes(persistence: Persistence, delay_s: float = 0.0) -> list[str]:
    """Wraps the store's save so that each write records the thread it ran in (and, as an injected
    fault, takes ``delay_s`` longer: a slow disk)."""
    threads: list[str] = []
    save_encoded = persistence.checkpoints.save_encoded

    def recorded(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        time.sleep(delay_s)
        return save_encoded(*args, **kwargs)

    persistence.checkpoints.save_encoded = recorded  # type: ignore[method-assign]
    return threads


async def test_concurrent_small_saves_on_the_loop_share_one_write(tmp_path: Path) -> None:
    """A small local save runs on the event loop, yet concurrent state changes still share one write (the
    group commit): the save yields once before its snapshot, so changes already delivered are in it."""
    persistence = Persistence(
        CheckpointPolicy(uri=f"file://{tmp_path}/ckpt"), "ns", "group", "tests.Counter"
    )
    await persistence.activate()
    writes = _recording_writes(persistence)
    state = {"n": 0}

    async def change() -> None:
        state["n"] += 1
        await persistence.save(lambda: dict(state))

    await asyncio.gather(*(change() for _ in range(20)))
    assert writes and set(writes) == {threading.current_thread().name}  # on the loop
    assert len(writes) <= 2  # 20 acknowledged changes, one or two writes
    latest = persistence.checkpoints.load_latest(strict=True)
    assert latest is not None and latest[1] == {"n": 20}
    await persistence.close(None)


async def test_a_slow_disk_moves_small_saves_off_the_event_loop(tmp_path: Path) -> None:
    """While small writes average over `LOOP_SAVE_MAX_S` (here an injected slow disk), they go to the I/O
    thread so that the agent's loops keep running; every save is still durable when it returns."""
    persistence = Persistence(
        CheckpointPolicy(uri=f"file://{tmp_path}/ckpt"), "ns", "slow", "tests.Counter"
    )
    await persistence.activate()
    writes = _recording_writes(persistence, delay_s=4 * LOOP_SAVE_MAX_S)
    for n in range(6):
        await persistence.save(lambda n=n: {"n": n})  # type: ignore[misc]
        latest = persistence.checkpoints.load_latest()
        assert latest is not None and latest[1] == {"n": n}
    loop_thread = threading.current_thread().name
    assert writes[0] == loop_thread  # fast until measured otherwise
    assert all(
        thread.startswith("checkpoint-") for thread in writes[-3:]
    )  # once the average is over
    await persistence.close(None)


async def test_agents_sharing_a_loop_save_from_their_threads(tmp_path: Path) -> None:
    """Two agents of one process (a pool shares its event loop) that save at the same time write from their
    I/O threads, in parallel, rather than one after another on the loop they both need."""
    policy = CheckpointPolicy(uri=f"file://{tmp_path}/ckpt")
    pair = [Persistence(policy, "ns", name, "tests.Counter") for name in ("left", "right")]
    writes = []
    for persistence in pair:
        await persistence.activate()
        writes.append(_recording_writes(persistence))
    for n in range(5):
        await asyncio.gather(*(persistence.save(lambda n=n: {"n": n}) for persistence in pair))  # type: ignore[misc]
    for persistence, threads in zip(pair, writes, strict=True):
        assert all(thread.startswith("checkpoint-") for thread in threads[-4:]), threads
        latest = persistence.checkpoints.load_latest(strict=True)
        assert latest is not None and latest[1] == {"n": 4}
        await persistence.close(None)
