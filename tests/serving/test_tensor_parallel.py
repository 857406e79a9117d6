"""Tensor-parallel models: the spec, the replica's shape, the engines' hand-over of the placement
group (Ray-free), and 2-GPU bundles on one node of a simulated cluster with fake GPUs (Ray)."""

from __future__ import annotations

import asyncio
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
