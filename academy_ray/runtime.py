"""`Runtime`: connects to Ray and launches, finds, lists, stops and waits for agents (Academy's Manager role)."""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Self, TypeVar

import ray

from academy_ray._sync import run_sync
from academy_ray.agent import Agent
from academy_ray.exception import (
    AgentExistsError,
    AgentNotFoundError,
    AgentStartupError,
    AgentTerminatedError,
    AgentUnavailableError,
)
from academy_ray.handle import (
    Handle,
    lookup_actor,
    lookup_actor_async,
    lookup_actor_waiting,
    translate_error,
)
from academy_ray.launcher import HostLauncher, host_options, remote_host
from academy_ray.payload import DEFAULT_MAX_PAYLOAD_BYTES
from academy_ray.policy import CheckpointPolicy
from academy_ray.registry import POOL_PREFIX, registry_actor
from academy_ray.spec import AgentInfo, AgentResources, AgentSpec
from academy_ray.store import AgentCheckpoints, CheckpointInfo
from placement import Decision, Demand, PlacementClient, with_failure_detection

logger = logging.getLogger(__name__)

AgentT = TypeVar("AgentT", bound=Agent)

DEFAULT_NAMESPACE = "academy"
CLAIM_POLL_S = 0.1
"""How often a launch that waits for another launch (or a rollback) of the same name looks again."""
LIST_TIMEOUT_S = 5.0
"""How long `Runtime.list` waits for one host to answer before reporting it ``unreachable``."""


class Runtime:
    """Connects to Ray and manages agents in one namespace.

    Args:
        address: None starts an embedded local Ray (unless ``RAY_ADDRESS`` is set, as inside a
            ``ray job submit`` job, which is joined); ``"auto"`` joins the cluster ``ray start`` began on this
            machine; ``"ray://host:10001"`` or ``"host:6379"`` joins that cluster. If Ray is already initialised
            in this process it is used as it is.
        namespace: Ray namespace of the agents (default: ``$ACADEMY_RAY_NAMESPACE`` or ``"academy"``); agents
            in other namespaces are invisible to this runtime.
        init_kwargs: Extra keyword arguments for ``ray.init`` (ignored when Ray is already initialised).
        default_resources: Resources of agents launched without ``resources=``.
        checkpoint: Default checkpoint policy of launched agents (a `CheckpointPolicy`, or just a store URI
            for the default policy: after every state-changing action, on shutdown, keep the last 10).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        namespace: str | None = None,
        init_kwargs: Mapping[str, Any] | None = None,
        default_resources: AgentResources | None = None,
        checkpoint: CheckpointPolicy | str | None = None,
        placement: bool = True,
        placement_policy: str = "locality",
    ) -> None:
        self.namespace = namespace or default_namespace()
        self.placement_enabled = placement
        self.placement_policy = placement_policy
        self._placement: PlacementClient | None = None
        self._pool_locks: dict[str, asyncio.Lock] = {}
        self.default_resources = default_resources or AgentResources()
        self.default_checkpoint = _as_policy(checkpoint)
        self._owns_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"namespace": self.namespace}
            kwargs.update(init_kwargs or {})
            if address is None:
                address = os.environ.get("RAY_ADDRESS") or "local"
            ray.init(address=address, **with_failure_detection(kwargs, address))
            self._owns_ray = True

    # ---- context management ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Disconnects from Ray if this runtime connected. Agents keep running (they are detached); an
        embedded local Ray started by this runtime stops with it."""
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- agents ------------------------------------------------------------------------------------------------

    async def launch(
        self,
        agent: type[AgentT],
        *,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        resources: AgentResources | Mapping[str, Any] | None = None,
        get_if_exists: bool = False,
        max_restarts: int = -1,
        executor_workers: int = 4,
        checkpoint: CheckpointPolicy | str | bool | None = None,
        data: Iterable[str] = (),
        models: Iterable[str] = (),
        placement_timeout: float | None = None,
        pool: str | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> Handle[AgentT]:
        """Starts ``agent(*args, **kwargs)`` as a detached, named Ray actor and waits until it serves calls.

        Args:
            agent: The `Agent` subclass.
            args: Positional arguments of its constructor.
            kwargs: Keyword arguments of its constructor.
            name: Name in the namespace (default: class name and a random suffix).
            resources: What its host reserves (`AgentResources` or a dict of its fields).
            get_if_exists: Return the existing agent's handle instead of failing when the name is taken.
            max_restarts: How often Ray restarts the host after its process dies (-1: always).
            executor_workers: Threads for `Agent.agent_run_sync`.
            checkpoint: The agent's checkpoint policy (or store URI); None uses the runtime's default and
                False turns checkpointing off. With a policy, the agent restores its newest valid checkpoint
                before it serves calls: after a crash, and when it is launched again under the same name.
            data: Data URIs the agent reads: placement prefers nodes that already hold them.
            models: Model ids the agent calls: placement prefers nodes whose model cache holds them.
            placement_timeout: How long to wait for room when the cluster is full (None: as long as it
                takes; `academy-ray explain` and `Runtime.pending` show the wait).
            pool: Co-host the agent in the shared host process of this pool (created on first use with
                ``resources``, which later agents of the pool then share) instead of a process of its own:
                many light agents per machine. If the pool's process dies, Ray restarts it and it starts its
                agents again, each from its checkpoint.
            max_payload_bytes: Largest total size of one call's arguments, checked by the agent's host
                where the call lands (a larger call gets `PayloadError`), whatever the caller's handle allows.

        Launches of one name are serialised across drivers: exactly one creates the agent; the others get
        `AgentExistsError`, or with ``get_if_exists`` wait for it and get its handle. A name the platform
        uses itself (its registry, placement controller, pool hosts, serving's actors) is refused.

        Raises:
            AgentExistsError: The name is taken, or being launched by another driver (and
                ``get_if_exists`` is False).
            CheckpointRestoreError: It has checkpoints, but none verifies (see `CheckpointPolicy`).
            AgentStartupError: The constructor or ``agent_on_startup`` raised.
            placement.InfeasibleDemandError: No node of the cluster could ever fit the resources.
            placement.PlacementTimeoutError: No room within ``placement_timeout``.
            pydantic.ValidationError: A bad name, class or resources.
        """
        if not (isinstance(agent, type) and issubclass(agent, Agent)):
            raise TypeError(f"{agent!r} is not a subclass of academy_ray.Agent")
        name = name or f"{agent.__name__}-{uuid.uuid4().hex[:8]}"
        spec = AgentSpec(
            name=name,
            namespace=self.namespace,
            agent_class=agent,
            args=tuple(args),
            kwargs=dict(kwargs or {}),
            executor_workers=executor_workers,
            checkpoint=self.default_checkpoint if checkpoint is None else _as_policy(checkpoint),
            max_payload_bytes=max_payload_bytes,
        )
        registry: Any = registry_actor(self.namespace, create=True)
        token = uuid.uuid4().hex
        while (holder := await registry.claim.remote(name, token, "launch")) is not None:
            if holder == "launch" and not get_if_exists:
                raise AgentExistsError(name, self.namespace)
            await asyncio.sleep(
                CLAIM_POLL_S
            )  # another launch (or a rollback) of this name: wait for it
        try:
            if await _name_taken_async(name, self.namespace):
                if get_if_exists:
                    return self.get(name)
                raise AgentExistsError(name, self.namespace)
            return await self._launch_claimed(
                spec, resources, placement_timeout, max_restarts, data, models, pool
            )
        finally:
            await registry.release_claim.remote(name, token)

    async def _launch_claimed(
        self,
        spec: AgentSpec,
        resources: AgentResources | Mapping[str, Any] | None,
        placement_timeout: float | None,
        max_restarts: int,
        data: Iterable[str],
        models: Iterable[str],
        pool: str | None,
    ) -> Handle[Any]:
        """The launch itself, once this driver holds the claim on the name and the name is free."""
        name = spec.name
        if resources is None:
            reserved = self.default_resources
        elif isinstance(resources, AgentResources):
            reserved = resources
        else:
            reserved = AgentResources.model_validate(dict(resources))
        placed = _Placed(
            data=tuple(data),
            models=tuple(models),
            timeout=placement_timeout,
            max_restarts=max_restarts,
        )
        if pool is not None:
            actor = await self._launch_pooled(spec, pool, reserved, placed)
        else:
            actor = await self._launch_dedicated(spec, reserved, placed)
            try:
                await actor.agent_ready.remote(name)
            except ray.exceptions.RayError as error:
                ray.kill(actor, no_restart=True)
                await self._release(name)
                raise _startup_error(error, name, self.namespace) from None
        handle: Handle[Any] = Handle(name, self.namespace)
        handle._actor = actor
        return handle

    async def _launch_dedicated(
        self, spec: AgentSpec, reserved: AgentResources, placed: _Placed
    ) -> Any:
        """Creates the agent's own host actor (through placement when enabled)."""
        name = spec.name
        if self.placement_enabled:
            demand = placed.demand(
                name, reserved, f"checkpoint:{self.namespace}/{name}" if spec.checkpoint else None
            )
            launcher = HostLauncher(name, self.namespace, placed.max_restarts, spec)
            await self.placement.place(demand, launcher, timeout=placed.timeout)
            return lookup_actor(name, self.namespace)
        options = {
            **host_options(name, self.namespace, placed.max_restarts),
            **reserved.actor_options(),
        }
        try:
            return remote_host().options(**options).remote(spec)
        except ValueError as error:  # lost a race for the name
            if "already" in str(error).lower():
                raise AgentExistsError(name, self.namespace) from None
            raise

    async def _launch_pooled(
        self, spec: AgentSpec, pool: str, reserved: AgentResources, placed: _Placed
    ) -> Any:
        """Adds the agent to the pool's shared host (created on first use with ``reserved`` resources)."""
        registry: Any = registry_actor(self.namespace, create=True)
        host_name = POOL_PREFIX + pool
        if not await registry.register.remote(host_name, spec):
            raise AgentExistsError(spec.name, self.namespace)
        try:
            host = await self._pool_host(host_name, pool, reserved, placed)
            await host.agent_add.remote(spec)
        except BaseException as error:
            await registry.unregister.remote(spec.name)
            if isinstance(error, ray.exceptions.RayError):
                raise _startup_error(error, spec.name, self.namespace) from None
            raise
        return host

    async def _pool_host(
        self, host_name: str, pool: str, reserved: AgentResources, placed: _Placed
    ) -> Any:
        async with self._pool_locks.setdefault(pool, asyncio.Lock()):
            try:
                return ray.get_actor(host_name, namespace=self.namespace)
            except ValueError:
                pass
            try:
                if self.placement_enabled:
                    launcher = HostLauncher(
                        host_name, self.namespace, placed.max_restarts, pool=pool
                    )
                    await self.placement.place(
                        placed.demand(host_name, reserved, None), launcher, timeout=placed.timeout
                    )
                else:
                    options = {
                        **host_options(host_name, self.namespace, placed.max_restarts),
                        **reserved.actor_options(),
                    }
                    remote_host().options(**options).remote(pool=pool, namespace=self.namespace)
            except AgentExistsError:  # another driver created the pool meanwhile
                pass
            return ray.get_actor(host_name, namespace=self.namespace)

    def get(self, name: str) -> Handle[Any]:
        """A handle to the live agent ``name`` of this namespace (from any driver process).

        While placement re-creates the agent after its node was lost, this waits for the new copy (up to
        a minute).

        Raises:
            AgentNotFoundError: No such agent in this namespace.
            AgentUnavailableError: Still being placed again after a minute.
        """
        handle: Handle[Any] = Handle(name, self.namespace)
        handle._actor = lookup_actor_waiting(name, self.namespace)
        return handle

    async def list(self) -> list[AgentInfo]:
        """Every agent of this namespace with its class, status, node and since when."""
        names = sorted(
            entry["name"]
            for entry in ray.util.list_named_actors(all_namespaces=True)
            if entry["namespace"] == self.namespace
        )
        found = await asyncio.gather(*(self._describe(name) for name in names))
        return [info for infos in found for info in infos]

    async def _describe(self, name: str) -> builtins.list[AgentInfo]:
        try:
            actor = lookup_actor(name, self.namespace)
        except AgentNotFoundError:
            return []
        if not hasattr(actor, "agent_info"):
            return []  # a named actor that is not an agent host
        try:
            infos: builtins.list[AgentInfo] = await asyncio.wait_for(
                asyncio.ensure_future(actor.agent_info.remote()), LIST_TIMEOUT_S
            )
            return infos
        except (TimeoutError, ray.exceptions.RayError) as error:
            return [
                AgentInfo(
                    name=name,
                    namespace=self.namespace,
                    agent_class="?",
                    status="unreachable",
                    error=f"{type(error).__name__}: {error}".splitlines()[0],
                )
            ]

    async def stop(self, agent: str | Handle[Any], *, timeout: float = 30.0) -> None:
        """Shuts the agent down gracefully (``agent_on_shutdown`` runs), then removes its actor.

        After ``timeout`` seconds the actor is killed regardless.

        Raises:
            AgentNotFoundError: No such agent in this namespace.
        """
        name = agent.name if isinstance(agent, Handle) else agent
        actor = lookup_actor(name, self.namespace)
        if _is_pooled(name, self.namespace):
            try:
                await asyncio.wait_for(
                    asyncio.ensure_future(actor.agent_remove.remote(name)), timeout
                )
            finally:
                registry = registry_actor(self.namespace, create=False)
                if registry is not None:
                    await registry.unregister.remote(name)
            return
        try:
            await asyncio.wait_for(asyncio.ensure_future(actor.agent_stop.remote(name)), timeout)
        except (TimeoutError, ray.exceptions.RayError) as error:
            logger.warning("agent %r did not shut down cleanly (%s); killing it", name, error)
        ray.kill(actor, no_restart=True)
        await self._release(name)

    # ---- placement ------------------------------------------------------------------------------------------

    @property
    def placement(self) -> PlacementClient:
        """The namespace's placement controller (created on first use)."""
        if self._placement is None:
            self._placement = PlacementClient(self.namespace, policy=self.placement_policy)
        return self._placement

    async def explain(self, name: str) -> Decision | None:
        """Why agent ``name`` runs where it runs (None: not placed by academy_ray's placement)."""
        if not self.placement_enabled:
            return None
        return await self.placement.explain(name)

    async def pending(self) -> builtins.list[Demand]:
        """Agents waiting for room in a full cluster."""
        if not self.placement_enabled:
            return []
        return await self.placement.pending()

    def stop_placement(self) -> None:
        """Removes the namespace's placement controller (agents keep running but are no longer re-placed
        when their node dies). For tests and tear-down; a later launch creates a new controller."""
        placement = self._placement or PlacementClient.attach(self.namespace)
        if placement is not None:
            placement.shutdown()
        self._placement = None

    async def _release(self, name: str) -> None:
        if self.placement_enabled:
            await self.placement.release(name)

    async def wait(
        self,
        agents: Iterable[str | Handle[Any]],
        *,
        timeout: float | None = None,
        return_when: str = asyncio.ALL_COMPLETED,
    ) -> None:
        """Waits until the agents have shut down (``return_when`` as in `asyncio.wait`).

        Raises:
            TimeoutError: If they have not within ``timeout`` seconds.
        """
        handles = [a if isinstance(a, Handle) else Handle(a, self.namespace) for a in agents]
        if not handles:
            return
        tasks = [asyncio.ensure_future(_wait_quietly(h)) for h in handles]
        done, pending = await asyncio.wait(tasks, timeout=timeout, return_when=return_when)
        for task in pending:
            task.cancel()
        if (return_when == asyncio.ALL_COMPLETED and pending) or not done:
            raise TimeoutError(f"{len(pending)} agent(s) still running after {timeout} s")

    # ---- checkpoints --------------------------------------------------------------------------------------

    async def save(self, agent: str | Handle[Any]) -> CheckpointInfo | None:
        """Checkpoints a running agent now; None if it has no checkpoint policy."""
        name = agent.name if isinstance(agent, Handle) else agent
        handle = self.get(name)
        return await handle._call("agent_save", name)  # type: ignore[no-any-return]

    def checkpoints(
        self, name: str, policy: CheckpointPolicy | str | None = None
    ) -> AgentCheckpoints:
        """The checkpoints of agent ``name`` (running or not) in ``policy``'s store (default: the runtime's)."""
        chosen = _as_policy(policy) or self.default_checkpoint
        if chosen is None:
            raise ValueError(
                "no checkpoint store given and the runtime has no default checkpoint policy"
            )
        return chosen.store().for_agent(self.namespace, name)

    async def rollback(
        self, name: str, seq: int, policy: CheckpointPolicy | str | None = None
    ) -> CheckpointInfo:
        """Makes checkpoint ``seq`` the newest again; a running agent is restored to it at once.

        A running agent finishes its state-changing actions in flight first and starts new ones only once
        restored. An agent that is not running is rolled back in storage while this driver holds its
        name, so a launch of it waits until the rollback is written (and then restores it).

        Raises:
            AgentExistsError: The agent is being launched right now (roll back once it runs).
            CheckpointNotFoundError: No checkpoint ``seq``.
        """
        try:
            handle = self.get(name)
        except AgentNotFoundError:
            return await self._rollback_offline(name, seq, policy)
        return await handle._call("agent_rollback", name, seq)  # type: ignore[no-any-return]

    async def _rollback_offline(
        self, name: str, seq: int, policy: CheckpointPolicy | str | None
    ) -> CheckpointInfo:
        checkpoints = self.checkpoints(name, policy)
        registry: Any = registry_actor(self.namespace, create=True)
        token = uuid.uuid4().hex
        holder = await registry.claim.remote(name, token, "rollback")
        if holder is not None:
            raise AgentExistsError(name, self.namespace)
        try:
            if await _name_taken_async(name, self.namespace):  # launched just before the claim
                handle = self.get(name)
                return await handle._call("agent_rollback", name, seq)  # type: ignore[no-any-return]

            def roll_back() -> CheckpointInfo:
                try:
                    return checkpoints.rollback(seq, epoch=checkpoints.acquire_epoch())
                finally:
                    checkpoints.release_reservations()  # one write: leave no names reserved ahead

            return await asyncio.get_running_loop().run_in_executor(None, roll_back)
        finally:
            await registry.release_claim.remote(name, token)

    @property
    def sync(self) -> BlockingRuntime:
        """The blocking form of this runtime, for scripts and notebooks."""
        return BlockingRuntime(self)


async def _wait_quietly(handle: Handle[Any]) -> None:
    try:
        await handle.wait()
    except AgentUnavailableError:
        await asyncio.sleep(0.2)
        await _wait_quietly(handle)
    except (AgentTerminatedError, AgentNotFoundError):
        return


def _as_policy(value: CheckpointPolicy | str | bool | None) -> CheckpointPolicy | None:
    if value is None or value is False:
        return None
    if value is True:
        raise ValueError("checkpoint=True needs a store: pass a URI or a CheckpointPolicy")
    if isinstance(value, CheckpointPolicy):
        return value
    return CheckpointPolicy(uri=value)


class _Placed:
    """Placement hints and limits of one launch."""

    def __init__(
        self,
        *,
        data: tuple[str, ...],
        models: tuple[str, ...],
        timeout: float | None,
        max_restarts: int,
    ) -> None:
        self.data = data
        self.models = models
        self.timeout = timeout
        self.max_restarts = max_restarts

    def demand(self, name: str, reserved: AgentResources, checkpoint_key: str | None) -> Demand:
        return Demand(
            name=name,
            cpus=reserved.num_cpus,
            gpus=reserved.num_gpus,
            memory_bytes=reserved.memory_bytes or 0,
            resources=dict(reserved.custom),
            data_uris=self.data,
            model_ids=self.models,
            checkpoint_key=checkpoint_key,
        )


def _is_pooled(name: str, namespace: str) -> bool:
    """Whether agent ``name`` is co-hosted (it has no actor of its own)."""
    try:
        ray.get_actor(name, namespace=namespace)
    except ValueError:
        return True
    return False


def _startup_error(error: BaseException, name: str, namespace: str) -> AgentStartupError:
    translated = translate_error(error, name, namespace)
    if isinstance(translated, AgentStartupError):
        return translated
    wrapped = AgentStartupError(f"agent {name!r} failed to start: {translated}")
    wrapped.__cause__ = translated
    return wrapped


async def _name_taken_async(name: str, namespace: str) -> bool:
    try:
        await lookup_actor_async(name, namespace)
    except AgentNotFoundError:
        return False
    return True


class BlockingRuntime:
    """`Runtime`'s methods in blocking form: ``rt.sync.launch(Cls, name="a")``."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def launch(self, agent: type[AgentT], **options: Any) -> Handle[AgentT]:
        """Blocking `Runtime.launch`."""
        return run_sync(self._runtime.launch(agent, **options))

    def get(self, name: str) -> Handle[Any]:
        """`Runtime.get`."""
        return self._runtime.get(name)

    def list(self) -> list[AgentInfo]:
        """Blocking `Runtime.list`."""
        return run_sync(self._runtime.list())

    def stop(self, agent: str | Handle[Any], *, timeout: float = 30.0) -> None:
        """Blocking `Runtime.stop`."""
        run_sync(self._runtime.stop(agent, timeout=timeout))

    def wait(self, agents: Iterable[str | Handle[Any]], **options: Any) -> None:
        """Blocking `Runtime.wait`."""
        run_sync(self._runtime.wait(agents, **options))


def default_namespace() -> str:
    """The namespace used when none is given: ``$ACADEMY_RAY_NAMESPACE`` or ``"academy"``."""
    return os.environ.get("ACADEMY_RAY_NAMESPACE", DEFAULT_NAMESPACE)
