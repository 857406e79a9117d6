"""When and how a running agent's state is made durable: the checkpoint policy and its executor."""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from pydantic import BaseModel, ConfigDict, Field

from academy_ray.agent import Agent
from academy_ray.exception import CheckpointRestoreError
from academy_ray.state import encode_state_segments
from academy_ray.store import (
    AgentCheckpoints,
    CheckpointInfo,
    CheckpointStore,
    NoValidCheckpointError,
    StaleEpochError,
    StorageUnavailableError,
)
from academy_ray.store_identity import check_store_reachable

logger = logging.getLogger(__name__)


class CheckpointPolicy(BaseModel):
    """Where an agent's checkpoints go and when they are written.

    Attributes:
        uri: fsspec URI of the store (``file:///abs/dir``, ``memory://x``, ``s3://bucket/prefix``).
        storage_options: fsspec options (for S3: key, secret, ``client_kwargs={"endpoint_url": ...}``).
        every_action: Checkpoint after every state-changing action; the caller gets the result only once the
            new state is durable. Actions declared ``@action(checkpoint=False)`` never trigger one.
        interval_s: Also checkpoint every this many seconds (None: never on a timer).
        on_shutdown: Checkpoint when the agent shuts down gracefully.
        keep_last: Checkpoints kept per agent (None keeps all).
        compression: ``None`` or ``"lz4"``.
        retry_initial_s: First back-off delay when the storage fails; doubles up to ``retry_max_s``.
        retry_max_s: Largest back-off delay.
        allow_fresh_start: When the agent has checkpoints but none verifies, start from the constructor's
            state (and write over them) instead of refusing to start with `CheckpointRestoreError`.
        allow_unsafe_store: Accept a store whose "create if absent" is not known to be atomic (then epoch
            fencing cannot be trusted: two copies of an agent may both write). Off by default; see
            `CheckpointStore.check_safe`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str
    storage_options: dict[str, Any] = Field(default_factory=dict)
    every_action: bool = True
    interval_s: float | None = Field(default=None, gt=0)
    on_shutdown: bool = True
    keep_last: int | None = Field(default=10, ge=1)
    compression: str | None = None
    retry_initial_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=30.0, gt=0)
    allow_fresh_start: bool = False
    allow_unsafe_store: bool = False

    def store(self) -> CheckpointStore:
        """The store this policy writes to."""
        return CheckpointStore(
            self.uri,
            self.storage_options,
            self.keep_last,
            compression=self.compression,  # type: ignore[arg-type]
            allow_unsafe=self.allow_unsafe_store,
        )


class CheckpointFencedError(StaleEpochError):
    """This copy of the agent is stale (a newer activation exists): it stopped and its change is not durable."""


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
        self._lock = asyncio.Lock()
        self._version = 0
        self._durable_version = 0
        self._retry_task: asyncio.Task[None] | None = None
        self._interval_task: asyncio.Task[None] | None = None

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

    def start_background(self, agent: Agent) -> None:
        """Starts the interval saver, if the policy has one."""
        if self.policy.interval_s is not None:
            self._interval_task = asyncio.ensure_future(self._every_interval(agent))

    def mark_changed(self) -> int:
        """Records that the state changed; returns the version a save must cover."""
        self._version += 1
        return self._version

    @property
    def dirty(self) -> bool:
        """Whether changes are not yet durable."""
        return self._durable_version < self._version

    async def save(self, agent: Agent, version: int | None = None) -> CheckpointInfo | None:
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
            # The commit point: the state is captured here, on the event loop, as an immutable snapshot.
            snapshot_version = self._version
            fields = agent.agent_checkpoint()
            encoded = encode_state_segments(fields, compression=self.policy.compression)  # type: ignore[arg-type]
            try:
                info = await self._run_io(
                    self.checkpoints.save_encoded,
                    encoded,
                    epoch=self.epoch,
                    agent_class=self.agent_class,
                )
            except StaleEpochError as error:
                raise self._fence(str(error)) from None
            except StorageUnavailableError:
                self._schedule_retry(agent)
                raise
            self.last = info
            self._durable_version = max(self._durable_version, snapshot_version)
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

    def _schedule_retry(self, agent: Agent) -> None:
        if self._retry_task is None or self._retry_task.done():
            self._retry_task = asyncio.ensure_future(self._retry(agent))

    async def _retry(self, agent: Agent) -> None:
        delay = self.policy.retry_initial_s
        while self.dirty and not self.fenced:
            await asyncio.sleep(delay)
            try:
                await self.save(agent, self._version)
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

    async def _every_interval(self, agent: Agent) -> None:
        assert self.policy.interval_s is not None
        while not self.fenced:
            await asyncio.sleep(self.policy.interval_s)
            try:
                await self.save(agent)
            except StorageUnavailableError:
                logger.warning(
                    "%s: interval checkpoint failed; retrying in the background", self.checkpoints
                )
            except CheckpointFencedError:
                return
            except Exception:
                logger.exception("%s: interval checkpoint failed", self.checkpoints)

    async def close(self, agent: Agent | None) -> None:
        """Stops background work and, by policy, writes a final checkpoint."""
        for task in (self._interval_task, self._retry_task):
            if task is not None:
                task.cancel()
        if (
            agent is not None
            and self.policy.on_shutdown
            and not self.fenced
            and self.epoch is not None
        ):
            try:
                await self.save(agent)
            except Exception:
                logger.exception("%s: final checkpoint at shutdown failed", self.checkpoints)
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
