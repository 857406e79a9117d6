"""Replicas of tensor-parallel models: N one-GPU bundles on one node, and how engines find them.

A :class:`~serving.spec.ModelSpec` with ``tensor_parallel_size=N`` needs N GPUs on one node,
one per rank. Every model replica of an app serves any of its models, so the replica's shape
follows the largest ``tensor_parallel_size`` served (:func:`replica_shape`): above 1 the
replica is a Serve deployment with ``placement_group_bundles`` of N one-GPU bundles under
``STRICT_PACK`` (bundle 0 also holds the replica's CPUs), held to the node ``placement`` chose by
a bundle label selector, and the replica actor itself takes no GPU: the GPUs are the ranks'.

The known trap: vLLM's engine core runs in a subprocess of the replica, where
``ray.util.get_current_placement_group()`` finds nothing, so vLLM would make a placement group of
its own that can never fit beside the replica's (it waits, then fails). The vLLM engine therefore
hands the replica's group to vLLM itself (``parallel_config.placement_group``, see
:mod:`serving.engines.vllm_engine`); :func:`rank_bundle_problem` checks its bundles first.
The transformers engine spreads a model over the group's GPUs with a device map
(:func:`group_gpu_indices`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from serving.spec import ModelSpec

STRATEGY = "STRICT_PACK"
"""Every bundle of a tensor-parallel replica on one node."""


class ReplicaShape(BaseModel):
    """The resources of one model replica.

    Attributes:
        tensor_parallel_size: the largest ``tensor_parallel_size`` of the models served.
        gpus: GPUs the replica reserves in all.
        bundles: the placement group bundles of a tensor-parallel replica (``[]``: none; the
            replica actor then takes ``gpus`` itself).
    """

    model_config = ConfigDict(frozen=True)

    tensor_parallel_size: int = 1
    gpus: float = 0.0
    bundles: list[dict[str, float]] = []

    @property
    def gpu_bundles(self) -> int:
        """Bundles the GPUs are split into (1 unless tensor-parallel)."""
        return max(1, len(self.bundles))


def tensor_parallel_size(specs: Iterable[ModelSpec]) -> int:
    """The largest ``tensor_parallel_size`` among ``specs`` (1 when none is parallel)."""
    return max((spec.tensor_parallel_size for spec in specs), default=1)


def replica_shape(
    specs: Iterable[ModelSpec], replica_cpus: float, replica_gpus: float
) -> ReplicaShape:
    """The shape of a replica that serves ``specs``.

    Args:
        specs: the models served.
        replica_cpus: ``ServingConfig.replica_cpus``.
        replica_gpus: ``ServingConfig.replica_gpus``; below the tensor-parallel size it is raised
            to it.

    Raises:
        ValueError: ``replica_gpus`` is more than the tensor-parallel size (a rank takes one GPU,
            so the extra GPUs could not be used).
    """
    tp = tensor_parallel_size(specs)
    if tp == 1:
        return ReplicaShape(gpus=replica_gpus)
    if replica_gpus > tp:
        raise ValueError(
            f"replica_gpus={replica_gpus:g} but the models served need tensor_parallel_size={tp}: "
            f"a tensor-parallel replica reserves one GPU per rank ({tp}); set replica_gpus to "
            f"{tp} or leave it 0"
        )
    first: dict[str, float] = {"CPU": replica_cpus} if replica_cpus > 0 else {}
    bundles = [{**first, "GPU": 1.0}, *({"GPU": 1.0} for _ in range(tp - 1))]
    return ReplicaShape(tensor_parallel_size=tp, gpus=float(tp), bundles=bundles)


def deployment_options(
    shape: ReplicaShape, options: Mapping[str, Any], actor_options: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Serve deployment options and ``ray_actor_options`` for a replica of ``shape``.

    Unchanged for a replica without bundles. For a tensor-parallel one: the bundles under
    ``STRICT_PACK``; the actor takes no GPU; a node constraint (the actor's ``ray.io/node-id``
    label selector) moves to every bundle (Serve ignores an actor selector in a placement group);
    ``max_replicas_per_node`` goes (Serve refuses it beside bundles, and a node fits as many
    replicas as it has GPUs for).

    Returns:
        ``(deployment options, ray_actor_options)``.
    """
    options, actor = dict(options), dict(actor_options)
    if not shape.bundles:
        return options, actor
    actor.pop("num_gpus", None)
    options.pop("max_replicas_per_node", None)
    options["placement_group_bundles"] = [dict(bundle) for bundle in shape.bundles]
    options["placement_group_strategy"] = STRATEGY
    selector = actor.pop("label_selector", None)
    if selector:
        options["placement_group_bundle_label_selector"] = [dict(selector)] * len(shape.bundles)
    return options, actor


def refuse_if_no_node_fits(name: str, shape: ReplicaShape, replica_cpus: float) -> None:
    """Fails at once when no live node of the connected cluster could ever hold a replica of a
    tensor-parallel ``shape`` (Serve would otherwise wait for its placement group forever).

    For apps that ``placement`` does not place: the placer refuses such a replica itself.

    Raises:
        placement.InfeasibleDemandError: the message names the shortfall (e.g. "2 GPUs on one
            node (2 bundles of 1 GPU, STRICT_PACK) (largest node: 1)").
    """
    if not shape.bundles:
        return
    from placement.cluster import ClusterView
    from placement.demand import Demand
    from placement.errors import InfeasibleDemandError

    view = ClusterView()
    view.refresh()
    demand = Demand(
        name=name,
        cpus=max(replica_cpus, 0.01),
        gpus=shape.gpus,
        gpu_bundles=shape.gpu_bundles,
    )
    why = view.table().why_infeasible(demand)
    if why:
        raise InfeasibleDemandError(why)


def rank_bundle_problem(bundle_specs: list[dict[str, float]], ranks: int) -> str:
    """Why a placement group's bundles cannot hold ``ranks`` one-GPU ranks ("" if they can).

    vLLM's Ray executor puts one rank in each bundle with a GPU and refuses bundles of more than
    one GPU; checking first turns a late failure inside vLLM into a clear error.
    """
    gpu_bundles = [b.get("GPU", 0.0) for b in bundle_specs if b.get("GPU", 0.0) > 0]
    if any(gpus > 1 for gpus in gpu_bundles):
        return f"bundles of more than one GPU ({gpu_bundles}): a rank takes one GPU"
    if len(gpu_bundles) < ranks:
        return (
            f"{len(gpu_bundles)} GPU bundle(s) for {ranks} tensor-parallel ranks: the replica "
            f"needs a placement group of {ranks} one-GPU bundles on one node"
        )
    return ""


def current_group() -> Any:
    """The placement group this Ray worker runs in (None outside one, or outside Ray)."""
    try:
        import ray
        from ray.util import get_current_placement_group
    except ImportError:
        return None
    if not ray.is_initialized():
        return None
    return get_current_placement_group()


def group_gpu_indices(timeout_s: float = 60.0) -> list[int] | None:
    """This process's CUDA device indices of the GPUs in its placement group's bundles.

    A tensor-parallel replica takes no GPU itself, so Ray leaves it every GPU of its node
    visible; the group's GPUs are found by running one zero-CPU task in each GPU bundle (a
    bundle's GPU ids are fixed once the group is ready) and mapping Ray's GPU ids to the indices
    this process sees. None outside a placement group, in one without GPU bundles, or when the
    process holds GPUs itself (then Ray already made only those visible).
    """
    import ray

    group = current_group()
    if group is None or ray.get_gpu_ids():
        return None
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    @ray.remote(num_cpus=0, num_gpus=1)
    def gpu_ids() -> list[str]:
        return [str(i) for i in ray.get_gpu_ids()]

    refs = [
        gpu_ids.options(
            scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=index
            )
        ).remote()
        for index, bundle in enumerate(group.bundle_specs)
        if bundle.get("GPU", 0) >= 1
    ]
    if not refs:
        return None
    ids = [gpu for found in ray.get(refs, timeout=timeout_s) for gpu in found]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    order = [v.strip() for v in visible.split(",")] if visible else None
    return [order.index(gpu) if order and gpu in order else int(gpu) for gpu in ids]
