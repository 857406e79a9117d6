"""Errors raised by academy_ray to callers of agents and of the runtime."""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    """Base class of the errors academy_ray itself raises about an agent.

    Errors cross process boundaries (host to caller) by pickle; they keep their message, attributes and notes.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_error, (type(self), str(self), dict(self.__dict__)))


def _rebuild_error(cls: type[AgentError], message: str, state: dict[str, Any]) -> AgentError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class AgentNotFoundError(AgentError, LookupError):
    """No agent of that name lives in the namespace (never launched, or stopped)."""

    def __init__(self, name: str, namespace: str) -> None:
        super().__init__(f"No agent named {name!r} in namespace {namespace!r}")
        self.name = name
        self.namespace = namespace


class AgentExistsError(AgentError):
    """A launch asked for a name that a live agent already holds."""

    def __init__(self, name: str, namespace: str) -> None:
        super().__init__(
            f"An agent named {name!r} already exists in namespace {namespace!r}; "
            "stop it first, choose another name, or pass get_if_exists=True to re-attach"
        )
        self.name = name
        self.namespace = namespace


class AgentTerminatedError(AgentError):
    """The agent was stopped, shut itself down, or crashed and cannot serve the call."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"Agent {name!r} cannot serve the call: {reason}")
        self.name = name
        self.reason = reason


class AgentUnavailableError(AgentError):
    """The agent's process was lost while a call was in flight; it may be restarting.

    The call may or may not have run. Retry once the agent is back (``Runtime.wait_ready``).
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"Agent {name!r} became unavailable during the call: {reason}")
        self.name = name
        self.reason = reason


class AgentStartupError(AgentError):
    """The agent's constructor or ``agent_on_startup`` raised; the agent is not running."""


class ActionNotFoundError(AgentError, AttributeError):
    """The agent has no action of that name."""

    def __init__(self, agent: str, agent_class: str, action: str, actions: list[str]) -> None:
        listed = ", ".join(sorted(actions)) or "(none)"
        super().__init__(
            f"Agent {agent!r} ({agent_class}) has no action {action!r}; its actions are: {listed}"
        )
        self.agent = agent
        self.action = action
        self.actions = sorted(actions)


class ActionArgumentError(AgentError, TypeError):
    """The arguments of an action call do not match its signature or its type annotations.

    Raised before the action runs, so the agent's state is untouched.
    """

    def __init__(self, agent: str, action: str, parameter: str | None, problem: str) -> None:
        where = f"parameter {parameter!r}" if parameter else "arguments"
        super().__init__(f"Action {action!r} of agent {agent!r}: bad {where}: {problem}")
        self.agent = agent
        self.action = action
        self.parameter = parameter
        self.problem = problem


class ActionTimeoutError(AgentError, TimeoutError):
    """The caller's timeout expired before the action returned; the remote action was cancelled."""


class CheckpointRestoreError(AgentStartupError):
    """The agent has checkpoints but none of them verifies, so it refuses to start empty over them.

    Starting empty would throw away every acknowledged action and then write a newer checkpoint over the
    evidence. Repair or roll back the checkpoints (``academy-ray checkpoints NAME``), or launch with
    ``CheckpointPolicy(allow_fresh_start=True)`` to start from the constructor's state on purpose.

    Attributes:
        name: The agent.
        seqs: The checkpoints that failed, newest first.
    """

    def __init__(self, name: str, seqs: list[int], detail: str) -> None:
        super().__init__(
            f"agent {name!r} cannot restore its state: every checkpoint fails to verify "
            f"(seq {', '.join(str(s) for s in seqs)}): {detail}. It was not started, so nothing was "
            "overwritten; pass CheckpointPolicy(allow_fresh_start=True) to start empty on purpose"
        )
        self.name = name
        self.seqs = list(seqs)


# ---- checkpoints -------------------------------------------------------------------------------------------


class CheckpointError(AgentError):
    """Base class of checkpoint store errors."""


class StaleEpochError(CheckpointError):
    """A newer activation of the agent exists: this (stale) copy may not write checkpoints anymore."""


class StorageUnavailableError(CheckpointError):
    """The storage could not be reached or failed (the cause is chained)."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint's manifest or payload is missing, truncated or fails its checksum."""


class CheckpointNotFoundError(CheckpointError, LookupError):
    """No checkpoint with that sequence number."""


class CheckpointNotWrittenError(CheckpointNotFoundError):
    """The checkpoint's name is reserved (an empty manifest) but nothing was written there: its writer is
    about to, or stopped before it did. Never a checkpoint that was acknowledged."""


class UnsafeStoreError(CheckpointError):
    """The store cannot guarantee "create if absent" atomically, so epoch fencing would not hold."""


class NoValidCheckpointError(CorruptCheckpointError):
    """The agent has checkpoints, but every one that is not fenced fails to verify.

    Attributes:
        seqs: The checkpoints that failed, newest first.
        reasons: Why each failed (same order).
    """

    def __init__(self, message: str, seqs: list[int], reasons: list[str]) -> None:
        super().__init__(message)
        self.seqs = seqs
        self.reasons = reasons


class CheckpointFencedError(StaleEpochError):
    """This copy of the agent is stale (a newer activation exists): it stopped and its change is not durable."""


class StoreNotSharedError(CheckpointError):
    """The checkpoint store at this URI is not the one earlier activations used (another node's disk)."""


# ---- calls ---------------------------------------------------------------------------------------------------


class PayloadError(AgentError, ValueError):
    """The arguments of a call are too large or too deeply nested; nothing was sent (or run)."""
