"""Tensor-parallel models: the spec, the replica's shape, the engines' hand-over of the placement
group (Ray-free), and 2-GPU bundles on one node of a simulated cluster with fake GPUs (Ray)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.engines import GenerationParams, make_engine
from serving.engines.vllm_engine import _config_in_group, parallel_engine_args
from serving.errors import EngineError
from serving.spec import ModelSpec
from serving.tensor_parallel import (
    deployment_options,
    rank_bundle_problem,
    replica_shape,
    tensor_parallel_size,
)
from serving.tiny import make_tiny_llama
from tests.harness import serve_port


def _spec(model_id: str, tp: int = 1, uri: str = "file:///nowhere", **extra: object) -> ModelSpec:
    return ModelSpec(id=model_id, weights_uri=uri, tensor_parallel_size=tp, **extra)  # type: ignore[arg-type]


# ---- Ray-free ------------------------------------------------------------------------------------


def test_the_spec_takes_a_tensor_parallel_size_of_one_gpu_per_rank() -> None:
    assert _spec("a").tensor_parallel_size == 1
    assert _spec("b", 4).tensor_parallel_size == 4
    assert _spec("c", 4, gpus=4).gpus == 4
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        _spec("d", 0)
    with pytest.raises(ValidationError, match="gpus must be 4"):
        _spec("e", 4, gpus=2)


def test_a_replica_takes_the_shape_of_its_largest_tensor_parallel_model() -> None:
    assert replica_shape([_spec("a")], 0.5, 1.0).bundles == []
    assert replica_shape([_spec("a")], 0.5, 1.0).gpus == 1.0
    specs = [_spec("a"), _spec("b", 2)]
    assert tensor_parallel_size(specs) == 2
    shape = replica_shape(specs, 0.5, 0.0)
    assert shape.gpus == 2.0 and shape.gpu_bundles == 2
    assert shape.bundles == [{"CPU": 0.5, "GPU": 1.0}, {"GPU": 1.0}]
    assert replica_shape(specs, 0.0, 2.0).bundles == [{"GPU": 1.0}, {"GPU": 1.0}]
    with pytest.raises(ValueError, match="one GPU per rank"):
        replica_shape(specs, 0.5, 4.0)


def test_deployment_options_put_the_node_on_every_bundle_and_no_gpu_on_the_actor() -> None:
    shape = replica_shape([_spec("b", 2)], 0.5, 0.0)
    actor_in = {"num_cpus": 0.5, "num_gpus": 2, "label_selector": {"ray.io/node-id": "in(n1)"}}
    options, actor = deployment_options(shape, {"max_replicas_per_node": 1}, actor_in)
    assert actor == {"num_cpus": 0.5}
    assert options == {
        "placement_group_bundles": [{"CPU": 0.5, "GPU": 1.0}, {"GPU": 1.0}],
        "placement_group_strategy": "STRICT_PACK",
        "placement_group_bundle_label_selector": [{"ray.io/node-id": "in(n1)"}] * 2,
    }
    plain = replica_shape([_spec("a")], 0.5, 0.0)
    assert deployment_options(plain, {"x": 1}, actor_in) == ({"x": 1}, actor_in)


def test_rank_bundles_are_checked_before_vllm_starts() -> None:
    assert rank_bundle_problem([{"CPU": 1, "GPU": 1}, {"GPU": 1}], 2) == ""
    assert "1 GPU bundle(s) for 2" in rank_bundle_problem([{"CPU": 1, "GPU": 1}, {"CPU": 1}], 2)
    assert "more than one GPU" in rank_bundle_problem([{"GPU": 2}], 2)


def test_vllm_gets_the_size_the_ray_executor_and_never_starts_outside_a_group() -> None:
    assert parallel_engine_args({"dtype": "half"}, 1) == {"dtype": "half"}
    assert parallel_engine_args({}, 2) == {
        "tensor_parallel_size": 2,
        "distributed_executor_backend": "ray",
    }
    assert (
        parallel_engine_args({"distributed_executor_backend": "mp"}, 2)[
            "distributed_executor_backend"
        ]
        == "mp"
    )
    with pytest.raises(EngineError, match="differs from the spec"):
        parallel_engine_args({"tensor_parallel_size": 4}, 2)
    with pytest.raises(EngineError, match="must run in the replica's placement group"):
        _config_in_group(None, {"tensor_parallel_size": 2})  # this test process is in no group


def test_a_tensor_parallel_transformers_model_runs_whole_on_the_cpu(tmp_path: Path) -> None:
    folder = make_tiny_llama(tmp_path / "m", seed=3)
    engine = make_engine(_spec("t", 2, uri=folder.as_uri()))

    async def run() -> str:
        await engine.load(str(folder))
        text = ""
        async for chunk in engine.generate("hello there", GenerationParams(max_tokens=4)):
            text += chunk.text
        return text

    try:
        asyncio.run(run())
        assert engine.device == "cpu" and not engine.supports_sleep  # type: ignore[attr-defined]
    finally:
        engine.unload()


# ---- on a simulated cluster with fake GPUs (Ray) -----------------------------------------------------


@pytest.fixture(scope="module")
def two_gpu_node(sim_cluster) -> str:
    """A node with 2 fake GPUs added to the simulated cluster (whose ``gpu`` node has 1)."""
    return sim_cluster.add("gpu-x2", num_cpus=2, num_gpus=2)


@pytest.fixture(scope="module")
def tp_namespace(sim_cluster, shared_serve, two_gpu_node) -> Iterator[str]:
    """A placement namespace with its controller, shut down at the end. The apps deploy on the Serve
    instance the serving modules on the simulated cluster share (`serve_port`)."""
    from placement.client import PlacementClient

    ns = f"tp-{uuid.uuid4().hex[:6]}"
    client = PlacementClient(ns, poll_s=0.3)
    yield ns
    client.shutdown()


def _group_of(name: str) -> dict:
    from ray.util.placement_group import placement_group_table

    groups = [
        g
        for g in placement_group_table().values()
        if name in (g.get("name") or "") and g.get("state") == "CREATED"
    ]
    assert len(groups) == 1, groups
    return groups[0]


def test_scheduler_reserves_two_gpu_bundles_on_one_node_or_refuses(
    sim_cluster, two_gpu_node
) -> None:
    from placement import InfeasibleDemandError, NoCapacityError, Scheduler
    from placement.demand import Demand

    scheduler = Scheduler(group_prefix=f"tp-{uuid.uuid4().hex[:6]}-")
    decision = scheduler.place(Demand(name="ranks", cpus=0.5, gpus=2, gpu_bundles=2), timeout=30)
    try:
        assert decision.node_id == two_gpu_node
        group = _group_of(f"{scheduler.group_prefix}ranks-1")
        assert group["strategy"] == "STRICT_PACK"
        assert group["bundles"] == {0: {"CPU": 0.5, "GPU": 1.0}, 1: {"GPU": 1.0}}
        assert set(group["bundles_to_node_id"].values()) == {two_gpu_node}
        assert decision.actor_options()["num_gpus"] == 1.0  # the actor takes bundle 0's GPU
        with pytest.raises(NoCapacityError):  # the only 2-GPU node is taken now
            scheduler.plan(Demand(name="more", cpus=0.5, gpus=2, gpu_bundles=2))
        with pytest.raises(InfeasibleDemandError, match="3 GPUs on one node"):
            scheduler.plan(Demand(name="three", cpus=0.5, gpus=3, gpu_bundles=3))
    finally:
        scheduler.release("ranks")


def test_a_tp2_replica_gets_two_gpu_bundles_on_one_node_and_serves_or_is_refused(
    sim_cluster, two_gpu_node, tp_namespace, tmp_path
) -> None:
    from ray import serve

    from placement import InfeasibleDemandError, PlacementClient, PlacementTimeoutError
    from serving.app import ServingConfig, serve_models, stop_models
    from serving.cache import CacheConfig, kill_node_caches
    from serving.placer import ReplicaPlacement, slot_name
    from serving.storage import publish_model

    uri = (tmp_path / "store" / "tp").as_uri()
    publish_model(make_tiny_llama(tmp_path / "tp", seed=5), uri)
    spec = _spec(f"tp2-{uuid.uuid4().hex[:6]}", 2, uri=uri)

    def config(**overrides: object) -> ServingConfig:
        cache = CacheConfig(
            root=str(tmp_path / "cache"),
            namespace=f"tp-cache-{uuid.uuid4().hex[:6]}",
            placement_namespace=tp_namespace,
        )
        settings: dict[str, object] = {
            "placement": ReplicaPlacement(namespace=tp_namespace, timeout_s=60),
            **overrides,
        }
        return ServingConfig(
            app_name=f"tp-{uuid.uuid4().hex[:6]}",
            route_prefix=f"/{uuid.uuid4().hex[:6]}",
            replica_cpus=0.5,
            ingress_cpus=0.0,
            cache=cache,
            **settings,  # type: ignore[arg-type]
        )

    app = config()
    serve_models([spec], app, port=serve_port(), proxy_location="HeadOnly")
    try:
        decision = PlacementClient(tp_namespace).explain_sync(slot_name(app.app_name, 0))
        assert decision is not None and decision.node_id == two_gpu_node
        assert decision.bundles == [{"CPU": 0.5, "GPU": 1.0}, {"GPU": 1.0}]
        assert "2 bundles of 1 GPU on this one node" in decision.explain()
        group = _group_of(f"{app.app_name}#ModelServer")  # the group Serve made for the replica
        assert group["strategy"] == "STRICT_PACK"
        assert group["bundles"] == {0: {"CPU": 0.5, "GPU": 1.0}, 1: {"GPU": 1.0}}
        assert set(group["bundles_to_node_id"].values()) == {two_gpu_node}
        handle = serve.get_deployment_handle("ModelServer", app_name=app.app_name)
        request = {"prompt": "tensor parallel", "params": {"max_tokens": 3}}
        stream = handle.options(multiplexed_model_id=spec.id, stream=True).generate.remote(request)
        items = list(stream)
        assert items[0]["prompt_tokens"] > 0 and items[-1]["finish_reason"] in ("stop", "length")
        assert handle.stats.remote().result(timeout_s=60).node_id == two_gpu_node

        # No node has 2 free GPUs now: a second TP=2 app waits its timeout and is refused.
        busy = config(placement=ReplicaPlacement(namespace=tp_namespace, timeout_s=2))
        with pytest.raises(PlacementTimeoutError):
            serve_models([spec], busy, port=serve_port(), proxy_location="HeadOnly")
        assert busy.app_name not in serve.status().applications
    finally:
        stop_models(app)
        kill_node_caches(app.cache)

    # No node could ever hold 3 GPUs: refused at once, placed by placement or by Serve.
    for placement in (ReplicaPlacement(namespace=tp_namespace), None):
        never = config(placement=placement)
        with pytest.raises(InfeasibleDemandError, match="3 GPUs on one node"):
            serve_models(
                [_spec("tp3", 3, uri=uri)], never, port=serve_port(), proxy_location="HeadOnly"
            )
        assert never.app_name not in serve.status().applications


def test_both_routings_deploy_a_tp_replica_as_bundles_on_its_nodes() -> None:
    from serving.builder import build_app
    from serving.config import ServingConfig
    from serving.deployment import ReplicaConfig
    from serving.replica_pool import ReplicaPool

    specs = [_spec("a"), _spec("b", 2)]
    ingress = build_app(specs, ServingConfig(replica_cpus=0.5), replica_nodes=["n2", "n1"])
    served = ingress._bound_deployment.init_args[0]._bound_deployment  # Serve's multiplexing
    replica = served._replica_config
    assert served.num_replicas == 2 and replica.max_replicas_per_node is None
    assert replica.placement_group_bundles == [{"CPU": 0.5, "GPU": 1.0}, {"GPU": 1.0}]
    assert replica.placement_group_strategy == "STRICT_PACK"
    assert replica.placement_group_bundle_label_selector == [{"ray.io/node-id": "in(n1,n2)"}] * 2
    assert "num_gpus" not in replica.ray_actor_options
    assert "label_selector" not in replica.ray_actor_options

    config = ServingConfig(routing="policy", replica_cpus=0.5)
    pool = ReplicaPool(specs, config, ReplicaConfig(), {"num_cpus": 0.5})
    managed = pool.deployment("ModelServer-0", "n3")._bound_deployment._replica_config
    assert managed.placement_group_bundles == [{"CPU": 0.5, "GPU": 1.0}, {"GPU": 1.0}]
    assert managed.placement_group_bundle_label_selector == [{"ray.io/node-id": "in(n3)"}] * 2
