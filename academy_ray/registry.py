"""The namespace's registry of co-hosted agents: which pool host runs which agent, and how to recreate it.

Agents launched with their own host are found by Ray's actor name alone. Agents co-hosted in a pool share one
host actor, so their names are resolved here; a pool host that restarts (or is re-placed) asks the registry
which agents it must start again.
"""

from __future__ import annotations

import time
from typing import Any

from academy_ray.names import POOL_PREFIX, REGISTRY_NAME, find_registry
from academy_ray.spec import AgentSpec
from placement.actors import head_singleton

__all__ = ["CLAIM_TTL_S", "POOL_PREFIX", "REGISTRY_NAME", "AgentRegistry", "registry_actor"]

CLAIM_TTL_S = 600.0
"""How long a claim on a name lasts unless renewed or released (a driver that died mid-launch)."""


class AgentRegistry:
    """Ray actor (detached, one per namespace) mapping co-hosted agent names to their pool host.

    The mapping lives in memory: if this actor's process dies, pooled agents keep running but a new driver
    cannot resolve their names until each pool host re-registers its agents (it does so when it restarts).
    """

    def __init__(self) -> None:
        self._hosts: dict[str, str] = {}
        self._specs: dict[str, AgentSpec] = {}
        self._claims: dict[str, tuple[str, str, float]] = {}  # name -> (token, purpose, expiry)

    async def claim(
        self, name: str, token: str, purpose: str, ttl_s: float = CLAIM_TTL_S
    ) -> str | None:
        """Takes ``name`` for an operation that must not overlap another on the same name (a launch, an
        offline rollback). Atomic: this actor runs one call at a time between awaits.

        Returns:
            None when ``token`` now holds the claim; otherwise the purpose of the claim that holds it.
        """
        held = self._claims.get(name)
        if held is not None and held[0] != token and held[2] > time.monotonic():
            return held[1]
        self._claims[name] = (token, purpose, time.monotonic() + ttl_s)
        return None

    async def release_claim(self, name: str, token: str) -> None:
        """Gives ``name`` back (only the holder's token does)."""
        held = self._claims.get(name)
        if held is not None and held[0] == token:
            del self._claims[name]

    async def claimed(self, name: str) -> str | None:
        """The purpose of the live claim on ``name``, if any."""
        held = self._claims.get(name)
        if held is None or held[2] <= time.monotonic():
            return None
        return held[1]

    async def register(self, host: str, spec: AgentSpec, *, replace: bool = False) -> bool:
        """Records that ``host`` runs ``spec``; False if the name is already registered (and not replaced)."""
        if spec.name in self._hosts and not replace:
            return False
        self._hosts[spec.name] = host
        self._specs[spec.name] = spec
        return True

    async def unregister(self, name: str) -> None:
        """Forgets agent ``name``."""
        self._hosts.pop(name, None)
        self._specs.pop(name, None)

    async def resolve(self, name: str) -> str | None:
        """The actor name of the pool host running agent ``name``, if any."""
        return self._hosts.get(name)

    async def specs_of(self, host: str) -> list[AgentSpec]:
        """Specs of every agent registered on ``host``."""
        return [self._specs[name] for name, owner in self._hosts.items() if owner == host]

    async def names(self) -> dict[str, str]:
        """Every registered agent and its host."""
        return dict(self._hosts)


def registry_actor(namespace: str, *, create: bool) -> Any | None:
    """The registry actor of ``namespace``; created (on the head node) when ``create`` and missing."""
    found = find_registry(namespace)
    if found is not None or not create:
        return found
    return head_singleton(AgentRegistry, REGISTRY_NAME, namespace)
