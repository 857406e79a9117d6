"""Shared serving fixtures: tiny models made here and published to the real S3 server, and one Serve instance
that the modules' apps share (`shared_serve`, `tests.harness.serving_app`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.spec import ModelSpec
from serving.storage import publish_model
from serving.tiny import make_tiny_llama
from tests.harness import Served, serving_app, shutdown_serve, use_local_ray

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
def served(
    ray_local: None,
    shared_serve: None,
    s3_specs: list[ModelSpec],
    bad_specs: list[ModelSpec],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    """The four tiny models plus two broken ones on ONE replica that holds at most two.

    An app per module (on the Serve instance the modules share): test_app asserts the replica's whole
    history and test_chaos kills its processes.
    """
    import uuid

    from serving.app import ServingConfig
    from serving.cache import CacheConfig

    use_local_ray()
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
    with serving_app([*s3_specs, *bad_specs], config) as app:
        yield app


@pytest.fixture(scope="session")
def shared_serve() -> None:
    """Marks the fixtures whose apps share one Serve instance (`tests.harness.serving_app`). Their modules
    run one after another (tests/conftest.py orders them) and Serve stops after the last of them."""


def _shares_serve(item: pytest.Item) -> bool:
    """Whether a test of ``item``'s module deploys on the shared Serve instance."""
    by_module: dict[str, bool] | None = item.session.stash.get(_SHARES_SERVE, None)
    if by_module is None:
        by_module = {}
        for other in item.session.items:
            module = other.nodeid.split("::", 1)[0]
            by_module[module] = by_module.get(module, False) or "shared_serve" in getattr(
                other, "fixturenames", ()
            )
        item.session.stash[_SHARES_SERVE] = by_module
    return by_module.get(item.nodeid.split("::", 1)[0], False)


_SHARES_SERVE = pytest.StashKey[dict[str, bool]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    """Stops the shared Serve instance after the last module that deploys on it, once that module's
    fixtures are torn down: a later test may start Serve its own way (Serve keeps the port of its first
    start), and an idle Serve would take CPU time from the tests that need none."""
    result = yield
    if _shares_serve(item) and (nextitem is None or not _shares_serve(nextitem)):
        shutdown_serve()
    return result
