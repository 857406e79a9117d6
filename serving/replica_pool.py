"""The model replicas of ``routing="policy"``, added and removed while the app runs.

Each replica is a single-replica Serve deployment of :class:`~serving.managed_replica.
ManagedModelServer`. The app is deployed with ``ServingConfig.replicas`` of them
(``ModelServer-<i>`` inside the app; never removed). The policy router
(:mod:`serving.policy_router`) adds more, up to ``ServingConfig.max_replicas``, when the
Ray-free :class:`~serving.policy.ReplicaScaler` says so, and removes them again once drained:
each one added is a Serve application of its own (``<app>--replica-<i>``, not exposed over HTTP),
so that adding or removing one never redeploys the ingress or the other replicas. With
``ServingConfig.placement`` its node is chosen by ``placement`` as for the app's own replicas
(slot ``serve:<app>/extra:<i>``; ``academy-ray explain`` takes it) and the replica is held there
by a label selector. An added replica whose node is lost is not re-placed: the router drops it
when it stops answering, and the scaler adds another if the load still calls for it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from placement.decision import Decision
from placement.table import NODE_ID_LABEL
from serving.config import ServingConfig
from serving.deployment import ReplicaConfig
from serving.managed_replica import ManagedModelServer
from serving.slots import place_slot
from serving.spec import ModelSpec
from serving.tensor_parallel import deployment_options, replica_shape

logger = logging.getLogger(__name__)

DEPLOYMENT = "ModelServer"
"""Deployment name inside each added replica's application."""


def extra_app_prefix(app_name: str) -> str:
    """Name prefix of ``app_name``'s added replica applications."""
    return f"{app_name}--replica-"


def extra_slot_name(app_name: str, index: int) -> str:
    """The placement name of added replica ``index`` (what ``explain`` takes)."""
    return f"serve:{app_name}/extra:{index}"


def extra_replica_apps(app_name: str) -> dict[int, str]:
    """The running added replicas of ``app_name``: index -> Serve application name."""
    from ray import serve

    prefix = extra_app_prefix(app_name)
    return {
        int(name[len(prefix) :]): name
        for name in serve.status().applications
        if name.startswith(prefix) and name[len(prefix) :].isdigit()
    }


class StayLauncher:
    """Placement launcher of an added replica's slot: does nothing (the router replaces a lost
    replica itself, see the module docstring). Picklable and idempotent."""

    def __call__(self, decision: Decision) -> None:
        logger.info("added replica slot %s re-placed; the router replaces it", decision.name)


class ReplicaPool:
    """Builds, adds and removes managed model replicas (see the module docstring).

    Picklable: it travels inside the policy router to the ingress, which calls :meth:`add` and
    :meth:`remove`.

    Args:
        specs: the models served.
        config: the app's settings.
        replica: what each replica does.
        actor_options: each replica's ``ray_actor_options`` (without a node constraint).
    """

    def __init__(
        self,
        specs: list[ModelSpec],
        config: ServingConfig,
        replica: ReplicaConfig,
        actor_options: dict[str, Any],
    ) -> None:
        self.specs = list(specs)
        self.config = config
        self.replica = replica
        self.actor_options = actor_options

    def deployment(self, name: str, node_id: str | None = None) -> Any:
        """A single-replica deployment of a managed replica (on ``node_id`` when given)."""
        from ray import serve
        from ray.serve.config import BackpressureConfig

        options = dict(self.actor_options)
        if node_id:
            options["label_selector"] = {NODE_ID_LABEL: f"in({node_id})"}
        shape = replica_shape(self.specs, self.config.replica_cpus, self.config.replica_gpus)
        group, options = deployment_options(shape, {}, options)  # tensor-parallel bundles
        backpressure = BackpressureConfig(
            status_code=503, retry_after_s=self.config.retry_after_seconds
        )
        return (
            serve.deployment(ManagedModelServer)  # type: ignore[attr-defined]
            .options(
                name=name,
                num_replicas=1,
                max_ongoing_requests=self.config.max_ongoing_requests,
                max_queued_requests=self.config.max_queued_requests,
                backpressure_config=backpressure,
                ray_actor_options=options,
                **group,
            )
            .bind(self.specs, self.replica)
        )

    async def add(self, index: int, avoid: tuple[str, ...] = ()) -> Any:
        """Places (if the app is placed) and deploys added replica ``index``; returns its handle
        once it runs. ``avoid``: nodes to keep off while others fit (spread).

        Raises:
            placement.InfeasibleDemandError, placement.PlacementTimeoutError: no node for it.
            TimeoutError: it did not start within ``placement.timeout_s`` (120 s unplaced).
        """
        from ray import serve

        node_id = None
        if self.config.placement is not None:
            node_id = (await self._place(index, avoid)).node_id
        name = extra_app_prefix(self.config.app_name) + str(index)
        timeout = self.config.placement.timeout_s if self.config.placement else 120.0
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(
                    serve.run, self.deployment(DEPLOYMENT, node_id), name=name, route_prefix=None
                ),
                timeout,
            )
        except BaseException:
            await self.remove(index)
            raise

    async def remove(self, index: int) -> None:
        """Deletes added replica ``index`` (its requests should have finished) and releases its
        slot."""
        from ray import serve

        name = extra_app_prefix(self.config.app_name) + str(index)
        await asyncio.to_thread(serve.delete, name)
        if self.config.placement is not None:
            client = self._client()
            if client is not None:
                await client.release(extra_slot_name(self.config.app_name, index))

    def handle(self, index: int) -> Any:
        """The handle of running added replica ``index``."""
        from ray import serve

        name = extra_app_prefix(self.config.app_name) + str(index)
        return serve.get_deployment_handle(DEPLOYMENT, app_name=name)

    def _client(self) -> Any:
        from placement import PlacementClient

        assert self.config.placement is not None
        return PlacementClient.attach(self.config.placement.namespace)

    async def _place(self, index: int, avoid: tuple[str, ...]) -> Decision:
        from placement import PlacementClient

        placement = self.config.placement
        assert placement is not None
        client = await asyncio.to_thread(PlacementClient, placement.namespace)
        name = extra_slot_name(self.config.app_name, index)
        avoid = avoid if placement.spread else ()
        return await place_slot(
            client, name, self.specs, self.config, placement, StayLauncher(), avoid
        )


def remove_extra_replicas(config: ServingConfig) -> int:
    """Deletes every added replica of ``config``'s app and releases their slots; returns how
    many there were (after the app itself is deleted, so that none is added meanwhile)."""
    from ray import serve

    from placement import PlacementClient

    apps = extra_replica_apps(config.app_name)
    for name in apps.values():
        serve.delete(name)
    client = None
    if config.placement is not None and apps:
        client = PlacementClient.attach(config.placement.namespace)
    if client is not None:
        for index in apps:
            client.release_sync(extra_slot_name(config.app_name, index))
    return len(apps)
