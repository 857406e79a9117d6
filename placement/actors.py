"""Detached singleton actors on the head node: the controller, registries, holders and placers."""

from __future__ import annotations

from typing import Any

HEAD_NODE_RESOURCE = {"node:__internal_head__": 0.001}
"""A sliver of the head node's own resource: the actor outlives the loss of any worker node."""


def head_singleton(
    actor_class: type,
    name: str,
    namespace: str | None,
    *args: Any,
    max_restarts: int = -1,
    max_task_retries: int = 0,
    **kwargs: Any,
) -> Any:
    """Gets or creates the detached actor ``name`` of ``namespace`` on the head node.

    Every caller racing to create it gets the same actor (``get_if_exists``); it reserves no CPU and Ray
    restarts it (``max_restarts``) if its process dies.

    Args:
        actor_class: The actor's class (made a Ray actor here).
        name: Its actor name.
        namespace: Its Ray namespace (None: the caller's).
        *args: Constructor arguments (used only when it is created).
        max_restarts: Restarts of its process (-1: always; 0 for an actor whose memory cannot be rebuilt).
        max_task_retries: Retries of a call caught by a restart (only for idempotent methods).
        **kwargs: Constructor keyword arguments.

    Returns:
        The Ray actor handle.
    """
    import ray

    remote_class: Any = ray.remote(actor_class)
    return remote_class.options(
        name=name,
        namespace=namespace,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_restarts=max_restarts,
        max_task_retries=max_task_retries,
        resources=HEAD_NODE_RESOURCE,
    ).remote(*args, **kwargs)


def find_actor(name: str, namespace: str) -> Any | None:
    """The live named actor, or None when there is none (never creates it)."""
    import ray

    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None
