"""Model replicas placed by ``placement``: where the weights already are, on nodes with free GPUs.

Ray Serve starts and restarts the replica actors itself, so the choice is made by ``placement``
and handed to Serve as a constraint: every replica slot of an application is a
:class:`~placement.Demand` (the replica's CPUs/GPUs, *all* served model ids as locality keys, so
the node caches' inventory pulls it to the nodes holding the most weight bytes; ``reserve=False``
because the Serve replica claims its own resources), and the deployment's ``ray_actor_options``
get a ``ray.io/node-id in(...)`` label selector of the chosen nodes.

A detached :class:`ReplicaPlacer` actor per application (on the head node) owns this: it places
the slots, deploys the app, and is every slot's launcher. When a node dies, the placement
controller re-places that slot (cause ``"node <id> lost"``) and calls the launcher, and the placer
redeploys the app with the new node set. Serve then rolls its replicas over to the new
constraint; each replica restarts once (warm: the weights stay in its node's cache).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from placement.decision import Decision
from serving.builder import build_app
from serving.config import ReplicaPlacement
from serving.slots import place_slot

logger = logging.getLogger(__name__)

PLACER_PREFIX = "serving-placer:"


def slot_name(app_name: str, index: int) -> str:
    """The placement name of replica slot ``index`` of ``app_name`` (what ``explain`` takes)."""
    return f"serve:{app_name}:{index}"


def placer_name(app_name: str) -> str:
    """Actor name of ``app_name``'s :class:`ReplicaPlacer`."""
    return PLACER_PREFIX + app_name


class RelocateLauncher:
    """The placement launcher of a replica slot: hands the decision to the app's placer.

    Picklable (it travels to the placement controller) and idempotent: the placer keeps one
    decision per slot and deploys whatever the latest ones are. It carries the app's specs and
    config, so a placer that restarted (and lost its memory) can still redeploy.
    """

    def __init__(self, app_name: str, namespace: str, specs: list[Any], config: Any) -> None:
        self.app_name = app_name
        self.namespace = namespace
        self.specs = specs
        self.config = config

    def __call__(self, decision: Decision) -> None:
        import ray

        placer = ray.get_actor(placer_name(self.app_name), namespace=self.namespace)
        placer.relocate.remote(decision, self.specs, self.config)


class ReplicaPlacer:
    """Detached actor body that places one serving app's replicas and redeploys them on node loss.

    Args:
        app_name: the Serve application.
        placement: the placement settings.
    """

    def __init__(self, app_name: str, placement: ReplicaPlacement) -> None:
        self.app_name = app_name
        self.placement = placement
        self._specs: list[Any] = []
        self._config: Any = None
        self._slots: dict[str, Decision] = {}
        self._deployed = False
        self._redeploy: asyncio.Task[None] | None = None
        self._deploy_lock = asyncio.Lock()
        self._redeploys = 0
        self._last_error: str | None = None
        self._client: Any = None

    # ------------------------------------------------------------------ placing
    async def _placement_client(self) -> Any:
        if self._client is None:
            from placement.client import PlacementClient

            self._client = await asyncio.to_thread(PlacementClient, self.placement.namespace)
        return self._client

    async def sync_inventory(self, cache_config: Any) -> int:
        """Reports what every running node cache holds to the placement inventory.

        Caches report changes themselves; this catches up on copies made before the placement
        controller existed. Returns the number of (node, model) entries reported.
        """
        from placement.inventory import ItemKind
        from serving.cache import node_caches

        client = await self._placement_client()
        reported = 0
        for cache in node_caches(cache_config):
            try:
                node_id, held = await cache.node_id.remote(), await cache.inventory.remote()
            except Exception as exc:  # noqa: BLE001 - a cache on a dying node: skip it
                logger.info("node cache not reachable for the inventory: %r", exc)
                continue
            for model_id, nbytes in held.items():
                await client.report(node_id, model_id, nbytes, ItemKind.MODEL)
                reported += 1
        return reported

    async def _place_slot(self, index: int, avoid: tuple[str, ...]) -> Decision:
        client = await self._placement_client()
        launcher = RelocateLauncher(
            self.app_name, self.placement.namespace, self._specs, self._config
        )
        name = slot_name(self.app_name, index)
        return await place_slot(
            client, name, self._specs, self._config, self.placement, launcher, avoid
        )

    async def deploy(self, specs: list[Any], config: Any) -> list[Decision]:
        """Places ``config.replicas`` replica slots and deploys the app on the chosen nodes.

        Args:
            specs: the :class:`~serving.spec.ModelSpec` list served.
            config: the app's :class:`~serving.config.ServingConfig`.

        Returns:
            One decision per replica slot.

        Raises:
            placement.InfeasibleDemandError: no live node could ever hold a replica (say, GPUs
                asked for and none in the cluster); nothing is deployed.
            placement.PlacementTimeoutError: no room for a replica within ``timeout_s``.
        """
        if config.cache.placement_namespace is None:
            cache = config.cache.model_copy(
                update={"placement_namespace": self.placement.namespace}
            )
            config = config.model_copy(update={"cache": cache})
        async with self._deploy_lock:
            self._specs, self._config = list(specs), config
            self._client = None  # the namespace's controller may have been replaced since
            await self.sync_inventory(config.cache)
            client = await self._placement_client()
            for name in [n for n in self._slots if self._index(n) >= config.replicas]:
                await client.release(name)  # the app shrank
                self._slots.pop(name, None)
            chosen: list[str] = []
            try:
                for index in range(config.replicas):
                    avoid = tuple(chosen) if self.placement.spread else ()
                    decision = await self._place_slot(index, avoid)
                    self._slots[decision.name] = decision
                    chosen.append(decision.node_id)
                await self._run()
            except BaseException:
                if not self._deployed:
                    await self._release_all()  # nothing runs: give every slot back
                raise
            self._deployed = True
            return self.decisions()

    @staticmethod
    def _index(name: str) -> int:
        return int(name.rsplit(":", 1)[1])

    async def _sync_slots(self) -> None:
        """Merges in the controller's decisions for this app's slots (the placement source of truth)."""
        client = await self._placement_client()
        prefix = slot_name(self.app_name, 0)[:-1]
        for decision in await client.decisions():
            if not decision.name.startswith(prefix):
                continue
            mine = self._slots.get(decision.name)
            if mine is None or mine.generation < decision.generation:
                self._slots[decision.name] = decision

    async def _run(self) -> None:
        from ray import serve

        await self._sync_slots()
        nodes = [d.node_id for d in self.decisions()]
        app = build_app(self._specs, self._config, replica_nodes=nodes)
        await asyncio.to_thread(
            serve.run, app, name=self._config.app_name, route_prefix=self._config.route_prefix
        )

    # ------------------------------------------------------------------ re-placement
    async def relocate(
        self, decision: Decision, specs: list[Any] | None = None, config: Any = None
    ) -> None:
        """Launcher target: records a slot's (new) decision; redeploys if the app is running.

        ``specs``/``config`` come with the launcher: a placer that restarted adopts them (the app
        is running, since its slots have launchers).
        """
        if self._config is None and config is not None:
            self._specs, self._config, self._deployed = list(specs or []), config, True
        current = self._slots.get(decision.name)
        if current is not None and current.generation > decision.generation:
            return  # a late, older decision
        self._slots[decision.name] = decision
        if self._deployed and (self._redeploy is None or self._redeploy.done()):
            self._redeploy = asyncio.get_running_loop().create_task(self._redeploy_soon())

    async def _redeploy_soon(self) -> None:
        await asyncio.sleep(0.5)  # several slots of one lost node: one redeploy
        async with self._deploy_lock:
            if not self._deployed:
                return  # removed meanwhile
            try:
                if not await self._app_exists():
                    # Deleted behind our back (``serve.delete`` without ``stop_models``): never
                    # resurrect it; give its slots back instead.
                    logger.info("%s was deleted: releasing its replica slots", self.app_name)
                    self._deployed = False
                    await self._release_all()
                    return
                await self._run()
                self._redeploys += 1
                self._last_error = None
            except Exception as exc:
                logger.exception("redeploying %s after a re-placement failed", self.app_name)
                self._last_error = repr(exc)

    async def _app_exists(self) -> bool:
        from ray import serve

        status = await asyncio.to_thread(serve.status)
        return self._config.app_name in status.applications

    # ------------------------------------------------------------------ status
    def decisions(self) -> list[Decision]:
        """The current decision of every replica slot, by slot index."""
        return sorted(self._slots.values(), key=lambda d: self._index(d.name))

    def status(self) -> dict[str, Any]:
        """Slots, redeploys after node loss, and the last redeploy error (None: none)."""
        return {
            "app_name": self.app_name,
            "nodes": [d.node_id for d in self.decisions()],
            "generations": [d.generation for d in self.decisions()],
            "redeploys": self._redeploys,
            "last_error": self._last_error,
            "redeploying": self._redeploy is not None and not self._redeploy.done(),
        }

    async def _release_all(self) -> None:
        client = await self._placement_client()
        for name in list(self._slots):
            await client.release(name)
        self._slots.clear()

    async def remove(self) -> None:
        """Releases every slot (call after ``serve.delete`` of the app).

        Never creates a placement controller: when the namespace's controller is gone already,
        its slots went with it.
        """
        import ray

        from placement import PlacementClient

        async with self._deploy_lock:
            self._deployed = False
            if PlacementClient.attach(self.placement.namespace) is None:
                self._slots.clear()
                return
            try:
                await self._release_all()
            except ray.exceptions.RayActorError as exc:  # it died meanwhile: nothing to release
                logger.info("placement controller gone while releasing slots: %r", exc)
                self._slots.clear()


def replica_placer(app_name: str, placement: ReplicaPlacement) -> Any:
    """Gets or creates ``app_name``'s detached :class:`ReplicaPlacer` actor (on the head node)."""
    from placement.actors import head_singleton

    return head_singleton(
        ReplicaPlacer,
        placer_name(app_name),
        placement.namespace,
        app_name,
        placement,
        max_task_retries=-1,  # relocate() is idempotent: a call caught by a restart is sent again
    )


def remove_placer(app_name: str, placement: ReplicaPlacement) -> bool:
    """Releases ``app_name``'s replica slots and kills its placer; False if it had none."""
    import ray

    try:
        placer = ray.get_actor(placer_name(app_name), namespace=placement.namespace)
    except ValueError:
        return False
    try:
        ray.get(placer.remove.remote())
    finally:
        ray.kill(placer)
    return True
