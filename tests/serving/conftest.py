"""Shared serving fixtures: tiny models made here and published to the real S3 server, and one Serve instance
that the modules' apps share (`shared_serve`, `tests.harness.serving_app`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
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


class _SharedServed:
    """The app of `served`, deployed once for the modules that use it one after another (test_app,
    test_chaos and test_client, collected in that order): each deployment costs ~7 s to start and ~3 s
    to delete. Deleted after the last of them (`pytest_runtest_teardown`), or at the end of the session."""

    def __init__(self) -> None:
        self.app: Served | None = None
        self.used_by: set[str] = set()  # the modules it was handed to
        self._stack = ExitStack()

    def get(
        self, module: str, fresh: bool, make: Callable[[], AbstractContextManager[Served]]
    ) -> Served:
        """The app (deployed now if none runs); ``fresh``: one no other module has used."""
        if self.app is not None and fresh and self.used_by - {module}:
            self.close()
        if self.app is None:
            self.app = self._stack.enter_context(make())
        self.used_by.add(module)
        return self.app

    def close(self) -> None:
        """Deletes the app, if one runs."""
        self.app, self.used_by = None, set()
        self._stack.close()


@pytest.fixture(scope="session")
def shared_served(request: pytest.FixtureRequest, ray_local: None) -> Iterator[_SharedServed]:
    """The holder of `served`'s app; at the end of the session the app is deleted already, unless the
    session ended early."""
    holder = _SharedServed()
    request.session.stash[_SHARED_SERVED] = holder
    yield holder
    holder.close()


_SHARED_SERVED = pytest.StashKey[_SharedServed]()


@pytest.fixture(scope="module")
def served(
    request: pytest.FixtureRequest,
    ray_local: None,
    shared_serve: None,
    shared_served: _SharedServed,
    s3_specs: list[ModelSpec],
    bad_specs: list[ModelSpec],
    tmp_path_factory: pytest.TempPathFactory,
) -> Served:
    """The four tiny models plus two broken ones on ONE replica that holds at most two.

    One app for the modules that use it one after another (`_SharedServed`), on the Serve instance
    the modules share. A module that asserts the replica's whole history (test_app) sets
    ``SERVED_FRESH = True`` and gets an app no other module has used; test_chaos kills the replica
    and waits until Serve has replaced it, so the next module gets a serving app.
    """
    import uuid

    from serving.app import ServingConfig
    from serving.cache import CacheConfig

    def make() -> AbstractContextManager[Served]:
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
        return serving_app([*s3_specs, *bad_specs], config)

    use_local_ray()
    fresh = bool(getattr(request.module, "SERVED_FRESH", False))
    return shared_served.get(request.module.__name__, fresh, make)


@pytest.fixture(scope="session")
def shared_serve() -> None:
    """Marks the fixtures whose apps share one Serve instance (`tests.harness.serving_app`). Their modules
    run one after another (tests/conftest.py orders them) and Serve stops after the last of them."""


def _module_uses(item: pytest.Item, fixture: str) -> bool:
    """Whether a test of ``item``'s module uses ``fixture``."""
    by_module: dict[tuple[str, str], bool] | None = item.session.stash.get(_USES, None)
    if by_module is None:
        by_module = {}
        item.session.stash[_USES] = by_module
    module = item.nodeid.split("::", 1)[0]
    if (module, fixture) not in by_module:
        by_module[(module, fixture)] = any(
            fixture in getattr(other, "fixturenames", ())
            for other in item.session.items
            if other.nodeid.split("::", 1)[0] == module
        )
    return by_module[(module, fixture)]


_USES = pytest.StashKey[dict[tuple[str, str], bool]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    """Deletes `served`'s app after the last module in a row that uses it, and stops the shared Serve
    instance after the last module that deploys on it, once that module's fixtures are torn down: a later
    test may start Serve its own way (Serve keeps the port of its first start), and an idle Serve would
    take CPU time from the tests that need none."""
    result = yield
    for fixture in ("served", "shared_serve"):
        if _module_uses(item, fixture) and (
            nextitem is None or not _module_uses(nextitem, fixture)
        ):
            if fixture == "served":
                if (holder := item.session.stash.get(_SHARED_SERVED, None)) is not None:
                    holder.close()
            else:
                shutdown_serve()
    return result
