"""Academy's ``academy.manager.Manager`` on an academy_ray `academy_ray.Runtime`.

Academy's manager launches agents through an exchange and executors; here each agent is a detached Ray actor
launched by a `Runtime`, so the exchange and executor arguments are accepted and ignored (``resources=``,
``pool=``, ``checkpoint=`` and the other options of `Runtime.launch` can be given to `Manager.launch`
instead). As in Academy, leaving the ``async with`` block shuts down every agent the manager launched and
waits for them; agents the manager did not launch are left alone.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor
from typing import Any, Self, TypeVar

from academy_ray.agent import Agent as _Agent
from academy_ray.compat.exception import AgentExitError, BadEntityIdError
from academy_ray.compat.handle import Handle
from academy_ray.exception import AgentError, AgentTerminatedError, AgentUnavailableError
from academy_ray.handle import Handle as _Handle
from academy_ray.info import AgentInfo
from academy_ray.runtime import Runtime

__all__ = ["Manager"]

logger = logging.getLogger(__name__)

AgentT = TypeVar("AgentT", bound=_Agent)

WAIT_RETRY_S = 0.2
"""Pause before waiting again for an agent whose process Ray is restarting."""


class Manager:
    """Launches and manages agents (Academy's ``Manager``), backed by an academy_ray `Runtime`.

    Args:
        exchange_client: Academy's exchange client (ignored).
        executors: Academy's executors (ignored; their threads or processes are never used).
        default_executor: Ignored.
        max_retries: Ignored (Ray restarts an agent's lost process; see ``max_restarts`` of `Runtime.launch`).
        log_config: Ignored (see `academy_ray.compat.logging.recommended.recommended_logging`).
        runtime: The runtime to launch with (default: a new `Runtime()`, closed with the manager).
    """

    def __init__(
        self,
        exchange_client: Any = None,
        executors: Executor | Mapping[str, Executor | None] | None = None,
        *,
        default_executor: str = "event_loop",
        max_retries: int = 0,
        log_config: Any = None,
        runtime: Runtime | None = None,
    ) -> None:
        del exchange_client, default_executor, max_retries, log_config
        self._executors = executors
        self._owns_runtime = runtime is None
        self.runtime = runtime if runtime is not None else Runtime()
        self._exits: dict[str, asyncio.Task[AgentInfo | None]] = {}
        self._stopping: set[asyncio.Task[None]] = set()

    @classmethod
    async def from_exchange_factory(
        cls,
        factory: Any = None,
        executors: Executor | Mapping[str, Executor | None] | None = None,
        *,
        default_executor: str = "event_loop",
        max_retries: int = 0,
        log_config: Any = None,
        runtime: Runtime | None = None,
    ) -> Self:
        """A manager, as Academy makes one from an exchange factory (the factory is ignored)."""
        del factory
        return cls(
            None,
            executors,
            default_executor=default_executor,
            max_retries=max_retries,
            log_config=log_config,
            runtime=runtime,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"Manager(namespace={self.runtime.namespace!r}, agents={len(self._exits)})"

    async def close(self, close_exchange: bool = True) -> None:
        """Shuts down every running agent this manager launched, waits for them, then closes the runtime
        (if the manager made it) and the executors it was given.

        Raises:
            AgentExitError: An agent had ended in failure (several: an `ExceptionGroup`).
        """
        del close_exchange
        # Every agent, also those that ended by themselves: their hosts are gone when this returns.
        await asyncio.gather(*(self._stop(name) for name in self._exits))
        if self._stopping:  # non-blocking shutdowns still under way
            await asyncio.wait(self._stopping)
        if self._exits:
            await asyncio.wait(self._exits.values())
        errors = [
            error for name, task in self._exits.items() if (error := self._failure(name, task))
        ]
        if self._owns_runtime:
            self.runtime.close()
        for executor in _executors(self._executors):
            executor.shutdown(wait=False, cancel_futures=True)
        _raise(errors, "agents failed")

    async def launch(
        self,
        agent: AgentT | type[AgentT],
        *,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        config: Any = None,
        executor: str | None = None,
        submit_kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        registration: Any = None,
        log_config: Any = None,
        **options: Any,
    ) -> Handle[AgentT]:
        """Launches an agent (a class, built with ``args`` and ``kwargs``, or an instance) and returns its handle.

        Args:
            agent: The agent class, or an agent instance (copied into the agent's process).
            args: Positional arguments of the class (ignored for an instance, as in Academy).
            kwargs: Keyword arguments of the class (ignored for an instance).
            config: Academy's ``RuntimeConfig`` (ignored).
            executor: Academy's executor name (ignored).
            submit_kwargs: Academy's executor arguments (ignored; give ``resources=`` instead).
            name: The agent's name (unique in the namespace; default: class name and a random suffix).
            registration: Academy's registration (ignored).
            log_config: Ignored.
            **options: Options of `academy_ray.Runtime.launch` (``resources``, ``pool``, ``checkpoint``, ...).

        Raises:
            TypeError: ``agent`` is not an academy_ray (or compat) `Agent` class or instance.
            AgentExistsError: ``name`` is taken in the namespace.
            AgentStartupError: Its constructor or ``agent_on_startup`` raised.
        """
        del config, executor, submit_kwargs, registration, log_config
        if isinstance(agent, type):
            cls: type[AgentT] = agent
        elif isinstance(agent, _Agent):
            cls, args, kwargs = _class_of_instance(agent), (), {}
        else:
            raise TypeError(f"{agent!r} is neither an Agent class nor an Agent instance")
        name = name or f"{cls.__name__}-{uuid.uuid4().hex[:8]}"
        launched = await self.runtime.launch(
            cls, args=args or (), kwargs=kwargs or {}, name=name, **options
        )
        handle = Handle.of(launched)
        self._exits[name] = asyncio.ensure_future(_exited(handle))
        return handle

    def get_handle(self, agent: str | _Handle[Any]) -> Handle[Any]:
        """A handle to an agent by id (its name) or handle."""
        name = agent.name if isinstance(agent, _Handle) else agent
        return Handle(name, self.runtime.namespace)

    def running(self) -> set[str]:
        """The ids (names) of the agents this manager launched that have not ended yet."""
        return {name for name, task in self._exits.items() if not task.done()}

    async def shutdown(
        self,
        agent: str | _Handle[Any],
        *,
        blocking: bool = True,
        raise_error: bool = True,
        terminate: bool | None = None,
        timeout: float | None = None,
    ) -> None:
        """Shuts down an agent this manager launched.

        Args:
            agent: Its id (name) or handle.
            blocking: Wait until it has ended (its ``agent_on_shutdown`` ran and its process is gone).
            raise_error: With ``blocking``, raise the agent's failure if it ended in one.
            terminate: Accepted for Academy's signature.
            timeout: With ``blocking``, the most seconds to wait.

        Raises:
            BadEntityIdError: The manager did not launch it.
            TimeoutError: It had not ended within ``timeout``.
            AgentExitError: It had ended in failure (``raise_error``).
        """
        del terminate
        name = self._launched(agent)
        if self._exits[name].done():
            return
        stopping = asyncio.ensure_future(self._stop(name))
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)
        if blocking:
            done, _ = await asyncio.wait({stopping}, timeout=timeout)
            if not done:
                raise TimeoutError(f"agent {name!r} had not shut down within {timeout} s")
            await self.wait([name], raise_error=raise_error, timeout=timeout)

    async def wait(
        self,
        agents: Iterable[str | _Handle[Any]],
        *,
        raise_error: bool = False,
        return_when: str = asyncio.ALL_COMPLETED,
        timeout: float | None = None,
    ) -> None:
        """Waits until agents this manager launched have ended (``return_when`` as in `asyncio.wait`).

        Raises:
            BadEntityIdError: The manager did not launch one of them.
            TimeoutError: Not ended within ``timeout`` seconds.
            AgentExitError: One ended in failure (``raise_error``; several: an `ExceptionGroup`).
        """
        names = {self._launched(agent) for agent in agents}
        if not names:
            return
        tasks = {name: self._exits[name] for name in names}
        done, pending = await asyncio.wait(tasks.values(), timeout=timeout, return_when=return_when)
        if not done or (return_when == asyncio.ALL_COMPLETED and pending):
            raise TimeoutError(
                f"{len(pending)} of {len(tasks)} agent(s) had not ended within {timeout} s"
            )
        if raise_error:
            errors = [
                error
                for name, task in tasks.items()
                if task.done() and (error := self._failure(name, task))
            ]
            _raise(errors, "agents failed")

    # ---- internals ----------------------------------------------------------------------------------------

    def _launched(self, agent: str | _Handle[Any]) -> str:
        name = agent.name if isinstance(agent, _Handle) else agent
        if name not in self._exits:
            raise BadEntityIdError(name, self.runtime.namespace)
        return name

    async def _stop(self, name: str) -> None:
        try:
            await self.runtime.stop(name)
        except AgentError as error:  # ended meanwhile
            logger.debug("agent %r: %s", name, error)

    def _failure(self, name: str, task: asyncio.Task[AgentInfo | None]) -> AgentExitError | None:
        if task.cancelled():
            return None
        info = task.result()
        if info is None or (info.status != "failed" and info.error is None):
            return None
        return AgentExitError(f"agent {name!r} ended in failure: {info.error or info.status}")


async def _exited(handle: Handle[Any]) -> AgentInfo | None:
    """Waits until the agent has ended; its last info (None if its process was already gone)."""
    while True:
        try:
            return await handle.wait()
        except AgentUnavailableError:
            await asyncio.sleep(WAIT_RETRY_S)
        except AgentTerminatedError:
            return None


def _class_of_instance(agent: AgentT) -> type[AgentT]:
    """A subclass of ``type(agent)`` whose instances start as copies of ``agent`` (Academy launches instances).

    Shipped to the agent's host by value with Ray's cloudpickle; the copy is taken here, at launch.
    """
    cls = type(agent)
    state = copy.deepcopy(agent.__dict__)

    def __init__(self: Any) -> None:  # noqa: N807
        self.__dict__.update(copy.deepcopy(state))

    made = type(cls.__name__, (cls,), {"__init__": __init__, "__module__": cls.__module__})
    made.__qualname__ = cls.__qualname__
    return made


def _executors(executors: Executor | Mapping[str, Executor | None] | None) -> list[Executor]:
    if isinstance(executors, Executor):
        return [executors]
    if isinstance(executors, Mapping):
        return [e for e in executors.values() if e is not None]
    return []


def _raise(errors: list[AgentExitError], message: str) -> None:
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ExceptionGroup(message, errors)
