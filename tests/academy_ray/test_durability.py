"""Trust: no acknowledged state is lost, whatever runs beside a checkpoint (real Ray, real files, real S3).

Each test here reproduces one way acknowledged state used to be lost or a copy kept writing where it
should have stopped: snapshots torn by in-place updates, a silent fresh start over corrupt checkpoints,
rollbacks racing actions and launches, a fenced copy under the interval policy, stores that cannot fence,
concurrent launches of one name, calls made while Ray restarts an agent, and payload bounds at the host.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from ray._private import state as ray_state
from ray.core.generated.gcs_pb2 import ActorTableData

from academy_ray import (
    AgentExistsError,
    AgentUnavailableError,
    Handle,
    Runtime,
)
from academy_ray.checkpoint import CheckpointFencedError, CheckpointPolicy, Persistence
from academy_ray.exception import CheckpointRestoreError
from academy_ray.payload import PayloadError
from academy_ray.store import AgentCheckpoints, CheckpointStore, UnsafeStoreError
from tests.academy_ray.agents import Counter, InPlaceLearner, Journal
from tests.harness import S3Server

pytestmark = pytest.mark.usefixtures("local_ray")


def _payload_files(rt: Runtime, name: str) -> list[Path]:
    return [
        Path(info.path.removeprefix("file://"))
        for info in rt.checkpoints(name).list()
        if not info.inline
    ]


async def _kill_and_wait_restarting(handle: Handle[Any]) -> int:
    """SIGKILLs the agent's host process (no call in flight) and returns once this process's Ray client
    knows that Ray is restarting it: a call made from then on is a call made during the restart."""
    actor = handle.actor
    actor_id = actor._actor_id.hex()
    restarts = ray_state.actors(actor_id=actor_id)["NumRestarts"]
    pid = (await handle.info()).pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    known_at = None
    while actor._get_local_state() != ActorTableData.RESTARTING:
        if known_at is None and ray_state.actors(actor_id=actor_id)["NumRestarts"] != restarts:
            known_at = time.monotonic()
        if known_at is not None and time.monotonic() - known_at > 3.0:
            break  # restarted before we looked: the client has long heard of it
        await asyncio.sleep(0.002)
    return pid


# ---- 1. snapshots are snapshots ------------------------------------------------------------------------


async def test_in_place_updates_during_saves_leave_consistent_checkpoints_and_lose_nothing(
    rt: Runtime,
) -> None:
    learner = await rt.launch(InPlaceLearner, args=(32,), name="learner")
    for expected in range(1, 11):
        assert await learner.step() == expected  # acknowledged: durable
    checkpoints = rt.checkpoints("learner")
    infos = checkpoints.list()
    assert len(infos) >= 5
    for info in infos:
        fields = checkpoints.load(info.seq)  # raises CorruptCheckpointError on a torn payload
        weights = fields["weights"]
        assert weights.min() == weights.max() == fields["updates"], (
            f"checkpoint {info.seq} is a torn mix of states"
        )
    pid = await _kill_and_wait_restarting(learner)
    assert await asyncio.wait_for(learner.acknowledged(), 120) == 10
    info = await learner.info()
    assert info.pid != pid and info.restarted


# ---- 2. no silent fresh start -----------------------------------------------------------------------------


async def test_agent_whose_checkpoints_all_fail_refuses_to_start_empty(
    rt: Runtime, store_uri: str
) -> None:
    journal = await rt.launch(Journal, args=(1 << 15,), name="evidence")  # 256 KiB: payload files
    for entry in (1, 2, 3):
        await journal.append(entry)
    await rt.stop("evidence")
    payloads = _payload_files(rt, "evidence")
    assert payloads
    for payload in payloads:
        data = bytearray(payload.read_bytes())
        data[len(data) // 2] ^= 0xFF
        payload.write_bytes(bytes(data))
    seqs_before = [info.seq for info in rt.checkpoints("evidence").list()]

    with pytest.raises(CheckpointRestoreError) as caught:
        await rt.launch(Journal, args=(1 << 15,), name="evidence")
    assert caught.value.seqs == sorted(seqs_before, reverse=True)
    assert str(seqs_before[-1]) in str(caught.value)
    assert [info.seq for info in rt.checkpoints("evidence").list()] == seqs_before  # untouched
    assert "evidence" not in {info.name for info in await rt.list()}

    fresh = await rt.launch(
        Journal,
        args=(1 << 15,),
        name="evidence",
        checkpoint=CheckpointPolicy(uri=store_uri, allow_fresh_start=True),
    )
    assert await fresh.read() == []


# ---- 3. rollback is serialised with actions and launches -------------------------------------------------


async def test_action_sent_during_a_rollback_runs_after_it_and_stays(rt: Runtime) -> None:
    journal = await rt.launch(Journal, args=(8 << 20,), name="rolled")  # 64 MB: a slow rollback
    await journal.append(1)
    first = rt.checkpoints("rolled").list()[-1].seq
    await journal.append(2)
    rollback = asyncio.ensure_future(rt.rollback("rolled", first))
    await asyncio.sleep(0.05)  # the rollback's I/O is under way
    assert not rollback.done()
    await journal.append(99)  # acknowledged: it must survive in memory and in storage
    info = await rollback
    assert info.extra["rollback_of"] == first
    assert await journal.read() == [1, 99]
    latest = rt.checkpoints("rolled").load_latest()
    assert latest is not None and latest[1]["entries"] == [1, 99]


async def test_offline_rollback_never_fences_a_launch_made_meanwhile(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = await rt.launch(Journal, name="offline")
    await journal.append(1)
    first = rt.checkpoints("offline").list()[-1].seq
    await journal.append(2)
    await rt.stop("offline")

    acquire = AgentCheckpoints.acquire_epoch

    def slow_acquire(self: AgentCheckpoints) -> int:  # injected: a slow store under the rollback
        time.sleep(2.0)
        return acquire(self)

    monkeypatch.setattr(AgentCheckpoints, "acquire_epoch", slow_acquire)
    rollback = asyncio.ensure_future(rt.rollback("offline", first))
    await asyncio.sleep(0.3)
    relaunched = await rt.launch(Journal, name="offline")
    await rollback
    assert await relaunched.append(3) == 2  # not fenced: it started after the rollback
    assert await relaunched.read() == [1, 3]


# ---- 4. a fenced copy stops under every policy -------------------------------------------------------------


async def test_fenced_copy_stops_under_the_interval_policy(
    rt: Runtime, store_uri: str, namespace: str
) -> None:
    policy = CheckpointPolicy(uri=store_uri, every_action=False, interval_s=0.2)
    stale = await rt.launch(Journal, name="interval", checkpoint=policy)
    await stale.append(1)
    newer = Persistence(policy, namespace, "interval", "tests.academy_ray.agents.Journal")
    await newer.activate()  # a newer copy (after a partition or a slow restart) takes over
    deadline = time.monotonic() + 30
    while (await stale.info()).status == "running":
        assert time.monotonic() < deadline, "the fenced copy kept running"
        await asyncio.sleep(0.1)
    with pytest.raises(CheckpointFencedError):
        await stale.append(2)


# ---- 5. stores must fence atomically; a per-node folder is detected ----------------------------------------


async def test_s3_server_that_ignores_if_none_match_is_refused(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, namespace: str
) -> None:
    import s3fs

    uri = f"s3://{s3_server.new_bucket()}/ckpt"
    policy = CheckpointPolicy(uri=uri, storage_options=s3_server.storage_options)
    await Persistence(policy, namespace, "honest", "x.Y").activate()  # SeaweedFS honours it

    pipe = s3fs.S3FileSystem._pipe_file

    async def ignores_conditions(
        self: Any, path: str, data: Any, *args: Any, mode: str = "overwrite", **kwargs: Any
    ) -> Any:
        return await pipe(self, path, data, *args, **kwargs)  # injected: If-None-Match ignored

    monkeypatch.setattr(s3fs.S3FileSystem, "_pipe_file", ignores_conditions)
    other = CheckpointPolicy(
        uri=f"s3://{s3_server.new_bucket()}/ckpt", storage_options=policy.storage_options
    )
    with pytest.raises(UnsafeStoreError, match="If-None-Match"):
        await Persistence(other, namespace, "fooled", "x.Y").activate()
    unsafe = other.model_copy(update={"allow_unsafe_store": True})
    await Persistence(unsafe, namespace, "accepted", "x.Y").activate()  # an explicit opt-out


def test_stores_without_atomic_create_are_refused_unless_allowed(tmp_path: Path) -> None:
    CheckpointStore(f"file://{tmp_path}").check_safe()
    CheckpointStore("memory://safe").check_safe()
    with pytest.raises(UnsafeStoreError, match="ftp"):
        CheckpointStore("ftp://example.invalid/ckpt").check_safe()
    CheckpointStore("ftp://example.invalid/ckpt", allow_unsafe=True).check_safe()


async def test_file_store_emptied_on_its_own_node_starts_fresh(rt: Runtime, store_uri: str) -> None:
    journal = await rt.launch(Journal, name="wiped")
    await journal.append(1)
    await rt.stop("wiped")
    shutil.rmtree(store_uri.removeprefix("file://"))  # the user's own choice, on this node
    again = await rt.launch(Journal, name="wiped")
    assert await again.read() == []


# ---- 6. concurrent launches of one name ------------------------------------------------------------------


async def test_concurrent_launches_of_one_name_leave_exactly_one_agent(rt: Runtime) -> None:
    for round_ in range(6):
        name = f"twin-{round_}"
        results = await asyncio.gather(
            rt.launch(Counter, args=(round_,), name=name),
            rt.launch(Counter, args=(round_,), name=name),
            return_exceptions=True,
        )
        handles = [r for r in results if not isinstance(r, BaseException)]
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(handles) == 1 and len(errors) == 1, results
        assert isinstance(errors[0], AgentExistsError), errors
        assert await handles[0].add(1) == round_ + 1


async def test_concurrent_get_if_exists_launches_share_one_agent(
    rt: Runtime, namespace: str, store_uri: str
) -> None:
    first, second = rt, Runtime(namespace=namespace, checkpoint=store_uri)  # two drivers' runtimes
    for round_ in range(4):
        name = f"shared-{round_}"
        a, b = await asyncio.gather(
            first.launch(Counter, name=name, get_if_exists=True),
            second.launch(Counter, name=name, get_if_exists=True),
        )
        assert (await a.info()).pid == (await b.info()).pid
        await a.add(2)
        assert await b.get() == 2


async def test_platform_names_cannot_be_taken_by_agents(rt: Runtime) -> None:
    for name in ("academy-registry", "academy-placement", "academy-pool:x", "model-cache-n1"):
        with pytest.raises(ValueError, match="reserved"):
            await rt.launch(Counter, name=name)


# ---- 7. a call made while the agent restarts waits for it ------------------------------------------------


async def test_call_made_while_the_agent_restarts_waits_and_sees_restored_state(
    rt: Runtime,
) -> None:
    counter = await rt.launch(Counter, args=(0,), name="phoenix")
    await counter.add(41)
    for _ in range(2):
        pid = await _kill_and_wait_restarting(counter)  # no call in flight
        assert await asyncio.wait_for(counter.get(), 120) == 41
        assert (await counter.info()).pid != pid
    for _ in range(2):
        with pytest.raises(AgentUnavailableError):  # in flight when the process died: may have run
            await counter.crash()
        assert await asyncio.wait_for(counter.get(), 120) == 41  # sent right after: waits


# ---- 8. payload bounds are enforced where the call lands ------------------------------------------------


async def test_host_enforces_the_agents_payload_bound(rt: Runtime) -> None:
    counter = await rt.launch(Counter, name="bounded", max_payload_bytes=10_000)
    assert await counter.echo(b"x" * 1000) == b"x" * 1000
    with pytest.raises(PayloadError, match="10,000"):
        await counter.echo(b"x" * 20_000)  # the caller's handle allows 1 GiB
    raw = counter.actor  # a caller that bypasses Handle altogether
    with pytest.raises(PayloadError):
        await raw.agent_call.remote("bounded", "echo", b"x" * 20_000)
