"""`CheckpointPolicy`: where an agent's checkpoints go and when they are written (configuration only)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from academy_ray.store import CheckpointStore


class CheckpointPolicy(BaseModel):
    """Where an agent's checkpoints go and when they are written.

    Attributes:
        uri: fsspec URI of the store (``file:///abs/dir``, ``memory://x``, ``s3://bucket/prefix``).
        storage_options: fsspec options (for S3: key, secret, ``client_kwargs={"endpoint_url": ...}``).
        every_action: Checkpoint after every state-changing action; the caller gets the result only once the
            new state is durable. Actions declared ``@action(checkpoint=False)`` never trigger one.
        interval_s: Also checkpoint every this many seconds (None: never on a timer).
        on_shutdown: Checkpoint when the agent shuts down gracefully.
        keep_last: Checkpoints kept per agent (None keeps all). A running agent deletes older ones every
            16 saves (`RETENTION_BATCH`) and at a clean stop, so up to ``keep_last`` + 15 exist in between.
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
