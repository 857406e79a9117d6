"""The secrets holder: a detached actor that keeps a journal's secret values in memory only.

The journal writes launchers sealed (:mod:`placement.secrets`): their secret values stay out of
the GCS key-value store and live here instead, by demand name and reference id. The actor is
created without arguments (values only ever arrive in method calls, which Ray does not keep in
the GCS), runs on the head node next to the controller, and is never restarted: when it dies
(say, the head node restarts) its secrets are gone, and an adopted launcher that needs them
fails with :class:`~placement.errors.SecretsUnavailableError` instead of running without them.
"""

from __future__ import annotations

import logging
from typing import Any

from placement.actors import head_singleton
from placement.errors import SecretsUnavailableError
from placement.secrets import SecretValue

log = logging.getLogger(__name__)


class SecretVault:
    """Actor body: secret values by demand name and reference id, in this process's memory."""

    def __init__(self) -> None:
        self._values: dict[str, dict[str, SecretValue]] = {}

    def put(self, name: str, values: dict[str, SecretValue]) -> None:
        """Adds ``values`` (by reference id) to ``name``'s."""
        self._values.setdefault(name, {}).update(values)

    def get(self, name: str, refs: list[str]) -> dict[str, SecretValue]:
        """``name``'s values of ``refs`` (those it holds)."""
        held = self._values.get(name, {})
        return {ref: held[ref] for ref in refs if ref in held}

    def retain(self, name: str, refs: list[str]) -> None:
        """Keeps only ``refs`` of ``name``'s values (after its journal entry was rewritten)."""
        held = self._values.get(name)
        if held is not None:
            self._values[name] = {ref: v for ref, v in held.items() if ref in set(refs)}

    def drop(self, name: str) -> None:
        """Forgets ``name``'s values."""
        self._values.pop(name, None)

    def clear(self) -> int:
        """Forgets everything; returns how many names held values."""
        count = len(self._values)
        self._values.clear()
        return count

    def names(self) -> list[str]:
        """The names holding values."""
        return sorted(self._values)


class VaultClient:
    """Access to one journal's :class:`SecretVault` actor (created on the first secret stored).

    Args:
        namespace: Ray namespace of the vault (the controller's); None: the caller's namespace.
        name: Actor name of the vault.
    """

    def __init__(self, namespace: str | None, name: str) -> None:
        self.namespace = namespace
        self.name = name
        self._handle: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "name": self.name, "_handle": None}

    def _lookup(self) -> Any:
        import ray

        if self._handle is None:
            try:
                self._handle = ray.get_actor(self.name, namespace=self.namespace)
            except ValueError:
                return None
        return self._handle

    def _create(self) -> Any:

        if self._handle is None:
            # A restarted holder would be empty: better gone than silently empty.
            self._handle = head_singleton(SecretVault, self.name, self.namespace, max_restarts=0)
        return self._handle

    async def put(self, name: str, values: dict[str, SecretValue]) -> None:
        """Stores ``values`` for ``name`` (creates the vault if needed) and waits until it holds them."""
        import ray

        try:
            await self._create().put.remote(name, values)
        except ray.exceptions.RayActorError:
            self._handle = None  # it died: a new one (it holds only what is stored from now on)
            await self._create().put.remote(name, values)

    def put_sync(self, name: str, values: dict[str, SecretValue]) -> None:
        """Blocking :meth:`put` (for callers outside an event loop)."""
        import ray

        try:
            ray.get(self._create().put.remote(name, values))
        except ray.exceptions.RayActorError:
            self._handle = None
            ray.get(self._create().put.remote(name, values))

    async def get(self, name: str, refs: list[str]) -> dict[str, SecretValue]:
        """``name``'s values of ``refs``.

        Raises:
            SecretsUnavailableError: the vault is gone, or holds not all of them.
        """
        import ray

        where = f"secrets holder {self.name!r} (namespace {self.namespace!r})"
        handle = self._lookup()
        if handle is None:
            raise SecretsUnavailableError(
                f"the launcher of {name!r} needs {len(refs)} secret value(s) kept out of the "
                f"placement journal, but the {where} is gone (it lives in memory only: the head "
                "node or the holder restarted); place it again with its credentials"
            )
        try:
            values: dict[str, SecretValue] = await handle.get.remote(name, list(refs))
        except ray.exceptions.RayActorError as exc:
            self._handle = None
            raise SecretsUnavailableError(
                f"the {where} of {name!r}'s launcher died: {exc}"
            ) from None
        if len(values) < len(set(refs)):
            raise SecretsUnavailableError(
                f"the {where} holds {len(values)} of the {len(set(refs))} secret value(s) of "
                f"{name!r}'s launcher; place it again with its credentials"
            )
        return values

    def retain(self, name: str, refs: list[str]) -> None:
        """Drops ``name``'s values other than ``refs`` (fire and forget; no vault: nothing to do)."""
        handle = self._lookup()
        if handle is not None:
            handle.retain.remote(name, list(refs))

    def drop(self, name: str) -> None:
        """Forgets ``name``'s values (fire and forget)."""
        handle = self._lookup()
        if handle is not None:
            handle.drop.remote(name)

    def clear(self) -> None:
        """Forgets every value (fire and forget)."""
        handle = self._lookup()
        if handle is not None:
            handle.clear.remote()

    def kill(self) -> None:
        """Kills the vault actor (its values are gone; no error if there is none)."""
        import ray

        handle = self._lookup()
        self._handle = None
        if handle is not None:
            ray.kill(handle)
