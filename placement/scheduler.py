"""`Scheduler`: choose a node with a policy and reserve it with a Ray placement group pinned there.

Pinning (verified on Ray 2.60, see tests/placement/test_scheduler.py): a one-bundle ``STRICT_PACK``
placement group with ``_soft_target_node_id=<node>`` lands on the target whenever the target has
room, and when the node dies Ray reschedules the group instead of failing it, so a restartable actor
inside survives until the controller re-places it. A hard ``ray.io/node-id`` ``bundle_label_selector``
is honoured too, but its group can never be rescheduled after node loss (the actor becomes DEAD).
``pin="soft"`` is the default; after the group is ready the scheduler reads where Ray actually put it
and records that node (a fallback is reported in the decision's reasons, never hidden).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Literal

from placement.cluster import ClusterView
from placement.core import decide, note_placed
from placement.decision import Decision
from placement.demand import Demand
from placement.errors import PlacementTimeoutError, UnknownPlacementError
from placement.inventory import Inventory
from placement.policy import LocalityPolicy, Policy
from placement.table import NODE_ID_LABEL, NodeTable

log = logging.getLogger(__name__)

PinMode = Literal["soft", "label"]
RELEASE_GRACE_S = 3.0


class Scheduler:
    """Places demands on the connected Ray cluster (``ray.init`` first).

    Args:
        policy: Scoring policy (default :class:`LocalityPolicy`).
        inventory: Shared locality inventory (default: a new empty one).
        view: Cluster view (default: all nodes, head included).
        pin: ``"soft"`` (``_soft_target_node_id`` + STRICT_PACK) or ``"label"`` (hard node-id selector).
        k: Number of candidates kept in each decision's breakdown.
        group_prefix: Start of the name of every placement group this scheduler creates (followed
            by ``<demand name>-<generation>``).
        detached_groups: Create the placement groups detached, so that they (and the actors in
            them) outlive the process that runs this scheduler. Ray removes a non-detached group
            when its creator dies, killing the actors inside.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        inventory: Inventory | None = None,
        view: ClusterView | None = None,
        pin: PinMode = "soft",
        k: int = 3,
        group_prefix: str = "placement-",
        detached_groups: bool = False,
    ) -> None:
        self.policy: Policy = policy or LocalityPolicy()
        self.inventory = inventory or Inventory()
        self.view = view or ClusterView()
        self.pin = pin
        self.k = k
        self.group_prefix = group_prefix
        self.detached_groups = detached_groups
        self._decisions: dict[str, Decision] = {}
        self._reserved: dict[str, tuple[str, dict[str, float]]] = {}
        # Recently released bundles: Ray's available-resource view lags a removal by up to about a
        # second, so these amounts are added back to Ray's figure for RELEASE_GRACE_S.
        self._released: list[tuple[float, str, dict[str, float]]] = []

    # ------------------------------------------------------------------ planning
    def table(self) -> NodeTable:
        """Refreshes the cluster view and returns a table net of this scheduler's reservations."""
        self.view.refresh()
        per_node: dict[str, dict[str, float]] = {}
        for node_id, bundle in self._reserved.values():
            acc = per_node.setdefault(node_id, {})
            for key, amount in bundle.items():
                acc[key] = acc.get(key, 0.0) + amount
        now = time.monotonic()
        self._released = [r for r in self._released if now - r[0] < RELEASE_GRACE_S]
        credit: dict[str, dict[str, float]] = {}
        for _, node_id, bundle in self._released:
            acc = credit.setdefault(node_id, {})
            for key, amount in bundle.items():
                acc[key] = acc.get(key, 0.0) + amount
        return self.view.table(per_node, credit)

    def plan(self, demand: Demand, cause: str = "placed") -> Decision:
        """Chooses a node and books it in the local ledger (no Ray call yet).

        Any earlier placement of the same name is released first.

        Raises:
            InfeasibleDemandError: no live node could ever fit the demand.
            NoCapacityError: no live node has room now.
        """
        previous = self._decisions.get(demand.name)
        if previous is not None:
            self.release(demand.name)
        generation = previous.generation + 1 if previous is not None else 1
        decision = decide(
            demand,
            self.table(),
            self.inventory,
            self.policy,
            cause=cause,
            generation=generation,
            k=self.k,
        )
        self._reserved[demand.name] = (decision.node_id, decision.bundle)
        return decision

    def _create_group(self, decision: Decision) -> Any:
        from ray.util.placement_group import placement_group

        name = f"{self.group_prefix}{decision.name}-{decision.generation}"
        lifetime = "detached" if self.detached_groups else None
        if self.pin == "label":
            bundles = decision.group_bundles()
            return placement_group(
                bundles,
                strategy="STRICT_PACK",
                name=name,
                lifetime=lifetime,
                bundle_label_selector=[{NODE_ID_LABEL: decision.node_id}] * len(bundles),
            )
        return placement_group(
            decision.group_bundles(),
            strategy="STRICT_PACK",
            name=name,
            lifetime=lifetime,
            _soft_target_node_id=decision.node_id,
        )

    def _finish(self, decision: Decision, pg: Any) -> Decision:
        from ray.util.placement_group import placement_group_table

        table = placement_group_table(pg)
        actual = (table.get("bundles_to_node_id") or {}).get(0, decision.node_id)
        update: dict[str, Any] = {"placement_group_id": pg.id.hex()}
        if actual != decision.node_id:
            update["node_id"] = actual
            update["reasons"] = [
                *decision.reasons,
                f"Ray put the group on {actual}, not the chosen {decision.node_id}",
            ]
        return self._record(decision.model_copy(update=update))

    def _record(self, done: Decision) -> Decision:
        """Books and records a final decision (an unreserved one stays booked in the ledger: the
        ledger's ``min(Ray's free, total - booked)`` never counts the launched actor twice)."""
        self._reserved[done.name] = (done.node_id, done.bundle)
        self._decisions[done.name] = done
        note_placed(self.inventory, done.demand, done.node_id)
        return done

    def _unreserved(self, decision: Decision) -> Decision:
        reason = "not reserved: the launched actor claims its resources on this node itself"
        return self._record(decision.model_copy(update={"reasons": [*decision.reasons, reason]}))

    def _abandon(self, decision: Decision, pg: Any) -> None:
        from ray.util.placement_group import remove_placement_group

        self._reserved.pop(decision.name, None)
        try:
            remove_placement_group(pg)
        except Exception as exc:  # noqa: BLE001 - best effort cleanup of a group that never became ready
            log.debug("could not remove placement group of %s: %r", decision.name, exc)

    # ------------------------------------------------------------------ placing
    async def place_async(
        self, demand: Demand, cause: str = "placed", timeout: float = 60.0
    ) -> Decision:
        """Plans, creates the pinned placement group and awaits it; returns the recorded decision.

        A demand with ``reserve=False`` is planned and recorded without a placement group.

        Raises:
            InfeasibleDemandError, NoCapacityError: see :meth:`plan`.
            PlacementTimeoutError: the group was not ready within ``timeout`` seconds.
        """
        decision = self.plan(demand, cause)
        if not demand.reserve:
            return self._unreserved(decision)
        pg = self._create_group(decision)
        try:
            await asyncio.wait_for(asyncio.wrap_future(pg.ready().future()), timeout)
        except TimeoutError:
            self._abandon(decision, pg)
            raise PlacementTimeoutError(
                f"placement group for {demand.name!r} on {decision.node_id} not ready in {timeout} s"
            ) from None
        except BaseException:
            self._abandon(decision, pg)
            raise
        return self._finish(decision, pg)

    def place(self, demand: Demand, cause: str = "placed", timeout: float = 60.0) -> Decision:
        """Blocking form of :meth:`place_async`."""
        import ray

        decision = self.plan(demand, cause)
        if not demand.reserve:
            return self._unreserved(decision)
        pg = self._create_group(decision)
        ready, _ = ray.wait([pg.ready()], timeout=timeout)
        if not ready:
            self._abandon(decision, pg)
            raise PlacementTimeoutError(
                f"placement group for {demand.name!r} on {decision.node_id} not ready in {timeout} s"
            )
        return self._finish(decision, pg)

    # ------------------------------------------------------------------ bookkeeping
    def release(self, name: str) -> Decision:
        """Removes ``name``'s placement group and forgets its decision; returns that decision.

        Raises:
            UnknownPlacementError: nothing is placed under ``name``.
        """
        from ray.util.placement_group import PlacementGroup, remove_placement_group

        decision = self._decisions.pop(name, None)
        self._reserved.pop(name, None)
        if decision is None:
            raise UnknownPlacementError(name)
        self._released.append((time.monotonic(), decision.node_id, decision.bundle))
        if decision.placement_group_id is not None:
            import ray

            pg_id = ray.PlacementGroupID(bytes.fromhex(decision.placement_group_id))
            try:
                remove_placement_group(PlacementGroup(pg_id))
            except Exception as exc:  # noqa: BLE001 - already gone (e.g. its node died)
                log.debug("could not remove placement group of %s: %r", name, exc)
        return decision

    def adopt(self, decision: Decision) -> Decision:
        """Takes over a decision made earlier (by this scheduler's previous incarnation): books it
        in the ledger and records it as current, without touching its placement group."""
        return self._record(decision)

    def remove_orphan_groups(self) -> list[str]:
        """Removes this scheduler's placement groups that no current decision holds.

        Such a group was created by an earlier incarnation that died before it recorded the
        decision (so before anything was launched into it). Only meaningful with a
        ``group_prefix`` of this scheduler's own.

        Returns:
            The names of the groups removed.
        """
        import ray
        from ray.util.placement_group import (
            PlacementGroup,
            placement_group_table,
            remove_placement_group,
        )

        held = {d.placement_group_id for d in self._decisions.values()}
        removed = []
        for pg_id, info in placement_group_table().items():
            name = info.get("name") or ""
            if not name.startswith(self.group_prefix) or info.get("state") == "REMOVED":
                continue
            if pg_id in held:
                continue
            try:
                remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
                removed.append(name)
            except Exception as exc:  # noqa: BLE001 - gone meanwhile
                log.debug("could not remove orphan placement group %s: %r", name, exc)
        return removed

    def explain(self, name: str) -> Decision | None:
        """The current decision for ``name``, or None."""
        return self._decisions.get(name)

    def decisions(self) -> list[Decision]:
        """All current decisions, oldest first."""
        return sorted(self._decisions.values(), key=lambda d: d.decided_at)

    def lost(self) -> list[Decision]:
        """Decisions whose node is no longer alive (refreshes the view)."""
        self.view.refresh()
        alive = self.view.alive_ids()
        return [d for d in self.decisions() if d.node_id not in alive]

    def forget_node(self, node_id: str) -> None:
        """Drops a dead node's inventory."""
        self.inventory.drop_node(node_id)
