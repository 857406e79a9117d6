"""Tensor-parallel replicas on real GPUs (skipped where torch sees no CUDA device).

Run by ``scripts/gpu_checks.sh``. With one GPU: the engine of a replica that holds no GPU itself
finds its placement group's GPU and runs there, and placement refuses a TP=2 replica at once.
With two or more: a TP=2 transformers model (device map over the group's 2 GPUs) and, where vLLM
is installed, a TP=2 vLLM model (the Ray executor in the replica's group) are served.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _in_group_actor(bundles: list[dict[str, float]]) -> tuple[Any, Any]:
    """A placement group of ``bundles`` on one node and an actor in bundle 0 that takes no GPU."""
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = placement_group(bundles, strategy="STRICT_PACK")
    ray.get(group.ready(), timeout=60)

    @ray.remote(num_cpus=0.5, num_gpus=0)
    class Replica:
        def run(self, path: str, tp: int) -> dict[str, Any]:
            from serving.engines import GenerationParams
            from serving.engines.transformers_engine import TransformersEngine
            from serving.tensor_parallel import group_gpu_indices

            engine = TransformersEngine(device="auto", tensor_parallel_size=tp)

            async def go() -> str:
                await engine.load(path)
                params = GenerationParams(max_tokens=8, temperature=0)
                return "".join([c.text async for c in engine.generate("Metal organic", params)])

            text = asyncio.run(go())
            devices = sorted({str(p.device) for p in engine._model.parameters()})
            engine.unload()
            return {
                "indices": group_gpu_indices(),
                "device": engine.device,
                "devices": devices,
                "text": text,
            }

    actor = Replica.options(
        scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=group,
            placement_group_bundle_index=0,
            placement_group_capture_child_tasks=True,
        )
    ).remote()
    return group, actor


def test_an_engine_in_a_gpu_bundle_runs_on_that_bundles_gpu(
    ray_local: None, tiny_model_dirs: list[Path]
) -> None:
    import ray
    from ray.util.placement_group import remove_placement_group

    group, actor = _in_group_actor([{"CPU": 0.5, "GPU": 1.0}])
    try:
        found = ray.get(actor.run.remote(str(tiny_model_dirs[0]), 1), timeout=300)
        print(f"1 GPU bundle: group GPU indices {found['indices']}, engine on {found['devices']}")
        assert found["indices"] and found["device"] == f"cuda:{found['indices'][0]}"
        assert found["devices"] == [f"cuda:{found['indices'][0]}"] and found["text"]
    finally:
        ray.kill(actor)
        remove_placement_group(group)


def test_tp2_on_real_gpus_is_placed_on_one_node_or_refused_at_once(
    ray_local: None, tiny_model_dirs: list[Path]
) -> None:
    import ray
    from ray.util.placement_group import remove_placement_group

    from placement import InfeasibleDemandError, Scheduler
    from placement.demand import Demand

    gpus = int(ray.cluster_resources().get("GPU", 0))
    tp2 = Demand(name=f"tp2-{uuid.uuid4().hex[:6]}", cpus=0.5, gpus=2, gpu_bundles=2)
    if gpus < 2:
        with pytest.raises(InfeasibleDemandError, match="2 GPUs on one node") as refused:
            Scheduler().plan(tp2)
        print(f"TP=2 refused on this {gpus}-GPU machine: {refused.value}")
        pytest.skip(
            f"TP=2 on real GPUs needs 2 GPUs; this machine has {gpus} (the refusal was checked)"
        )
    pytest.importorskip("accelerate", reason="a device map over 2 GPUs needs accelerate")
    group, actor = _in_group_actor([{"CPU": 0.5, "GPU": 1.0}, {"GPU": 1.0}])
    try:
        found = ray.get(actor.run.remote(str(tiny_model_dirs[0]), 2), timeout=300)
        print(f"2 GPU bundles: group GPU indices {found['indices']}, model on {found['devices']}")
        assert len(found["indices"]) == 2 and found["text"]
        assert set(found["devices"]) <= {f"cuda:{i}" for i in found["indices"]}
    finally:
        ray.kill(actor)
        remove_placement_group(group)


def test_vllm_tp2_serves_in_the_replicas_group(
    ray_local: None, tiny_model_dirs: list[Path]
) -> None:
    import ray

    pytest.importorskip("vllm", reason="vLLM is not installed here")
    if int(ray.cluster_resources().get("GPU", 0)) < 2:
        pytest.skip("vLLM TP=2 needs 2 GPUs")
    from ray import serve

    from serving.app import ServingConfig, serve_models, stop_models
    from serving.cache import CacheConfig, kill_node_caches
    from serving.placer import ReplicaPlacement
    from serving.spec import ModelSpec
    from serving.storage import publish_model
    from tests.harness import free_port

    root = Path(str(tiny_model_dirs[0])).parent / f"vllm-tp-{uuid.uuid4().hex[:6]}"
    uri = (root / "store").as_uri()
    publish_model(tiny_model_dirs[0], uri)
    spec = ModelSpec(id="vllm-tp2", weights_uri=uri, engine="vllm", tensor_parallel_size=2)
    namespace = f"gpu-tp-{uuid.uuid4().hex[:6]}"
    config = ServingConfig(
        app_name=namespace,
        replica_cpus=0.5,
        cache=CacheConfig(root=str(root / "cache"), namespace=namespace),
        placement=ReplicaPlacement(namespace=namespace),
    )
    serve_models([spec], config, port=free_port())
    try:
        handle = serve.get_deployment_handle("ModelServer", app_name=config.app_name)
        request = {"prompt": "Metal organic frameworks", "params": {"max_tokens": 8}}
        items = list(
            handle.options(multiplexed_model_id=spec.id, stream=True).generate.remote(request)
        )
        print(f"vLLM TP=2: {''.join(i.get('text', '') for i in items)!r}")
        assert items[-1]["finish_reason"] in ("stop", "length")
    finally:
        stop_models(config)
        kill_node_caches(config.cache)
