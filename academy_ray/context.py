"""What a running agent knows about where it runs."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from academy_ray.handle import Handle


@dataclass
class AgentContext:
    """The running agent's identity and the tools its host gives it.

    Attributes:
        name: The agent's name.
        namespace: The Ray namespace the agent lives in.
        shutdown_event: Set when the agent is asked to shut down.
        executor: Thread pool for `Agent.agent_run_sync`.
    """

    name: str
    namespace: str
    shutdown_event: asyncio.Event
    executor: ThreadPoolExecutor
    _handle: Handle[Any] | None = field(default=None, repr=False)

    @property
    def handle(self) -> Handle[Any]:
        """A handle to the agent itself."""
        if self._handle is None:
            self._handle = Handle(self.name, self.namespace)
        return self._handle
