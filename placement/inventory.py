"""`Inventory`: which data, model weights and checkpoints are already local on which node.

Producers (node-local caches such as the serving model cache, the agent runtime) *report* what a
node holds; the placement policies *read* it. The API is deliberately tiny and stable:

* :meth:`Inventory.record` ``(node_id, key, nbytes, kind)``: ``key`` is now on ``node_id``.
* :meth:`Inventory.forget` ``(node_id, key)``: it was evicted.
* :meth:`Inventory.drop_node` ``(node_id)``: the node is gone (everything on it is lost).
* :meth:`Inventory.local_bytes` ``(node_id, keys)``: how many of those bytes are already there.

Keys are free-form strings: use the data URI for data, the model id for model weights and a
checkpoint key of your choice (e.g. ``"checkpoint:<agent name>"``) for agent state. Out of process
(e.g. from a cache actor on another node) report through
:meth:`placement.client.PlacementClient.report`, which calls :meth:`record` in the controller.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, Field


class ItemKind(StrEnum):
    """What kind of bytes an inventory entry holds."""

    DATA = "data"
    MODEL = "model"
    CHECKPOINT = "checkpoint"


class InventoryItem(BaseModel):
    """One key held by one node."""

    node_id: str
    key: str
    nbytes: int = Field(ge=0)
    kind: ItemKind


class Inventory:
    """Per-node index of locally held keys (with sizes) plus a reverse index key -> nodes.

    Thread-safe. All methods are O(number of keys involved), never O(number of nodes), so a
    policy can ask "where is this key?" on a 10,000-node cluster cheaply (:meth:`holders`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_node: dict[str, dict[str, InventoryItem]] = {}
        self._by_key: dict[str, dict[str, int]] = {}

    def record(self, node_id: str, key: str, nbytes: int, kind: ItemKind | str) -> None:
        """Records that ``node_id`` now holds ``key`` (``nbytes`` bytes of ``kind``).

        Recording the same key again updates its size and kind.

        Raises:
            ValueError: ``nbytes`` is negative, or ``kind`` is not one of :class:`ItemKind`.
        """
        item = InventoryItem(node_id=node_id, key=key, nbytes=int(nbytes), kind=ItemKind(kind))
        with self._lock:
            self._by_node.setdefault(node_id, {})[key] = item
            self._by_key.setdefault(key, {})[node_id] = item.nbytes

    def forget(self, node_id: str, key: str) -> None:
        """Records that ``node_id`` no longer holds ``key`` (no error if it never did)."""
        with self._lock:
            self._by_node.get(node_id, {}).pop(key, None)
            holders = self._by_key.get(key)
            if holders is not None:
                holders.pop(node_id, None)
                if not holders:
                    del self._by_key[key]

    def drop_node(self, node_id: str) -> None:
        """Forgets everything a (dead or removed) node held."""
        with self._lock:
            for key in self._by_node.pop(node_id, {}):
                holders = self._by_key.get(key)
                if holders is not None:
                    holders.pop(node_id, None)
                    if not holders:
                        del self._by_key[key]

    def local_bytes(self, node_id: str, keys: Iterable[str]) -> int:
        """Total bytes of ``keys`` already held by ``node_id`` (each distinct key counted once)."""
        with self._lock:
            held = self._by_node.get(node_id, {})
            return sum(held[k].nbytes for k in set(keys) if k in held)

    def holders(self, key: str) -> dict[str, int]:
        """Nodes holding ``key``, mapped to their byte count (a copy)."""
        with self._lock:
            return dict(self._by_key.get(key, {}))

    def size_of(self, key: str) -> int:
        """Best known size of ``key`` (largest any node reported), 0 if nobody holds it."""
        with self._lock:
            holders = self._by_key.get(key)
            return max(holders.values()) if holders else 0

    def items(self, node_id: str | None = None) -> list[InventoryItem]:
        """All entries, or those of one node."""
        with self._lock:
            nodes = [node_id] if node_id is not None else list(self._by_node)
            return [item for n in nodes for item in self._by_node.get(n, {}).values()]

    def nodes(self) -> list[str]:
        """Nodes holding at least one key."""
        with self._lock:
            return [n for n, held in self._by_node.items() if held]
