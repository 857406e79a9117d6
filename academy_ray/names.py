"""Ray actor names the platform itself uses in a namespace (which user agents cannot take), and lookups."""

from __future__ import annotations

from typing import Any

from placement import CONTROLLER_NAME
from placement.actors import find_actor

REGISTRY_NAME = "academy-registry"
"""The namespace's registry of co-hosted agents and of names being launched."""

POOL_PREFIX = "academy-pool:"
"""Ray actor names of pool hosts start with this; the rest is the pool's name."""

RESERVED_NAMES = frozenset({REGISTRY_NAME, CONTROLLER_NAME})
"""Names of the platform's own actors."""

RESERVED_PREFIXES = (POOL_PREFIX, "serving-placer:", "model-cache-", "serve:", "SERVE_")
"""Prefixes of the platform's own actors and placement demands (pool hosts, serving's placer, node
caches and replica slots, Ray Serve's actors)."""


def reserved_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a user agent's name, or None when it can."""
    if name in RESERVED_NAMES:
        return f"{name!r} is the name of one of the platform's own actors"
    for prefix in RESERVED_PREFIXES:
        if name.startswith(prefix):
            return f"names starting with {prefix!r} are reserved for the platform's own actors"
    return None


def find_registry(namespace: str) -> Any | None:
    """The registry actor of ``namespace``, or None when it does not exist (never creates it)."""
    return find_actor(REGISTRY_NAME, namespace)
