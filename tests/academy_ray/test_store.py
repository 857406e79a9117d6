"""Contract tests for academy_ray.store over file://, memory:// and s3:// (real SeaweedFS)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pytest
import xxhash
from pydantic import BaseModel

from academy_ray import objects
from academy_ray.state import encode_state, encode_state_segments
from academy_ray.store import (
    INLINE_MAX,
    RESERVE_AHEAD,
    AgentCheckpoints,
    CheckpointError,
    CheckpointInfo,
    CheckpointNotFoundError,
    CheckpointStore,
    CorruptCheckpointError,
    StaleEpochError,
    StorageUnavailableError,
)
from tests.harness import free_port

AGENT_CLASS = "tests.Counter"


class Knobs(BaseModel):
    rate: float
    names: list[str]


@pytest.fixture(params=["file", "memory", "s3"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """(uri, storage_options) for one backend; s3 uses a fresh bucket on the session's SeaweedFS."""
    if request.param == "file":
        return {"uri": f"file://{tmp_path}/ckpt", "storage_options": None}
    if request.param == "memory":
        return {"uri": f"memory://ckpt-{uuid.uuid4().hex}", "storage_options": None}
    server = request.getfixturevalue("s3_server")
    return {"uri": f"s3://{server.new_bucket()}/ckpt", "storage_options": server.storage_options}


def make_store(config: dict[str, Any], keep_last: int | None = 10) -> CheckpointStore:
    return CheckpointStore(config["uri"], config["storage_options"], keep_last=keep_last)


@pytest.fixture
def store(store_config: dict[str, Any]) -> Iterator[CheckpointStore]:
    yield make_store(store_config)


@pytest.fixture
def agent(store: CheckpointStore) -> AgentCheckpoints:
    return store.for_agent("ns", "counter")


def _payload_path(agent: AgentCheckpoints, info: CheckpointInfo) -> str:
    return agent._payload_path(info)


def test_round_trip_every_value_kind(agent: AgentCheckpoints) -> None:
    table = pa.table({"x": [1, 2], "y": ["a", "b"]}).replace_schema_metadata({"k": "v"})
    fields = {
        "count": 3,
        "doc": {"a": [1, None, "x"], "b": 1.5},
        "blob": b"\x00\x01\x02",
        "knobs": Knobs(rate=0.5, names=["n"]),
        "weights": np.arange(12, dtype=np.float32).reshape(3, 4),
        "mask": np.array([True, False]),
        "table": table,
    }
    assert agent.load_latest() is None
    epoch = agent.acquire_epoch()
    info = agent.save(fields, epoch=epoch, agent_class=AGENT_CLASS, extra={"note": "first"})
    assert info.seq == 1 and info.epoch == epoch and info.agent_class == AGENT_CLASS
    assert info.schema == {
        "count": "json",
        "doc": "json",
        "blob": "bytes",
        "knobs": "model",
        "weights": "ndarray",
        "mask": "ndarray",
        "table": "table",
    }
    assert info.created.tzinfo is not None and info.extra == {"note": "first"}
    loaded = agent.load_latest()
    assert loaded is not None
    got_info, got = loaded
    assert got_info.seq == 1 and got_info.checksum == info.checksum
    assert got["count"] == 3 and got["doc"] == fields["doc"] and got["blob"] == b"\x00\x01\x02"
    assert Knobs.model_validate(got["knobs"]) == fields["knobs"]
    np.testing.assert_array_equal(got["weights"], fields["weights"])
    got["weights"][0, 0] = -1.0  # restored arrays are writable
    np.testing.assert_array_equal(got["mask"], fields["mask"])
    assert got["table"].equals(table) and got["table"].schema.metadata == {b"k": b"v"}


def test_manifest_checksum_and_size_describe_the_payload(agent: AgentCheckpoints) -> None:
    epoch = agent.acquire_epoch()
    info = agent.save({"a": np.ones(20_000)}, epoch=epoch, agent_class=AGENT_CLASS)
    assert not info.inline
    raw = agent.store.fs.cat_file(_payload_path(agent, info))
    assert len(raw) == info.size
    assert info.checksum == f"xxh3_128:{xxhash.xxh3_128(raw).hexdigest()}"
    assert info.path.endswith(".arrow")
    assert agent.info(1).model_dump() == {**info.model_dump(), "fenced": False}
    small = agent.save({"a": np.ones(10)}, epoch=epoch, agent_class=AGENT_CLASS)
    assert small.inline and small.path.endswith("checkpoints/000000000002.json")
    assert (
        small.checksum
        == f"xxh3_128:{xxhash.xxh3_128(encode_state({'a': np.ones(10)})).hexdigest()}"
    )


def test_unsupported_type_is_refused_before_writing(agent: AgentCheckpoints) -> None:
    epoch = agent.acquire_epoch()
    with pytest.raises(TypeError, match=r"field 'bad'.*set"):
        agent.save({"ok": 1, "bad": {1, 2}}, epoch=epoch, agent_class=AGENT_CLASS)
    assert agent.list() == []


def test_seq_increases_and_list_is_oldest_first(agent: AgentCheckpoints) -> None:
    epoch = agent.acquire_epoch()
    seqs = [agent.save({"i": i}, epoch=epoch, agent_class=AGENT_CLASS).seq for i in range(4)]
    assert seqs == [1, 2, 3, 4]
    assert [info.seq for info in agent.list()] == [1, 2, 3, 4]
    assert [agent.load(s)["i"] for s in seqs] == [0, 1, 2, 3]
    with pytest.raises(CheckpointNotFoundError):
        agent.load(99)


def test_existing_checkpoint_is_never_overwritten(agent: AgentCheckpoints) -> None:
    epoch = agent.acquire_epoch()
    agent.save({"i": 1}, epoch=epoch, agent_class=AGENT_CLASS)
    with pytest.raises(FileExistsError):
        agent._b.create(agent._manifest_path(1), b"{}")
    with pytest.raises(FileExistsError):
        agent._b.create(agent._epoch_path(epoch, "claim"), b"{}")
    assert agent.load(1) == {"i": 1}
    # A seq taken by someone else (here: a foreign manifest) is skipped, not overwritten. On a local
    # store the writer reserved its next names ahead, so the foreign create is refused until it lets go.
    foreign = agent._manifest_path(2)
    if agent._b.local:
        with pytest.raises(FileExistsError):
            agent._b.create(foreign, b"not a manifest")
        agent.release_reservations()
        assert not os.path.exists(foreign)
    agent._b.create(foreign, b"not a manifest")
    info = agent.save({"i": 3}, epoch=epoch, agent_class=AGENT_CLASS)
    assert info.seq == 3
    assert agent._b.read_small(agent._manifest_path(2)) == b"not a manifest"


def test_retention_keeps_the_newest(store_config: dict[str, Any]) -> None:
    agent = make_store(store_config, keep_last=3).for_agent("ns", "kept")
    agent.acquire_epoch()
    epoch = agent.acquire_epoch()
    # A crash between payload and manifest leaves an orphan payload: collected if from an older epoch,
    # kept if from the writer's own epoch (it could be a concurrent save in flight).
    old_orphan = f"{0 + epoch - 1:012d}-{uuid.uuid4().hex}.arrow"
    own_orphan = f"{epoch:012d}-{uuid.uuid4().hex}.arrow"
    for orphan in (old_orphan, own_orphan):
        agent._b.create(f"{agent._dir}/payloads/{orphan}", b"partial", unique=True)
    for i in range(7):
        agent.save(
            {"i": i, "a": np.full(10_000 if i % 2 else 10, i)}, epoch=epoch, agent_class=AGENT_CLASS
        )
    assert [info.seq for info in agent.list()] == [5, 6, 7]
    payloads = [n for n in agent._b.names(f"{agent._dir}/payloads") if n.endswith(".arrow")]
    assert old_orphan not in payloads and own_orphan in payloads
    assert len(payloads) == 2  # seq 6 (odd i = 5: large; 5 and 7 are inline) and own_orphan
    loaded = agent.load_latest()
    assert loaded is not None and loaded[1]["i"] == 6


def test_keep_last_none_keeps_all(store_config: dict[str, Any]) -> None:
    agent = make_store(store_config, keep_last=None).for_agent("ns", "all")
    epoch = agent.acquire_epoch()
    for i in range(12):
        agent.save({"i": i}, epoch=epoch, agent_class=AGENT_CLASS)
    assert len(agent.list()) == 12


def _corrupt_path(agent: AgentCheckpoints, info: CheckpointInfo) -> str:
    return agent._manifest_path(info.seq) if info.inline else _payload_path(agent, info)


def _corrupt_flip(agent: AgentCheckpoints, info: CheckpointInfo) -> None:
    path = _corrupt_path(agent, info)
    data = bytearray(agent.store.fs.cat_file(path))
    if info.inline:  # flip one base64 character of the payload: still valid JSON and base64
        at = data.index(b'"inline_payload":"') + 40
        data[at] = ord("A") if data[at] != ord("A") else ord("B")
    else:
        data[len(data) // 2] ^= 0xFF
    agent.store.fs.pipe_file(path, bytes(data))


def _corrupt_truncate(agent: AgentCheckpoints, info: CheckpointInfo) -> None:
    path = _corrupt_path(agent, info)
    data = agent.store.fs.cat_file(path)
    agent.store.fs.pipe_file(path, data[: len(data) - 100])


def _corrupt_delete(agent: AgentCheckpoints, info: CheckpointInfo) -> None:
    if info.inline:  # a deleted manifest is simply gone: blank it instead
        agent.store.fs.pipe_file(agent._manifest_path(info.seq), b"")
    else:
        agent.store.fs.rm_file(_payload_path(agent, info))


def _corrupt_manifest(agent: AgentCheckpoints, info: CheckpointInfo) -> None:
    agent.store.fs.pipe_file(agent._manifest_path(info.seq), b'{"truncated": ')


@pytest.mark.parametrize(
    ("corrupt", "size"),
    [
        (_corrupt_flip, 20_000),
        (_corrupt_truncate, 20_000),
        (_corrupt_delete, 20_000),
        (_corrupt_manifest, 20_000),
        (_corrupt_flip, 100),  # inline payloads: the corruption hits the manifest object
        (_corrupt_truncate, 100),
        (_corrupt_delete, 100),
    ],
)
def test_corrupt_newest_falls_back_with_warning(
    agent: AgentCheckpoints, corrupt: Any, size: int
) -> None:
    epoch = agent.acquire_epoch()
    agent.save({"i": 1, "a": np.arange(size)}, epoch=epoch, agent_class=AGENT_CLASS)
    newest = agent.save({"i": 2, "a": np.arange(size) * 2}, epoch=epoch, agent_class=AGENT_CLASS)
    assert newest.inline == (size * 8 < INLINE_MAX)
    corrupt(agent, newest)
    with pytest.warns(RuntimeWarning, match=r"seq=2 .*checkpoints/000000000002\.json") as record:
        loaded = agent.load_latest()
    assert loaded is not None
    info, fields = loaded
    assert info.seq == 1 and fields["i"] == 1
    np.testing.assert_array_equal(fields["a"], np.arange(size))
    assert len(record) == 1
    if corrupt is not _corrupt_manifest and not newest.inline:
        with pytest.raises(CorruptCheckpointError, match=r"checkpoint 2 payload"):
            agent.load(2)
    # The next save goes on after the corrupt one and becomes the newest valid state.
    assert agent.save({"i": 3}, epoch=epoch, agent_class=AGENT_CLASS).seq == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        latest = agent.load_latest()
    assert latest is not None and latest[1] == {"i": 3}


def test_all_corrupt_gives_none_with_warnings(agent: AgentCheckpoints) -> None:
    epoch = agent.acquire_epoch()
    info = agent.save({"i": 1}, epoch=epoch, agent_class=AGENT_CLASS)
    _corrupt_delete(agent, info)
    with pytest.warns(RuntimeWarning, match="seq=1"):
        assert agent.load_latest() is None


def _rewrite_checksum(agent: AgentCheckpoints, info: CheckpointInfo, checksum: str) -> None:
    """Rewrites a manifest's checksum field in place (as an older version, or a bug, would have written it)."""
    path = agent._manifest_path(info.seq)
    doc = json.loads(agent.store.fs.cat_file(path))
    doc["checksum"] = checksum
    agent.store.fs.pipe_file(path, json.dumps(doc).encode())


def _payload_bytes(agent: AgentCheckpoints, info: CheckpointInfo) -> bytes:
    if info.inline:
        return encode_state({"i": 2, "a": np.arange(100) * 2})
    return bytes(agent.store.fs.cat_file(_payload_path(agent, info)))


@pytest.mark.parametrize("size", [20_000, 100])
def test_legacy_sha256_manifests_still_verify(agent: AgentCheckpoints, size: int) -> None:
    """A manifest written before checksums carried an algorithm (bare sha256 hex) loads and verifies."""
    epoch = agent.acquire_epoch()
    agent.save({"i": 1, "a": np.arange(size)}, epoch=epoch, agent_class=AGENT_CLASS)
    newest = agent.save({"i": 2, "a": np.arange(size) * 2}, epoch=epoch, agent_class=AGENT_CLASS)
    legacy = hashlib.sha256(_payload_bytes(agent, newest)).hexdigest()
    _rewrite_checksum(agent, newest, legacy)
    assert agent.info(2).checksum == legacy
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = agent.load_latest()
    assert loaded is not None and loaded[0].seq == 2 and loaded[1]["i"] == 2
    np.testing.assert_array_equal(loaded[1]["a"], np.arange(size) * 2)
    # A wrong legacy digest is detected like any corruption.
    _rewrite_checksum(agent, newest, hashlib.sha256(b"something else").hexdigest())
    with pytest.raises(CorruptCheckpointError, match="fails its sha256 checksum"):
        agent.load(2)
    with pytest.warns(RuntimeWarning, match="seq=2"):
        loaded = agent.load_latest()
    assert loaded is not None and loaded[0].seq == 1


def test_xxh3_mismatch_and_unknown_algorithm_are_corruption(agent: AgentCheckpoints) -> None:
    epoch = agent.acquire_epoch()
    agent.save({"i": 1}, epoch=epoch, agent_class=AGENT_CLASS)
    arr = np.random.default_rng(2).random(1 << 19)  # 4 MiB: the threaded hashing path
    info = agent.save({"a": arr}, epoch=epoch, agent_class=AGENT_CLASS)
    assert info.checksum.startswith("xxh3_128:")
    path = _payload_path(agent, info)
    data = bytearray(agent.store.fs.cat_file(path))
    data[-9] ^= 0x01  # one bit, in the last chunk, same size
    agent.store.fs.pipe_file(path, bytes(data))
    with pytest.raises(CorruptCheckpointError, match="fails its xxh3_128 checksum"):
        agent.load(2)
    _rewrite_checksum(agent, info, "md4:" + "0" * 32)
    with pytest.raises(CorruptCheckpointError, match="unknown algorithm 'md4'"):
        agent.load(2)
    with pytest.warns(RuntimeWarning, match="seq=2"):
        loaded = agent.load_latest()
    assert loaded is not None and loaded[1] == {"i": 1}


def test_large_payload_round_trips_through_chunked_write_and_read(
    agent: AgentCheckpoints, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several chunks per segment (writeback started per chunk), restored writable and bit-identical."""
    import academy_ray.objects as store_module

    monkeypatch.setattr(store_module, "_CHUNK", 1 << 20)
    arr = np.random.default_rng(3).random((5 << 20) // 8 + 3)
    epoch = agent.acquire_epoch()
    info = agent.save({"a": arr, "b": arr[::-1].copy()}, epoch=epoch, agent_class=AGENT_CLASS)
    raw = agent.store.fs.cat_file(_payload_path(agent, info))
    assert info.checksum == f"xxh3_128:{xxhash.xxh3_128(raw).hexdigest()}"
    loaded = agent.load_latest()
    assert loaded is not None
    np.testing.assert_array_equal(loaded[1]["a"], arr)
    np.testing.assert_array_equal(loaded[1]["b"], arr[::-1])
    loaded[1]["a"][0] = -1.0  # writable


def _second_copy(config: dict[str, Any], name: str) -> AgentCheckpoints:
    """The same agent seen from another store object, as another process would."""
    return make_store(config).for_agent("ns", name)


def test_acquire_epoch_is_strictly_increasing(store_config: dict[str, Any]) -> None:
    copies = [_second_copy(store_config, "epochs") for _ in range(3)]
    got: list[int] = []
    lock = threading.Lock()

    def take(copy: AgentCheckpoints) -> None:
        for _ in range(3):
            epoch = copy.acquire_epoch()
            with lock:
                got.append(epoch)

    threads = [threading.Thread(target=take, args=(c,)) for c in copies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 10))
    assert copies[0].current_epoch() == 9


def test_stale_epoch_writer_is_refused_and_live_state_intact(store_config: dict[str, Any]) -> None:
    old = _second_copy(store_config, "split")
    new = _second_copy(store_config, "split")
    old_epoch = old.acquire_epoch()
    old.save({"count": 1}, epoch=old_epoch, agent_class=AGENT_CLASS)

    new_epoch = new.acquire_epoch()  # the restarted copy
    assert new_epoch > old_epoch
    restored = new.load_latest()
    assert restored is not None and restored[1] == {"count": 1}
    new.save({"count": 2}, epoch=new_epoch, agent_class=AGENT_CLASS)

    with pytest.raises(StaleEpochError, match="stale"):
        old.save({"count": 100}, epoch=old_epoch, agent_class=AGENT_CLASS)
    latest = new.load_latest()
    assert latest is not None and latest[1] == {"count": 2} and latest[0].epoch == new_epoch
    new.save({"count": 3}, epoch=new_epoch, agent_class=AGENT_CLASS)
    with pytest.raises(StaleEpochError):
        old.rollback(1, epoch=old_epoch)
    latest = old.load_latest()  # a stale copy that re-reads also sees the live state
    assert latest is not None and latest[1] == {"count": 3}


def test_write_landing_between_claim_and_start_is_fenced(store_config: dict[str, Any]) -> None:
    """The stale copy passes its early check, then the new activation claims before the stale create."""
    old = _second_copy(store_config, "window")
    new = _second_copy(store_config, "window")
    old_epoch = old.acquire_epoch()
    old.save({"count": 1}, epoch=old_epoch, agent_class=AGENT_CLASS)

    new_epoch = new._claim_epoch()  # activation step 1; its start is not recorded yet
    # The stale copy's check ran before the claim: injected fault = skip its early refusal.
    old._check_epoch = lambda epoch: None  # type: ignore[method-assign]
    with pytest.raises(StaleEpochError, match="fenced"):
        old.save({"count": 100}, epoch=old_epoch, agent_class=AGENT_CLASS)
    # The write landed (seq 2) before the new activation listed: it restores it, so it stays valid.
    assert new._record_start(new_epoch) == 2
    latest = new.load_latest()
    assert latest is not None and latest[1] == {"count": 100}

    # Same race but the stale create lands after the new activation listed: fenced and never restored.
    newer = _second_copy(store_config, "window")
    newer_epoch = newer._claim_epoch()
    assert newer._record_start(newer_epoch) == 2
    with pytest.raises(StaleEpochError, match="fenced"):
        old.save({"count": 200}, epoch=old_epoch, agent_class=AGENT_CLASS)
    with pytest.raises(StaleEpochError):
        new._check_epoch = lambda epoch: None  # type: ignore[method-assign]
        new.save({"count": 300}, epoch=new_epoch, agent_class=AGENT_CLASS)
    # ``new`` learnt that it is stale: without writing where it guessed seq 3 (taken by the stale write);
    # on a local store after filling a name it had reserved above every listed one, which is fenced.
    listed = [(i.seq, i.fenced) for i in newer.list()]
    assert listed[:3] == [(1, False), (2, False), (3, True)]
    assert all(fenced for _, fenced in listed[3:]) and len(listed) <= 4
    latest = newer.load_latest()
    assert latest is not None and latest[0].seq == 2 and latest[1] == {"count": 100}
    info = newer.save({"count": 101}, epoch=newer_epoch, agent_class=AGENT_CLASS)
    assert info.seq > max(seq for seq, _ in listed) and not newer.info(info.seq).fenced
    latest = newer.load_latest()
    assert latest is not None and latest[1] == {"count": 101}


def test_racing_writers_same_epoch_get_distinct_seqs(store_config: dict[str, Any]) -> None:
    agent = make_store(store_config, keep_last=None).for_agent("ns", "racers")
    epoch = agent.acquire_epoch()
    results: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def write(worker: int) -> None:
        try:
            for i in range(5):
                info = agent.save({"worker": worker, "i": i}, epoch=epoch, agent_class=AGENT_CLASS)
                with lock:
                    results.append((info.seq, worker * 100 + i))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(seq for seq, _ in results) == list(range(1, 21))
    for seq, tag in results:
        fields = agent.load(seq)
        assert fields["worker"] * 100 + fields["i"] == tag


def test_stale_writer_racing_a_restart_never_loses_acknowledged_state(
    store_config: dict[str, Any],
) -> None:
    old = _second_copy(store_config, "race")
    new = _second_copy(store_config, "race")
    old_epoch = old.acquire_epoch()
    acknowledged: list[int] = []
    outcome: list[BaseException] = []
    started = threading.Event()

    def stale_loop() -> None:
        try:
            for i in range(1, 1000):
                old.save({"count": i}, epoch=old_epoch, agent_class=AGENT_CLASS)
                acknowledged.append(i)
                started.set()
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=stale_loop)
    thread.start()
    started.wait(timeout=60)
    new_epoch = new.acquire_epoch()
    restored = new.load_latest()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], StaleEpochError)
    assert restored is not None
    # Every save the stale copy saw succeed is in the restored state.
    assert restored[1]["count"] >= max(acknowledged)
    new.save({"count": -1}, epoch=new_epoch, agent_class=AGENT_CLASS)
    latest = old.load_latest()
    assert latest is not None and latest[1] == {"count": -1}


def test_save_with_unacquired_epoch_is_refused(agent: AgentCheckpoints) -> None:
    with pytest.raises(CheckpointError, match="never acquired"):
        agent.save({"x": 1}, epoch=5, agent_class=AGENT_CLASS)


def test_rollback_writes_old_content_as_newest(agent: AgentCheckpoints) -> None:
    epoch = agent.acquire_epoch()
    for i in range(3):
        agent.save({"i": i, "a": np.arange(4) + i}, epoch=epoch, agent_class=AGENT_CLASS)
    info = agent.rollback(1, epoch=epoch)
    assert (
        info.seq == 4
        and info.extra == {"rollback_of": 1}
        and info.schema == {"i": "json", "a": "ndarray"}
    )
    loaded = agent.load_latest()
    assert loaded is not None and loaded[1]["i"] == 0
    np.testing.assert_array_equal(loaded[1]["a"], np.arange(4))
    assert [i.seq for i in agent.list()] == [1, 2, 3, 4]
    with pytest.raises(CheckpointNotFoundError):
        agent.rollback(42, epoch=epoch)


def test_delete_all(agent: AgentCheckpoints) -> None:
    epoch = agent.acquire_epoch()
    agent.save({"i": 1}, epoch=epoch, agent_class=AGENT_CLASS)
    agent.delete_all()
    assert agent.list() == [] and agent.load_latest() is None
    agent.delete_all()  # idempotent


def test_store_pickles_config_not_filesystem(store: CheckpointStore) -> None:
    agent = store.for_agent("ns", "pickled")
    epoch = agent.acquire_epoch()
    agent.save({"i": 7}, epoch=epoch, agent_class=AGENT_CLASS)
    clone = pickle.loads(pickle.dumps(store))
    assert clone.uri == store.uri and clone.keep_last == store.keep_last
    assert clone._fs is None
    loaded = clone.for_agent("ns", "pickled").load_latest()
    assert loaded is not None and loaded[1] == {"i": 7}
    assert store.list_agents() == [("ns", "pickled")]


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x" * 300])
def test_unsafe_agent_names_are_refused(store: CheckpointStore, bad: str) -> None:
    with pytest.raises(ValueError, match="storage path"):
        store.for_agent("ns", bad)


def test_lz4_store_round_trips(store_config: dict[str, Any]) -> None:
    store = CheckpointStore(store_config["uri"], store_config["storage_options"], compression="lz4")
    agent = store.for_agent("ns", "packed")
    epoch = agent.acquire_epoch()
    info = agent.save({"a": np.zeros(100_000)}, epoch=epoch, agent_class=AGENT_CLASS)
    assert info.compression == "lz4" and info.size < 100_000
    loaded = agent.load_latest()
    assert loaded is not None
    np.testing.assert_array_equal(loaded[1]["a"], np.zeros(100_000))


@pytest.mark.timeout(60)
def test_unreachable_s3_fails_fast_with_typed_error(s3_server: Any) -> None:
    port = free_port()  # nothing listens there
    options = {
        **s3_server.storage_options,
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1"},
    }
    store = CheckpointStore("s3://nobucket/ckpt", options)
    agent = store.for_agent("ns", "down")
    for call in (agent.acquire_epoch, agent.load_latest, agent.list):
        with pytest.raises(
            StorageUnavailableError, match=rf"s3://nobucket/ckpt.*127\.0\.0\.1:{port}"
        ) as info:
            call()
        assert info.value.__cause__ is not None
    with pytest.raises(StorageUnavailableError):
        agent.save({"i": 1}, epoch=1, agent_class=AGENT_CLASS)


def test_unwritable_local_storage_is_a_typed_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    agent = CheckpointStore(f"file://{blocker}/ckpt").for_agent("ns", "blocked")
    with pytest.raises(StorageUnavailableError, match="acquire epoch"):
        agent.acquire_epoch()


@pytest.mark.parametrize("keep", [1.0, 0.999, 0.01])
def test_large_payload_ranged_reads_and_truncation(
    agent: AgentCheckpoints, monkeypatch: pytest.MonkeyPatch, keep: float
) -> None:
    import academy_ray.objects as store_module

    # Smaller thresholds so that a 2 MB payload takes the concurrent ranged-read path on s3.
    monkeypatch.setattr(store_module, "_RANGED_MIN", 1 << 20)
    monkeypatch.setattr(store_module, "_RANGE", 256 << 10)
    epoch = agent.acquire_epoch()
    agent.save({"a": np.zeros(10)}, epoch=epoch, agent_class=AGENT_CLASS)
    arr = np.random.default_rng(1).random(1 << 18)
    info = agent.save({"a": arr}, epoch=epoch, agent_class=AGENT_CLASS)
    if keep < 1.0:
        path = _payload_path(agent, info)
        data = agent.store.fs.cat_file(path)
        agent.store.fs.pipe_file(path, data[: int(len(data) * keep)])
        with pytest.warns(RuntimeWarning, match=r"seq=2 .*expected"):
            loaded = agent.load_latest()
        assert loaded is not None and loaded[0].seq == 1
    else:
        loaded = agent.load_latest()
        assert loaded is not None and loaded[0].seq == 2
        np.testing.assert_array_equal(loaded[1]["a"], arr)


def test_missing_bucket_is_a_typed_error(s3_server: Any) -> None:
    store = CheckpointStore(f"s3://missing-{uuid.uuid4().hex[:8]}/ckpt", s3_server.storage_options)
    agent = store.for_agent("ns", "nobucket")
    assert agent.load_latest() is None  # nothing there to restore
    with pytest.raises(StorageUnavailableError, match="missing-"):
        agent.acquire_epoch()


def test_save_encoded_takes_a_pre_encoded_state(agent: AgentCheckpoints) -> None:
    from academy_ray.state import encode_state_segments

    epoch = agent.acquire_epoch()
    encoded = encode_state_segments({"a": np.arange(50_000), "n": 1}, compression="lz4")
    info = agent.save_encoded(encoded, epoch=epoch, agent_class=AGENT_CLASS, extra={"k": 1})
    assert (
        info.compression == "lz4"
        and info.schema == {"a": "ndarray", "n": "json"}
        and info.extra == {"k": 1}
    )
    loaded = agent.load_latest()
    assert loaded is not None and loaded[1]["n"] == 1
    np.testing.assert_array_equal(loaded[1]["a"], np.arange(50_000))


@pytest.mark.parametrize("unnamed", [True, False], ids=["o_tmpfile", "named_temporary"])
def test_local_creates_are_exclusive_and_leave_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """Both local create paths (an unnamed O_TMPFILE file linked to its name; a named temporary where the
    filesystem has no O_TMPFILE) refuse an existing name, keep the first content and leave nothing else."""
    monkeypatch.setattr(objects, "_TMPFILE_WORKS", unnamed and objects._TMPFILE_WORKS)
    backend = objects.ObjectBackend(fsspec.filesystem("file"))
    folder = tmp_path / "objects"
    path = str(folder / "000000000001.json")
    digest = backend.create(path, b"first")
    with pytest.raises(FileExistsError):
        backend.create(path, b"second")
    assert Path(path).read_bytes() == b"first" and digest == objects.checksum_of(b"first")
    assert sorted(p.name for p in folder.iterdir()) == ["000000000001.json"]


def test_retention_left_for_later_runs_when_applied(tmp_path: Path) -> None:
    """``save_encoded(retain=False)`` (what a running agent uses) deletes nothing until
    ``apply_retention``; then the newest ``keep_last`` remain and the next guesses of seq stay right."""
    agent = CheckpointStore(f"file://{tmp_path}/ckpt", keep_last=2).for_agent("ns", "later")
    epoch = agent.acquire_epoch()
    for count in range(1, 5):
        encoded = encode_state_segments({"count": count})
        agent.save_encoded(encoded, epoch=epoch, agent_class=AGENT_CLASS, retain=False)
    assert [info.seq for info in agent.list()] == [1, 2, 3, 4]
    agent.apply_retention()
    assert [info.seq for info in agent.list()] == [3, 4]
    info = agent.save_encoded(
        encode_state_segments({"count": 5}), epoch=epoch, agent_class=AGENT_CLASS, retain=False
    )
    agent.apply_retention()
    assert info.seq == 5 and [i.seq for i in agent.list()] == [4, 5]
    assert agent.load_latest() is not None and agent.load_latest()[1] == {"count": 5}  # type: ignore[index]


def _manifest_files(agent: AgentCheckpoints) -> dict[int, tuple[int, int]]:
    """seq -> (size, permission bits) of every manifest file, reserved ones included."""
    folder = Path(agent._manifest_path(1)).parent
    return {
        int(path.stem): (path.stat().st_size, path.stat().st_mode & 0o777)
        for path in folder.glob("*.json")
    }


def test_local_saves_fill_names_reserved_ahead_and_readers_skip_the_rest(tmp_path: Path) -> None:
    """A local writer reserves its next manifest names (empty, in a mode of their own) so that a save makes
    only its own bytes durable; readers never take a reservation for a checkpoint, corrupt or not."""
    agent = CheckpointStore(f"file://{tmp_path}/ckpt", keep_last=None).for_agent("ns", "ahead")
    epoch = agent.acquire_epoch()
    agent.save({"count": 1}, epoch=epoch, agent_class=AGENT_CLASS)
    files = _manifest_files(agent)
    assert sorted(files) == list(range(1, 1 + RESERVE_AHEAD))
    assert files[1][0] > 0 and files[1][1] != objects.RESERVED_MODE
    assert all(files[seq] == (0, objects.RESERVED_MODE) for seq in range(2, len(files) + 1))
    assert [info.seq for info in agent.list()] == [1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reservation is not a corrupt checkpoint: no warning
        latest = agent.load_latest(strict=True)
    assert latest is not None and latest[1] == {"count": 1}
    with pytest.raises(CheckpointNotFoundError, match="reserved"):
        agent.load(2)
    # A fill seen half done (a reader racing the writer, or a crash before its fdatasync): still in the
    # reserved mode, so not written; the same bytes in the written mode are corruption.
    body = Path(agent._manifest_path(1)).read_bytes()
    Path(agent._manifest_path(2)).write_bytes(body[: len(body) // 2])
    assert [info.seq for info in agent.list()] == [1]
    with pytest.raises(CheckpointNotFoundError, match="reserved"):
        agent.load(2)
    os.chmod(agent._manifest_path(2), 0o644)
    with pytest.raises(CorruptCheckpointError):
        agent.load(2)
    # A written manifest that later reads empty is a lost write, never mistaken for a reservation.
    Path(agent._manifest_path(1)).write_bytes(b"")
    with pytest.raises(CorruptCheckpointError):
        agent.load(1)


def test_reservations_left_by_a_crash_are_skipped_then_deleted_by_retention(tmp_path: Path) -> None:
    """A copy that dies leaves its reserved names; the next activation restores the newest written
    checkpoint, writes above the leftovers, and retention deletes them with the old checkpoints."""
    uri = f"file://{tmp_path}/ckpt"
    crashed = CheckpointStore(uri, keep_last=2).for_agent("ns", "crash")
    first = crashed.acquire_epoch()
    for count in (1, 2):
        crashed.save({"count": count}, epoch=first, agent_class=AGENT_CLASS)
    leftovers = [seq for seq, (size, _) in _manifest_files(crashed).items() if size == 0]
    assert leftovers and min(leftovers) == 3  # the crash: no release_reservations()
    relaunched = CheckpointStore(uri, keep_last=2).for_agent("ns", "crash")
    second = relaunched.acquire_epoch()
    latest = relaunched.load_latest(strict=True)
    assert latest is not None and latest[1] == {"count": 2}
    infos = [
        relaunched.save({"count": count}, epoch=second, agent_class=AGENT_CLASS) for count in (3, 4)
    ]
    assert infos[0].seq > max(leftovers)
    assert [info.seq for info in relaunched.list()] == [info.seq for info in infos]
    files = _manifest_files(relaunched)
    assert not [seq for seq in leftovers if seq in files]  # deleted with the checkpoints below
    relaunched.release_reservations()  # a clean stop lets go of the names it did not use
    assert sorted(_manifest_files(relaunched)) == [info.seq for info in infos]
    # The stale copy's next save lands on a name it reserved, which is gone: it learns it is stale.
    with pytest.raises(StaleEpochError):
        crashed.save({"count": 99}, epoch=first, agent_class=AGENT_CLASS)


def test_a_failed_fill_leaves_a_gap_not_a_torn_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails (here: a full disk, injected) removes its reservation: no torn manifest is left
    for a reader, the error is a typed storage error, and the next save succeeds after the gap."""
    agent = CheckpointStore(f"file://{tmp_path}/ckpt", keep_last=None).for_agent("ns", "full")
    epoch = agent.acquire_epoch()
    agent.save({"count": 1}, epoch=epoch, agent_class=AGENT_CLASS)
    real_pwrite = os.pwrite

    def full_disk(fd: int, data: Any, offset: int) -> int:
        real_pwrite(fd, bytes(data)[:10], offset)  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(objects.os, "pwrite", full_disk)
    with pytest.raises(StorageUnavailableError):
        agent.save({"count": 2}, epoch=epoch, agent_class=AGENT_CLASS)
    monkeypatch.setattr(objects.os, "pwrite", real_pwrite)
    assert 2 not in _manifest_files(agent)
    info = agent.save({"count": 3}, epoch=epoch, agent_class=AGENT_CLASS)
    assert info.seq == 3 and [i.seq for i in agent.list()] == [1, 3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert agent.load_latest(strict=True)[1] == {"count": 3}  # type: ignore[index]
