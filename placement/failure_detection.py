"""How fast Ray notices a lost node: the health-check settings academy-ray starts Ray with.

Ray's control store (GCS) checks every node's raylet: one check every ``health_check_period_ms``, each
allowed ``health_check_timeout_ms`` to answer, the node declared dead after
``health_check_failure_threshold`` failures in a row. The next check is sent a period after the previous
one answered or failed. Ray's defaults (3 s, 10 s, 5) take 15 s or more to notice a node whose processes
died; until then nothing on it is restarted or re-placed.

academy-ray's settings split the two ways a node goes away:

* **Its processes die** (a crash, an OOM kill, a host shut down cleanly enough to reset connections):
  every check fails at once, so the node is declared dead after ``threshold x period`` = 4 x 0.3 s = 1.2 s.
* **It stops answering** (a host starved of CPU, a paused VM, a network partition): each check waits up
  to the timeout, 5 s, so a node is only declared dead after ~21 s of silence. A loaded 2-core machine
  running a simulated cluster once had a raylet miss three 500 ms deadlines in a row and lose its node by
  mistake; a 5 s deadline does not.

Embedded Ray started by :class:`academy_ray.Runtime` or :func:`serving.ensure_ray` uses these settings
(arguments given to ``ray.init`` win). A ``ray start`` cluster takes them from the environment of the
head node's ``ray start`` (Ray reads ``RAY_<setting>``): see :func:`ray_start_environment`.

The GCS sends one small RPC per node per period: ~3,300/s for 1,000 nodes. On clusters of thousands of
nodes a period of 1 s (3 s to notice a dead node) keeps that load at Ray's default level.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["FAILURE_DETECTION", "ray_start_environment", "with_failure_detection"]

FAILURE_DETECTION: Mapping[str, int] = {
    "health_check_period_ms": 300,
    "health_check_failure_threshold": 4,
    "health_check_timeout_ms": 5000,
    "health_check_initial_delay_ms": 0,
}
"""Ray system settings that bound node-failure detection (see the module docstring)."""


def ray_start_environment() -> dict[str, str]:
    """The environment variables that give a ``ray start --head`` cluster the same settings.

    Returns:
        ``{"RAY_health_check_period_ms": "500", ...}``: export them before ``ray start --head``.
    """
    return {f"RAY_{name}": str(value) for name, value in FAILURE_DETECTION.items()}


def with_failure_detection(init_kwargs: Mapping[str, Any], address: str | None) -> dict[str, Any]:
    """``ray.init`` keyword arguments with the settings added, where Ray takes them.

    Only a Ray started by this ``ray.init`` (address ``"local"``) takes system settings; joining a cluster
    keeps that cluster's own. Settings the caller gave in ``_system_config`` win.

    Args:
        init_kwargs: The caller's ``ray.init`` keyword arguments.
        address: The address ``ray.init`` is given.

    Returns:
        A new mapping of keyword arguments.
    """
    kwargs = dict(init_kwargs)
    if address == "local":
        kwargs["_system_config"] = {**FAILURE_DETECTION, **(kwargs.get("_system_config") or {})}
    return kwargs
