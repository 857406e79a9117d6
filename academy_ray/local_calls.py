"""In-process calls: a handle whose agent is hosted in the caller's own process calls it directly.

A host registers each agent it runs here (`register`); a `Handle` asks `hosted` on every call. When the
agent is on the caller's event loop, the handle runs the call in the agent's runner itself instead of sending
it through Ray, with the remote path's semantics:

- the runner's checks run as they do for a remote call (payload bounds, pydantic validation, waiting
  while the agent starts, the terminated and fenced errors, checkpoint-before-acknowledge);
- arguments, results and raised errors are copied (`copy_value`), so neither side ever holds the other's
  mutable objects;
- the handle's timeout cancels the action, and so does cancelling the caller.

When the agent leaves the process (stopped, moved to another pool, its pool restarted elsewhere), its entry
is gone and the handle goes through Ray again.

Copies. A value made only of immutable built-in atoms (bytes, str, numbers, None, and tuples of them) is
passed as it is; anything else is copied by a pickle round trip (protocol 5), falling back to Ray's
cloudpickle for what plain pickle refuses (lambdas, local classes). ``python -m benchmarks.action_latency``
measures the alternatives (``copy.deepcopy``, Ray's serializer) beside it.
"""

from __future__ import annotations

import asyncio
import pickle
from dataclasses import dataclass
from typing import Any, Protocol

from ray import ObjectRef, cloudpickle

__all__ = [
    "HostedAgent",
    "LocalRunner",
    "copy_arguments",
    "copy_error",
    "copy_value",
    "hosted",
    "register",
    "unregister",
]


class LocalRunner(Protocol):
    """What a host's agent runner offers to in-process callers (`academy_ray.runner.AgentRunner`)."""

    async def call(self, action: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Runs one action call with the remote path's checks and returns its result."""
        ...


@dataclass(frozen=True, slots=True)
class HostedAgent:
    """An agent hosted in this process: its runner and the event loop it runs on."""

    runner: LocalRunner
    loop: asyncio.AbstractEventLoop


_HOSTED: dict[tuple[str, str], HostedAgent] = {}
"""(namespace, name) -> the agent hosted in this process under that name."""


def register(namespace: str, name: str, runner: LocalRunner) -> None:
    """Records that this process hosts agent ``name`` on the running event loop."""
    _HOSTED[(namespace, name)] = HostedAgent(runner, asyncio.get_running_loop())


def unregister(namespace: str, name: str, runner: LocalRunner) -> None:
    """Forgets agent ``name`` if ``runner`` is still the one registered for it."""
    entry = _HOSTED.get((namespace, name))
    if entry is not None and entry.runner is runner:
        del _HOSTED[(namespace, name)]


def hosted(namespace: str, name: str) -> LocalRunner | None:
    """The runner of agent ``name`` if this process hosts it on the running event loop, else None."""
    entry = _HOSTED.get((namespace, name))
    if entry is None:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return entry.runner if entry.loop is loop else None


_ATOMS = frozenset({bytes, str, int, float, bool, complex, type(None)})
"""Types whose values cannot change: passed between caller and agent without a copy."""


def _immutable(value: Any) -> bool:
    kind = type(value)
    if kind in _ATOMS:
        return True
    return kind is tuple and all(type(item) in _ATOMS for item in value)


def copy_value(value: Any) -> Any:
    """A copy of ``value`` that shares no mutable object with it (the value itself if it has none).

    Raises:
        Exception: Whatever pickling raised if neither pickle nor cloudpickle can copy the value.
    """
    if _immutable(value):
        return value
    try:
        return pickle.loads(pickle.dumps(value, protocol=5))
    except Exception:  # noqa: BLE001 - what plain pickle refuses, cloudpickle (Ray's own) may copy
        return cloudpickle.loads(cloudpickle.dumps(value, protocol=5))


def copy_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """Copies a call's arguments for the agent; None when the call must go through Ray instead.

    Ray resolves object references passed as arguments before the action runs, and copies what pickle
    cannot (actor handles, object references nested in containers): such calls take the remote path.
    """
    if all(_immutable(a) for a in args) and all(_immutable(v) for v in kwargs.values()):
        return args, kwargs
    if any(isinstance(a, ObjectRef) for a in args) or any(
        isinstance(v, ObjectRef) for v in kwargs.values()
    ):
        return None
    try:
        copied: tuple[tuple[Any, ...], dict[str, Any]] = pickle.loads(
            pickle.dumps((args, kwargs), protocol=5)
        )
    except Exception:  # noqa: BLE001 - not plainly picklable: let Ray serialize it
        return None
    return copied


def copy_error(error: BaseException) -> BaseException:
    """A copy of an error raised by the agent, as a remote caller would receive it (notes kept)."""
    try:
        copied = copy_value(error)
    except Exception:  # noqa: BLE001 - an error that cannot be copied is raised as it is
        return error
    return copied if isinstance(copied, BaseException) else error
