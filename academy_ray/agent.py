"""The `Agent` base class and the `@action`, `@loop`, `@event` and `@timer` decorators.

Names and meaning follow academy-py 1.0: an agent is a class whose ``async`` methods marked ``@action`` can be
called through a `Handle`, whose ``@loop`` methods run for the agent's whole life, and whose base-class methods
all start with ``agent_``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any, ClassVar, Literal, ParamSpec, TypeVar, overload

from academy_ray.context import AgentContext
from academy_ray.exception import AgentError
from academy_ray.handle import Handle

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
AgentT = TypeVar("AgentT", bound="Agent")
ActionMethod = Callable[P, Coroutine[Any, Any, R]]
LoopMethod = Callable[[AgentT, asyncio.Event], Coroutine[Any, Any, None]]

LoopErrorPolicy = Literal["shutdown", "restart", "ignore"]
"""What an agent does when one of its loops raises: shut down (Academy's default), run the loop again after a
back-off, or log it and keep serving actions without that loop."""

_METHOD_KIND = "_agent_method_type"
ACTION_CHECKPOINTS = "_agent_action_checkpoints"
"""Attribute of an action function: whether it may change persistent state (see `action`)."""


@overload
def action(method: ActionMethod[P, R], /) -> ActionMethod[P, R]: ...


@overload
def action(*, checkpoint: bool = True) -> Callable[[ActionMethod[P, R]], ActionMethod[P, R]]: ...


def action(
    method: ActionMethod[P, R] | None = None, /, *, checkpoint: bool = True
) -> ActionMethod[P, R] | Callable[[ActionMethod[P, R]], ActionMethod[P, R]]:
    """Marks an ``async`` method of an agent as an action that handles can call.

    Arguments are checked against the method's signature and validated with pydantic against its type
    annotations before the method runs (see `ActionArgumentError`).

    Args:
        method: The method (when used as ``@action``).
        checkpoint: False for an action that never changes the agent's persistent state, so that the
            every-action checkpoint policy does not write after it (``@action(checkpoint=False)``).

    Raises:
        TypeError: If the method is not a coroutine function.
    """

    def decorate(function: ActionMethod[P, R]) -> ActionMethod[P, R]:
        if not inspect.iscoroutinefunction(function):
            raise TypeError(
                f'Action method "{function.__name__}" is not a coroutine. '
                'Did you forget an "async" in the method declaration?'
            )
        setattr(function, _METHOD_KIND, "action")
        setattr(function, ACTION_CHECKPOINTS, checkpoint)
        return function

    return decorate if method is None else decorate(method)


def loop(method: LoopMethod[AgentT]) -> LoopMethod[AgentT]:
    """Marks a method ``async def f(self, shutdown: asyncio.Event) -> None`` as a control loop.

    The loop starts after `Agent.agent_on_startup` and should return once ``shutdown`` is set.

    Raises:
        TypeError: If the method is not a coroutine function taking exactly ``(self, shutdown)``.
    """
    if not inspect.iscoroutinefunction(method):
        raise TypeError(f'Loop method "{method.__name__}" must be "async def".')
    params = list(inspect.signature(method).parameters)
    if len(params) != 2:
        raise TypeError(
            f'Loop method "{method.__name__}" must have the signature '
            f"(self, shutdown: asyncio.Event), not ({', '.join(params)})"
        )
    setattr(method, _METHOD_KIND, "loop")
    return method


def event(
    name: str,
) -> Callable[[Callable[[AgentT], Coroutine[Any, Any, None]]], LoopMethod[AgentT]]:
    """Makes ``async def f(self)`` a loop that runs each time the `asyncio.Event` attribute ``name`` is set.

    The event is cleared after each run.

    Args:
        name: Name of an `asyncio.Event` attribute of the agent (created in ``__init__``).
    """

    def decorator(method: Callable[[AgentT], Coroutine[Any, Any, None]]) -> LoopMethod[AgentT]:
        @functools.wraps(method)
        async def _event_loop(self: AgentT, shutdown: asyncio.Event) -> None:
            trigger = getattr(self, name)
            if not isinstance(trigger, asyncio.Event):
                raise TypeError(
                    f"@event({name!r}) of {type(self).__name__}.{method.__name__}: attribute {name!r} "
                    f"is a {type(trigger).__name__}, not an asyncio.Event"
                )
            stop = asyncio.ensure_future(shutdown.wait())
            try:
                while not shutdown.is_set():
                    fired = asyncio.ensure_future(trigger.wait())
                    await asyncio.wait({stop, fired}, return_when=asyncio.FIRST_COMPLETED)
                    if not fired.done():
                        fired.cancel()
                    if trigger.is_set() and not shutdown.is_set():
                        try:
                            await method(self)
                        finally:
                            trigger.clear()
            finally:
                stop.cancel()

        setattr(_event_loop, _METHOD_KIND, "loop")
        return _event_loop

    return decorator


def timer(
    interval: float | timedelta,
) -> Callable[[Callable[[AgentT], Coroutine[Any, Any, None]]], LoopMethod[AgentT]]:
    """Makes ``async def f(self)`` a loop that runs every ``interval`` (seconds or a `timedelta`).

    As in Academy, the first run happens one interval after the agent starts.
    """
    seconds = interval.total_seconds() if isinstance(interval, timedelta) else float(interval)
    if seconds <= 0:
        raise ValueError(f"timer interval must be positive, got {seconds}")

    def decorator(method: Callable[[AgentT], Coroutine[Any, Any, None]]) -> LoopMethod[AgentT]:
        @functools.wraps(method)
        async def _timer_loop(self: AgentT, shutdown: asyncio.Event) -> None:
            while not shutdown.is_set():
                try:
                    await asyncio.wait_for(shutdown.wait(), timeout=seconds)
                except TimeoutError:
                    await method(self)

        setattr(_timer_loop, _METHOD_KIND, "loop")
        return _timer_loop

    return decorator


def _methods_of_kind(cls: type, kind: str) -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {}
    for attr in dir(cls):
        if attr.startswith("__"):
            continue
        value = inspect.getattr_static(cls, attr, None)
        if callable(value) and getattr(value, _METHOD_KIND, None) == kind:
            found[attr] = value
    return found


def _cached_methods(cls: type, kind: str) -> dict[str, Callable[..., Any]]:
    """`_methods_of_kind`, computed once per class (kept in the class's own ``__dict__``)."""
    attribute = f"_agent_{kind}_methods_cache"
    cache = cls.__dict__.get(attribute)
    if cache is None:
        cache = _methods_of_kind(cls, kind)
        setattr(cls, attribute, cache)
    return cache  # type: ignore[no-any-return]


class Agent:
    """Base class of agents.

    Subclasses define ``async`` `action` methods, `loop` / `event` / `timer` methods, and may override
    `agent_on_startup` and `agent_on_shutdown`. Keep ``__init__`` cheap and free of I/O: it runs again whenever
    the agent is restarted; open resources in `agent_on_startup`.

    Class attributes that configure behaviour:
        agent_loop_error_policy: What to do when a loop raises (``"shutdown"``, ``"restart"`` or ``"ignore"``).
        agent_state_fields: Names of attributes that make up the agent's persistent state (checkpointed).
    """

    agent_loop_error_policy: ClassVar[LoopErrorPolicy] = "shutdown"
    agent_state_fields: ClassVar[tuple[str, ...]] = ()

    _agent_context_: AgentContext | None = None

    # ---- introspection (class level, cached) -------------------------------------------------------------

    @classmethod
    def agent_actions(cls) -> dict[str, Callable[..., Any]]:
        """The class's action methods by name (unbound functions)."""
        return _cached_methods(cls, "action")

    @classmethod
    def agent_loops(cls) -> dict[str, Callable[..., Any]]:
        """The class's control loops (``@loop``, ``@event``, ``@timer``) by name."""
        return _cached_methods(cls, "loop")

    # ---- runtime context -----------------------------------------------------------------------------------

    @property
    def agent_context(self) -> AgentContext:
        """The running agent's context (name, namespace, shutdown event, executor).

        Raises:
            AgentError: If the agent is not running inside a host (e.g. a bare instance in a unit test).
        """
        if self._agent_context_ is None:
            raise AgentError(f"{type(self).__name__} is not running: it has no agent context yet")
        return self._agent_context_

    @property
    def agent_name(self) -> str:
        """The agent's name in its namespace."""
        return self.agent_context.name

    @property
    def agent_handle(self) -> Handle[Any]:
        """A handle to this agent, to give to other agents."""
        return self.agent_context.handle

    # ---- lifecycle hooks -------------------------------------------------------------------------------------

    async def agent_on_startup(self) -> None:
        """Runs once when the agent starts (and after each restart), before loops start and actions are served."""

    async def agent_on_shutdown(self) -> None:
        """Runs once when the agent shuts down, after its loops have been asked to stop."""

    def agent_shutdown(self) -> None:
        """Asks the agent to shut down: loops see their ``shutdown`` event set, then the agent exits."""
        self.agent_context.shutdown_event.set()

    async def agent_run_sync(
        self, function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        """Runs a blocking function in the agent's thread pool so loops and actions keep running.

        Like Academy's, this cannot cancel the function once it has started.
        """
        running = asyncio.get_running_loop()
        return await running.run_in_executor(
            self.agent_context.executor, functools.partial(function, *args, **kwargs)
        )

    # ---- state (see academy_ray.checkpoint) -------------------------------------------------------------

    def agent_checkpoint(self) -> dict[str, Any]:
        """Returns the state to persist. The default collects the attributes named in ``agent_state_fields``."""
        return {field: getattr(self, field) for field in self.agent_state_fields}

    def agent_restore(self, state: dict[str, Any]) -> None:
        """Restores state returned by `agent_checkpoint` (after it went through storage).

        The default sets each field back; a field whose current value is a pydantic model is re-validated into
        that model's class, and a missing field keeps its ``__init__`` value.
        """
        for field in self.agent_state_fields:
            if field not in state:
                continue
            current = getattr(self, field, None)
            value = state[field]
            model_validate = getattr(type(current), "model_validate", None)
            if model_validate is not None and isinstance(value, dict):
                value = model_validate(value)
            setattr(self, field, value)

    def __repr__(self) -> str:
        name = self._agent_context_.name if self._agent_context_ is not None else "<not running>"
        return f"{type(self).__name__}({name})"
