"""The manifest of one checkpoint: what was saved, by which activation, where, and its checksum."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr

INLINE_MAX = 64 << 10
"""Payloads up to this size are stored inside their manifest (one object, half the fsyncs)."""


class CheckpointInfo(BaseModel):
    """The manifest of one checkpoint.

    Attributes:
        namespace: Agent namespace.
        name: Agent name.
        agent_class: Import path of the agent class.
        seq: Sequence number (1, 2, ...), unique per agent.
        epoch: Activation epoch that wrote it.
        created: Creation time (UTC).
        size: Payload size in bytes.
        checksum: ``<algorithm>:<hex digest>`` of the payload (``xxh3_128`` for new checkpoints; a bare hex
            digest, as written by older versions, is a sha256).
        schema_: Field name to kind (serialised as ``schema``).
        path: Payload URL (the manifest's URL for a payload stored inline).
        inline: The payload (<= 64 KiB) is stored base64-encoded inside the manifest object.
        compression: Payload compression (``None`` or ``"lz4"``).
        extra: Free-form metadata given to ``save``.
        fenced: Set by :meth:`AgentCheckpoints.list`: True when a newer activation fenced it off (never
            restored).
    """

    model_config = {"populate_by_name": True}

    namespace: str
    name: str
    agent_class: str
    seq: int
    epoch: int
    created: dt.datetime
    size: int
    checksum: str
    schema_: dict[str, str] = Field(default_factory=dict, alias="schema")
    path: str
    compression: str | None = None
    inline: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)
    fenced: bool = False
    _inline_payload: bytes | None = PrivateAttr(default=None)

    @property
    def schema(self) -> dict[str, str]:  # type: ignore[override]
        """Field name to kind (``json``, ``bytes``, ``model``, ``ndarray``, ``table``)."""
        return self.schema_
