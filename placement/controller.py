"""`PlacementController`: the detached Ray actor that owns the scheduler, inventory and decisions.

It places demands, calls each demand's *launcher* inside itself once the reservation is ready,
queues demands that do not fit yet (visible through :meth:`PlacementController.pending`), and
watches the nodes: when a node dies, every demand placed on it is placed again on live nodes by the
policy (a new placement group) and its launcher is called again with the new decision
(cause ``"node <id> lost"``). A re-placement that does not fit (even one no live node could fit any
more) waits in the queue until it does; :meth:`PlacementController.failures` says why.

With a ``journal`` key the controller survives its own restart: placement groups are detached
(the actors in them outlive the controller), every decision and launcher is written to a
:class:`~placement.journal.Journal` before the launch, and a restarted controller adopts them, so
node loss is still repaired; inventory reports are kept too. History and callers waiting in the
queue are not: a waiting caller's call fails with the controller. The journal holds no secret value:
launchers are written sealed, their secrets kept in memory by the namespace's secrets holder actor
(:mod:`placement.journal`, :mod:`placement.vault`); an adopted launcher whose secrets are gone fails
its relaunch with :class:`~placement.errors.SecretsUnavailableError` (see :meth:`failures`). A
controller actor only takes the journal key of its own namespace.

**Launchers must be idempotent**: a launcher is a picklable callable ``launcher(decision) -> None``
(sync or async) that creates the Ray actor with ``Actor.options(**decision.actor_options(), ...)``.
On re-placement it is called again with a new decision, so it must first kill or replace any
earlier actor of the same name (e.g. ``ray.kill(ray.get_actor(name, namespace))`` when it exists),
then create the new one.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from placement.decision import Decision
from placement.demand import Demand
from placement.errors import InfeasibleDemandError, NoCapacityError, PlacementTimeoutError
from placement.inventory import InventoryItem, ItemKind
from placement.journal import Journal, JournalEntry
from placement.policy import make_policy
from placement.scheduler import PinMode, Scheduler

log = logging.getLogger(__name__)

Launcher = Callable[[Decision], None | Awaitable[None]]


@dataclass
class _Queued:
    demand: Demand
    launcher: Launcher
    cause: str
    waiters: list[asyncio.Future[Decision]] = field(default_factory=list)
    patient: bool = False  # re-placements wait even while infeasible (a node may come back)


def _check_own_namespace(journal: str) -> None:
    """Refuses a journal key of another namespace when running as a Ray actor.

    A controller's journal key is ``"<its namespace>/<name>"`` (no ``/`` in the name), so a
    controller can never read (and adopt) the entries, or reach the secrets holder, of another
    namespace's controller. The actor's namespace is its own (``options(namespace=...)``), not
    its job's: it is checked by looking the actor's name up in the key's namespace.

    Raises:
        ValueError: the key names another namespace, or the journaled controller has no name.
    """
    import ray

    if not ray.is_initialized():
        return
    context = ray.get_runtime_context()
    actor_id = context.get_actor_id()
    if actor_id is None:
        return  # driven in-process by a driver: the caller chose the key
    namespace, _, _ = journal.rpartition("/")
    actor_name = context.get_actor_name()
    if not actor_name:
        raise ValueError("a journaled placement controller actor must be named")
    try:
        found = ray.get_actor(actor_name, namespace=namespace or None)
    except ValueError:
        found = None
    if found is None or found._actor_id.hex() != actor_id:
        raise ValueError(
            f"placement journal key {journal!r} is not of this controller's namespace: "
            f"expected '<namespace of actor {actor_name!r}>/<name>'"
        )


class PlacementController:
    """Holds a :class:`Scheduler` and runs placement, queueing and re-placement (async actor body).

    Use it through :class:`placement.client.PlacementClient`; it can also be driven in-process.

    Args:
        policy: Policy name (see :func:`placement.policy.make_policy`).
        poll_s: How often to check nodes and retry queued demands.
        pin: Placement-group pinning mode (see :mod:`placement.scheduler`).
        ready_timeout_s: How long a placement group may take to become ready.
        journal: Key of the durable journal (e.g. ``"<namespace>/<actor name>"``); None keeps
            everything in memory only and ties the placement groups to this process.
    """

    def __init__(
        self,
        policy: str = "locality",
        poll_s: float = 0.5,
        pin: PinMode = "soft",
        ready_timeout_s: float = 60.0,
        journal: str | None = None,
    ) -> None:
        self.scheduler = Scheduler(
            make_policy(policy),
            pin=pin,
            group_prefix="placement-" if journal is None else f"placement[{journal}]-",
            detached_groups=journal is not None,
        )
        self.poll_s = poll_s
        self.ready_timeout_s = ready_timeout_s
        self._launchers: dict[str, Launcher] = {}
        self._queue: dict[str, _Queued] = {}
        self._failures: dict[str, str] = {}
        self._history: list[Decision] = []
        # Decisions whose node died, while they are being placed again: `explain` keeps answering with
        # them, so callers can tell "being re-placed" from "gone" (the scheduler forgets the old decision
        # as soon as it plans the new one).
        self._replacing: dict[str, Decision] = {}
        self._lock: asyncio.Lock | None = None
        self._watcher: asyncio.Task[None] | None = None
        if journal is not None:
            _check_own_namespace(journal)
        self._journal = None if journal is None else Journal(journal)
        self.restored = 0
        if self._journal is not None:
            self._restore(self._journal)
            self._wake_self()

    def _wake_self(self) -> None:
        """Starts the node watcher now (a restarted controller may get no call for a long time, and
        it still has to repair node loss). Ray runs an async actor's ``__init__`` in its event loop;
        driven in-process without one, the first call starts the watcher instead."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        self._start()

    # ------------------------------------------------------------------ durability
    def _restore(self, journal: Journal) -> None:
        """Adopts what an earlier incarnation recorded; removes groups it made but never recorded."""
        entries, unreadable = journal.load()
        self._failures.update(unreadable)
        for entry in entries:
            name = entry.demand.name
            if entry.decision is None:
                self._queue[name] = _Queued(entry.demand, entry.launcher, entry.cause, patient=True)
            else:
                self.scheduler.adopt(entry.decision)
                self._launchers[name] = entry.launcher
                self._history.append(entry.decision)
        for item in journal.load_items():
            self.scheduler.inventory.record(item.node_id, item.key, item.nbytes, item.kind)
        removed = self.scheduler.remove_orphan_groups()
        self.restored = len(entries)
        if entries or removed or unreadable:
            log.warning(
                "placement controller restored %d demands from its journal (%d unreadable); "
                "removed %d orphan placement groups",
                len(entries),
                len(unreadable),
                len(removed),
            )

    async def _journal_put(
        self, demand: Demand, launcher: Launcher, decision: Decision | None, cause: str
    ) -> None:
        if self._journal is not None:
            await self._journal.put_async(JournalEntry(demand, launcher, decision, cause))

    def _journal_delete(self, name: str) -> None:
        if self._journal is not None:
            self._journal.delete(name)

    # ------------------------------------------------------------------ internals
    def _start(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self._lock

    async def _launch(self, decision: Decision, launcher: Launcher) -> None:
        result = launcher(decision)
        if inspect.isawaitable(result):
            await result

    async def _place_and_launch(self, demand: Demand, launcher: Launcher, cause: str) -> Decision:
        decision = await self.scheduler.place_async(
            demand, cause=cause, timeout=self.ready_timeout_s
        )
        try:
            # Recorded before the launch: a restart in between adopts the group (and the caller,
            # whose call failed, places again); a group never recorded holds no actor.
            await self._journal_put(demand, launcher, decision, cause)
            await self._launch(decision, launcher)
        except BaseException:
            self.scheduler.release(demand.name)
            self._launchers.pop(demand.name, None)
            self._journal_delete(demand.name)
            raise
        self._launchers[demand.name] = launcher
        self._failures.pop(demand.name, None)
        self._history.append(decision)
        return decision

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.check()
            except Exception:
                log.exception("placement watcher check failed")

    async def check(self) -> None:
        """Re-places demands on dead nodes, then retries the queue (the watcher calls this)."""
        lock = self._start()
        async with lock:
            for lost in self.scheduler.lost():
                self.scheduler.forget_node(lost.node_id)
                if self._journal is not None:
                    self._journal.delete_node(lost.node_id)
                launcher = self._launchers[lost.name]
                cause = f"node {lost.node_id} lost"
                self._replacing[lost.name] = lost
                try:
                    await self._place_and_launch(lost.demand, launcher, cause)
                except (NoCapacityError, InfeasibleDemandError) as exc:
                    # Wait for capacity (or for a node that fits to join), visibly in pending().
                    self._safe_release(lost.name)
                    self._queue[lost.name] = _Queued(lost.demand, launcher, cause, patient=True)
                    await self._journal_put(lost.demand, launcher, None, cause)
                    if isinstance(exc, InfeasibleDemandError):
                        self._failures[lost.name] = f"{cause}; waiting: {exc}"
                except Exception as exc:  # noqa: BLE001 - recorded and visible via failures()
                    self._safe_release(lost.name)
                    self._launchers.pop(lost.name, None)
                    self._journal_delete(lost.name)
                    self._failures[lost.name] = f"{cause}; re-placement failed: {exc!r}"
                finally:
                    self._replacing.pop(lost.name, None)
            await self._drain()

    def _safe_release(self, name: str) -> None:
        if self.scheduler.explain(name) is not None:
            self.scheduler.release(name)

    def _fail_queued(self, name: str, queued: _Queued, exc: BaseException) -> None:
        del self._queue[name]
        self._journal_delete(name)
        self._failures[name] = repr(exc)
        for fut in queued.waiters:
            if not fut.done():
                fut.set_exception(exc)

    async def _drain(self) -> None:
        for name, queued in list(self._queue.items()):
            try:
                decision = await self._place_and_launch(
                    queued.demand, queued.launcher, queued.cause
                )
            except NoCapacityError:
                continue
            except InfeasibleDemandError as exc:
                if queued.patient:
                    self._failures[name] = f"{queued.cause}; waiting: {exc}"
                    continue
                self._fail_queued(name, queued, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - handed to the waiters (or recorded)
                self._fail_queued(name, queued, exc)
                continue
            del self._queue[name]
            for fut in queued.waiters:
                if not fut.done():
                    fut.set_result(decision)

    # ------------------------------------------------------------------ public API
    async def place(
        self, demand: Demand, launcher: Launcher, timeout: float | None = None
    ) -> Decision:
        """Places ``demand``, calls ``launcher(decision)`` here, records and returns the decision.

        A feasible demand that does not fit now waits in the queue (see :meth:`pending`) until it
        fits, or until ``timeout`` seconds (``None``: no limit).

        Raises:
            InfeasibleDemandError: no live node could ever fit it.
            PlacementTimeoutError: still queued after ``timeout`` seconds (it is dequeued).
        """
        lock = self._start()
        async with lock:
            if demand.name in self._queue:
                raise ValueError(f"{demand.name!r} is already queued")
            try:
                return await self._place_and_launch(demand, launcher, "placed")
            except NoCapacityError:
                fut: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
                self._queue[demand.name] = _Queued(demand, launcher, "placed", [fut])
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            async with lock:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    return fut.result()
                self._queue.pop(demand.name, None)
            raise PlacementTimeoutError(
                f"{demand.name!r} still waiting for capacity after {timeout} s"
            ) from None

    async def release(self, name: str) -> bool:
        """Releases ``name``'s reservation (or drops it from the queue); False if unknown.

        The launched actor is not killed here: stop it first, then release.
        """
        lock = self._start()
        async with lock:
            queued = self._queue.pop(name, None)
            self._journal_delete(name)
            if queued is not None:
                for fut in queued.waiters:
                    if not fut.done():
                        fut.set_exception(PlacementTimeoutError(f"{name!r} released while queued"))
                return True
            self._launchers.pop(name, None)
            if self.scheduler.explain(name) is None:
                return False
            self.scheduler.release(name)
            await self._drain()
            return True

    async def explain(self, name: str) -> Decision | None:
        """The current decision for ``name`` (None if not placed; the lost one while it is re-placed)."""
        return self.scheduler.explain(name) or self._replacing.get(name)

    async def replacing(self, name: str) -> bool:
        """Whether ``name`` is being placed again after its node was lost: right now, or waiting for
        a node with room. (An actor that merely crashed on a live node is not.)"""
        queued = self._queue.get(name)
        return name in self._replacing or (queued is not None and queued.patient)

    async def decisions(self) -> list[Decision]:
        """All current decisions."""
        return self.scheduler.decisions()

    async def history(self) -> list[Decision]:
        """Every decision made, re-placements included, oldest first."""
        return list(self._history)

    async def pending(self) -> list[Demand]:
        """Demands waiting for capacity, oldest first."""
        return [q.demand for q in self._queue.values()]

    async def failures(self) -> dict[str, str]:
        """Names whose re-placement failed or waits for a node that can fit them, with why."""
        return dict(self._failures)

    async def report(self, node_id: str, key: str, nbytes: int, kind: str) -> None:
        """Inventory report: ``node_id`` now holds ``key`` (``nbytes`` of ``kind``)."""
        self.scheduler.inventory.record(node_id, key, nbytes, kind)
        if self._journal is not None:
            self._journal.put_item(
                InventoryItem(node_id=node_id, key=key, nbytes=nbytes, kind=ItemKind(kind))
            )

    async def forget(self, node_id: str, key: str) -> None:
        """Inventory report: ``node_id`` evicted ``key``."""
        self.scheduler.inventory.forget(node_id, key)
        if self._journal is not None:
            self._journal.delete_item(node_id, key)

    async def inventory(self, node_id: str | None = None) -> list[dict[str, Any]]:
        """Inventory entries (all, or one node's) as dicts."""
        return [item.model_dump(mode="json") for item in self.scheduler.inventory.items(node_id)]

    async def release_all(self) -> int:
        """Releases every reservation and empties the queue; returns how many were released."""
        names = [d.name for d in self.scheduler.decisions()] + list(self._queue)
        for name in names:
            await self.release(name)
        if self._journal is not None:
            self._journal.clear()  # entries that never loaded (unreadable) go too
        return len(names)

    async def info(self) -> dict[str, Any]:
        """This incarnation: process id, demands restored from the journal at start, counts now."""
        return {
            "pid": os.getpid(),
            "restored": self.restored,
            "journaled": self._journal is not None,
            "decisions": len(self.scheduler.decisions()),
            "pending": len(self._queue),
            "watching": self._watcher is not None and not self._watcher.done(),
        }

    async def ping(self) -> str:
        """Liveness probe; also starts the node watcher."""
        self._start()
        return "ok"


__all__ = ["InfeasibleDemandError", "Launcher", "PlacementController", "PlacementTimeoutError"]
