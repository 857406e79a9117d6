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


class _ExpectedWarning(logging.Filter):
    """Drops Ray's warning about restartable detached actors in placement groups.

    That is this design on purpose: the group pins the host to its node, Ray restarts a crashed host inside
    it, and the group is only removed when the agent is stopped or re-placed (which relaunches it).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "restartable detached actor with a placement group" not in record.getMessage()


logging.getLogger("ray.actor").addFilter(_ExpectedWarning())

NAME_RELEASE_TIMEOUT_S = 30.0
"""How long a re-placement waits for Ray to free the name of the agent's previous actor."""

_host_actor_class: Any = None


def remote_host() -> Any:
    """The Ray actor class of `AgentHost` (made once per process)."""
    global _host_actor_class
    if _host_actor_class is None:
        _host_actor_class = ray.remote(AgentHost)
    return _host_actor_class


def host_options(name: str, namespace: str, max_restarts: int) -> dict[str, Any]:
    """Ray actor options every agent host gets: detached, named, restartable, async."""
    return {
        "name": name,
        "namespace": namespace,
        "lifetime": "detached",
        "max_restarts": max_restarts,
        "max_task_retries": 0,
        "max_concurrency": 10_000,
    }


class HostLauncher:
    """Picklable launcher for `placement.PlacementClient.place`: creates a host actor (one agent's, or a pool's).

    The first placement creates the host actor into the decision's placement group and fails if the name
    is taken. A re-placement (after the agent's node was lost) kills whatever actor still holds the name,
    waits until Ray frees it, and creates the host again on the new node; the agent then restores its
    newest checkpoint before it serves calls, and epoch fencing keeps any surviving old copy from writing.
    """

    def __init__(
        self,
        actor_name: str,
        namespace: str,
        max_restarts: int,
        *specs: AgentSpec,
        pool: str | None = None,
    ) -> None:
        self.actor_name = actor_name
        self.namespace = namespace
        self.max_restarts = max_restarts
        self.specs = specs
        self.pool = pool

    async def __call__(self, decision: Any) -> None:
        options = {
            **host_options(self.actor_name, self.namespace, self.max_restarts),
            **decision.actor_options(),
        }
        if decision.generation > 1:
            await self._remove_previous()
        try:
            remote_host().options(**options).remote(
                *self.specs, pool=self.pool, namespace=self.namespace
            )
        except ValueError as error:
            if "already" in str(error).lower():
                raise AgentExistsError(self.actor_name, self.namespace) from None
            raise
        logger.info(
            "host %r launched on node %s (%s)", self.actor_name, decision.node_id, decision.cause
        )

    async def _remove_previous(self) -> None:
        deadline = asyncio.get_running_loop().time() + NAME_RELEASE_TIMEOUT_S
        while True:
            try:
                old = ray.get_actor(self.actor_name, namespace=self.namespace)
            except ValueError:
                return
            ray.kill(old, no_restart=True)
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"the name of host {self.actor_name!r} was not freed in time")
            await asyncio.sleep(0.2)
