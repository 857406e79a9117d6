"""`PlacementClient`: driver-side access to the detached placement controller actor."""

from __future__ import annotations

from typing import Any

from placement.actors import find_actor, head_singleton
from placement.controller import Launcher, PlacementController
from placement.decision import Decision
from placement.demand import Demand
from placement.inventory import ItemKind

CONTROLLER_NAME = "academy-placement"


class PlacementClient:
    """Gets or creates the detached controller actor ``name`` in Ray namespace ``namespace``.

    The one way to the controller: every package calls it through this client (`attach` for callers that
    must never create one). Every async method has a blocking ``*_sync`` twin for scripts (with an
    optional ``timeout``). ``ray.init`` must have run.

    Args:
        namespace: Ray namespace of the controller (one controller per namespace).
        name: Actor name of the controller.
        policy: Policy name used when the controller is created (ignored if it already exists).
        poll_s: Node-watch / queue-retry period used when the controller is created.
    """

    def __init__(
        self,
        namespace: str,
        name: str = CONTROLLER_NAME,
        policy: str = "locality",
        poll_s: float = 0.5,
    ) -> None:
        import ray

        self.namespace = namespace
        self.name = name
        self._actor: Any = head_singleton(
            PlacementController,
            name,
            namespace,
            policy=policy,
            poll_s=poll_s,
            journal=f"{namespace}/{name}",
        )
        ray.get(self._actor.ping.remote())

    @classmethod
    def attach(cls, namespace: str, name: str = CONTROLLER_NAME) -> PlacementClient | None:
        """A client of the namespace's running controller, or None when there is none (never creates
        one: for callers that only ask, release or report)."""
        actor = find_actor(name, namespace)
        if actor is None:
            return None
        client = cls.__new__(cls)
        client.namespace, client.name, client._actor = namespace, name, actor
        return client

    @property
    def actor(self) -> Any:
        """The controller's Ray actor handle."""
        return self._actor

    # ------------------------------------------------------------------ async
    async def place(
        self, demand: Demand, launcher: Launcher, timeout: float | None = None
    ) -> Decision:
        """See :meth:`PlacementController.place`; the launcher runs inside the controller."""
        return await self._actor.place.remote(demand, launcher, timeout)

    async def release(self, name: str) -> bool:
        """See :meth:`PlacementController.release`."""
        return await self._actor.release.remote(name)

    async def explain(self, name: str) -> Decision | None:
        """See :meth:`PlacementController.explain`."""
        return await self._actor.explain.remote(name)

    async def decisions(self) -> list[Decision]:
        """See :meth:`PlacementController.decisions`."""
        return await self._actor.decisions.remote()

    async def history(self) -> list[Decision]:
        """See :meth:`PlacementController.history`."""
        return await self._actor.history.remote()

    async def pending(self) -> list[Demand]:
        """See :meth:`PlacementController.pending`."""
        return await self._actor.pending.remote()

    async def failures(self) -> dict[str, str]:
        """See :meth:`PlacementController.failures`."""
        return await self._actor.failures.remote()

    async def report(self, node_id: str, key: str, nbytes: int, kind: ItemKind | str) -> None:
        """Reports that ``node_id`` holds ``key`` (``nbytes`` bytes; kind data/model/checkpoint)."""
        await self._actor.report.remote(node_id, key, int(nbytes), ItemKind(kind).value)

    async def forget(self, node_id: str, key: str) -> None:
        """Reports that ``node_id`` evicted ``key``."""
        await self._actor.forget.remote(node_id, key)

    async def release_all(self) -> int:
        """See :meth:`PlacementController.release_all`."""
        return await self._actor.release_all.remote()

    async def replacing(self, name: str) -> bool:
        """See :meth:`PlacementController.replacing`."""
        return await self._actor.replacing.remote(name)

    async def info(self) -> dict[str, Any]:
        """See :meth:`PlacementController.info`."""
        return await self._actor.info.remote()

    def release_nowait(self, name: str) -> None:
        """Asks for :meth:`release` without waiting for the answer (from callbacks and shutdown paths)."""
        self._actor.release.remote(name)

    def report_nowait(self, node_id: str, key: str, nbytes: int, kind: ItemKind | str) -> None:
        """:meth:`report` without waiting (inventory feeds that must never block their caller)."""
        self._actor.report.remote(node_id, key, int(nbytes), ItemKind(kind).value)

    def forget_nowait(self, node_id: str, key: str) -> None:
        """:meth:`forget` without waiting."""
        self._actor.forget.remote(node_id, key)

    # ------------------------------------------------------------------ blocking
    def place_sync(
        self, demand: Demand, launcher: Launcher, timeout: float | None = None
    ) -> Decision:
        """Blocking :meth:`place`."""
        return self._get(self._actor.place.remote(demand, launcher, timeout))

    def release_sync(self, name: str) -> bool:
        """Blocking :meth:`release`."""
        return self._get(self._actor.release.remote(name))

    def explain_sync(self, name: str, timeout: float | None = None) -> Decision | None:
        """Blocking :meth:`explain`."""
        return self._get(self._actor.explain.remote(name), timeout)

    def replacing_sync(self, name: str, timeout: float | None = None) -> bool:
        """Blocking :meth:`replacing`."""
        return self._get(self._actor.replacing.remote(name), timeout)

    def decisions_sync(self) -> list[Decision]:
        """Blocking :meth:`decisions`."""
        return self._get(self._actor.decisions.remote())

    def history_sync(self) -> list[Decision]:
        """Blocking :meth:`history`."""
        return self._get(self._actor.history.remote())

    def pending_sync(self, timeout: float | None = None) -> list[Demand]:
        """Blocking :meth:`pending`."""
        return self._get(self._actor.pending.remote(), timeout)

    def failures_sync(self) -> dict[str, str]:
        """Blocking :meth:`failures`."""
        return self._get(self._actor.failures.remote())

    def report_sync(self, node_id: str, key: str, nbytes: int, kind: ItemKind | str) -> None:
        """Blocking :meth:`report`."""
        self._get(self._actor.report.remote(node_id, key, int(nbytes), ItemKind(kind).value))

    def forget_sync(self, node_id: str, key: str) -> None:
        """Blocking :meth:`forget`."""
        self._get(self._actor.forget.remote(node_id, key))

    def release_all_sync(self) -> int:
        """Blocking :meth:`release_all`."""
        return self._get(self._actor.release_all.remote())

    def shutdown(self) -> None:
        """Releases every reservation and kills the controller actor (and its secrets holder)."""
        import ray

        from placement.journal import vault_for

        try:
            self.release_all_sync()
        finally:
            ray.kill(self._actor)
            vault_for(f"{self.namespace}/{self.name}").kill()

    @staticmethod
    def _get(ref: Any, timeout: float | None = None) -> Any:
        import ray

        return ray.get(ref, timeout=timeout)
