"""academy_ray: Academy-style stateful agents, each a detached, named Ray actor.

Example:
    ```python
    from academy_ray import Agent, Runtime, action

    class Counter(Agent):
        def __init__(self) -> None:
            self.count = 0

        @action
        async def add(self, n: int) -> int:
            self.count += n
            return self.count

    async with Runtime() as rt:
        counter = await rt.launch(Counter, name="counter")
        print(await counter.add(2))
    ```
"""

from __future__ import annotations

from academy_ray.agent import Agent, action, event, loop, timer
from academy_ray.context import AgentContext
from academy_ray.exception import (
    ActionArgumentError,
    ActionNotFoundError,
    ActionTimeoutError,
    AgentError,
    AgentExistsError,
    AgentNotFoundError,
    AgentStartupError,
    AgentTerminatedError,
    AgentUnavailableError,
    CheckpointError,
    CheckpointFencedError,
    CheckpointRestoreError,
    PayloadError,
    StorageUnavailableError,
)
from academy_ray.handle import BlockingHandle, Handle
from academy_ray.info import AgentInfo
from academy_ray.policy import CheckpointPolicy
from academy_ray.runtime import BlockingRuntime, Runtime
from academy_ray.spec import AgentResources, AgentSpec

__all__ = [
    "ActionArgumentError",
    "ActionNotFoundError",
    "ActionTimeoutError",
    "Agent",
    "AgentContext",
    "AgentError",
    "AgentExistsError",
    "AgentInfo",
    "AgentNotFoundError",
    "AgentResources",
    "AgentSpec",
    "AgentStartupError",
    "AgentTerminatedError",
    "AgentUnavailableError",
    "BlockingHandle",
    "BlockingRuntime",
    "CheckpointError",
    "CheckpointFencedError",
    "CheckpointPolicy",
    "CheckpointRestoreError",
    "Handle",
    "PayloadError",
    "Runtime",
    "StorageUnavailableError",
    "action",
    "event",
    "loop",
    "timer",
]
