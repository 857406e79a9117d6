"""`Journal`: the placement controller's durable record, kept in Ray's GCS key-value store.

The controller is a detached actor with ``max_restarts=-1``; a restart (its process killed, OOM)
would otherwise forget every decision and launcher, so nothing would be re-placed on node loss any
more. Each placed or waiting demand is one entry: the demand, its launcher (pickled: launchers are
picklable by contract), its current decision (None while it waits for capacity after a node loss)
and the cause. The controller writes an entry before it launches, deletes it on release, and reads
them all back when it starts. Inventory reports (what each node holds) are kept the same way, one
small JSON entry per node and key, so that locality survives the restart too. The GCS store outlives any actor (and, with GCS fault tolerance, the
head node's restart), as Ray Serve's controller relies on for its own checkpoints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from placement.decision import Decision
from placement.demand import Demand
from placement.inventory import InventoryItem

log = logging.getLogger(__name__)

KV_NAMESPACE = "academy-placement"

LARGE_ENTRY_BYTES = 16 << 20
"""Entries above this size are written with a warning: the GCS keeps its store in the head's memory
(measured here: 64 MB put + get 0.44 s, 200 MB 1.6 s)."""


@dataclass(frozen=True)
class JournalEntry:
    """One demand as the controller last recorded it.

    Attributes:
        demand: What was asked for.
        launcher: The demand's launcher.
        decision: Where it runs now; None while it waits to be placed again.
        cause: Why it was (or will be) placed: ``"placed"`` or ``"node <id> lost"``.
    """

    demand: Demand
    launcher: Any
    decision: Decision | None
    cause: str


class Journal:
    """Durable entries of one placement controller, keyed by demand name.

    Args:
        key: Identifies the controller (e.g. ``"<namespace>/<actor name>"``); controllers with the
            same key share (adopt) one journal.
    """

    def __init__(self, key: str) -> None:
        self.key = key
        # One GCS namespace for all journals (a ':' in a GCS namespace breaks its key listing);
        # each controller's keys start with its hex-encoded key and a '.', so no prefix is ambiguous;
        # then "d." and a demand name, or "i.", a node id (hex), "." and an inventory key.
        self._prefix = f"{key.encode().hex()}."
        self._demands = self._prefix + "d."
        self._items = self._prefix + "i."

    def put(self, entry: JournalEntry) -> None:
        """Writes (or overwrites) ``entry`` under its demand's name."""
        from ray import cloudpickle
        from ray.experimental import internal_kv

        value = cloudpickle.dumps(entry)
        if len(value) > LARGE_ENTRY_BYTES:
            log.warning(
                "placement journal entry of %r is %.0f MB (its launcher's arguments, e.g. an agent's "
                "constructor arguments): the GCS holds it in the head's memory; pass big inputs by URI",
                entry.demand.name,
                len(value) / 1e6,
            )
        internal_kv._internal_kv_put(
            self._demands + entry.demand.name, value, overwrite=True, namespace=KV_NAMESPACE
        )

    def delete(self, name: str) -> None:
        """Forgets ``name`` (no error if it was not there)."""
        from ray.experimental import internal_kv

        internal_kv._internal_kv_del(self._demands + name, namespace=KV_NAMESPACE)

    def load(self) -> tuple[list[JournalEntry], dict[str, str]]:
        """Reads every entry back.

        Returns:
            The entries, and for each entry that could not be read (say, its launcher's class no
            longer imports) the reason, by name. Unreadable entries stay in the store.
        """
        from ray import cloudpickle
        from ray.experimental import internal_kv

        entries: list[JournalEntry] = []
        unreadable: dict[str, str] = {}
        for raw_key in internal_kv._internal_kv_list(self._demands, namespace=KV_NAMESPACE):
            name = raw_key.decode()[len(self._demands) :]
            value = internal_kv._internal_kv_get(raw_key, namespace=KV_NAMESPACE)
            if value is None:
                continue  # deleted meanwhile
            try:
                entry = cloudpickle.loads(value)
                if not isinstance(entry, JournalEntry):
                    raise TypeError(f"not a journal entry: {type(entry).__name__}")
            except Exception as exc:  # noqa: BLE001 - reported by name, never fatal to the rest
                log.error("placement journal entry %r unreadable: %r", name, exc)
                unreadable[name] = f"journal entry unreadable: {exc!r}"
                continue
            entries.append(entry)
        return entries, unreadable

    def put_item(self, item: InventoryItem) -> None:
        """Records an inventory report (``item.node_id`` holds ``item.key``)."""
        from ray.experimental import internal_kv

        internal_kv._internal_kv_put(
            f"{self._items}{item.node_id}.{item.key}",
            item.model_dump_json(),
            overwrite=True,
            namespace=KV_NAMESPACE,
        )

    def delete_item(self, node_id: str, key: str) -> None:
        """Forgets that ``node_id`` holds ``key``."""
        from ray.experimental import internal_kv

        internal_kv._internal_kv_del(f"{self._items}{node_id}.{key}", namespace=KV_NAMESPACE)

    def delete_node(self, node_id: str) -> None:
        """Forgets everything ``node_id`` held (it died)."""
        from ray.experimental import internal_kv

        internal_kv._internal_kv_del(
            f"{self._items}{node_id}.", del_by_prefix=True, namespace=KV_NAMESPACE
        )

    def load_items(self) -> list[InventoryItem]:
        """Every inventory report kept (unreadable ones are logged and skipped)."""
        from ray.experimental import internal_kv

        items = []
        for raw_key in internal_kv._internal_kv_list(self._items, namespace=KV_NAMESPACE):
            value = internal_kv._internal_kv_get(raw_key, namespace=KV_NAMESPACE)
            if value is None:
                continue
            try:
                items.append(InventoryItem.model_validate_json(value))
            except ValueError as exc:
                log.error("placement journal inventory entry %r unreadable: %r", raw_key, exc)
        return items

    def clear(self) -> None:
        """Deletes every entry."""
        from ray.experimental import internal_kv

        internal_kv._internal_kv_del(self._prefix, del_by_prefix=True, namespace=KV_NAMESPACE)
