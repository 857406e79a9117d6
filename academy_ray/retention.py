"""Retention: which checkpoints of an agent are deleted once newer ones exist, and orphan payloads."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from contextlib import suppress
from typing import Any, Protocol

from academy_ray.exception import (
    CheckpointNotFoundError,
    CheckpointNotWrittenError,
    CorruptCheckpointError,
)
from academy_ray.fencing import is_fenced
from academy_ray.manifest import CheckpointInfo
from academy_ray.objects import ObjectBackend

logger = logging.getLogger(__name__)

_PAYLOAD_RE = re.compile(r"^(\d{12})-[0-9a-f]{32}\.arrow$")


class RetainedAgent(Protocol):
    """What retention needs of an agent's checkpoints: the internals that `academy_ray.store.AgentCheckpoints`
    shares with this module (and only with it)."""

    store: Any
    """The store (its ``keep_last``)."""
    _b: ObjectBackend
    """Its write-once objects."""
    _dir: str
    """The agent's folder."""
    _retained: dict[int, CheckpointInfo]
    """Manifests already read (write-once, so cacheable)."""
    _seqs_seen: list[int]
    """The last listing of checkpoint seqs, plus what was written since."""

    def _manifest(self, seq: int) -> CheckpointInfo:
        """The manifest of checkpoint ``seq``."""
        ...

    def _manifest_path(self, seq: int) -> str:
        """Where the manifest of checkpoint ``seq`` is."""
        ...

    def _payload_path(self, info: CheckpointInfo) -> str:
        """Where the payload of ``info`` is (when not inline)."""
        ...


class Retention:
    """Keeps an agent's newest ``keep_last`` valid checkpoints.

    Only the listing a save made is considered (newer checkpoints are handled by the next save); a
    manifest is deleted before its payload, so a listed manifest never points to a deleted payload.

    Args:
        agent: The agent's checkpoints.
    """

    def __init__(self, agent: RetainedAgent) -> None:
        self.agent = agent
        self._removals = 0

    def apply(self, epochs: Mapping[int, int], writer_epoch: int) -> None:
        """Deletes the checkpoints beyond the newest ``keep_last`` valid ones (``epochs`` listed after the save)."""
        agent = self.agent
        keep_last = agent.store.keep_last
        if keep_last is None:
            return
        # The last listing and this object's saves since (newer ones: next time).
        seqs = sorted(set(agent._seqs_seen))
        if len(seqs) <= keep_last:
            return
        valid: list[int] = []
        manifests: dict[int, CheckpointInfo | None] = {}
        for seq in reversed(seqs):
            try:
                info = agent._retained.get(seq) or agent._manifest(seq)
            except (CheckpointNotFoundError, CorruptCheckpointError):
                manifests[seq] = None
                continue
            manifests[seq] = agent._retained[seq] = info
            if not is_fenced(seq, info.epoch, epochs):
                valid.append(seq)
                if len(valid) >= keep_last:
                    break
        if len(valid) < keep_last:
            return
        oldest_kept = valid[-1]
        removed = False
        for seq in seqs:
            if seq >= oldest_kept:
                break
            old: CheckpointInfo | None
            try:
                old = manifests.get(seq) or agent._retained.get(seq) or agent._manifest(seq)
            except (CorruptCheckpointError, CheckpointNotWrittenError):
                old = None  # unreadable, or a name reserved by a writer that stopped before writing it
            except CheckpointNotFoundError:
                with suppress(ValueError):
                    agent._seqs_seen.remove(seq)  # deleted by someone else
                continue
            # Manifest first: a listed manifest never points to a payload already deleted by us.
            agent._b.remove(agent._manifest_path(seq))
            agent._retained.pop(seq, None)
            with suppress(ValueError):
                agent._seqs_seen.remove(seq)
            removed = True
            if old is not None and not old.inline:
                agent._b.remove(agent._payload_path(old))
        if removed:
            self._removals += 1
        if removed and self._removals % 16 == 1:  # orphans are rare (crashes): look now and then
            referenced = {
                agent._payload_path(info).rsplit("/", 1)[-1]
                for info in manifests.values()
                if info is not None and not info.inline
            }
            self._collect_orphans(referenced, writer_epoch)

    def _collect_orphans(self, referenced: set[str], writer_epoch: int) -> None:
        """Deletes payloads no manifest references, left by crashes between payload and manifest.

        Only payloads of epochs older than the (live) writer's are touched: a newer activation's or a
        concurrent save's in-flight payload is never deleted, and a stale writer whose payload goes can
        only produce a checkpoint that is fenced anyway (the writer's epoch recorded its start earlier).
        """
        agent = self.agent
        for name in agent._b.names(f"{agent._dir}/payloads"):
            m = _PAYLOAD_RE.match(name)
            if m and int(m.group(1)) < writer_epoch and name not in referenced:
                agent._b.remove(f"{agent._dir}/payloads/{name}")
