"""Shared serving fixtures: tiny models made here and published to the real S3 server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.spec import ModelSpec
from serving.storage import publish_model
from serving.tiny import make_tiny_llama
from tests.harness import Served, free_port

N_MODELS = 4


@pytest.fixture(scope="session")
def tiny_model_dirs() -> Iterator[list[Path]]:
    """Four tiny Llama models (same shape, different seeds) in local folders."""
    root = Path(tempfile.mkdtemp(prefix="serving-models-"))
    yield [make_tiny_llama(root / f"m{i}", seed=i) for i in range(N_MODELS)]


@pytest.fixture(scope="session")
def model_bucket(s3_server) -> str:
    """A bucket holding the tiny models under ``models/m<i>``."""
    return s3_server.new_bucket()


@pytest.fixture(scope="session")
def s3_specs(s3_server, model_bucket: str, tiny_model_dirs: list[Path]) -> list[ModelSpec]:
    """Specs of the four tiny models, published to S3 with their checksum manifests."""
    specs = []
    for i, folder in enumerate(tiny_model_dirs):
        uri = f"s3://{model_bucket}/models/m{i}"
        publish_model(folder, uri, s3_server.storage_options)
        specs.append(
            ModelSpec(id=f"tiny-{i}", weights_uri=uri, storage_options=s3_server.storage_options)
        )
    return specs


@pytest.fixture(scope="session")
def bad_specs(s3_server, model_bucket: str, tiny_model_dirs: list[Path]) -> list[ModelSpec]:
    """A model whose weights file is corrupt in storage and one with no files at all."""
    corrupt = f"s3://{model_bucket}/models/corrupt"
    publish_model(tiny_model_dirs[0], corrupt, s3_server.storage_options)
    fs = s3_server.filesystem()
    fs.pipe_file(f"{model_bucket}/models/corrupt/model.safetensors", b"not the published bytes")
    opts = s3_server.storage_options
    return [
        ModelSpec(id="corrupt", weights_uri=corrupt, storage_options=opts),
        ModelSpec(
            id="missing", weights_uri=f"s3://{model_bucket}/models/nothing", storage_options=opts
        ),
    ]


@pytest.fixture
def cache_root(tmp_path: Path) -> str:
    """A fresh node cache folder."""
    root = tmp_path / "cache"
    root.mkdir()
    return os.fspath(root)


@pytest.fixture(scope="module")
def served(ray_local, s3_specs, bad_specs, tmp_path_factory) -> Iterator[Served]:
    """The four tiny models plus two broken ones on ONE replica that holds at most two."""
    import uuid

    import ray
    from ray import serve

    from serving.app import ServingConfig, serve_models, stop_models
    from serving.cache import CacheConfig, kill_node_caches

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    key = f"sk-test-{uuid.uuid4().hex}"
    config = ServingConfig(
        app_name=f"serving-test-{uuid.uuid4().hex[:6]}",
        max_models_per_replica=2,
        replica_cpus=0.5,
        ingress_cpus=0.1,
        api_key=key,
        cache=CacheConfig(
            root=str(tmp_path_factory.mktemp("node-cache")),
            namespace=f"serving-test-{uuid.uuid4().hex[:8]}",
        ),
    )
    url = serve_models([*s3_specs, *bad_specs], config, port=free_port())
    yield Served(url, key, config)
    stop_models(config)
    serve.shutdown()
    kill_node_caches(config.cache)
