"""One model replica slot placed by ``placement``: its demand and the spread-then-share rule.

Shared by the app's own replicas (:mod:`serving.placer`) and those the policy router adds while
the app runs (:mod:`serving.replica_pool`).
"""

from __future__ import annotations

from typing import Any

from placement.decision import Decision
from placement.demand import Demand
from placement.errors import InfeasibleDemandError, PlacementTimeoutError
from serving.config import ReplicaPlacement
from serving.tensor_parallel import replica_shape


def slot_demand(name: str, specs: list[Any], config: Any, avoid: tuple[str, ...]) -> Demand:
    """The :class:`~placement.Demand` of one replica slot: the replica's CPUs/GPUs, every served
    model as a locality key, no node in ``avoid``, not reserved (the Serve replica claims its
    own resources)."""
    shape = replica_shape(specs, config.replica_cpus, config.replica_gpus)
    return Demand(
        name=name,
        cpus=config.replica_cpus if config.replica_cpus > 0 else 0.01,
        gpus=shape.gpus,
        gpu_bundles=shape.gpu_bundles,  # tensor-parallel: one GPU bundle per rank, one node
        model_ids=tuple(spec.id for spec in specs),
        anti_affinity=avoid,
        reserve=False,
    )


async def place_slot(
    client: Any,
    name: str,
    specs: list[Any],
    config: Any,
    placement: ReplicaPlacement,
    launcher: Any,
    avoid: tuple[str, ...] = (),
) -> Decision:
    """Places replica slot ``name``: on a node not in ``avoid`` if one fits within
    ``placement.spread_wait_s``, else on any node (fewer fitting nodes than replicas).

    Raises:
        placement.InfeasibleDemandError: no live node could ever hold the replica.
        placement.PlacementTimeoutError: no room for it within ``placement.timeout_s``.
    """
    if avoid:
        try:
            return await client.place(
                slot_demand(name, specs, config, avoid), launcher, placement.spread_wait_s
            )
        except (InfeasibleDemandError, PlacementTimeoutError):
            pass  # fewer fitting nodes than replicas: this one shares a node
    return await client.place(slot_demand(name, specs, config, ()), launcher, placement.timeout_s)
