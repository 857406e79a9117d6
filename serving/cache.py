"""Per-node model cache: object storage -> node-local disk (or ``/dev/shm``), LRU by bytes.

One detached cache actor per node (:func:`node_cache`) owns a folder on that node. Replicas on the
node ask it for a model's local folder with :meth:`ModelCache.ensure`: a hit returns at once, a miss
fetches the folder once (however many callers ask at the same time), verifies every file's sha256
against the manifest, and evicts least-recently-used models (never one leased to a loading caller)
to stay within the byte budget, or to make room when the disk is full. The cache's inventory is
reported to ``placement``.

Trust: a manifest naming files outside the model folder is refused before any byte is written
(:class:`~serving.errors.UnsafeModelFileError`). The cache folder must belong to the serving user
and not be writable by others; a copy found there at start-up is reused only if it verifies
(:func:`serving.storage.verify_local_copy`: owner, permissions, no links, and checksums or the
verified marker written after the checksum pass), otherwise it is discarded and fetched again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from serving.errors import CacheBudgetError, DiskFullError, UnsafeCacheRootError, WeightsError
from serving.inventory import InventorySink, NullSink, PlacementSink
from serving.spec import ModelSpec
from serving.storage import (
    MANIFEST_NAME,
    VERIFIED_NAME,
    Manifest,
    fetch_model,
    read_manifest,
    verify_local_copy,
)

logger = logging.getLogger(__name__)

ORIGIN_NAME = ".serving-origin.json"
Tier = Literal["disk", "object_storage"]


def default_cache_root() -> str:
    """``/dev/shm/academy-serving-cache-<uid>`` where ``/dev/shm`` is writable, else the temp dir.

    One folder per user: the cache refuses a folder that belongs to someone else.
    """
    name = f"academy-serving-cache-{os.getuid()}"
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return str(shm / name)
    return str(Path(tempfile.gettempdir()) / name)


class CacheConfig(BaseModel):
    """Settings of a node model cache.

    Attributes:
        root: node-local folder for model copies (``/dev/shm/...`` keeps them in RAM).
        budget_bytes: most bytes of model copies kept; LRU models are evicted beyond it.
        namespace: Ray namespace of the cache actors.
        name_prefix: actor name prefix; the node id is appended.
        lease_seconds: how long a caller's lease protects a model from eviction while it loads.
        placement_namespace: Ray namespace of the ``placement`` controller to report the inventory
            to (``None``: report nowhere).
    """

    root: str = Field(default_factory=default_cache_root)
    budget_bytes: int = Field(default=8 << 30, gt=0)
    namespace: str = "academy-serving"
    name_prefix: str = "model-cache"
    lease_seconds: float = Field(default=600.0, gt=0)
    placement_namespace: str | None = None


class LocalModel(BaseModel):
    """A verified local copy of a model, as handed to an engine."""

    model_id: str
    path: str
    nbytes: int
    tier: Tier = Field(description="where the bytes came from: 'disk' (hit) or 'object_storage'")
    seconds: float = Field(description="time the cache spent answering, fetch included")
    node_id: str = ""


class CacheStats(BaseModel):
    """Counters and contents of one node cache.

    ``hits``/``misses`` are per tier: a ``disk`` hit found a local copy, a ``disk`` miss fetched
    from object storage. ``engine`` counts come from this node's replicas: a miss is an engine
    load, a hit a request answered by an already loaded engine (hits are reported in batches).
    ``coalesced`` counts callers that joined a fetch already in flight.
    """

    node_id: str
    root: str
    budget_bytes: int
    used_bytes: int
    models: list[str] = Field(description="cached model ids, least recently used first")
    hits: dict[str, int]
    misses: dict[str, int]
    fetches: int
    fetched_bytes: int
    coalesced: int
    evictions: int
    failures: int
    engines: dict[str, int] = Field(description="model id -> engines loaded on this node now")


@dataclass
class _Entry:
    model_id: str
    key: str
    path: Path
    nbytes: int
    leases: list[float] = field(default_factory=list)

    def leased(self, now: float) -> bool:
        self.leases = [t for t in self.leases if t > now]
        return bool(self.leases)


class _Origin(BaseModel):
    """What a local copy is a copy of (``.serving-origin.json``)."""

    model_id: str
    uri: str


def _folder_name(model_id: str, uri: str) -> str:
    digest = hashlib.sha256(uri.encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model_id)[:64].lstrip(".") or "_"
    return f"{safe}-{digest}"


def _secure_root(root: Path) -> None:
    """Creates ``root`` (mode 0700) or checks that it belongs to this user, closed to others.

    A folder of this user that others may write to (made under a umask of 002, say) loses the
    group and world write permission, unless it is a shared sticky folder such as ``/tmp``.

    Raises:
        UnsafeCacheRootError: ``root`` belongs to another user, or is a shared sticky folder.
    """
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = root.stat()
    if st.st_uid != os.getuid():
        raise UnsafeCacheRootError(
            f"the model cache folder {root} belongs to uid {st.st_uid}, not to this user "
            f"({os.getuid()}): choose another CacheConfig.root"
        )
    if st.st_mode & 0o022:
        if st.st_mode & stat.S_ISVTX:
            raise UnsafeCacheRootError(
                f"the model cache folder {root} is a shared folder (mode "
                f"{oct(stat.S_IMODE(st.st_mode))}): choose a folder of its own as CacheConfig.root"
            )
        logger.warning("model cache folder %s was writable by others: chmod go-w", root)
        root.chmod(stat.S_IMODE(st.st_mode) & ~0o022)


def _discard(path: Path) -> None:
    """Removes a folder (or link) of the cache root; moves it aside if it cannot be removed."""
    if path.is_symlink():
        path.unlink(missing_ok=True)
        return
    shutil.rmtree(path, ignore_errors=True)
    if path.exists():  # e.g. another user's folder we may not empty: at least never use it
        aside = path.with_name(f".discarded-{path.name}-{uuid.uuid4().hex[:8]}")
        try:
            os.replace(path, aside)
        except OSError as exc:
            logger.warning("model cache cannot remove %s: %s", path, exc)


class ModelCache:
    """The cache logic (runs inside the node's cache actor; usable directly in one process)."""

    def __init__(
        self, config: CacheConfig, node_id: str = "", sink: InventorySink | None = None
    ) -> None:
        self.config = config
        self.node_id = node_id
        # One folder per node under the configured root: a root on a shared file system (NFS
        # home, or simulated nodes on one machine) must never let two nodes' caches share copies.
        self.root = Path(config.root) / f"node-{node_id}" if node_id else Path(config.root)
        _secure_root(self.root)
        self._sink: InventorySink = sink or NullSink()
        # key = weights_uri (a versioned model's versions have a folder each), LRU first
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[_Entry]] = {}
        self._reserved = 0
        self._lock = asyncio.Lock()
        self._hits = {"disk": 0, "engine": 0}
        self._misses = {"disk": 0, "engine": 0}
        self._fetches = 0
        self._fetched_bytes = 0
        self._coalesced = 0
        self._evictions = 0
        self._failures = 0
        self._engines: dict[str, int] = {}
        self._adopt_existing()

    # ----------------------------------------------------------------- startup
    def _adopt_existing(self) -> None:
        """Re-adopts verified copies left by a previous cache process; discards the others.

        A copy is reused only if :func:`~serving.storage.verify_local_copy` accepts it (owner,
        permissions, no links, exact file set, checksums or the verified marker) and it sits in
        the folder its origin names.
        """
        for folder in sorted(self.root.iterdir()):
            if folder.name.startswith((".partial-", ".discarded-")):
                _discard(folder)
                continue
            if folder.name.startswith(".") or not self._looks_like_copy(folder):
                continue  # not the cache's (the root may be shared with other files)
            try:
                entry = self._verified_entry(folder)
            except (OSError, ValueError, WeightsError) as exc:
                logger.warning("model cache discards %s: %s", folder, exc)
                self._forget(folder)
                continue
            self._entries[entry.key] = entry
            self._sink.held(self.node_id, entry.model_id, entry.nbytes)

    def _forget(self, folder: Path) -> None:
        """Discards a copy that failed verification; placement may still list it from before."""
        origin = None
        path = folder / ORIGIN_NAME
        try:
            if not folder.is_symlink() and stat.S_ISREG(path.lstat().st_mode):
                origin = _Origin.model_validate_json(path.read_bytes())
        except (OSError, ValueError):
            pass
        _discard(folder)
        if origin is not None:
            self._sink.evicted(self.node_id, origin.model_id)

    @staticmethod
    def _looks_like_copy(folder: Path) -> bool:
        if folder.is_symlink():
            return True
        return folder.is_dir() and any(
            os.path.lexists(folder / name) for name in (ORIGIN_NAME, MANIFEST_NAME, VERIFIED_NAME)
        )

    @staticmethod
    def _verified_entry(folder: Path) -> _Entry:
        manifest = verify_local_copy(folder, extra=(ORIGIN_NAME,))
        origin = _Origin.model_validate_json((folder / ORIGIN_NAME).read_bytes())
        if folder.name != _folder_name(origin.model_id, origin.uri):
            raise WeightsError(f"{folder} does not hold {origin.uri} ({origin.model_id})")
        return _Entry(origin.model_id, origin.uri, folder, manifest.total_bytes)

    # ----------------------------------------------------------------- public
    @property
    def used_bytes(self) -> int:
        """Bytes of complete copies held."""
        return sum(e.nbytes for e in self._entries.values())

    async def ensure(self, spec: ModelSpec, lease: bool = True) -> LocalModel:
        """Returns a verified local copy of ``spec``'s weights, fetching it once if needed.

        Args:
            spec: the model.
            lease: protect the copy from eviction until :meth:`release` (or the lease times out).

        Raises:
            UnsafeModelFileError: the manifest names a file outside the model folder.
            WeightsError: the weights are missing or corrupt in storage.
            CacheBudgetError: the model alone is larger than the budget, or everything else is
                leased.
            DiskFullError: the disk is full even after evicting every model not leased.
        """
        start = time.perf_counter()
        key = spec.weights_uri
        entry = self._entries.get(key)
        if entry is not None and entry.path.is_dir():
            tier: Tier = "disk"
            self._hits["disk"] += 1
            self._entries.move_to_end(key)
        else:
            if entry is not None:  # the folder vanished under us: forget it
                self._drop(entry)
            tier = "object_storage"
            future = self._inflight.get(key)
            if future is not None:
                self._coalesced += 1
                entry = await asyncio.shield(future)
                tier = "disk"
                self._hits["disk"] += 1
            else:
                self._misses["disk"] += 1
                future = asyncio.get_running_loop().create_future()
                self._inflight[key] = future
                try:
                    entry = await self._fetch(spec)
                    future.set_result(entry)
                except BaseException as exc:
                    self._failures += 1
                    future.set_exception(exc)
                    future.exception()  # mark retrieved for the case of no other waiters
                    raise
                finally:
                    del self._inflight[key]
        if lease:
            entry.leases.append(time.monotonic() + self.config.lease_seconds)
        return LocalModel(
            model_id=spec.id,
            path=str(entry.path),
            nbytes=entry.nbytes,
            tier=tier,
            seconds=time.perf_counter() - start,
            node_id=self.node_id,
        )

    def release(self, spec: ModelSpec) -> None:
        """Drops one lease a caller took with :meth:`ensure` (no error if none is held)."""
        entry = self._entries.get(spec.weights_uri)
        if entry is not None and entry.leases:
            entry.leases.pop(0)

    def engine_loaded(self, model_id: str, from_cache: bool) -> None:
        """A replica on this node loaded ``model_id`` into an engine (counts an ``engine`` miss)."""
        self._misses["engine"] += 1
        self._engines[model_id] = self._engines.get(model_id, 0) + 1

    def engine_hits(self, count: int) -> None:
        """A replica reports ``count`` requests answered by an already loaded engine."""
        self._hits["engine"] += int(count)

    def engine_unloaded(self, model_id: str) -> None:
        """A replica on this node unloaded ``model_id``'s engine."""
        left = self._engines.get(model_id, 0) - 1
        if left > 0:
            self._engines[model_id] = left
        else:
            self._engines.pop(model_id, None)

    def evict(self, model_id: str) -> bool:
        """Removes a model's local copy now (leases are ignored). Returns whether one existed."""
        found = [e for e in self._entries.values() if e.model_id == model_id]
        for entry in found:
            self._drop(entry)
            self._evictions += 1
        return bool(found)

    def inventory(self) -> dict[str, int]:
        """Cached model ids and their sizes in bytes (what placement's inventory should hold)."""
        return {e.model_id: e.nbytes for e in self._entries.values()}

    def stats(self) -> CacheStats:
        """Counters and contents."""
        return CacheStats(
            node_id=self.node_id,
            root=str(self.root),
            budget_bytes=self.config.budget_bytes,
            used_bytes=self.used_bytes,
            models=[e.model_id for e in self._entries.values()],
            hits=dict(self._hits),
            misses=dict(self._misses),
            fetches=self._fetches,
            fetched_bytes=self._fetched_bytes,
            coalesced=self._coalesced,
            evictions=self._evictions,
            failures=self._failures,
            engines=dict(self._engines),
        )

    # ----------------------------------------------------------------- internals
    def _drop(self, entry: _Entry) -> None:
        self._entries.pop(entry.key, None)
        shutil.rmtree(entry.path, ignore_errors=True)
        if not any(e.model_id == entry.model_id for e in self._entries.values()):
            self._sink.evicted(self.node_id, entry.model_id)  # no other version of it is held

    async def _make_room(self, nbytes: int, model_id: str) -> None:
        budget = self.config.budget_bytes
        if nbytes > budget:
            raise CacheBudgetError(
                f"model {model_id!r} needs {nbytes} bytes, more than the node cache budget "
                f"of {budget} bytes"
            )
        now = time.monotonic()
        while self.used_bytes + self._reserved + nbytes > budget:
            victim = next((e for e in self._entries.values() if not e.leased(now)), None)
            if victim is None:
                raise CacheBudgetError(
                    f"model {model_id!r} ({nbytes} bytes) does not fit the node cache: "
                    f"{self.used_bytes + self._reserved} of {budget} bytes are in use or leased"
                )
            logger.info("model cache evicts %s (%d bytes)", victim.model_id, victim.nbytes)
            self._drop(victim)
            self._evictions += 1

    def _evict_for_disk(self, nbytes: int) -> int:
        """Evicts LRU models not leased until ``nbytes`` are free on the disk (at least one).

        Returns:
            How many models were evicted (0: none could be).
        """
        now = time.monotonic()
        evicted = 0
        for victim in [e for e in self._entries.values() if not e.leased(now)]:
            if evicted and shutil.disk_usage(self.root).free >= nbytes:
                break
            logger.info("model cache evicts %s: the disk is full", victim.model_id)
            self._drop(victim)
            self._evictions += 1
            evicted += 1
        return evicted

    async def _download(self, spec: ModelSpec, path: Path, nbytes: int) -> Manifest:
        """Fetches ``spec`` into ``path``; a full disk evicts LRU models and retries."""
        origin = _Origin(model_id=spec.id, uri=spec.weights_uri).model_dump_json().encode()
        evicted = 0
        while True:
            try:
                return await asyncio.to_thread(
                    fetch_model,
                    spec.weights_uri,
                    path,
                    spec.storage_options,
                    extra_files={ORIGIN_NAME: origin},
                    model_id=spec.id,
                )
            except DiskFullError as exc:
                freed = self._evict_for_disk(nbytes)
                if not freed:
                    raise DiskFullError(
                        f"disk full: model {spec.id!r} ({nbytes} bytes) does not fit on the disk "
                        f"of the node cache at {self.root} ({_free(self.root)} bytes free) even "
                        f"after evicting every model not in use ({evicted} evicted)"
                    ) from exc
                evicted += freed

    async def _fetch(self, spec: ModelSpec) -> _Entry:
        manifest = await asyncio.to_thread(
            read_manifest, spec.weights_uri, spec.storage_options, spec.id
        )
        nbytes = manifest.total_bytes
        async with self._lock:
            await self._make_room(nbytes, spec.id)
            self._reserved += nbytes
        try:
            path = self.root / _folder_name(spec.id, spec.weights_uri)
            got = await self._download(spec, path, nbytes)
            if got != manifest:
                _discard(path)
                raise WeightsError(f"model {spec.id!r} changed in storage while being fetched")
        finally:
            self._reserved -= nbytes
        entry = _Entry(spec.id, spec.weights_uri, path, nbytes)
        self._entries[entry.key] = entry
        self._fetches += 1
        self._fetched_bytes += nbytes
        self._sink.held(self.node_id, spec.id, nbytes)
        return entry


def _free(path: Path) -> int | str:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return "unknown"


class NodeModelCache:
    """Ray actor body of a node's cache; see :class:`ModelCache` for the methods' meaning."""

    def __init__(self, config: CacheConfig) -> None:
        import ray

        node_id = ray.get_runtime_context().get_node_id()
        sink: InventorySink = (
            PlacementSink(config.placement_namespace) if config.placement_namespace else NullSink()
        )
        self._cache = ModelCache(config, node_id=node_id, sink=sink)

    async def ensure(self, spec: ModelSpec, lease: bool = True) -> LocalModel:
        return await self._cache.ensure(spec, lease)

    def release(self, spec: ModelSpec) -> None:
        self._cache.release(spec)

    def engine_loaded(self, model_id: str, from_cache: bool) -> None:
        self._cache.engine_loaded(model_id, from_cache)

    def engine_unloaded(self, model_id: str) -> None:
        self._cache.engine_unloaded(model_id)

    def engine_hits(self, count: int) -> None:
        self._cache.engine_hits(count)

    def evict(self, model_id: str) -> bool:
        return self._cache.evict(model_id)

    def stats(self) -> CacheStats:
        return self._cache.stats()

    def inventory(self) -> dict[str, int]:
        return self._cache.inventory()

    def node_id(self) -> str:
        return self._cache.node_id


def cache_actor_name(config: CacheConfig, node_id: str) -> str:
    """Name of the cache actor of ``node_id``."""
    return f"{config.name_prefix}-{node_id}"


def node_cache(config: CacheConfig | None = None, node_id: str | None = None) -> Any:
    """Returns the cache actor of ``node_id`` (default: this node), creating it if needed.

    The actor is detached, named ``<name_prefix>-<node_id>`` in ``config.namespace``, and pinned to
    its node (hard affinity: a cache is worth nothing elsewhere and dies with its node).
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    config = config or CacheConfig()
    node_id = node_id or ray.get_runtime_context().get_node_id()
    actor_cls = ray.remote(NodeModelCache)
    return actor_cls.options(  # type: ignore[attr-defined]
        name=cache_actor_name(config, node_id),
        namespace=config.namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_concurrency=64,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    ).remote(config)


def node_caches(config: CacheConfig) -> list[Any]:
    """Handles of the running cache actors of ``config`` (one per node that has one)."""
    import ray

    actors = []
    for item in ray.util.list_named_actors(all_namespaces=True):
        name, namespace = item["name"], item["namespace"]
        if namespace == config.namespace and name.startswith(config.name_prefix + "-"):
            try:
                actors.append(ray.get_actor(name, namespace=namespace))
            except ValueError:  # it died since the listing
                continue
    return actors


def kill_node_caches(config: CacheConfig) -> int:
    """Kills every cache actor of ``config`` (all nodes); their folders stay on disk."""
    import ray

    actors = node_caches(config)
    for actor in actors:
        ray.kill(actor)
    return len(actors)
