"""How a running agent's state is made durable by its policy: restore, group-committed saves, retries."""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray

from academy_ray.exception import (
    CheckpointError,
    CheckpointFencedError,
    CheckpointRestoreError,
    NoValidCheckpointError,
    StaleEpochError,
    StorageUnavailableError,
)
from academy_ray.policy import CheckpointPolicy
from academy_ray.state import encode_state_segments
from academy_ray.store import INLINE_MAX, AgentCheckpoints, CheckpointInfo
from academy_ray.store_identity import check_store_reachable

__all__ = ["CheckpointFencedError", "CheckpointPolicy", "Persistence", "Snapshot"]

logger = logging.getLogger(__name__)

LOOP_SAVE_MAX_S = 0.002
"""Small saves to a local disk run on the agent's event loop while they average under this (seconds)."""

SHARED_LOOP_WINDOW_S = 0.005
"""A small save goes to the I/O thread when another agent of this process saved this recently: agents that
share an event loop (a pool) write in parallel from their threads (the filesystem commits concurrent syncs
together) instead of one after another on the loop they all need."""

# The last Persistence of this process that saved to a local store (its id()), and when (monotonic s).
_last_local_save: tuple[int, float] = (0, 0.0)


def _loop_shared_with_other_savers(persistence: Persistence) -> bool:
    saver, at = _last_local_save
    return saver != id(persistence) and time.monotonic() - at < SHARED_LOOP_WINDOW_S


RETENTION_BATCH = 16
"""A running agent deletes its old checkpoints every this many saves (so up to ``keep_last`` + this - 1
are on storage between two rounds)."""

Snapshot = Callable[[], Mapping[str, Any]]
"""Returns the state to persist now (the agent's ``agent_checkpoint``); called on the event loop."""


class Persistence:
    """Checkpoints one agent by its policy: restores on activation, coalesces concurrent saves, retries.

    Concurrent state-changing actions share one save where they can ("group commit"): each action bumps a
    version; a save covers every version made before its snapshot was taken. The snapshot is taken on the
    event loop (arrays are copied), so a loop or action that changes the state in place while the payload
    is written cannot tear it.

    Args:
        policy: Where and when to checkpoint.
        namespace: The agent's namespace.
        name: The agent's name.
        agent_class: Import path of the agent class (recorded in manifests).
        on_fenced: Called once when this copy learns it was fenced (from any save: an action's, the
            interval saver's, a retry's), so its owner stops it.
    """

    def __init__(
        self,
        policy: CheckpointPolicy,
        namespace: str,
        name: str,
        agent_class: str,
        on_fenced: Callable[[CheckpointFencedError], None] | None = None,
    ) -> None:
        self.policy = policy
        self.name = name
        self._on_fenced = on_fenced
        self.agent_class = agent_class
        self.checkpoints: AgentCheckpoints = policy.store().for_agent(namespace, name)
        self.epoch: int | None = None
        self.last: CheckpointInfo | None = None
        self.fenced = False
        self.notes: list[str] = []
        self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"checkpoint-{name}")
        # Small saves to a local disk run on the event loop while they stay quick (see `save`).
        self._loop_save_s: float | None = 0.0 if self.checkpoints.store.local else None
        self._saves_since_retention = 0
        self._lock = asyncio.Lock()
        self._version = 0
        self._durable_version = 0
        self._retry_task: asyncio.Task[None] | None = None
        self._interval_task: asyncio.Task[None] | None = None
        self.on_saved: Callable[[float, int], None] | None = None
        """Called with the seconds and bytes of each checkpoint made durable (the agent's metrics)."""

    async def _run_io(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: function(*args, **kwargs))

    async def activate(self) -> dict[str, Any] | None:
        """Takes a new epoch (fencing older copies) and loads the newest valid checkpoint's fields.

        Raises:
            CheckpointRestoreError: Checkpoints exist but none verifies (unless the policy allows a fresh
                start).
            UnsafeStoreError: The store cannot fence (see `CheckpointStore.check_safe`).
            StoreNotSharedError: A per-node store that is not the one the agent used before.
            StorageUnavailableError: The storage failed.
        """
        store = self.checkpoints.store
        await self._run_io(store.check_safe)
        if ray.is_initialized():
            node_id = ray.get_runtime_context().get_node_id()
            await self._run_io(check_store_reachable, store, node_id)
        self.epoch = await self._run_io(self.checkpoints.acquire_epoch)

        def load_latest() -> Any:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    return self.checkpoints.load_latest(strict=not self.policy.allow_fresh_start)
                finally:
                    self.notes.extend(str(warning.message) for warning in caught)

        try:
            latest = await self._run_io(load_latest)
        except NoValidCheckpointError as error:
            raise CheckpointRestoreError(self.name, error.seqs, error.reasons[0]) from error
        if latest is None:
            return None
        self.last, fields = latest
        logger.info(
            "agent %s restored from checkpoint seq=%d (epoch %d)",
            self.checkpoints,
            self.last.seq,
            self.last.epoch,
        )
        return fields  # type: ignore[no-any-return]

    def start_background(self, snapshot: Snapshot) -> None:
        """Starts the interval saver, if the policy has one."""
        if self.policy.interval_s is not None:
            self._interval_task = asyncio.ensure_future(self._every_interval(snapshot))

    def mark_changed(self) -> int:
        """Records that the state changed; returns the version a save must cover."""
        self._version += 1
        return self._version

    @property
    def pending_changes(self) -> int:
        """State changes not yet durable."""
        return self._version - self._durable_version

    @property
    def dirty(self) -> bool:
        """Whether changes are not yet durable."""
        return self._durable_version < self._version

    async def save(self, snapshot: Snapshot, version: int | None = None) -> CheckpointInfo | None:
        """Makes the state durable up to ``version`` (default: now).

        Raises:
            StorageUnavailableError: The storage failed; a background retry keeps trying.
            CheckpointFencedError: A newer copy of the agent exists; this one must stop.
        """
        if version is None:
            version = self.mark_changed()
        async with self._lock:
            if self._durable_version >= version:
                return self.last
            if self.fenced:
                raise CheckpointFencedError(
                    f"{self.checkpoints}: this copy was fenced off by a newer one"
                )
            if self.epoch is None:
                raise CheckpointError(f"{self.checkpoints}: a save before activate()")
            on_loop = (
                self._loop_save_s is not None
                and self._loop_save_s < LOOP_SAVE_MAX_S
                and not _loop_shared_with_other_savers(self)
            )
            if self._loop_save_s is not None:
                global _last_local_save
                _last_local_save = (id(self), time.monotonic())
            if on_loop:
                # Actions already delivered run their bodies now, so that this one snapshot covers them
                # too (they find their version durable): the group commit that the I/O thread gives.
                await asyncio.sleep(0)
            # The commit point: the state is captured here, on the event loop, as an immutable snapshot.
            snapshot_version = self._version
            started = time.perf_counter()
            fields = snapshot()
            encoded = encode_state_segments(fields, compression=self.policy.compression)  # type: ignore[arg-type]
            small = encoded.size <= INLINE_MAX
            write_started = time.perf_counter()
            try:
                if on_loop and small:
                    # A small state on a local disk is one write into a reserved name (a fraction of a
                    # millisecond): done here, it saves two thread hops that cost more than the write.
                    # The loop waits for it; while that averages too long (a slow disk), saves go to
                    # the I/O thread instead.
                    info = self.checkpoints.save_encoded(
                        encoded, epoch=self.epoch, agent_class=self.agent_class, retain=False
                    )
                else:
                    info = await self._run_io(
                        self.checkpoints.save_encoded,
                        encoded,
                        epoch=self.epoch,
                        agent_class=self.agent_class,
                        retain=False,
                    )
                if small and self._loop_save_s is not None:
                    elapsed = time.perf_counter() - write_started
                    self._loop_save_s = 0.8 * self._loop_save_s + 0.2 * elapsed
            except StaleEpochError as error:
                raise self._fence(str(error)) from None
            except StorageUnavailableError:
                self._schedule_retry(snapshot)
                raise
            self.last = info
            self._durable_version = max(self._durable_version, snapshot_version)
            if self.on_saved is not None:
                self.on_saved(time.perf_counter() - started, info.size)
            # Old checkpoints are deleted after the caller is answered, in the I/O thread: deleting is not
            # part of what makes this state durable. They go RETENTION_BATCH at a time: each deletion is
            # a change to the folder that the next save's sync would otherwise have to commit.
            self._saves_since_retention += 1
            if self.policy.keep_last is not None and self._saves_since_retention >= RETENTION_BATCH:
                self._saves_since_retention = 0
                self._io.submit(self.checkpoints.apply_retention)
            return info  # type: ignore[no-any-return]

    def _fence(self, reason: str) -> CheckpointFencedError:
        """Marks this copy fenced, tells the owner (once) and returns the error to raise."""
        error = CheckpointFencedError(reason)
        if not self.fenced:
            self.fenced = True
            logger.error(
                "%s: fenced by a newer copy of the agent; this copy stops", self.checkpoints
            )
            if self._on_fenced is not None:
                self._on_fenced(error)
        return error

    def _schedule_retry(self, snapshot: Snapshot) -> None:
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.ensure_future(self._retry(snapshot))

    async def _retry(self, snapshot: Snapshot) -> None:
        delay = self.policy.retry_initial_s
        while self.dirty and not self.fenced:
            await asyncio.sleep(delay)
            try:
                await self.save(snapshot, self._version)
                logger.info("%s: storage is back, state is durable again", self.checkpoints)
                return
            except StorageUnavailableError as error:
                logger.warning(
                    "%s: checkpoint retry failed (%s); next in %.1f s",
                    self.checkpoints,
                    error,
                    delay,
                )
                delay = min(delay * 2, self.policy.retry_max_s)
            except CheckpointFencedError:
                return

    async def _every_interval(self, snapshot: Snapshot) -> None:
        assert self.policy.interval_s is not None
        while not self.fenced:
            await asyncio.sleep(self.policy.interval_s)
            try:
                await self.save(snapshot)
            except StorageUnavailableError:
                logger.warning(
                    "%s: interval checkpoint failed; retrying in the background", self.checkpoints
                )
            except CheckpointFencedError:
                return
            except Exception:
                logger.exception("%s: interval checkpoint failed", self.checkpoints)

    async def close(self, snapshot: Snapshot | None) -> None:
        """Stops background work and, by policy, writes a final checkpoint."""
        for task in (self._interval_task, self._retry_task):
            if task is not None:
                task.cancel()
        if (
            snapshot is not None
            and self.policy.on_shutdown
            and not self.fenced
            and self.epoch is not None
        ):
            try:
                await self.save(snapshot)
            except Exception:
                logger.exception("%s: final checkpoint at shutdown failed", self.checkpoints)
        # Names reserved ahead and never written go with this copy (a crash leaves them to retention),
        # and so do the old checkpoints that the last saves left for the next round of retention.
        try:
            await self._run_io(self.checkpoints.release_reservations)
            if self.policy.keep_last is not None and self._saves_since_retention:
                await self._run_io(self.checkpoints.apply_retention)
        except Exception:
            logger.warning("%s: tidying up at shutdown failed", self.checkpoints, exc_info=True)
        self._io.shutdown(wait=False)

    async def rollback(self, seq: int) -> tuple[CheckpointInfo, dict[str, Any]]:
        """Writes checkpoint ``seq``'s content as the newest and returns it with its fields.

        The caller must hold off state-changing actions until it has restored the fields (the runner
        does): everything changed before is discarded by the rollback, so nothing in flight may be
        acknowledged as durable meanwhile.
        """
        async with self._lock:
            if self.fenced:
                raise CheckpointFencedError(
                    f"{self.checkpoints}: this copy was fenced off by a newer one"
                )
            try:
                info = await self._run_io(self.checkpoints.rollback, seq, epoch=self.epoch)
            except StaleEpochError as error:
                raise self._fence(str(error)) from None
            fields = await self._run_io(self.checkpoints.load, info.seq)
            self.last = info
            self._durable_version = self._version
            return info, fields
