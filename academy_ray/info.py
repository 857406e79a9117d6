"""What callers learn about a running agent: its status and description (light wire types)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from academy_ray.metrics import AgentStats

AgentStatus = Literal["starting", "running", "stopping", "stopped", "failed", "unreachable"]
"""Life-cycle states an agent reports (``unreachable``: its host did not answer, e.g. while restarting)."""


class AgentInfo(BaseModel):
    """What `Runtime.list` and the CLI show about one agent."""

    name: str
    namespace: str
    agent_class: str
    status: AgentStatus
    node_id: str | None = None
    pid: int | None = None
    since: datetime | None = None
    restarted: bool = False
    error: str | None = None
    actions: list[str] = Field(default_factory=list)
    checkpoint_uri: str | None = None
    last_checkpoint_seq: int | None = None
    last_checkpoint_at: datetime | None = None
    checkpoint_pending: bool = False
    notes: list[str] = Field(default_factory=list)
    stats: AgentStats | None = None
    """The agent's figures (calls, latency, checkpoints) from its host; see `academy_ray.metrics`."""
