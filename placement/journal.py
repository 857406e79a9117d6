"""`Journal`: the placement controller's durable record, kept in Ray's GCS key-value store.

The controller is a detached actor with ``max_restarts=-1``; a restart (its process killed, OOM)
would otherwise forget every decision and launcher, so nothing would be re-placed on node loss any
more. Each placed or waiting demand is one entry: the demand, its launcher (pickled: launchers are
picklable by contract), its current decision (None while it waits for capacity after a node loss)
and the cause. The controller writes an entry before it launches, deletes it on release, and reads
them all back when it starts. Inventory reports (what each node holds) are kept the same way, one
small JSON entry per node and key, so that locality survives the restart too. The GCS store outlives
any actor (and, with GCS fault tolerance, the
head node's restart), as Ray Serve's controller relies on for its own checkpoints.

**No secret value is written.** Launchers hold launch arguments, and those carry credentials (an
agent's checkpoint ``storage_options`` with S3 keys, a serving app's API key). Each launcher is
written *sealed* (:func:`placement.secrets.seal`): its secret values are replaced by random
reference ids and kept in memory only, by the journal's secrets holder (a detached actor of the
controller's namespace, :mod:`placement.vault`). A restarted controller adopts the launcher as a
:class:`SealedLauncher`, which fetches the values when it is called again (re-placement); if the
holder is gone too, that call fails with :class:`~placement.errors.SecretsUnavailableError`.

**One journal per controller, so per namespace**: a journal's keys start with its hex-encoded key
(``"<namespace>/<controller name>"``) and a ``.``; a journal reads, lists and deletes only below
its own prefix, and its secrets holder lives in its own namespace.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, replace
from typing import Any

from placement.decision import Decision
from placement.demand import Demand
from placement.errors import SecretsUnavailableError
from placement.inventory import InventoryItem
from placement.secrets import SecretValue, seal, unseal
from placement.vault import VaultClient

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


class SealedLauncher:
    """A launcher as the journal keeps it: sealed, its secret values held by the secrets holder.

    Calling it fetches the secret values, unseals the launcher (once; it then stays in this
    process's memory) and calls it.

    Args:
        name: The demand's name (its values' scope in the holder).
        blob: The launcher, pickled by :func:`placement.secrets.seal`.
        refs: Reference ids of its secret values.
        vault: The holder (set by :meth:`Journal.load`; never pickled).
    """

    def __init__(
        self, name: str, blob: bytes, refs: tuple[str, ...], vault: VaultClient | None = None
    ) -> None:
        self.name = name
        self.blob = blob
        self.refs = refs
        self.vault = vault
        self._launcher: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "blob": self.blob, "refs": self.refs}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["name"], state["blob"], tuple(state["refs"]))  # type: ignore[misc]

    @property
    def resolved(self) -> Any:
        """The unsealed launcher once :meth:`resolve` ran in this process (else None)."""
        return self._launcher

    async def resolve(self) -> Any:
        """The launcher itself, secrets included.

        Raises:
            SecretsUnavailableError: its secret values are gone (holder dead or restarted).
        """
        if self._launcher is None:
            values: dict[str, SecretValue] = {}
            if self.refs:
                if self.vault is None:
                    raise SecretsUnavailableError(
                        f"the launcher of {self.name!r} needs secret values and has no holder"
                    )
                values = await self.vault.get(self.name, list(self.refs))
            self._launcher = unseal(self.blob, values)
        return self._launcher

    async def __call__(self, decision: Decision) -> None:
        launcher = await self.resolve()
        result = launcher(decision)
        if inspect.isawaitable(result):
            await result

    def __repr__(self) -> str:
        return f"SealedLauncher({self.name!r}, {len(self.refs)} secret(s))"


def vault_for(key: str) -> VaultClient:
    """The secrets holder of journal ``key`` (``"<namespace>/<name>"``): actor ``"<name>.secrets"``
    in that namespace (a key without ``/``: in the caller's namespace)."""
    namespace, _, name = key.rpartition("/")
    return VaultClient(namespace or None, f"{name}.secrets")


class Journal:
    """Durable entries of one placement controller, keyed by demand name.

    Args:
        key: Identifies the controller (e.g. ``"<namespace>/<actor name>"``); controllers with the
            same key share (adopt) one journal.
        vault: Holder of the launchers' secret values (default: :func:`vault_for` ``key``).
    """

    def __init__(self, key: str, vault: VaultClient | None = None) -> None:
        self.key = key
        self.vault = vault_for(key) if vault is None else vault
        self._sealed: set[str] = set()  # names whose values the holder may hold
        # One GCS namespace for all journals (a ':' in a GCS namespace breaks its key listing);
        # each controller's keys start with its hex-encoded key and a '.', so no prefix is ambiguous;
        # then "d." and a demand name, or "i.", a node id (hex), "." and an inventory key.
        self._prefix = f"{key.encode().hex()}."
        self._demands = self._prefix + "d."
        self._items = self._prefix + "i."

    def _seal(self, entry: JournalEntry) -> tuple[JournalEntry, dict[str, SecretValue]]:
        launcher = entry.launcher
        if isinstance(launcher, SealedLauncher):
            if launcher.resolved is None:  # adopted, never called: its values are in the holder
                return entry, {}
            launcher = launcher.resolved  # sealed afresh: its values are stored again
        blob, values = seal(launcher)
        sealed = SealedLauncher(entry.demand.name, blob, tuple(values))
        return replace(entry, launcher=sealed), values

    def _after_write(self, stored: JournalEntry) -> None:
        name, refs = stored.demand.name, stored.launcher.refs
        if refs:
            self._sealed.add(name)
            self.vault.retain(name, list(refs))  # values of an overwritten version go
        elif name in self._sealed:
            self._sealed.discard(name)
            self.vault.drop(name)

    def put(self, entry: JournalEntry) -> None:
        """Writes (or overwrites) ``entry`` under its demand's name, its launcher sealed.

        Its secret values go to the secrets holder first (waited for), then the entry to the GCS.
        """
        stored, values = self._seal(entry)
        if values:
            self.vault.put_sync(entry.demand.name, values)
        self._write(stored)
        self._after_write(stored)

    async def put_async(self, entry: JournalEntry) -> None:
        """:meth:`put` for event loops (the holder is awaited, not blocked on)."""
        stored, values = self._seal(entry)
        if values:
            await self.vault.put(entry.demand.name, values)
        self._write(stored)
        self._after_write(stored)

    def _write(self, entry: JournalEntry) -> None:
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
        if name in self._sealed:
            self._sealed.discard(name)
            self.vault.drop(name)

    def load(self) -> tuple[list[JournalEntry], dict[str, str]]:
        """Reads every entry back.

        Returns:
            The entries, and for each entry that could not be read (say, its launcher's class no
            longer imports) the reason, by name. Unreadable entries stay in the store. A launcher
            with secret values comes back as a :class:`SealedLauncher` (its values are fetched
            when it is called); one without is unsealed here.
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
                launcher = entry.launcher
                if isinstance(launcher, SealedLauncher):
                    if launcher.refs:
                        launcher.vault = self.vault
                        self._sealed.add(name)
                    else:
                        entry = replace(entry, launcher=unseal(launcher.blob, {}))
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
        self._sealed.clear()
        self.vault.clear()
