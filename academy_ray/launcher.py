"""Creates an agent's host actor inside a placement decision (called by the placement controller)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray

from academy_ray.exception import AgentExistsError
from academy_ray.host import AgentHost
from academy_ray.spec import AgentSpec

logger = logging.getLogger(__name__)

NAME_RELEASE_TIMEOUT_S = 30.0
"""How long a re-placement waits for Ray to free the name of the agent's previous actor."""

_host_actor_class: Any = None


def remote_host() -> Any:
    """The Ray actor class of `AgentHost` (made once per process)."""
    global _host_actor_class
    if _host_actor_class is None:
        _host_actor_class = ray.remote(AgentHost)
    return _host_actor_class


def host_options(spec: AgentSpec, max_restarts: int) -> dict[str, Any]:
    """Ray actor options every agent host gets: detached, named after the agent, restartable, async."""
    return {
        "name": spec.name,
        "namespace": spec.namespace,
        "lifetime": "detached",
        "max_restarts": max_restarts,
        "max_task_retries": 0,
        "max_concurrency": 10_000,
    }


class HostLauncher:
    """Picklable launcher for `placement.PlacementClient.place`.

    The first placement creates the host actor into the decision's placement group and fails if the name
    is taken. A re-placement (after the agent's node was lost) kills whatever actor still holds the name,
    waits until Ray frees it, and creates the host again on the new node; the agent then restores its
    newest checkpoint before it serves calls, and epoch fencing keeps any surviving old copy from writing.
    """

    def __init__(self, spec: AgentSpec, max_restarts: int) -> None:
        self.spec = spec
        self.max_restarts = max_restarts

    async def __call__(self, decision: Any) -> None:
        options = {**host_options(self.spec, self.max_restarts), **decision.actor_options()}
        if decision.generation > 1:
            await self._remove_previous()
        try:
            remote_host().options(**options).remote(self.spec)
        except ValueError as error:
            if "already" in str(error).lower():
                raise AgentExistsError(self.spec.name, self.spec.namespace) from None
            raise
        logger.info(
            "agent %r launched on node %s (%s)", self.spec.name, decision.node_id, decision.cause
        )

    async def _remove_previous(self) -> None:
        deadline = asyncio.get_running_loop().time() + NAME_RELEASE_TIMEOUT_S
        while True:
            try:
                old = ray.get_actor(self.spec.name, namespace=self.spec.namespace)
            except ValueError:
                return
            ray.kill(old, no_restart=True)
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the name of agent {self.spec.name!r} was not freed in time")
            await asyncio.sleep(0.2)
