"""The host: an async Ray actor that runs one agent (or several, co-hosted) and dispatches their calls."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import warnings
from datetime import UTC, datetime
from typing import Any

import ray

from academy_ray import local_calls
from academy_ray.exception import AgentError, AgentExistsError, AgentNotFoundError
from academy_ray.registry import POOL_PREFIX, registry_actor
from academy_ray.runner import AgentRunner
from academy_ray.spec import AgentInfo, AgentSpec
from academy_ray.store import CheckpointInfo
from academy_ray.wire import unpack_call
from placement import PlacementClient

logger = logging.getLogger(__name__)

SELF_EXIT_DELAY_S = 0.5
"""Delay between the last hosted agent finishing and the host process exiting (lets replies go out)."""


class AgentHost:
    """Ray actor class hosting agents; created detached and named after its (first) agent.

    Every method is a coroutine so that the actor is an async actor: actions run concurrently with each
    other and with the agents' loops on one event loop. When every hosted agent has shut down, the host kills
    its own actor so the name is freed and no process lingers.
    """

    def __init__(
        self, *specs: AgentSpec, pool: str | None = None, namespace: str | None = None
    ) -> None:
        self._pool = pool
        self._runners: dict[str, AgentRunner] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        context = ray.get_runtime_context()
        self._namespace = namespace or (specs[0].namespace if specs else context.namespace)
        self._node_id = context.get_node_id()
        with (
            warnings.catch_warnings()
        ):  # Ray 2.60 warns about its own use of a deprecated property here
            warnings.simplefilter("ignore")
            self._restarted = bool(context.was_current_actor_reconstructed)
            self._self_actor = context.current_actor
        for spec in specs:
            self._add(spec)
        if pool is not None:
            self._recovery = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """A pool host (new, restarted or re-placed) starts again every agent the registry gives it."""
        registry = registry_actor(self._namespace, create=False)
        if registry is None:
            return
        for spec in await registry.specs_of.remote(POOL_PREFIX + str(self._pool)):
            if spec.name not in self._runners:
                logger.info("pool %s: starting agent %r again", self._pool, spec.name)
                self._add(spec)

    def _add(self, spec: AgentSpec) -> AgentRunner:
        if spec.name in self._runners:
            raise AgentExistsError(spec.name, spec.namespace)
        runner = AgentRunner(spec)
        self._runners[spec.name] = runner
        local_calls.register(spec.namespace, spec.name, runner)
        task = asyncio.get_running_loop().create_task(runner.run())
        self._tasks.add(task)
        task.add_done_callback(functools.partial(self._on_runner_done, runner))
        return runner

    def _on_runner_done(self, runner: AgentRunner, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._pool is not None:
            self._forget(runner)
        if not self._tasks:
            asyncio.get_running_loop().call_later(SELF_EXIT_DELAY_S, self._exit)

    def _forget(self, runner: AgentRunner) -> None:
        """In a pool, a finished agent leaves: its name is free for a new agent."""
        name = runner.spec.name
        if self._runners.get(name) is not runner:
            return  # removed already, or a new agent of that name runs meanwhile
        self._drop(runner)
        registry = registry_actor(self._namespace, create=False)
        if registry is not None:
            registry.unregister.remote(name)

    def _drop(self, runner: AgentRunner) -> None:
        """Removes a runner from this host (and from in-process calls)."""
        self._runners.pop(runner.spec.name, None)
        local_calls.unregister(runner.spec.namespace, runner.spec.name, runner)

    def _exit(self) -> None:
        if self._tasks:  # an agent was added meanwhile
            return
        logger.info("all agents of this host have shut down; exiting")
        self._release_placement()
        ray.kill(self._self_actor, no_restart=True)

    def _release_placement(self) -> None:
        """Frees the placement reservations of this host's agents (best effort: placement may be off)."""
        placement = PlacementClient.attach(self._namespace)
        if placement is None:
            return
        names = [POOL_PREFIX + self._pool] if self._pool is not None else list(self._runners)
        for name in names:
            placement.release_nowait(name)

    def _runner(self, name: str) -> AgentRunner:
        runner = self._runners.get(name)
        if runner is None:
            namespace = self._namespace
            raise AgentNotFoundError(name, namespace)
        return runner

    # ---- the hot path ---------------------------------------------------------------------------------------

    async def agent_call(self, agent: str, action: str, /, *args: Any, **kwargs: Any) -> Any:
        """Runs ``action`` of the hosted agent ``agent`` with the given arguments."""
        runner = self._runners.get(agent) or self._runner(agent)
        return await runner.call(action, args, kwargs)

    async def agent_packed(self, call: bytes, /) -> Any:
        """`agent_call` packed in one bytes object by `academy_ray.wire.pack_call` (what `Handle` sends for
        small calls of plain data: Ray passes one bytes argument without serializing it again)."""
        agent, action, args, kwargs = unpack_call(call)
        runner = self._runners.get(agent) or self._runner(agent)
        return await runner.call(action, args, kwargs)

    # ---- control ---------------------------------------------------------------------------------------------

    async def agent_add(self, spec: AgentSpec) -> AgentInfo:
        """Co-hosts another agent in this process and waits until it serves calls.

        Raises:
            AgentStartupError: Its startup failed (it is removed again).
        """
        runner = self._runners.get(spec.name) or self._add(spec)
        await runner.wait_ready()
        return self._info(runner)

    async def agent_remove(self, agent: str) -> None:
        """Stops a co-hosted agent (if still running) and removes it from this host."""
        runner = self._runners.get(agent)
        if runner is None:
            return
        if not runner.done.is_set():
            await runner.ready.wait()
            runner.request_shutdown()
            await runner.done.wait()
        if self._runners.get(agent) is runner:
            self._drop(runner)

    async def agent_ready(self, agent: str) -> AgentInfo:
        """Waits until the agent serves calls; raises `AgentStartupError` if its startup failed."""
        runner = self._runner(agent)
        await runner.wait_ready()
        return self._info(runner)

    async def agent_info(self) -> list[AgentInfo]:
        """Describes every agent in this host."""
        return [self._info(runner) for runner in self._runners.values()]

    async def agent_stop(self, agent: str) -> AgentInfo:
        """Shuts the agent down (loops stop, ``agent_on_shutdown`` runs) and waits until it has."""
        runner = self._runner(agent)
        await runner.ready.wait()
        runner.request_shutdown()
        await runner.done.wait()
        return self._info(runner)

    async def agent_wait(self, agent: str) -> AgentInfo:
        """Returns once the agent has shut down (by itself or when asked)."""
        runner = self._runner(agent)
        await runner.done.wait()
        return self._info(runner)

    async def agent_save(self, agent: str) -> CheckpointInfo | None:
        """Checkpoints the agent now (on demand); None if it has no checkpoint policy."""
        runner = self._runner(agent)
        await runner.wait_ready()
        if runner.persistence is None or runner.agent is None:
            return None
        return await runner.persistence.save(runner.agent.agent_checkpoint)

    async def agent_rollback(self, agent: str, seq: int) -> CheckpointInfo:
        """Rolls the running agent back to checkpoint ``seq`` (written again as the newest) and restores it."""
        runner = self._runner(agent)
        await runner.wait_ready()
        if runner.persistence is None or runner.agent is None:
            raise AgentError(f"agent {agent!r} has no checkpoint policy")
        return await runner.rollback(seq)

    def _info(self, runner: AgentRunner) -> AgentInfo:
        persistence = runner.persistence
        last = persistence.last if persistence is not None else None
        return AgentInfo(
            name=runner.spec.name,
            namespace=runner.spec.namespace,
            agent_class=f"{runner.agent_class.__module__}.{runner.agent_class.__qualname__}",
            status=runner.status,
            node_id=self._node_id,
            pid=os.getpid(),
            since=datetime.fromtimestamp(runner.since, tz=UTC),
            restarted=self._restarted,
            error=runner.error,
            actions=sorted(runner.agent_class.agent_actions()),
            checkpoint_uri=persistence.policy.uri if persistence is not None else None,
            last_checkpoint_seq=last.seq if last is not None else None,
            last_checkpoint_at=last.created if last is not None else None,
            checkpoint_pending=persistence.dirty if persistence is not None else False,
            notes=list(persistence.notes) if persistence is not None else [],
            stats=runner.metrics.snapshot(),
        )
