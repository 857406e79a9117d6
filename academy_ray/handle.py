"""`Handle`: a small, picklable reference to an agent, by namespace and name."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

import ray
from ray.exceptions import (
    ActorDiedError,
    ActorUnavailableError,
    ActorUnschedulableError,
    GetTimeoutError,
    RayActorError,
    RayTaskError,
    TaskCancelledError,
)

from academy_ray.exception import (
    ActionTimeoutError,
    AgentNotFoundError,
    AgentTerminatedError,
    AgentUnavailableError,
)
from academy_ray.info import AgentInfo
from academy_ray.local_calls import LocalRunner, copy_arguments, copy_error, copy_value, hosted
from academy_ray.names import find_registry
from academy_ray.payload import DEFAULT_MAX_PAYLOAD_BYTES, check_payload
from academy_ray.wire import pack_call
from placement import PlacementClient

AgentT = TypeVar("AgentT")

PLACEMENT_QUERY_TIMEOUT_S = 5.0
"""Bound on asking the placement controller whether a vanished agent is being re-placed."""

RESTART_WAIT_S = 60.0
"""How long a call waits for an agent whose process Ray is restarting (a call that reaches it while it
restarts is held back by Ray, unsent, and sent again once the agent is back; only a call that was in flight
when the process died gets `AgentUnavailableError`)."""

NAME_SETTLE_S = 5.0
"""After the controller has finished placing an agent again, how long a lookup keeps looking for the new
copy's name (Ray registers a new actor's name a moment after its creation was requested)."""

REPLACEMENT_WAIT_S = 60.0
"""How long a lookup waits for an agent that its placement controller is placing again after node loss
(its name is free between the old copy's removal and the new one's creation)."""


def lookup_actor(name: str, namespace: str) -> Any:
    """Returns the Ray actor handle of the agent's host (its own, or its pool's).

    Raises:
        AgentNotFoundError: If no such agent lives in ``namespace``.
    """
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        pass
    registry = find_registry(namespace)
    host = None if registry is None else ray.get(registry.resolve.remote(name))
    return _pool_host(host, name, namespace)


async def lookup_actor_async(name: str, namespace: str) -> Any:
    """`lookup_actor` without blocking the event loop on the registry."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        pass
    registry = find_registry(namespace)
    host = None if registry is None else await registry.resolve.remote(name)
    return _pool_host(host, name, namespace)


def _placement(namespace: str) -> PlacementClient | None:
    """The namespace's placement controller, if it has one (never creates it)."""
    return PlacementClient.attach(namespace)


class _PlacedAgainWait:
    """What the sync and async waiting lookups share: whether a miss is final or worth another look.

    A miss is worth another look while the placement controller says it is placing the agent again, and
    for ``NAME_SETTLE_S`` after it last said so (the new actor's name appears a moment after); never past
    ``wait_s`` in all.
    """

    def __init__(self, name: str, wait_s: float) -> None:
        self.name = name
        self.wait_s = wait_s
        self.deadline = time.monotonic() + wait_s
        self.replaced_at: float | None = (
            None  # when the controller last said it was placing it again
        )

    def look_again(self, replacing: bool) -> bool:
        """After a miss: True to look again, False when the miss is final.

        Raises:
            AgentUnavailableError: Still being placed again after ``wait_s`` seconds.
        """
        now = time.monotonic()
        if replacing:
            self.replaced_at = now
        elif self.replaced_at is None or now - self.replaced_at > NAME_SETTLE_S:
            return False
        if now > self.deadline:
            raise AgentUnavailableError(
                self.name, f"still being placed again after {self.wait_s} s: retry"
            )
        return True


def _replacing(name: str, namespace: str) -> bool:
    """Whether the namespace's placement controller is placing ``name`` again (False if it cannot say)."""
    placement = _placement(namespace)
    try:
        return placement is not None and placement.replacing_sync(
            name, timeout=PLACEMENT_QUERY_TIMEOUT_S
        )
    except ray.exceptions.RayError:
        return False


async def _replacing_async(name: str, namespace: str) -> bool:
    """`_replacing` without blocking the event loop."""
    placement = _placement(namespace)
    try:
        return placement is not None and await asyncio.wait_for(
            placement.replacing(name), PLACEMENT_QUERY_TIMEOUT_S
        )
    except (ray.exceptions.RayError, TimeoutError):
        return False


def lookup_actor_waiting(name: str, namespace: str, wait_s: float = REPLACEMENT_WAIT_S) -> Any:
    """`lookup_actor` that waits (up to ``wait_s``) while placement re-creates the agent after node loss.

    Raises:
        AgentNotFoundError: No such agent, and none being placed again.
        AgentUnavailableError: Still being placed again after ``wait_s`` seconds.
    """
    wait = _PlacedAgainWait(name, wait_s)
    while True:
        try:
            return lookup_actor(name, namespace)
        except AgentNotFoundError:
            if not wait.look_again(_replacing(name, namespace)):
                raise
        time.sleep(0.1)


async def lookup_actor_waiting_async(
    name: str, namespace: str, wait_s: float = REPLACEMENT_WAIT_S
) -> Any:
    """`lookup_actor_waiting` without blocking the event loop."""
    wait = _PlacedAgainWait(name, wait_s)
    while True:
        try:
            return await lookup_actor_async(name, namespace)
        except AgentNotFoundError:
            if not wait.look_again(await _replacing_async(name, namespace)):
                raise
        await asyncio.sleep(0.1)


class _NotSent(Exception):
    """A call that cannot have run on the agent's lost process: it may be sent again once it is back."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


_HOST_LOST_AT: dict[tuple[str, str], float] = {}
"""(namespace, agent) -> when a call of this process last saw the agent's host process fail."""


def _cannot_have_run(error: BaseException, key: tuple[str, str], submitted_at: float) -> bool:
    """Whether a failed call surely did not run on the lost process (so sending it again is safe).

    True when Ray held it back because the actor is restarting, or when it was submitted after this
    process had already seen the agent's host fail (it was sent to a process known dead). A call in flight
    when the process died is neither: it may or may not have run.
    """
    if not isinstance(error, ActorUnavailableError):
        return False
    if "actor is restarting" in str(error):
        return True
    lost_at = _HOST_LOST_AT.get(key)
    return lost_at is not None and lost_at < submitted_at


def _pool_host(host: str | None, name: str, namespace: str) -> Any:
    if host is None:
        raise AgentNotFoundError(name, namespace)
    try:
        return ray.get_actor(host, namespace=namespace)
    except ValueError:
        raise AgentNotFoundError(name, namespace) from None


def translate_error(error: BaseException, name: str, namespace: str) -> BaseException:
    """Maps what Ray raised for a call to what academy_ray's callers get.

    An exception raised by the action itself comes back as its own type (with the remote traceback in its
    notes); a dead, stopped or restarting agent becomes a typed `AgentError`.
    """
    if isinstance(error, RayTaskError):
        cause = error.cause
        if isinstance(cause, TaskCancelledError):
            return asyncio.CancelledError(f"action of agent {name!r} was cancelled")
        if isinstance(cause, RayActorError):
            return translate_error(cause, name, namespace)
        if isinstance(cause, BaseException):
            return cause
        return error
    if isinstance(error, ActorUnavailableError):
        return AgentUnavailableError(name, str(error).splitlines()[0])
    if isinstance(error, (ActorDiedError, RayActorError, ActorUnschedulableError)):
        try:
            lookup_actor(name, namespace)
        except AgentNotFoundError:
            if _placement_holds(name, namespace):
                return AgentUnavailableError(
                    name, "its node was lost and it is being re-placed: retry"
                )
            return AgentTerminatedError(name, "the agent has stopped or its process died for good")
        return AgentUnavailableError(
            name, "its process died during the call; it is being restarted: retry"
        )
    if isinstance(error, GetTimeoutError):
        return ActionTimeoutError(f"call to agent {name!r} timed out")
    return error


def _placement_holds(name: str, namespace: str) -> bool:
    """Whether the namespace's placement controller still places ``name`` (e.g. re-placing it right now)."""
    placement = _placement(namespace)
    if placement is None:
        return False
    try:
        if placement.explain_sync(name, timeout=PLACEMENT_QUERY_TIMEOUT_S) is not None:
            return True
        pending = placement.pending_sync(timeout=PLACEMENT_QUERY_TIMEOUT_S)
    except ray.exceptions.RayError:
        return False
    return any(demand.name == name for demand in pending)


def host_call(
    name: str, action: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """The host method and its arguments for one action call: packed in one bytes object when it is small
    plain data (``agent_packed``, see `academy_ray.wire`), else spread out (``agent_call``)."""
    packed = pack_call(name, action, args, kwargs)
    if packed is not None:
        return "agent_packed", (packed,), {}
    return "agent_call", (name, action, *args), kwargs


class Handle(Generic[AgentT]):
    """Calls a running agent's actions: ``await handle.some_action(x)``.

    Handles are cheap and picklable: pass them to other agents as arguments. ``handle.sync.some_action(x)``
    is the blocking form for scripts and notebooks (do not use it inside an agent).

    Args:
        name: The agent's name.
        namespace: The Ray namespace it lives in.
        timeout: Default limit in seconds for each call; on expiry the remote action is cancelled and
            `ActionTimeoutError` raised. None waits as long as the action runs.
        max_payload_bytes: Largest total size of one call's arguments; a larger call raises `PayloadError`
            before anything is sent.
    """

    __slots__ = (
        "_actor",
        "_callers",
        "calls_in_process",
        "calls_through_ray",
        "max_payload_bytes",
        "name",
        "namespace",
        "timeout",
    )

    def __init__(
        self,
        name: str,
        namespace: str,
        *,
        timeout: float | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.timeout = timeout
        self.max_payload_bytes = max_payload_bytes
        self._actor: Any = None
        self._callers: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = {}
        self.calls_in_process = 0
        """Action calls this handle ran directly in the agent's runner (the agent shares the process)."""
        self.calls_through_ray = 0
        """Action calls this handle sent through Ray."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_handle, (self.name, self.namespace, self.timeout, self.max_payload_bytes))

    def __repr__(self) -> str:
        return f"Handle({self.name!r}, namespace={self.namespace!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Handle) and (other.name, other.namespace) == (
            self.name,
            self.namespace,
        )

    def __hash__(self) -> int:
        return hash((self.name, self.namespace))

    def with_timeout(self, timeout: float | None) -> Handle[AgentT]:
        """A handle to the same agent whose calls time out after ``timeout`` seconds."""
        return Handle(
            self.name, self.namespace, timeout=timeout, max_payload_bytes=self.max_payload_bytes
        )

    @property
    def actor(self) -> Any:
        """The Ray actor handle of the agent's host (looked up once)."""
        if self._actor is None:
            self._actor = lookup_actor(self.name, self.namespace)
        return self._actor

    def __getattr__(self, action: str) -> Callable[..., Coroutine[Any, Any, Any]]:
        if action.startswith("_"):
            raise AttributeError(action)
        caller = self._callers.get(action)
        if caller is None:

            async def caller(*args: Any, **kwargs: Any) -> Any:
                return await self.action(action, *args, **kwargs)

            caller.__name__ = action
            self._callers[action] = caller
        return caller

    async def _resolve(self) -> None:
        if self._actor is None:
            self._actor = await lookup_actor_waiting_async(self.name, self.namespace)

    async def action(self, action: str, /, *args: Any, **kwargs: Any) -> Any:
        """Calls ``action`` with the arguments and returns its result.

        Cancelling the awaiting task cancels the remote action. When the agent is hosted in the caller's
        own process (co-hosted in its pool, or the agent calling itself), the call runs directly on the
        agent's event loop with the same checks, copies and errors (see `academy_ray.local_calls`); once
        the agent has left the process, calls go through Ray again.

        Raises:
            ActionNotFoundError: The agent has no such action.
            ActionArgumentError: The arguments do not fit the action's signature or annotations.
            AgentNotFoundError: No such agent.
            AgentTerminatedError: The agent has stopped or died.
            AgentUnavailableError: The agent's process was lost during the call (it may be restarting).
            ActionTimeoutError: The handle's timeout expired.
            PayloadError: The arguments are over the handle's size limit or nested too deeply (not sent).
            Exception: Whatever the action raised, as its own type.
        """
        check_payload(self.name, action, args, kwargs, self.max_payload_bytes)
        runner = hosted(self.namespace, self.name)
        if runner is not None:
            copied = copy_arguments(args, kwargs)
            if copied is not None:
                self.calls_in_process += 1
                return await self._call_in_process(runner, action, *copied)
        self.calls_through_ray += 1
        method, method_args, method_kwargs = host_call(self.name, action, args, kwargs)
        if self._actor is None:
            await self._resolve()
            return await self._call(method, *method_args, **method_kwargs)
        try:
            return await self._call(method, *method_args, **method_kwargs)
        except AgentNotFoundError as error:
            if (error.name, error.namespace) != (self.name, self.namespace):
                raise  # raised by the action itself, about another agent
            # The host this handle knew no longer has the agent (stopped there, now in another pool):
            # the call did not run; look the agent up again and send it there.
            self._actor = None
            await self._resolve()
            return await self._call(method, *method_args, **method_kwargs)

    async def _call_in_process(
        self, runner: LocalRunner, action: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Runs the call in the runner of an agent on this event loop: the remote path's semantics."""
        scope = None if self.timeout is None else asyncio.timeout(self.timeout)
        try:
            if scope is None:
                result = await runner.call(action, args, kwargs)
            else:
                async with scope:
                    result = await runner.call(action, args, kwargs)
        except Exception as error:
            if scope is not None and scope.expired() and isinstance(error, TimeoutError):
                raise ActionTimeoutError(
                    f"call to agent {self.name!r} did not return within {self.timeout} s; it was "
                    "cancelled"
                ) from None
            raise copy_error(error) from None
        return copy_value(result)

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Submits a host method and awaits it; while the agent restarts, waits and sends it again.

        Only calls that Ray held back unsent are sent again (they never ran), for up to the handle's
        timeout or `RESTART_WAIT_S`.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if self.timeout is not None else RESTART_WAIT_S)
        delay = 0.05
        while True:
            remaining = None if self.timeout is None else max(deadline - loop.time(), 0.001)
            submitted_at = time.monotonic()
            try:
                result = await self._await(
                    self._submit(method, *args, **kwargs), remaining, submitted_at
                )
                _HOST_LOST_AT.pop((self.namespace, self.name), None)
                return result
            except _NotSent as not_sent:
                if loop.time() + delay > deadline:
                    raise await asyncio.to_thread(
                        translate_error, not_sent.error, self.name, self.namespace
                    ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _submit(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self.actor, method).remote(*args, **kwargs)
        except (RayActorError, ActorUnschedulableError) as error:
            self._forget_actor_on(error)
            raise translate_error(error, self.name, self.namespace) from None

    async def _await(
        self, ref: Any, timeout: float | None = None, submitted_at: float | None = None
    ) -> Any:
        timeout = self.timeout if timeout is None else timeout
        try:
            if timeout is None:
                return await ref
            return await asyncio.wait_for(asyncio.shield(ref), timeout)
        except TimeoutError:
            ray.cancel(ref)
            raise ActionTimeoutError(
                f"call to agent {self.name!r} did not return within {self.timeout} s; it was cancelled"
            ) from None
        except asyncio.CancelledError:
            ray.cancel(ref)
            raise
        except ray.exceptions.RayError as error:
            self._forget_actor_on(error)
            key = (self.namespace, self.name)
            if submitted_at is not None and _cannot_have_run(error, key, submitted_at):
                raise _NotSent(error) from None
            if isinstance(error, RayActorError):
                _HOST_LOST_AT.setdefault(key, time.monotonic())
            raise await asyncio.to_thread(
                translate_error, error, self.name, self.namespace
            ) from None

    def _forget_actor_on(self, error: BaseException) -> None:
        """After the actor died or was replaced, look the name up again on the next call."""
        if isinstance(error, (RayActorError, ActorUnschedulableError)):
            self._actor = None

    async def ping(self) -> float:
        """Round-trip time to the agent's host in seconds (also proves it is reachable)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._resolve()
        await self._call("agent_ready", self.name)
        return loop.time() - start

    async def info(self) -> AgentInfo:
        """Status, node and actions of the agent (waits while it is starting)."""
        await self._resolve()
        return await self._call("agent_ready", self.name)  # type: ignore[no-any-return]

    async def shutdown(self) -> None:
        """Asks the agent to shut down and waits until it has (its process then exits)."""
        await self._resolve()
        await self._call("agent_stop", self.name)

    async def wait(self) -> AgentInfo | None:
        """Returns once the agent has shut down; None if its process is already gone."""
        try:
            await self._resolve()
            return await self._call("agent_wait", self.name)  # type: ignore[no-any-return]
        except (AgentTerminatedError, AgentNotFoundError):
            return None

    @property
    def sync(self) -> BlockingHandle:
        """The blocking form of this handle."""
        return BlockingHandle(self)


class BlockingHandle:
    """Blocking calls on an agent: ``handle.sync.some_action(x)``; same errors as `Handle`."""

    __slots__ = ("_handle",)

    def __init__(self, handle: Handle[Any]) -> None:
        self._handle = handle

    def __getattr__(self, action: str) -> Callable[..., Any]:
        if action.startswith("_"):
            raise AttributeError(action)
        return lambda *args, **kwargs: self.action(action, *args, **kwargs)

    def action(self, action: str, /, *args: Any, **kwargs: Any) -> Any:
        """Calls ``action`` and blocks until it returns."""
        handle = self._handle
        check_payload(handle.name, action, args, kwargs, handle.max_payload_bytes)
        deadline = time.monotonic() + (
            handle.timeout if handle.timeout is not None else RESTART_WAIT_S
        )
        delay = 0.05
        key = (handle.namespace, handle.name)
        while True:
            submitted_at = time.monotonic()
            method, method_args, method_kwargs = host_call(handle.name, action, args, kwargs)
            ref = handle._submit(method, *method_args, **method_kwargs)
            remaining = None if handle.timeout is None else max(deadline - time.monotonic(), 0.001)
            try:
                result = ray.get(ref, timeout=remaining)
                _HOST_LOST_AT.pop(key, None)
                return result
            except GetTimeoutError:
                ray.cancel(ref)
                raise ActionTimeoutError(
                    f"call to agent {handle.name!r} did not return within {handle.timeout} s; it was "
                    "cancelled"
                ) from None
            except KeyboardInterrupt:
                ray.cancel(ref)
                raise
            except ray.exceptions.RayError as error:
                handle._forget_actor_on(error)
                retry = _cannot_have_run(error, key, submitted_at)
                if not retry and isinstance(error, RayActorError):
                    _HOST_LOST_AT.setdefault(key, time.monotonic())
                if not retry or time.monotonic() + delay > deadline:
                    raise translate_error(error, handle.name, handle.namespace) from None
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def _rebuild_handle(
    name: str,
    namespace: str,
    timeout: float | None,
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> Handle[Any]:
    return Handle(name, namespace, timeout=timeout, max_payload_bytes=max_payload_bytes)
