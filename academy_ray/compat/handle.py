"""Academy's ``academy.handle.Handle``: academy_ray's `academy_ray.Handle` with Academy's extra names."""

from __future__ import annotations

import asyncio
import functools
from typing import Any, TypeVar

from academy_ray.handle import Handle as _Handle

__all__ = ["Handle"]

AgentT = TypeVar("AgentT")


class Handle(_Handle[AgentT]):
    """A handle to an agent: ``await handle.some_action(x)``, ``handle.agent_id``, ``ping``, ``shutdown``.

    Picklable by name like academy_ray's (pass it to other agents as an argument).
    """

    __slots__ = ()

    @classmethod
    def of(cls, handle: _Handle[AgentT]) -> Handle[AgentT]:
        """The compat form of an academy_ray handle (the same agent, reusing its resolved actor)."""
        made: Handle[AgentT] = cls(
            handle.name,
            handle.namespace,
            timeout=handle.timeout,
            max_payload_bytes=handle.max_payload_bytes,
        )
        made._actor = handle._actor
        return made

    def __reduce__(self) -> tuple[Any, ...]:
        rebuild = functools.partial(
            type(self), timeout=self.timeout, max_payload_bytes=self.max_payload_bytes
        )
        return (rebuild, (self.name, self.namespace))

    @property
    def agent_id(self) -> str:
        """The agent's id: its name in its namespace."""
        return self.name

    async def ping(self, *, timeout: float | None = None) -> float:  # type: ignore[override]
        """Round-trip time to the agent in seconds.

        Raises:
            TimeoutError: No answer within ``timeout`` seconds.
        """
        return await asyncio.wait_for(super().ping(), timeout)

    async def shutdown(self, *, terminate: bool | None = None) -> None:  # type: ignore[override]
        """Asks the agent to shut down, without waiting for it (as Academy's handle does).

        ``terminate`` is accepted for Academy's signature: an academy_ray agent's process always exits once
        its agents have shut down.
        """
        del terminate
        await self._resolve()
        self._submit("agent_stop", self.name)
