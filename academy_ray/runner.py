"""Runs one agent inside a host: startup, control loops, action dispatch and shutdown."""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from academy_ray.agent import ACTION_CHECKPOINTS, Agent
from academy_ray.checkpoint import Persistence
from academy_ray.context import AgentContext
from academy_ray.exception import (
    ActionNotFoundError,
    AgentStartupError,
    AgentTerminatedError,
    CheckpointFencedError,
)
from academy_ray.metrics import AgentMetrics
from academy_ray.payload import check_payload
from academy_ray.spec import AgentSpec, AgentStatus
from academy_ray.store import CheckpointInfo
from academy_ray.validation import ActionValidator

logger = logging.getLogger(__name__)

LOOP_RESTART_BACKOFF_S = (0.1, 30.0)
"""First and largest delay before a failed loop is run again under the ``"restart"`` policy."""


def _add_remote_traceback(error: BaseException, agent: str, action: str) -> None:
    text = "".join(traceback.format_exception(error))
    error.add_note(f"\n--- raised in action {action!r} of agent {agent!r} ---\n{text.rstrip()}")


class ActionGate:
    """Lets state-changing actions run together, or one exclusive operation (a rollback) alone.

    An action holds the gate from its start until its result is acknowledged (durable, under the
    every-action policy); an exclusive operation waits until no action holds it and keeps new ones out
    meanwhile. So nothing acknowledged can be discarded by a rollback that was already under way.
    """

    def __init__(self) -> None:
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()
        self._exclusive = asyncio.Lock()

    async def enter(self) -> None:
        """Waits while an exclusive operation runs, then holds the gate (shared)."""
        while not self._open.is_set():
            await self._open.wait()
        self._active += 1
        self._idle.clear()

    def leave(self) -> None:
        """Releases a shared hold."""
        self._active -= 1
        if self._active == 0:
            self._idle.set()

    async def run_exclusive(self, operation: Any) -> Any:
        """Runs ``await operation()`` with no action in flight and none starting."""
        async with self._exclusive:
            self._open.clear()
            try:
                await self._idle.wait()
                return await operation()
            finally:
                self._open.set()


class AgentRunner:
    """Owns one agent instance for the life of its host process.

    Calls that arrive while the agent is starting wait until startup has finished (so a restarted agent never
    serves a call before its state is restored). After shutdown every call gets `AgentTerminatedError`; a
    copy fenced off by a newer one gets `CheckpointFencedError` and stops, whatever its checkpoint policy.
    """

    def __init__(self, spec: AgentSpec) -> None:
        self.spec = spec
        self.status: AgentStatus = "starting"
        self.since = time.time()
        self.error: str | None = None
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self.agent: Agent | None = None
        self._startup_error: BaseException | None = None
        self._shutdown_event = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=spec.executor_workers, thread_name_prefix=f"agent-{spec.name}"
        )
        self._bound: dict[str, Any] = {}
        self._checkpointing: set[str] = set()
        self._gate = ActionGate()
        self._fenced: CheckpointFencedError | None = None
        self.persistence: Persistence | None = None
        self.metrics = AgentMetrics(
            spec.namespace,
            spec.name,
            self.agent_class.agent_actions(),
            self.agent_class.agent_loops(),
        )
        if spec.checkpoint is not None:
            self.persistence = Persistence(
                spec.checkpoint,
                spec.namespace,
                spec.name,
                f"{spec.agent_class.__module__}.{spec.agent_class.__qualname__}",
                on_fenced=self._stop_fenced,
            )
            self.metrics.track(self.persistence)
        self._validators: dict[str, ActionValidator] = {}
        self._loops: dict[str, asyncio.Task[None]] = {}

    # ---- lifecycle ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Starts the agent, runs its loops until shutdown is requested, then shuts it down."""
        try:
            await self._start()
        except BaseException as error:
            self._startup_error = error
            self._set_status("failed", f"startup failed: {type(error).__name__}: {error}")
            logger.exception("agent %r failed to start", self.spec.name)
            self.ready.set()
            self.done.set()
            self._executor.shutdown(wait=False)
            return
        self._set_status("running")
        self.ready.set()
        for loop_name in self.agent_class.agent_loops():
            self._loops[loop_name] = asyncio.ensure_future(self._run_loop(loop_name))
        await self._shutdown_event.wait()
        await self._stop()

    @property
    def agent_class(self) -> type[Agent]:
        """The agent's class."""
        return self.spec.agent_class

    async def _start(self) -> None:
        agent = self.agent_class(*self.spec.args, **self.spec.kwargs)
        agent._agent_context_ = AgentContext(
            name=self.spec.name,
            namespace=self.spec.namespace,
            shutdown_event=self._shutdown_event,
            executor=self._executor,
        )
        self.agent = agent
        for action_name, function in self.agent_class.agent_actions().items():
            self._bound[action_name] = getattr(agent, action_name)
            if getattr(function, ACTION_CHECKPOINTS, True):
                self._checkpointing.add(action_name)
        if self.persistence is not None:
            fields = await self.persistence.activate()
            if fields is not None:
                agent.agent_restore(fields)
                self.metrics.restored("activation")
        await agent.agent_on_startup()
        if self.persistence is not None:
            self.persistence.start_background(agent.agent_checkpoint)

    def _stop_fenced(self, error: CheckpointFencedError) -> None:
        """A newer copy of this agent is active: refuse further calls and shut down."""
        self._fenced = error
        self._set_status("failed", f"fenced: {error}")
        self._shutdown_event.set()

    def _fenced_error(self, action: str) -> CheckpointFencedError:
        error = CheckpointFencedError(str(self._fenced))
        error.add_note(
            f"agent {self.spec.name!r}: a newer copy of this agent is active; this copy stopped and did not "
            f"run {action!r}"
        )
        return error

    def request_shutdown(self) -> None:
        """Asks the agent to shut down (as `Agent.agent_shutdown` does)."""
        self._shutdown_event.set()

    async def _stop(self) -> None:
        self._set_status("stopping")
        if self._loops:
            _, late = await asyncio.wait(self._loops.values(), timeout=self.spec.shutdown_grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        assert self.agent is not None
        try:
            await self.agent.agent_on_shutdown()
        except Exception:
            logger.exception("agent_on_shutdown of agent %r raised", self.spec.name)
        if self.persistence is not None:
            await self.persistence.close(self.agent.agent_checkpoint)
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._set_status("stopped")
        self.done.set()

    def _set_status(self, status: AgentStatus, error: str | None = None) -> None:
        self.status = status
        self.since = time.time()
        if error is not None:
            self.error = error

    # ---- loops --------------------------------------------------------------------------------------------

    async def _run_loop(self, loop_name: str) -> None:
        method = getattr(self.agent, loop_name)
        delay = LOOP_RESTART_BACKOFF_S[0]
        while True:
            try:
                await method(self._shutdown_event)
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.metrics.loop_restarted(loop_name)
                policy = self.agent_class.agent_loop_error_policy
                logger.exception(
                    "loop %r of agent %r raised (policy: %s)", loop_name, self.spec.name, policy
                )
                if policy == "shutdown":
                    self.error = f"loop {loop_name!r} raised {type(error).__name__}: {error}"
                    self._shutdown_event.set()
                    return
                if policy == "ignore" or self._shutdown_event.is_set():
                    return
                try:
                    await asyncio.wait_for(self._shutdown_event.wait(), timeout=delay)
                    return
                except TimeoutError:
                    delay = min(delay * 2, LOOP_RESTART_BACKOFF_S[1])

    # ---- actions ------------------------------------------------------------------------------------------

    async def wait_ready(self) -> None:
        """Returns once the agent serves calls.

        Raises:
            AgentStartupError: If startup failed, chained to the original error.
        """
        await self.ready.wait()
        if isinstance(self._startup_error, AgentStartupError):
            raise self._startup_error  # already typed (e.g. CheckpointRestoreError)
        if self._startup_error is not None:
            error = AgentStartupError(
                f"agent {self.spec.name!r} ({self.agent_class.__name__}) failed to start: "
                f"{type(self._startup_error).__name__}: {self._startup_error}"
            )
            error.add_note("".join(traceback.format_exception(self._startup_error)).rstrip())
            raise error from self._startup_error

    async def call(self, action: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Runs one action call and returns its result (or raises its exception with the traceback noted).

        Every call is counted in `metrics` (by action and outcome, with its latency and the calls in flight).
        """
        metrics = self.metrics
        metrics.call_started()
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await self._call(action, args, kwargs)
        except BaseException as raised:
            error = raised
            raise
        finally:
            metrics.call_finished(action, time.perf_counter() - started, error)

    async def _call(self, action: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """`call` without the metrics.

        The arguments' bounds are checked here, where the call lands, whatever the caller's handle did.

        Raises:
            PayloadError: The arguments are over the agent's ``max_payload_bytes`` or nested too deeply.
            CheckpointFencedError: A newer copy of the agent is active (this copy stops).
        """
        check_payload(self.spec.name, action, args, kwargs, self.spec.max_payload_bytes)
        if self.status != "running":
            if not self.ready.is_set():
                await self.ready.wait()
            if self._fenced is not None:
                raise self._fenced_error(action)
            if self.status != "running":
                raise AgentTerminatedError(self.spec.name, self.error or f"agent is {self.status}")
        method = self._bound.get(action)
        if method is None:
            raise ActionNotFoundError(
                self.spec.name, self.agent_class.__name__, action, list(self._bound)
            )
        validator = self._validators.get(action)
        if validator is None:
            validator = ActionValidator(
                self.spec.name, action, self.agent_class.agent_actions()[action]
            )
            self._validators[action] = validator
        args, kwargs = validator(self.agent, args, kwargs)
        persistence = self.persistence
        if persistence is None or action not in self._checkpointing:
            try:
                return await method(*args, **kwargs)
            except Exception as error:
                _add_remote_traceback(error, self.spec.name, action)
                raise
        await self._gate.enter()
        try:
            if self._fenced is not None:
                raise self._fenced_error(action)
            try:
                result = await method(*args, **kwargs)
            except Exception as error:
                persistence.mark_changed()  # it may have changed state before raising
                _add_remote_traceback(error, self.spec.name, action)
                raise
            if persistence.policy.every_action:
                await self._make_durable(persistence, action)
            return result
        finally:
            self._gate.leave()

    async def rollback(self, seq: int) -> CheckpointInfo:
        """Makes checkpoint ``seq`` the newest again and restores the agent to it.

        State-changing actions in flight finish (and are made durable) first, and new ones wait until the
        agent is restored: none is acknowledged and then discarded by the rollback.
        """
        persistence, agent = self.persistence, self.agent
        assert persistence is not None and agent is not None

        async def roll_back() -> CheckpointInfo:
            info, fields = await persistence.rollback(seq)
            agent.agent_restore(fields)
            self.metrics.restored("rollback")
            return info

        result: CheckpointInfo = await self._gate.run_exclusive(roll_back)
        return result

    async def _make_durable(self, persistence: Persistence, action: str) -> None:
        """Saves the state the action left before its result is returned (every-action policy)."""
        assert self.agent is not None
        try:
            await persistence.save(self.agent.agent_checkpoint)
        except CheckpointFencedError as error:
            error.add_note(
                f"agent {self.spec.name!r}: a newer copy of this agent is active; this copy stopped and the "
                f"result of {action!r} was not made durable"
            )
            raise
        except Exception as error:
            error.add_note(
                f"action {action!r} of agent {self.spec.name!r} ran, but its new state could not be made "
                "durable; the agent keeps running and retries in the background"
            )
            raise
