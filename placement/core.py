"""The Ray-free heart of a placement: check feasibility, rank, explain, update the inventory.

Shared by the real :class:`~placement.scheduler.Scheduler` and the simulator so both make the
same choices for the same table and inventory.
"""

from __future__ import annotations

import time

from placement.decision import Decision
from placement.demand import Demand
from placement.errors import InfeasibleDemandError, NoCapacityError
from placement.inventory import Inventory, ItemKind
from placement.policy import Candidate, Policy
from placement.table import NodeTable


def choose(
    demand: Demand, table: NodeTable, inventory: Inventory, policy: Policy, k: int = 3
) -> list[Candidate]:
    """Ranks the nodes for ``demand`` (best first).

    Raises:
        InfeasibleDemandError: no live node could ever fit it (message says why).
        NoCapacityError: it could fit, but no live node has room now.
    """
    ranked = policy.rank(demand, table, inventory, k)
    if ranked:
        return ranked
    why = table.why_infeasible(demand)
    if why:
        raise InfeasibleDemandError(why)
    raise NoCapacityError(
        f"no live node has room for {demand.name!r} right now ({demand.bundle()})"
    )


def reasons_for(
    demand: Demand, chosen: Candidate, policy: Policy, ranked: list[Candidate]
) -> list[str]:
    """Human-readable reasons for choosing ``chosen``."""
    reasons = [
        f"policy {policy.name} ranked {len(ranked)} candidate(s); best score {chosen.score:.4g}"
    ]
    if demand.gpus > 0:
        reasons.append(
            f"needs {demand.gpus:g} GPU(s){' of type ' + demand.gpu_type if demand.gpu_type else ''}: "
            "only nodes with that many free GPUs were considered"
        )
    if demand.gpu_bundles > 1:
        reasons.append(
            f"{demand.gpu_bundles} bundles of {demand.gpus_per_bundle():g} GPU on this one node "
            "(STRICT_PACK, one per GPU worker such as a tensor-parallel rank)"
        )
    if demand.locality_keys():
        total = chosen.local_bytes + chosen.missing_bytes
        if total:
            reasons.append(
                f"{chosen.local_bytes} of {total} bytes of its data/models/checkpoint already local"
            )
        else:
            reasons.append("none of its data/models/checkpoint is cached on any node yet")
    guard = chosen.terms.get("gpu_guard")
    if guard is not None:
        reasons.append(
            "CPU-only demand kept off GPU nodes"
            if guard == 0
            else "CPU-only demand on a GPU node (no GPU-less node had room or locality won)"
        )
    if demand.affinity:
        reasons.append(f"affinity {list(demand.affinity)}")
    if demand.anti_affinity:
        reasons.append(f"anti-affinity {list(demand.anti_affinity)}")
    return reasons


def gpu_fit_reason(demand: Demand, table: NodeTable) -> str:
    """How many live GPU nodes could take ``demand``'s GPUs now, of how many that have GPUs."""
    gpu_nodes = int((table.alive[: len(table)] & (table.gpu_total[: len(table)] > 0)).sum())
    fitting = int(table.feasible_now(demand).sum())
    return f"{fitting} of {gpu_nodes} GPU node(s) had room for it now"


def decide(
    demand: Demand,
    table: NodeTable,
    inventory: Inventory,
    policy: Policy,
    *,
    cause: str = "placed",
    generation: int = 1,
    k: int = 3,
) -> Decision:
    """Chooses a node and returns an (unreserved) :class:`Decision` with its reasons."""
    start = time.perf_counter()
    ranked = choose(demand, table, inventory, policy, k)
    elapsed = time.perf_counter() - start
    chosen = ranked[0]
    reasons = reasons_for(demand, chosen, policy, ranked)
    if demand.gpus > 0:
        reasons.append(gpu_fit_reason(demand, table))
    if cause != "placed":
        reasons.insert(0, f"re-placed: {cause}")
    return Decision(
        name=demand.name,
        node_id=chosen.node_id,
        demand=demand,
        policy=policy.name,
        score=chosen.score,
        candidates=ranked,
        reasons=reasons,
        cause=cause,
        generation=generation,
        bundle=demand.bundle(),
        bundles=demand.bundles(),
        decision_seconds=elapsed,
    )


def note_placed(
    inventory: Inventory, demand: Demand, node_id: str, checkpoint_bytes: int | None = None
) -> None:
    """Records that ``demand``'s checkpoint now lives (warm) on ``node_id`` and nowhere else.

    Its size is ``checkpoint_bytes`` if given, else the largest size any node reported. Nothing is
    recorded for a demand without ``checkpoint_key`` or when the size is unknown.
    """
    key = demand.checkpoint_key
    if key is None:
        return
    holders = inventory.holders(key)
    nbytes = checkpoint_bytes if checkpoint_bytes is not None else max(holders.values(), default=0)
    if nbytes <= 0:
        return
    for other in holders:
        if other != node_id:
            inventory.forget(other, key)
    inventory.record(node_id, key, nbytes, ItemKind.CHECKPOINT)
