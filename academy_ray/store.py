"""Versioned, write-once agent checkpoints on fsspec storage, with epoch fencing.

Layout under ``<uri>/<namespace>/<name>/``::

    epochs/<e:012d>.claim            activation e exists (exclusive create)
    epochs/<e:012d>.start            {"start": s}: activation e restored from checkpoint s (0: none)
    payloads/<e:012d>-<token>.arrow  the encoded state (academy_ray.state format), unique name
    checkpoints/<s:012d>.json        manifest of checkpoint s (exclusive create: the commit point); a
                                     payload <= 64 KiB is stored inside it (base64 "inline_payload"),
                                     so a small checkpoint is one object. On a local folder the writer
                                     reserves its next names ahead (empty, mode 0o200) and fills them
                                     (see ``AgentCheckpoints._fill_reserved``); an empty one is "not
                                     written" to readers

Each object is written once (see :mod:`academy_ray.objects`); a payload is written before its manifest,
so a crash never leaves a visible manifest without its full payload; a reader also verifies size and
checksum and skips (with a warning naming it) a checkpoint that fails. Which checkpoints are valid, and
when a stale writer must stop, is :mod:`academy_ray.fencing`; what is kept, :mod:`academy_ray.retention`.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
import re
import threading
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from academy_ray.exception import (
    CheckpointError,
    CheckpointNotFoundError,
    CheckpointNotWrittenError,
    CorruptCheckpointError,
    NoValidCheckpointError,
    StaleEpochError,
    StorageUnavailableError,
    UnsafeStoreError,
)
from academy_ray.fencing import MISSING, is_fenced, writer_is_fenced
from academy_ray.manifest import INLINE_MAX, CheckpointInfo
from academy_ray.objects import (
    CHECKSUM_ALGORITHM,
    HASHES,
    ObjectBackend,
    checksum_of,
    ls_names,
    probe_conditional_create,
    split_checksum,
    storage_errors,
)
from academy_ray.retention import Retention
from academy_ray.state import (
    Compression,
    EncodedState,
    StateEncodingError,
    decode_state,
    encode_state_segments,
)

__all__ = [
    "CHECKSUM_ALGORITHM",
    "INLINE_MAX",
    "STORE_ID_NAME",
    "AgentCheckpoints",
    "CheckpointError",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "CheckpointNotWrittenError",
    "CheckpointStore",
    "CorruptCheckpointError",
    "NoValidCheckpointError",
    "StaleEpochError",
    "StorageUnavailableError",
    "UnsafeStoreError",
]

logger = logging.getLogger(__name__)

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:@+=-]{0,199}$")
_SEQ_RE = re.compile(r"^(\d{12})\.json$")
RESERVE_AHEAD = 16
"""Manifest names a writer on a local store reserves at a time (see ``AgentCheckpoints._fill_reserved``)."""
_CLAIM_RE = re.compile(r"^(\d{12})\.claim$")
_START_RE = re.compile(r"^(\d{12})\.start$")
# s3fs defaults retry for minutes against a dead endpoint: keep connecting bounded.
_S3_DEFAULTS: dict[str, Any] = {"connect_timeout": 3, "read_timeout": 20}
_S3_RETRIES = 1  # s3fs's own retry loop (class default 5, with exponential sleeps); botocore retries once more
_S3_CONFIG_DEFAULTS: dict[str, Any] = {"retries": {"max_attempts": 2, "mode": "standard"}}

STORE_ID_NAME = ".academy-store.json"
"""The object (at the store's root) that holds the store's random id."""
_ATOMIC_PROTOCOLS = ("file", "local", "memory")  # os.link / a lock: create-if-absent is atomic
_SAFE_LOCK = threading.Lock()
_SAFE_STORES: dict[tuple[str, str], str] = {}  # (bucket, options) -> "" (safe) or why not


class CheckpointStore:
    """Checkpoints of many agents under one fsspec URI.

    Picklable: only the configuration travels, the filesystem is re-created on first use.

    Args:
        uri: ``file:///abs/path``, ``memory://prefix``, ``s3://bucket/prefix`` or any fsspec URL.
        storage_options: fsspec keyword arguments (for s3: key, secret, client_kwargs, ...). For s3 the
            connect timeout and retries default to small values so that a dead endpoint fails fast.
        keep_last: Checkpoints kept per agent (the newest valid ones); ``None`` keeps all.
        compression: Payload compression, ``None`` (default) or ``"lz4"``.
        allow_unsafe: Accept a filesystem whose "create if absent" is not known to be atomic (see
            :meth:`check_safe`).
    """

    def __init__(
        self,
        uri: str,
        storage_options: dict[str, Any] | None = None,
        keep_last: int | None = 10,
        *,
        compression: Compression = None,
        allow_unsafe: bool = False,
    ) -> None:
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, not {keep_last}")
        if compression not in (None, "lz4"):
            raise ValueError(f"compression must be None or 'lz4', not {compression!r}")
        self.uri = uri
        self.storage_options = dict(storage_options or {})
        self.keep_last = keep_last
        self.compression: Compression = compression
        self.allow_unsafe = allow_unsafe
        protocol = fsspec.core.split_protocol(uri)[0] or "file"
        self.protocol = protocol
        self._fs: fsspec.AbstractFileSystem | None = None
        self._root: str | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "storage_options": self.storage_options,
            "keep_last": self.keep_last,
            "compression": self.compression,
            "allow_unsafe": self.allow_unsafe,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(  # type: ignore[misc]
            state["uri"],
            state["storage_options"],
            state["keep_last"],
            compression=state["compression"],
            allow_unsafe=state.get("allow_unsafe", False),
        )

    def __repr__(self) -> str:
        return f"CheckpointStore({self.uri!r}, keep_last={self.keep_last})"

    def _options(self) -> dict[str, Any]:
        options = dict(self.storage_options)
        if self.protocol in ("s3", "s3a"):
            for key, value in _S3_DEFAULTS.items():
                options.setdefault(key, value)
            config = dict(options.get("config_kwargs") or {})
            for key, value in _S3_CONFIG_DEFAULTS.items():
                config.setdefault(key, value)
            config.setdefault("connect_timeout", options.pop("connect_timeout"))
            config.setdefault("read_timeout", options.pop("read_timeout"))
            options.pop("connect_timeout", None)
            options.pop("read_timeout", None)
            options["config_kwargs"] = config
        return options

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem (created on first use)."""
        self._ensure()
        assert self._fs is not None
        return self._fs

    @property
    def root(self) -> str:
        """The root path inside :attr:`fs`."""
        self._ensure()
        assert self._root is not None
        return self._root

    def _ensure(self) -> None:
        if self._fs is None:
            with self._lock:
                if self._fs is None:
                    try:
                        fs, root = fsspec.core.url_to_fs(self.uri, **self._options())
                    except ImportError:
                        raise
                    except (ValueError, TypeError):
                        raise
                    except Exception as exc:
                        raise StorageUnavailableError(
                            f"cannot open checkpoint storage {self.uri}: {exc}"
                        ) from exc
                    if self.protocol in ("s3", "s3a") and hasattr(fs, "retries"):
                        fs.retries = min(int(fs.retries), _S3_RETRIES)
                    self._root = root.rstrip("/")
                    self._fs = fs

    @property
    def local(self) -> bool:
        """Whether the store is a local folder (``file://``): one node's disk unless the folder is shared."""
        return isinstance(self.fs, LocalFileSystem)

    @property
    def in_memory(self) -> bool:
        """Whether the store is fsspec's ``memory://``: it lives and dies with one process."""
        return isinstance(self.fs, MemoryFileSystem)

    def check_safe(self) -> None:
        """Checks that "create if absent" is atomic here, which epoch fencing relies on.

        Local folders (``os.link``) and ``memory://`` (a lock) are. S3 is when s3fs supports conditional
        writes (``mode="create"``, s3fs 2024.12 and later) *and* the server honours ``If-None-Match``:
        that is tested once per bucket and process by creating a probe object twice (the second create
        must be refused). Anything else is refused, unless the store was made with ``allow_unsafe``.

        Raises:
            UnsafeStoreError: Create-if-absent is not known to be atomic here.
            StorageUnavailableError: The storage failed during the test.
        """
        if self.allow_unsafe or self.protocol in _ATOMIC_PROTOCOLS:
            return
        if self.protocol not in ("s3", "s3a"):
            raise UnsafeStoreError(
                f"checkpoint store {self.uri}: {self.protocol}:// offers no atomic create-if-absent that "
                "epoch fencing could rely on; use file://, s3:// or memory://, or accept the risk with "
                "CheckpointPolicy(allow_unsafe_store=True)"
            )
        key = (self.uri.split("://", 1)[1].split("/", 1)[0], repr(self._options()))
        with _SAFE_LOCK:
            verdict = _SAFE_STORES.get(key)
            if verdict is None:
                with storage_errors(self.uri, "test conditional writes"):
                    verdict = probe_conditional_create(self.fs, self.root)
                _SAFE_STORES[key] = verdict
        if verdict:
            raise UnsafeStoreError(f"checkpoint store {self.uri}: {verdict}")

    def identity(self) -> str:
        """The store's random id, kept in ``<root>/.academy-store.json`` (created on first use).

        Two nodes that see the same id see the same storage; a node-local folder on another node has
        another id (or none yet), which is how a re-placed agent notices that it cannot see its
        checkpoints.
        """
        path = f"{self.root}/{STORE_ID_NAME}"
        backend = ObjectBackend(self.fs)
        with storage_errors(self.uri, "read the store id"):
            for _ in range(3):
                try:
                    return str(json.loads(backend.read_small(path))["id"])
                except FileNotFoundError:
                    pass
                record = {"id": uuid.uuid4().hex, "created": _now().isoformat()}
                try:
                    backend.create(path, json.dumps(record).encode())
                    return str(record["id"])
                except FileExistsError:
                    continue  # created meanwhile: read it
        raise CheckpointError(f"checkpoint store {self.uri}: cannot read or create its id")

    def for_agent(self, namespace: str, name: str) -> AgentCheckpoints:
        """The checkpoints of one agent.

        Raises:
            ValueError: ``namespace`` or ``name`` is not a safe path component.
        """
        for label, value in (("namespace", namespace), ("name", name)):
            if not isinstance(value, str) or not _NAME_RE.match(value):
                raise ValueError(
                    f"agent {label} {value!r} must match {_NAME_RE.pattern} to be used as a storage path"
                )
        return AgentCheckpoints(self, namespace, name)

    def list_agents(self) -> list[tuple[str, str]]:
        """Lists ``(namespace, name)`` of the agents that have objects in this store."""
        out: list[tuple[str, str]] = []
        with storage_errors(self.uri, "list agents"):
            for ns in ls_names(self.fs, self.root):
                if ns.startswith("."):  # the store's own records (id, probes)
                    continue
                for name in ls_names(self.fs, f"{self.root}/{ns}"):
                    out.append((ns, name))
        return sorted(out)


def _payload_compression(encoded: EncodedState) -> str | None:
    """The compression recorded in an encoded payload."""
    return encoded.compression


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class AgentCheckpoints:
    """The checkpoints of one agent (synchronous; call from a thread in async code).

    Typical activation::

        epoch = ckpts.acquire_epoch()
        latest = ckpts.load_latest()          # restore
        ckpts.save(fields, epoch=epoch, agent_class="pkg.Cls")
    """

    def __init__(self, store: CheckpointStore, namespace: str, name: str) -> None:
        self.store = store
        self.namespace = namespace
        self.name = name
        self._dir = f"{store.root}/{namespace}/{name}"
        self._b = ObjectBackend(store.fs)
        self._starts: dict[int, int] = {}
        # Manifests seen by retention (write-once, so cacheable; restores always re-read them).
        self._retained: dict[int, CheckpointInfo] = {}
        self._seqs_seen: list[int] = []  # from the last listing, plus what this object wrote since
        self._listed = False
        self._retention = Retention(self)
        self._confirmed_epochs: set[int] = set()  # acquired here, or seen current after a save
        # The writer epoch of a save whose retention is deferred.
        self._retention_due: int | None = None
        # Local stores: manifest names reserved ahead (empty), filled in increasing order, one at a time.
        self._reserved: deque[int] = deque()
        self._reserved_epoch: int | None = None
        self._write_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AgentCheckpoints({self.store.uri!r}, {self.namespace!r}, {self.name!r})"

    # ------------------------------------------------------------------ paths and listings
    def _epoch_path(self, epoch: int, suffix: str) -> str:
        return f"{self._dir}/epochs/{epoch:012d}.{suffix}"

    def _manifest_path(self, seq: int) -> str:
        return f"{self._dir}/checkpoints/{seq:012d}.json"

    def _url(self, path: str) -> str:
        return str(self.store.fs.unstrip_protocol(path))

    def _guard(self, op: str) -> Any:
        return storage_errors(self.store.uri, f"{op} ({self.namespace}/{self.name})")

    def _epochs(self) -> dict[int, int]:
        """Epoch -> recorded start seq (``MISSING`` when the activation has not recorded it yet)."""
        names = self._b.names(f"{self._dir}/epochs")
        epochs: dict[int, int] = {}
        starts: dict[int, str] = {}
        for n in names:
            if m := _CLAIM_RE.match(n):
                epochs.setdefault(int(m.group(1)), MISSING)
            elif m := _START_RE.match(n):
                starts[int(m.group(1))] = n
        for epoch, start_name in starts.items():
            if epoch in self._starts:  # write-once: cached after the first read
                epochs[epoch] = self._starts[epoch]
                continue
            try:
                doc = json.loads(self._b.read_small(f"{self._dir}/epochs/{start_name}"))
                epochs[epoch] = self._starts[epoch] = int(doc["start"])
            except FileNotFoundError:
                epochs.setdefault(epoch, MISSING)
            except (ValueError, KeyError, TypeError):
                logger.warning("unreadable epoch start record %s", start_name)
                epochs.setdefault(epoch, MISSING)
        return epochs

    def _seqs(self) -> list[int]:
        seqs = sorted(
            int(m.group(1))
            for n in self._b.names(f"{self._dir}/checkpoints")
            if (m := _SEQ_RE.match(n))
        )
        self._seqs_seen, self._listed = list(seqs), True
        return seqs

    def _manifest(self, seq: int) -> CheckpointInfo:
        try:
            raw = self._b.read_small(self._manifest_path(seq))
        except FileNotFoundError:
            raise CheckpointNotFoundError(
                f"agent {self.namespace}/{self.name} has no checkpoint {seq} in {self.store.uri}"
            ) from None
        try:
            doc = json.loads(raw)
            inline = doc.pop("inline_payload", None) if isinstance(doc, dict) else None
            info = CheckpointInfo.model_validate(doc)
            if info.inline:
                info._inline_payload = base64.b64decode(inline or "", validate=True)
            return info
        except ValueError as exc:
            if self._b.is_reserved(self._manifest_path(seq)):
                # Empty or part-written while still in the reserved mode: its writer is filling it now, or
                # died before the fill was durable (the mode changes only after the fdatasync).
                raise CheckpointNotWrittenError(
                    f"agent {self.namespace}/{self.name} has no checkpoint {seq} in {self.store.uri} (its "
                    "name is reserved, nothing complete was written there)"
                ) from None
            raise CorruptCheckpointError(
                f"checkpoint {seq} manifest {self._url(self._manifest_path(seq))} is unreadable: {exc}"
            ) from exc

    def _newest_valid_seq(self, epochs: Mapping[int, int]) -> int:
        for seq in reversed(self._seqs()):
            try:
                info = self._manifest(seq)
            except (CheckpointNotFoundError, CorruptCheckpointError):
                continue
            if not is_fenced(seq, info.epoch, epochs):
                return seq
        return 0

    # ------------------------------------------------------------------ activation
    def acquire_epoch(self) -> int:
        """Starts a new activation: claims an epoch larger than any before and records its restore point.

        Returns:
            The new epoch.

        Raises:
            StorageUnavailableError: The storage failed.
        """
        with self._guard("acquire epoch"):
            epoch = self._claim_epoch()
            self._record_start(epoch)
            self._confirmed_epochs.add(epoch)
            return epoch

    def _claim_epoch(self) -> int:
        """Step 1 of an activation: exclusively creates the claim of the next epoch."""
        for _ in range(100):
            epoch = max(self._epochs(), default=0) + 1
            claim = json.dumps({"epoch": epoch, "created": _now().isoformat(), "pid": os.getpid()})
            try:
                self._b.create(self._epoch_path(epoch, "claim"), claim.encode())
            except FileExistsError:
                continue
            return epoch
        raise CheckpointError(
            f"could not claim an epoch for {self.namespace}/{self.name}"
        )  # pragma: no cover

    def _record_start(self, epoch: int) -> int:
        """Step 2 (after the claim): records the newest valid seq at this moment as the restore point."""
        start = self._newest_valid_seq(self._epochs())
        record = json.dumps({"epoch": epoch, "start": start, "created": _now().isoformat()})
        self._b.create(self._epoch_path(epoch, "start"), record.encode())
        logger.info(
            "agent %s/%s: epoch %d starts from checkpoint %d",
            self.namespace,
            self.name,
            epoch,
            start,
        )
        return start

    def current_epoch(self) -> int:
        """The newest epoch claimed so far (0 if none)."""
        with self._guard("list epochs"):
            return max(self._epochs(), default=0)

    def _newer_epoch_may_exist(self, epoch: int) -> bool:
        """False only when no activation newer than ``epoch`` exists: claims are made one above the
        newest (exclusively, never deleted), so any newer activation has claimed ``epoch + 1``. One
        lookup instead of listing every epoch (local and memory stores; elsewhere: True, list them)."""
        if not (self._b.local or self._b.memory):
            return True
        return self._b.exists(self._epoch_path(epoch + 1, "claim"))

    def _check_epoch(self, epoch: int) -> None:
        epochs = self._epochs()
        if epoch not in epochs:
            raise CheckpointError(
                f"epoch {epoch} was never acquired for agent {self.namespace}/{self.name}: call acquire_epoch()"
            )
        newer = max(epochs)
        if newer > epoch:
            raise StaleEpochError(
                f"agent {self.namespace}/{self.name}: epoch {epoch} is stale, activation {newer} started since"
            )

    # ------------------------------------------------------------------ writing
    def save(
        self,
        fields: Mapping[str, Any],
        *,
        epoch: int,
        agent_class: str,
        extra: dict[str, Any] | None = None,
    ) -> CheckpointInfo:
        """Writes a new checkpoint (write-once) and applies retention.

        Args:
            fields: The state (see :mod:`academy_ray.state`). Arrays are written from their memory: do not
                mutate them until ``save`` returns.
            epoch: The writer's activation epoch (from :meth:`acquire_epoch`).
            agent_class: Import path of the agent class.
            extra: Free-form JSON metadata stored in the manifest.

        Returns:
            The manifest of the new checkpoint, durable when this returns.

        Raises:
            StaleEpochError: A newer activation exists: this copy must stop writing. The checkpoint is
                ignored by readers, unless the newer activation had already listed it when it started
                (then it is part of the state that activation restored, an at-most-ambiguous outcome
                like any failed write; a save that *returned* is never lost).
            StateEncodingError: A field cannot be encoded.
            StorageUnavailableError: The storage failed (nothing half-written is visible).
        """
        # Written before this returns, so the arrays need no snapshot copy (see the note above).
        encoded = encode_state_segments(fields, compression=self.store.compression, copy=False)
        return self.save_encoded(encoded, epoch=epoch, agent_class=agent_class, extra=extra)

    def save_encoded(
        self,
        encoded: EncodedState,
        *,
        epoch: int,
        agent_class: str,
        extra: dict[str, Any] | None = None,
        retain: bool = True,
    ) -> CheckpointInfo:
        """Like :meth:`save`, for state already encoded with ``encode_state_segments`` (e.g. on the agent's
        event loop, so that the snapshot is consistent, while this write runs in a thread).

        The manifest's ``compression`` is the encoder's (``encoded.compression``). With ``retain=False``
        old checkpoints are not deleted now but by the next :meth:`apply_retention` (off the path a
        caller waits on: deleting is not needed for durability).
        """
        compression = _payload_compression(encoded)
        return self._commit(
            encoded,
            encoded.schema,
            epoch=epoch,
            agent_class=agent_class,
            extra=dict(extra or {}),
            compression=compression,
            retain=retain,
        )

    def apply_retention(self) -> None:
        """Deletes what the retention of the last save left for later (see ``save_encoded(retain=False)``).

        Failures are logged, never raised: a checkpoint kept too long is harmless.
        """
        writer_epoch, self._retention_due = self._retention_due, None
        if writer_epoch is None:
            return
        try:
            # A small save may run on the agent's event loop while this runs in its I/O thread.
            with self._guard("apply retention"), self._write_lock:
                self._retention.apply(self._epochs(), writer_epoch)
        except Exception:
            logger.warning("retention failed for %s/%s", self.namespace, self.name, exc_info=True)

    def _commit(
        self,
        payload: EncodedState | bytes,
        schema: dict[str, str],
        *,
        epoch: int,
        agent_class: str,
        extra: dict[str, Any],
        compression: str | None,
        retain: bool = True,
    ) -> CheckpointInfo:
        with self._guard("save"):
            if epoch not in self._confirmed_epochs:
                # Early refusal only: the check after the create is what fences.
                self._check_epoch(epoch)
            size = payload.size if isinstance(payload, EncodedState) else len(payload)
            inline: bytes | None = None
            payload_path: str | None = None
            if size <= INLINE_MAX:
                inline = payload.to_bytes() if isinstance(payload, EncodedState) else bytes(payload)
                checksum = checksum_of(inline)
            else:
                payload_path = f"{self._dir}/payloads/{epoch:012d}-{uuid.uuid4().hex}.arrow"
                checksum = self._b.create(payload_path, payload, unique=True)
            try:
                info = self._create_manifest(
                    payload_path,
                    inline,
                    checksum,
                    size,
                    schema,
                    epoch=epoch,
                    agent_class=agent_class,
                    extra=extra,
                    compression=compression,
                )
            except BaseException:
                if payload_path is not None:
                    self._b.remove(payload_path)
                raise
            epochs: dict[int, int] | None = None
            if self._newer_epoch_may_exist(epoch):
                epochs = self._epochs()
                if writer_is_fenced(info.seq, epoch, epochs):
                    # The manifest stays (write-once; a newer activation may even have restored it),
                    # but readers ignore it unless that activation did.
                    raise StaleEpochError(
                        f"agent {self.namespace}/{self.name}: epoch {epoch} is stale, fenced by "
                        f"activation {max(epochs)} while writing checkpoint {info.seq}"
                    )
            self._confirmed_epochs.add(epoch)
            if not retain:
                self._retention_due = epoch
                return info
            try:
                with self._write_lock:
                    self._retention.apply(self._epochs() if epochs is None else epochs, epoch)
            except StorageUnavailableError:
                raise
            except Exception:
                logger.warning(
                    "retention failed for %s/%s", self.namespace, self.name, exc_info=True
                )
            return info

    def _create_manifest(
        self,
        payload_path: str | None,
        inline: bytes | None,
        checksum: str,
        size: int,
        schema: dict[str, str],
        *,
        epoch: int,
        agent_class: str,
        extra: dict[str, Any],
        compression: str | None,
    ) -> CheckpointInfo:
        def describe(seq: int) -> tuple[CheckpointInfo, bytes]:
            info = CheckpointInfo(
                namespace=self.namespace,
                name=self.name,
                agent_class=agent_class,
                seq=seq,
                epoch=epoch,
                created=_now(),
                size=size,
                checksum=checksum,
                schema=schema,
                path=self._url(payload_path or self._manifest_path(seq)),
                inline=inline is not None,
                compression=compression,
                extra=extra,
            )
            doc = info.model_dump(mode="json", by_alias=True, exclude={"fenced"})
            if inline is not None:
                doc["inline_payload"] = base64.b64encode(inline).decode()
                info._inline_payload = inline
            return info, json.dumps(doc, separators=(",", ":")).encode()

        if self._b.local:
            return self._fill_reserved(epoch, describe)
        for attempt in range(1000):
            # Write-once names: guess the next seq from what this object knows, list only after a clash.
            seqs = list(self._seqs_seen) if self._listed and attempt == 0 else self._seqs()
            seq = max(seqs, default=0) + 1
            info, body = describe(seq)
            try:
                self._b.create(self._manifest_path(seq), body)
                self._seqs_seen = [*seqs, seq]
                self._retained[seq] = info
                return info
            except FileExistsError:
                # Lost the race for this seq: a newer activation may be the winner.
                self._raise_if_newer_epoch(epoch, seq)
        raise CheckpointError(
            f"could not allocate a checkpoint seq for {self.namespace}/{self.name}"
        )

    def _raise_if_newer_epoch(self, epoch: int, seq: int) -> None:
        newer = max(self._epochs(), default=0)
        if newer > epoch:
            raise StaleEpochError(
                f"agent {self.namespace}/{self.name}: epoch {epoch} is stale, lost checkpoint {seq} to "
                f"a newer activation {newer}"
            )

    def _fill_reserved(
        self, epoch: int, describe: Callable[[int], tuple[CheckpointInfo, bytes]]
    ) -> CheckpointInfo:
        """Local stores: writes the manifest into the next name this object reserved for ``epoch``.

        Names are reserved :data:`RESERVE_AHEAD` at a time (exclusive creates of empty files and one fsync
        of the folder), so a save makes only its own bytes durable. Fencing holds as for a create: a
        reservation is exclusive like a create, it lies above the epoch's recorded start (it is made after
        the start and above every name listed), and one object fills its names in increasing order, one at
        a time. A newer activation that lists an empty name treats it as not written, so its start lies
        below that seq, and a later fill there is fenced (the check after the write sees that start).
        """
        with self._write_lock:
            if self._reserved_epoch != epoch:
                self._reserved.clear()
                self._reserved_epoch = epoch
            for _ in range(1000):
                if not self._reserved:
                    self._reserve(epoch)
                seq = self._reserved.popleft()
                info, body = describe(seq)
                path = self._manifest_path(seq)
                try:
                    self._b.fill(path, body)
                except (FileExistsError, FileNotFoundError):
                    # Not ours any more (deleted, or written by someone who reused the name): skip it.
                    self._raise_if_newer_epoch(epoch, seq)
                    continue
                except BaseException:
                    # A failed write leaves a gap in the seqs, never a torn manifest.
                    self._b.remove(path)
                    raise
                self._seqs_seen.append(seq)
                self._retained[seq] = info
                return info
        raise CheckpointError(
            f"could not allocate a checkpoint seq for {self.namespace}/{self.name}"
        )

    def _reserve(self, epoch: int) -> None:
        """Reserves the next :data:`RESERVE_AHEAD` manifest names (fewer where a name is taken)."""
        for _ in range(1000):
            seqs = self._seqs()
            first = max(seqs, default=0) + 1
            wanted = range(first, first + RESERVE_AHEAD)
            created = self._b.reserve([self._manifest_path(seq) for seq in wanted])
            self._reserved.extend(wanted[:created])
            self._seqs_seen, self._listed = seqs, True
            if created:
                return
            self._raise_if_newer_epoch(epoch, first)
        raise CheckpointError(
            f"could not reserve a checkpoint seq for {self.namespace}/{self.name}"
        )

    def release_reservations(self) -> None:
        """Deletes the manifest names reserved and not written (when the writer stops); best effort."""
        with self._write_lock:
            while self._reserved:
                path = self._manifest_path(seq := self._reserved.pop())
                try:
                    if self._b.is_reserved(path):  # still unwritten (the mode changes after a fill)
                        self._b.remove(path)
                except OSError:
                    logger.debug("could not release reserved checkpoint %d", seq, exc_info=True)

    def _payload_path(self, info: CheckpointInfo) -> str:
        return f"{self._dir}/payloads/{info.path.rstrip('/').rsplit('/', 1)[-1]}"

    # ------------------------------------------------------------------ reading
    def _read_payload(self, info: CheckpointInfo) -> memoryview:
        """The verified payload, in a writable buffer (restored arrays are views on it)."""
        algorithm, expected = split_checksum(info.checksum)
        if algorithm not in HASHES:
            raise CorruptCheckpointError(
                f"checkpoint {info.seq} payload {info.path} has a checksum of unknown algorithm "
                f"{algorithm!r}"
            )
        if info.inline:
            data = memoryview(bytearray(info._inline_payload or b""))
            digest = checksum_of(data, algorithm)
        else:
            data, digest = self._read_payload_object(info, algorithm)
        if data.nbytes != info.size:
            raise CorruptCheckpointError(
                f"checkpoint {info.seq} payload {info.path} has {data.nbytes} bytes, expected {info.size}"
            )
        if split_checksum(digest)[1] != expected.lower():
            raise CorruptCheckpointError(
                f"checkpoint {info.seq} payload {info.path} fails its {algorithm} checksum"
            )
        return data

    def _read_payload_object(self, info: CheckpointInfo, algorithm: str) -> tuple[memoryview, str]:
        path = self._payload_path(info)
        try:
            return self._b.read(path, info.size, algorithm)
        except FileNotFoundError:
            raise CorruptCheckpointError(
                f"checkpoint {info.seq} payload {info.path} is missing"
            ) from None

    def _decode(self, info: CheckpointInfo, data: memoryview) -> dict[str, Any]:
        try:
            return decode_state(data)
        except StateEncodingError as exc:
            raise CorruptCheckpointError(
                f"checkpoint {info.seq} payload {info.path} is undecodable: {exc}"
            ) from exc

    def load(self, seq: int) -> dict[str, Any]:
        """Loads checkpoint ``seq`` (fenced or not).

        Raises:
            CheckpointNotFoundError: No such checkpoint.
            CorruptCheckpointError: It fails its checks.
            StorageUnavailableError: The storage failed.
        """
        with self._guard(f"load checkpoint {seq}"):
            info = self._manifest(seq)
            return self._decode(info, self._read_payload(info))

    def info(self, seq: int) -> CheckpointInfo:
        """The manifest of checkpoint ``seq`` (``fenced`` set)."""
        with self._guard(f"read manifest {seq}"):
            info = self._manifest(seq)
            info.fenced = is_fenced(seq, info.epoch, self._epochs())
            return info

    def load_latest(self, *, strict: bool = False) -> tuple[CheckpointInfo, dict[str, Any]] | None:
        """Loads the newest valid checkpoint, skipping (with a warning naming it) corrupt ones.

        Args:
            strict: Raise instead of returning None when the agent has checkpoints but every one that is
                not fenced fails to verify (what an activation must do: starting empty would lose every
                acknowledged action and then bury the evidence under a newer checkpoint).

        Returns:
            ``(manifest, fields)``, or ``None`` when the agent has no valid checkpoint.

        Raises:
            NoValidCheckpointError: ``strict`` and no checkpoint verifies although some exist.
            StorageUnavailableError: The storage failed (never mistaken for corruption).
        """
        with self._guard("load latest checkpoint"):
            epochs = self._epochs()
            failed: list[int] = []
            reasons: list[str] = []
            for seq in reversed(self._seqs()):
                try:
                    info = self._manifest(seq)
                    if is_fenced(seq, info.epoch, epochs):
                        logger.info(
                            "skipping fenced checkpoint %d (epoch %d) of %s/%s",
                            seq,
                            info.epoch,
                            self.namespace,
                            self.name,
                        )
                        continue
                    return info, self._decode(info, self._read_payload(info))
                except CheckpointNotFoundError:
                    continue  # deleted by retention meanwhile
                except CorruptCheckpointError as exc:
                    failed.append(seq)
                    reasons.append(str(exc))
                    message = (
                        f"skipping corrupt checkpoint seq={seq} of agent {self.namespace}/{self.name} "
                        f"at {self._url(self._manifest_path(seq))}: {exc}"
                    )
                    logger.warning(message)
                    warnings.warn(message, RuntimeWarning, stacklevel=2)
            if failed and strict:
                raise NoValidCheckpointError(
                    f"agent {self.namespace}/{self.name} in {self.store.uri}: every checkpoint fails to "
                    f"verify (seq {', '.join(map(str, failed))}); first: {reasons[0]}",
                    failed,
                    reasons,
                )
            return None

    def list(self) -> list[CheckpointInfo]:
        """All checkpoints, oldest first (``fenced`` set; unreadable manifests are left out with a warning)."""
        with self._guard("list checkpoints"):
            epochs = self._epochs()
            out: list[CheckpointInfo] = []
            for seq in self._seqs():
                try:
                    info = self._manifest(seq)
                except CheckpointNotFoundError:
                    continue
                except CorruptCheckpointError as exc:
                    logger.warning("%s", exc)
                    continue
                info.fenced = is_fenced(seq, info.epoch, epochs)
                out.append(info)
            return out

    def rollback(self, seq: int, *, epoch: int) -> CheckpointInfo:
        """Writes the content of checkpoint ``seq`` as the new newest checkpoint (history is kept).

        Raises:
            CheckpointNotFoundError: No such checkpoint.
            CorruptCheckpointError: It fails its checks.
            StaleEpochError: ``epoch`` is stale.
        """
        with self._guard(f"roll back to {seq}"):
            info = self._manifest(seq)
            data = self._read_payload(info)
            extra = {**info.extra, "rollback_of": seq}
            return self._commit(
                bytes(data),
                dict(info.schema),
                epoch=epoch,
                agent_class=info.agent_class,
                extra=extra,
                compression=info.compression,
            )

    def delete_all(self) -> None:
        """Deletes every object of this agent, epochs included."""
        with self._guard("delete all"):
            with suppress(FileNotFoundError):
                self.store.fs.rm(self._dir, recursive=True)
            self._starts.clear()
            self._retained.clear()
            self._seqs_seen, self._listed = [], False
            self._confirmed_epochs.clear()
            self._retention_due = None
            self._reserved.clear()
