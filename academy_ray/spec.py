"""Wire types shared by the runtime, the host actor and the CLI."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from academy_ray.info import AgentInfo, AgentStatus
from academy_ray.names import reserved_name_problem
from academy_ray.payload import DEFAULT_MAX_PAYLOAD_BYTES
from academy_ray.policy import CheckpointPolicy

__all__ = ["AgentInfo", "AgentResources", "AgentSpec", "AgentStatus"]

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:@+=-]{0,199}")
"""Agent names: safe as Ray actor names and as path components of checkpoint stores."""


class AgentResources(BaseModel):
    """What an agent's host process reserves on its node.

    Attributes:
        num_cpus: Logical CPUs. The default, 0.01, lets 100 mostly idle agents share one logical CPU while
            still being a reservation that a placement group can pin to a node (Ray cannot reserve an
            empty bundle).
        num_gpus: GPUs (fractions allowed).
        memory_bytes: Memory to reserve, if any.
        custom: Custom Ray resources, e.g. ``{"agent_slot": 1}``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_cpus: float = Field(default=0.01, ge=0)
    num_gpus: float = Field(default=0.0, ge=0)
    memory_bytes: int | None = Field(default=None, ge=0)
    custom: dict[str, float] = Field(default_factory=dict)

    def actor_options(self) -> dict[str, Any]:
        """The matching keyword arguments of Ray's ``.options()``."""
        options: dict[str, Any] = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory_bytes:
            options["memory"] = self.memory_bytes
        if self.custom:
            options["resources"] = dict(self.custom)
        return options


class AgentSpec(BaseModel):
    """Everything a host needs to (re)create an agent; sent to the host actor when it is created.

    Attributes:
        name: The agent's name (also its Ray actor's name).
        namespace: Ray namespace.
        agent_class: The `Agent` subclass.
        args: Positional arguments of the class.
        kwargs: Keyword arguments of the class.
        executor_workers: Threads for `Agent.agent_run_sync`.
        shutdown_grace_s: How long loops get to return after shutdown is requested before they are cancelled.
        checkpoint: Where and when the agent's state is checkpointed (None: not persisted).
        max_payload_bytes: Largest total size of one call's arguments, enforced by the host where the call
            lands (a caller's `Handle` checks its own limit before sending, too).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    name: str
    namespace: str
    agent_class: type
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = Field(default_factory=dict)
    executor_workers: int = Field(default=4, ge=1)
    shutdown_grace_s: float = Field(default=5.0, ge=0)
    checkpoint: CheckpointPolicy | None = None
    max_payload_bytes: int = Field(default=DEFAULT_MAX_PAYLOAD_BYTES, ge=1)

    @field_validator("name")
    @classmethod
    def _name_is_usable(cls, value: str) -> str:
        if not value or len(value) > 200 or not value.isprintable() or "/" in value:
            raise ValueError("agent names are 1-200 printable characters without '/'")
        problem = reserved_name_problem(value)
        if problem is not None:
            raise ValueError(f"agent name {value!r} is reserved: {problem}")
        return value

    @field_validator("agent_class")
    @classmethod
    def _is_class(cls, value: type) -> type:
        if not isinstance(value, type):
            raise ValueError(f"{value!r} is not a class")  # noqa: TRY004 (pydantic)
        return value
