"""`PlacementClient`: driver-side access to the detached placement controller actor."""

from __future__ import annotations

from typing import Any

from placement.controller import Launcher, PlacementController
from placement.decision import Decision
from placement.demand import Demand
from placement.inventory import ItemKind

CONTROLLER_NAME = "academy-placement"


class PlacementClient:
    """Gets or creates the detached controller actor ``name`` in Ray namespace ``namespace``.

    Every async method has a blocking ``*_sync`` twin for scripts. ``ray.init`` must have run.

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
        actor_cls: Any = ray.remote(PlacementController)
        self._actor: Any = actor_cls.options(
            name=name,
            namespace=namespace,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_restarts=-1,
            # Keep the controller on the head node: it must outlive worker-node loss.
            resources={"node:__internal_head__": 0.001},
        ).remote(policy=policy, poll_s=poll_s, journal=f"{namespace}/{name}")
        ray.get(self._actor.ping.remote())

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

    # ------------------------------------------------------------------ blocking
    def place_sync(
        self, demand: Demand, launcher: Launcher, timeout: float | None = None
    ) -> Decision:
        """Blocking :meth:`place`."""
        return self._get(self._actor.place.remote(demand, launcher, timeout))

    def release_sync(self, name: str) -> bool:
        """Blocking :meth:`release`."""
        return self._get(self._actor.release.remote(name))

    def explain_sync(self, name: str) -> Decision | None:
        """Blocking :meth:`explain`."""
        return self._get(self._actor.explain.remote(name))

    def decisions_sync(self) -> list[Decision]:
        """Blocking :meth:`decisions`."""
        return self._get(self._actor.decisions.remote())

    def history_sync(self) -> list[Decision]:
        """Blocking :meth:`history`."""
        return self._get(self._actor.history.remote())

    def pending_sync(self) -> list[Demand]:
        """Blocking :meth:`pending`."""
        return self._get(self._actor.pending.remote())

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
    def _get(ref: Any) -> Any:
        import ray

        return ray.get(ref)
