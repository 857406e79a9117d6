"""Epoch fencing: which checkpoints are valid, and when a writer must stop.

An activation takes epoch ``e`` by creating ``epochs/e.claim`` (exclusive; ``e`` = newest + 1,
retried on conflict), *then* lists the checkpoints and records ``epochs/e.start`` = the newest valid seq
it restores from. A checkpoint ``(s, a)`` (seq ``s`` written by epoch ``a``) is **valid** unless some epoch
``b > a`` recorded a start ``< s`` (``b`` restored from an older state, so ``s`` was written by a stale copy
after ``b`` looked). A writer of epoch ``a`` refuses early when a newer epoch exists, creates its manifest
exclusively (the loser of a race for a seq re-checks the epochs), and *after* the create lists the epochs
again: if any ``b > a`` has no start yet or a start ``< s`` it raises
:class:`~academy_ray.exception.StaleEpochError`. So a save
that returned was seen by every later activation (it lists after claiming, hence after the save's create),
and a save that a newer activation did not see is refused and ignored by readers. A stale copy learns it
on its next save and can never clobber the live copy's state: the live copy's checkpoints stay valid and
newest, the stale ones are ignored.

This needs an atomic create-if-absent (the claims and the manifests): see
:meth:`academy_ray.store.CheckpointStore.check_safe`.
"""

from __future__ import annotations

from collections.abc import Mapping

MISSING = -1
"""The start of an epoch that has not recorded it yet."""


def is_fenced(seq: int, epoch: int, epochs: Mapping[int, int]) -> bool:
    """Reader rule: (seq, epoch) is fenced if a newer activation recorded that it restored an older seq."""
    return any(b > epoch and start != MISSING and start < seq for b, start in epochs.items())


def writer_is_fenced(seq: int, epoch: int, epochs: Mapping[int, int]) -> bool:
    """Writer rule (conservative): a newer activation that has not recorded its start also fences."""
    return any(b > epoch and (start == MISSING or start < seq) for b, start in epochs.items())
