"""Retention: which checkpoints of an agent are deleted once newer ones exist, and orphan payloads."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from academy_ray.exception import CheckpointNotFoundError, CorruptCheckpointError
from academy_ray.fencing import is_fenced
from academy_ray.manifest import CheckpointInfo

logger = logging.getLogger(__name__)

_PAYLOAD_RE = re.compile(r"^(\d{12})-[0-9a-f]{32}\.arrow$")


class Retention:
    """Keeps an agent's newest ``keep_last`` valid checkpoints (mixed into `AgentCheckpoints`).

    Only the listing a save made is considered (newer checkpoints are handled by the next save); a
    manifest is deleted before its payload, so a listed manifest never points to a deleted payload.
    """

    store: Any
    _b: Any
    _dir: str
    _retained: dict[int, CheckpointInfo]
    _seqs_seen: list[int]
    _removals: int

    def _manifest(self, seq: int) -> CheckpointInfo:
        raise NotImplementedError

    def _manifest_path(self, seq: int) -> str:
        raise NotImplementedError

    def _payload_path(self, info: CheckpointInfo) -> str:
        raise NotImplementedError

    def _retain(self, epochs: Mapping[int, int], writer_epoch: int) -> None:
        keep_last = self.store.keep_last
        if keep_last is None:
            return
        # The last listing and this object's saves since (newer ones: next time).
        seqs = sorted(set(self._seqs_seen))
        if len(seqs) <= keep_last:
            return
        valid: list[int] = []
        manifests: dict[int, CheckpointInfo | None] = {}
        for seq in reversed(seqs):
            try:
                info = self._retained.get(seq) or self._manifest(seq)
            except (CheckpointNotFoundError, CorruptCheckpointError):
                manifests[seq] = None
                continue
            manifests[seq] = self._retained[seq] = info
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
                old = manifests.get(seq) or self._retained.get(seq) or self._manifest(seq)
            except CorruptCheckpointError:
                old = None
            except CheckpointNotFoundError:
                with suppress(ValueError):
                    self._seqs_seen.remove(seq)  # deleted by someone else
                continue
            # Manifest first: a listed manifest never points to a payload already deleted by us.
            self._b.remove(self._manifest_path(seq))
            self._retained.pop(seq, None)
            with suppress(ValueError):
                self._seqs_seen.remove(seq)
            removed = True
            if old is not None and not old.inline:
                self._b.remove(self._payload_path(old))
        if removed:
            self._removals += 1
        if removed and self._removals % 16 == 1:  # orphans are rare (crashes): look now and then
            referenced = {
                self._payload_path(info).rsplit("/", 1)[-1]
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
        for name in self._b.names(f"{self._dir}/payloads"):
            m = _PAYLOAD_RE.match(name)
            if m and int(m.group(1)) < writer_epoch and name not in referenced:
                self._b.remove(f"{self._dir}/payloads/{name}")
