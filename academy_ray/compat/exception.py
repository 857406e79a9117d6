"""Academy's ``academy.exception``: the errors Academy programs catch, as academy_ray raises them."""

from __future__ import annotations

from academy_ray.exception import AgentError, AgentNotFoundError, AgentTerminatedError

__all__ = ["AgentExitError", "AgentTerminatedError", "BadEntityIdError"]


class BadEntityIdError(AgentNotFoundError):
    """An agent that the manager did not launch (Academy's error of that name)."""

    def __init__(self, name: str, namespace: str) -> None:
        super().__init__(name, namespace)


class AgentExitError(AgentError):
    """An agent launched by the manager ended in failure (a loop raised under the ``shutdown`` policy, a fenced
    copy, a failed startup); raised by `Manager.wait`, `Manager.shutdown` and the manager's exit as Academy
    raises the agent's error."""
