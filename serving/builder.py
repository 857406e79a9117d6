"""Builds the Serve application: the OpenAI ingress in front of the multiplexing model replicas."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve.config import BackpressureConfig

from placement.table import NODE_ID_LABEL
from serving.config import ServingConfig
from serving.deployment import ModelServer, ReplicaConfig
from serving.ingress import OpenAIIngress
from serving.policy_router import PolicyRouter
from serving.replica_pool import ReplicaPool
from serving.spec import ModelSpec
from serving.tensor_parallel import deployment_options, replica_shape


def build_app(
    specs: list[ModelSpec],
    config: ServingConfig | None = None,
    replica_nodes: list[str] | None = None,
) -> Any:
    """The Serve application: an OpenAI ingress in front of multiplexing model replicas.

    Args:
        specs: the models served.
        config: deployment settings.
        replica_nodes: one node id per model replica, as chosen by ``placement`` (see
            :mod:`serving.placer`): the replicas are then constrained to those nodes (a
            ``ray.io/node-id`` label selector) and their count is the list's length. ``None``:
            Serve places ``config.replicas`` replicas itself.
    """
    config = config or ServingConfig()
    actor_options: dict[str, Any] = {"num_cpus": config.replica_cpus}
    if config.replica_gpus:
        actor_options["num_gpus"] = config.replica_gpus
    if config.runtime_env:
        actor_options["runtime_env"] = config.runtime_env
    placed: dict[str, Any] = {"num_replicas": config.replicas}
    if replica_nodes:
        nodes = sorted(set(replica_nodes))  # sorted: the same set must give the same Serve version
        actor_options["label_selector"] = {NODE_ID_LABEL: f"in({','.join(nodes)})"}
        per_node = max(replica_nodes.count(node) for node in nodes)
        placed = {"num_replicas": len(replica_nodes), "max_replicas_per_node": per_node}
    replica = ReplicaConfig(
        max_models=config.max_models_per_replica,
        max_parked=config.max_parked_engines,
        cache=config.cache,
        max_prompt_bytes=config.max_prompt_bytes,
        history=config.switch_history,
    )
    backpressure = BackpressureConfig(status_code=503, retry_after_s=config.retry_after_seconds)
    server: Any
    if config.routing == "policy":
        server = _policy_replicas(specs, config, replica, actor_options, replica_nodes)
    else:
        # A tensor-parallel replica: one-GPU bundles on one node (serving.tensor_parallel).
        shape = replica_shape(specs, config.replica_cpus, config.replica_gpus)
        placed, replica_actor = deployment_options(shape, placed, actor_options)
        server = (
            serve.deployment(ModelServer)  # type: ignore[attr-defined]
            .options(
                name="ModelServer",
                max_ongoing_requests=config.max_ongoing_requests,
                max_queued_requests=config.max_queued_requests,
                backpressure_config=backpressure,
                ray_actor_options=replica_actor,
                **placed,
            )
            .bind(list(specs), replica)
        )
    # Serve lets a few more requests into the ingress than its own bound, so that those beyond it
    # get the ingress's OpenAI-shaped 503 (and /health still gets in) rather than a queue.
    ingress_slots = config.ingress_max_requests + max(8, config.ingress_max_requests // 4)
    return OpenAIIngress.options(  # type: ignore[attr-defined]
        ray_actor_options={"num_cpus": config.ingress_cpus},
        max_ongoing_requests=ingress_slots,
        max_queued_requests=config.ingress_max_queued_requests,
        backpressure_config=backpressure,
    ).bind(server, list(specs), config)


def _policy_replicas(
    specs: list[ModelSpec],
    config: ServingConfig,
    replica: ReplicaConfig,
    actor_options: dict[str, Any],
    replica_nodes: list[str] | None,
) -> PolicyRouter:
    """``routing="policy"``: one single-replica deployment per replica (``ModelServer-<i>``, on
    its chosen node when placed), behind a :class:`PolicyRouter` that the ingress calls and that
    adds and removes replicas between ``replicas`` and ``max_replicas``
    (:mod:`serving.replica_pool`)."""
    count = len(replica_nodes) if replica_nodes else config.replicas
    pool = ReplicaPool(specs, config, replica, actor_options)
    deployments = [
        pool.deployment(f"ModelServer-{index}", replica_nodes[index] if replica_nodes else None)
        for index in range(count)
    ]
    return PolicyRouter(
        deployments,
        list(specs),
        slots=config.max_ongoing_requests,
        max_models=config.max_models_per_replica,
        concurrency=config.copy_concurrency,
        window_s=config.demand_window_s,
        tick_s=config.policy_tick_s,
        patience_s=config.policy_patience_s,
        pool=pool,
        max_replicas=max(count, config.max_replicas or count),
    )
