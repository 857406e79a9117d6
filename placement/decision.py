"""`Decision`: where a demand was placed, why, and how to launch an actor into its reservation."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from placement.demand import Demand
from placement.policy import Candidate
from placement.table import NODE_ID_LABEL


class Decision(BaseModel):
    """The outcome of placing one :class:`~placement.demand.Demand`.

    Attributes:
        name: The demand's name.
        node_id: Node (Ray node id, hex) that holds the reservation.
        demand: What was asked for.
        policy: Name of the policy that chose.
        score: Score of the chosen node.
        candidates: The best-scored nodes (chosen first) with their score breakdown.
        reasons: Human-readable reasons for the choice.
        cause: Why this placement happened: ``"placed"`` or ``"node <id> lost"``.
        generation: 1 for the first placement of this name, +1 on every re-placement.
        placement_group_id: Hex id of the Ray placement group reserving the node (None: not yet).
        bundle: The reserved resources in all (Ray resources).
        bundles: The placement group's bundles, all on ``node_id`` (more than one for a demand
            with ``gpu_bundles > 1``; empty in decisions recorded before bundles were kept: then
            ``[bundle]``).
        decided_at: Unix time of the decision.
        decision_seconds: Time the policy took to choose.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    node_id: str
    demand: Demand
    policy: str
    score: float
    candidates: list[Candidate] = Field(default_factory=list)
    reasons: list[str] = Field(default_factory=list)
    cause: str = "placed"
    generation: int = 1
    placement_group_id: str | None = None
    bundle: dict[str, float] = Field(default_factory=dict)
    bundles: list[dict[str, float]] = Field(default_factory=list)
    decided_at: float = Field(default_factory=time.time)
    decision_seconds: float = 0.0

    def group_bundles(self) -> list[dict[str, float]]:
        """The bundles of this decision's placement group (bundle 0 first)."""
        return list(self.bundles) or [dict(self.bundle)]

    def scheduling_strategy(self) -> Any:
        """A ``PlacementGroupSchedulingStrategy`` into this decision's bundle 0.

        With several bundles the actor's own tasks and actors are scheduled into the group too
        (``placement_group_capture_child_tasks``), so that the workers it starts land in the
        other bundles and ``ray.util.get_current_placement_group()`` finds the group.

        Raises:
            ValueError: the decision has no placement group (it was never reserved).
        """
        import ray
        from ray.util.placement_group import PlacementGroup
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if self.placement_group_id is None:
            raise ValueError(f"decision for {self.name!r} holds no placement group")
        pg = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(self.placement_group_id)))
        return PlacementGroupSchedulingStrategy(
            placement_group=pg,
            placement_group_bundle_index=0,
            placement_group_capture_child_tasks=len(self.group_bundles()) > 1,
        )

    def label_selector(self) -> dict[str, str]:
        """A Ray label selector that matches only this decision's node (``ray.io/node-id``).

        For actors that claim their own resources (a demand with ``reserve=False``), e.g. in a
        Ray Serve deployment's ``ray_actor_options``.
        """
        return {NODE_ID_LABEL: self.node_id}

    def actor_options(self) -> dict[str, Any]:
        """Keyword arguments for ``ActorClass.options(...)`` so the actor fits the reserved bundle.

        Contains ``num_cpus``, ``num_gpus``, ``memory`` (only if requested), ``resources`` and
        ``scheduling_strategy``. Add ``name``, ``namespace``, ``lifetime`` and so on yourself.
        With several bundles the actor takes bundle 0 (its GPU share only); the other bundles
        are left for the workers it starts.
        """
        d = self.demand
        options: dict[str, Any] = {
            "num_cpus": d.cpus,
            "num_gpus": d.gpus_per_bundle(),
            "resources": {k: v for k, v in d.resources.items() if v > 0},
            "scheduling_strategy": self.scheduling_strategy(),
        }
        if d.memory_bytes > 0:
            options["memory"] = d.memory_bytes
        return options

    def explain(self) -> str:
        """A multi-line, human-readable account of the decision (what ``academy-ray explain`` shows)."""
        lines = [
            (
                f"{self.name}: node {self.node_id} (policy {self.policy}, score {self.score:.4g}, "
                f"cause: {self.cause}, generation {self.generation})"
            ),
            *(f"  - {r}" for r in self.reasons),
            "  candidates:",
        ]
        for c in self.candidates:
            terms = ", ".join(f"{k}={v:.4g}" for k, v in c.terms.items())
            lines.append(
                f"    {c.node_id}: score {c.score:.4g} [{terms}] local {c.local_bytes} B, "
                f"to move {c.missing_bytes} B"
            )
        return "\n".join(lines)
