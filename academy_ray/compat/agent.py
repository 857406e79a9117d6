"""Academy's ``academy.agent``: the `Agent` base class and the ``action``/``loop``/``event``/``timer`` decorators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, overload

from academy_ray.agent import ActionMethod, event, loop, timer
from academy_ray.agent import Agent as _Agent
from academy_ray.agent import action as _action

__all__ = ["Agent", "action", "event", "loop", "timer"]

F = TypeVar("F", bound=ActionMethod[..., Any])


class Agent(_Agent):
    """academy_ray's `academy_ray.Agent` with Academy's ``agent_id`` (here: the agent's name).

    Academy agents call ``super().__init__()`` and set up state in ``agent_on_startup``; both work as they do
    in Academy. Subclasses of `academy_ray.Agent` launch through the compat `Manager` as well.
    """

    @property
    def agent_id(self) -> str:
        """The agent's id: its name in its namespace."""
        return self.agent_name


@overload
def action(method: F, /) -> F: ...


@overload
def action(
    *, allow_protected_name: bool = False, context: bool = False, checkpoint: bool = True
) -> Callable[[F], F]: ...


def action(
    method: F | None = None,
    /,
    *,
    allow_protected_name: bool = False,
    context: bool = False,
    checkpoint: bool = True,
) -> F | Callable[[F], F]:
    """Academy's ``@action`` (also as ``@action(...)``); see `academy_ray.action`.

    Args:
        method: The method (when used as ``@action``).
        allow_protected_name: Accepted for Academy's signature; academy_ray has no protected action names.
        context: Academy's ``ActionContext`` argument, which academy_ray does not pass: True is refused.
        checkpoint: academy_ray's option (False: the action never changes persistent state).

    Raises:
        TypeError: ``context=True``, or a method that is not a coroutine function.
    """
    del allow_protected_name
    if context:
        raise TypeError(
            "academy_ray.compat: @action(context=True) is not supported (academy_ray passes no ActionContext)"
        )

    def decorate(function: F) -> F:
        return _action(checkpoint=checkpoint)(function)  # type: ignore[return-value]

    return decorate if method is None else decorate(method)
