"""On a GPU, an evicted model sleeps (weights in pinned CPU memory) and wakes without a reload.

Runs the real Serve app with the transformers engine on CUDA; skipped where torch sees no GPU.
Weights come from a ``file://`` store (no S3 server needed on a GPU machine).
"""

from __future__ import annotations

import json
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.harness import serving_app, use_local_ray

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _complete(url: str, model: str) -> str:
    body = json.dumps(
        {"model": model, "prompt": "Metal organic", "max_tokens": 8, "temperature": 0}
    )
    req = urllib.request.Request(
        url + "/completions", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=300) as resp:
        return str(json.loads(resp.read())["choices"][0]["text"])


def test_evicted_model_sleeps_and_wakes_without_reload(
    ray_local: None, shared_serve: None, tiny_model_dirs: list[Path], tmp_path: Path
) -> None:
    from ray import serve

    from serving.app import ServingConfig
    from serving.cache import CacheConfig
    from serving.placer import ReplicaPlacement
    from serving.spec import ModelSpec
    from serving.storage import publish_model

    use_local_ray()
    specs = []
    for i in range(2):
        uri = (tmp_path / "store" / f"m{i}").as_uri()
        publish_model(tiny_model_dirs[i], uri)
        specs.append(ModelSpec(id=f"gpu-{i}", weights_uri=uri))
    namespace = f"gpu-parking-{uuid.uuid4().hex[:6]}"
    config = ServingConfig(
        app_name=f"gpu-parking-{uuid.uuid4().hex[:6]}",
        max_models_per_replica=1,
        max_parked_engines=1,
        replica_gpus=1,
        replica_cpus=0.5,
        cache=CacheConfig(root=str(tmp_path / "cache"), namespace=namespace),
        placement=ReplicaPlacement(namespace=namespace),
    )
    with serving_app(specs, config) as app:
        first = _complete(app.url, "gpu-0")
        _complete(app.url, "gpu-1")  # evicts gpu-0: it goes to sleep
        again = _complete(app.url, "gpu-0")  # wakes it
        handle = serve.get_deployment_handle("ModelServer", app_name=config.app_name)
        stats: Any = handle.stats.remote().result(timeout_s=60)
        tiers = [(e.model_id, e.tier) for e in stats.loads]
        assert tiers == [
            ("gpu-0", "object_storage"),
            ("gpu-1", "object_storage"),
            ("gpu-0", "parked"),
        ], tiers
        assert stats.parked == ["gpu-1"] and stats.resident == ["gpu-0"]
        assert again == first  # same weights after the round trip through CPU memory
        for event in stats.loads:
            print(f"switch to {event.model_id}: {event.tier} {event.seconds:.3f} s")
