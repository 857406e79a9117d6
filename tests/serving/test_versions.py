"""Model versions: publishing to the real S3 server, node caches by version, and the serving app
moving to a new version under load without dropping a request."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from serving.cache import CacheConfig, ModelCache
from serving.deployment import LoadedModel
from serving.errors import WeightsError
from serving.spec import ModelSpec
from serving.versions import (
    VersionExistsError,
    current_version,
    publish_version,
    resolve_version,
    set_current_version,
)
from tests.harness import Served, serving_app, use_local_ray


def _versioned(s3_server: Any, model_bucket: str, **fields: Any) -> ModelSpec:
    uri = f"s3://{model_bucket}/versioned/{uuid.uuid4().hex[:8]}"
    return ModelSpec(
        id="tiny-v",
        weights_uri=uri,
        storage_options=s3_server.storage_options,
        versioned=True,
        **fields,
    )


def test_versions_are_numbered_never_rewritten_and_chosen_by_the_pointer(
    s3_server: Any, model_bucket: str, tiny_model_dirs: list[Path]
) -> None:
    spec = _versioned(s3_server, model_bucket)
    opts = s3_server.storage_options
    with pytest.raises(WeightsError, match="no published version"):
        resolve_version(spec)
    assert current_version(spec.weights_uri, opts) is None
    first = publish_version(tiny_model_dirs[0], spec.weights_uri, opts)
    second = publish_version(tiny_model_dirs[1], spec.weights_uri, opts)
    assert (first.version, second.version) == ("1", "2") and first.digest != second.digest
    assert current_version(spec.weights_uri, opts) == second
    following = resolve_version(spec)
    assert following.version == "2" and following.weights_uri.endswith("/versions/2")
    assert not following.versioned
    pinned = resolve_version(spec.model_copy(update={"version": "1"}))
    assert pinned.weights_uri.endswith("/versions/1")
    with pytest.raises(VersionExistsError):
        publish_version(tiny_model_dirs[2], spec.weights_uri, opts, version="2")
    assert current_version(spec.weights_uri, opts) == second  # the failed publish moved nothing
    staged = publish_version(tiny_model_dirs[2], spec.weights_uri, opts, make_current=False)
    assert staged.version == "3" and resolve_version(spec).version == "2"
    assert set_current_version(spec.weights_uri, "1", opts).digest == first.digest  # rollback
    assert resolve_version(spec).version == "1"
    with pytest.raises(WeightsError, match="not published"):
        set_current_version(spec.weights_uri, "9", opts)
    unversioned = ModelSpec(id="plain", weights_uri="s3://b/m")
    assert resolve_version(unversioned) is unversioned


async def test_the_node_cache_keeps_one_copy_per_version(
    s3_server: Any, model_bucket: str, tiny_model_dirs: list[Path], cache_root: str
) -> None:
    spec = _versioned(s3_server, model_bucket)
    opts = s3_server.storage_options
    publish_version(tiny_model_dirs[0], spec.weights_uri, opts)
    publish_version(tiny_model_dirs[1], spec.weights_uri, opts)
    cache = ModelCache(CacheConfig(root=cache_root, budget_bytes=1 << 30))
    one = await cache.ensure(resolve_version(spec.model_copy(update={"version": "1"})))
    two = await cache.ensure(resolve_version(spec))
    again = await cache.ensure(resolve_version(spec))
    assert one.path != two.path == again.path
    assert (Path(one.path) / "model.safetensors").read_bytes() == (
        tiny_model_dirs[0] / "model.safetensors"
    ).read_bytes()
    assert (Path(two.path) / "model.safetensors").read_bytes() == (
        tiny_model_dirs[1] / "model.safetensors"
    ).read_bytes()
    stats = cache.stats()
    assert stats.fetches == 2 and stats.hits["disk"] == 1


class _Unloads:
    """The replica side of `LoadedModel`: records which loaded models were unloaded."""

    def __init__(self) -> None:
        self.unloaded: list[str | None] = []

    def _finish_unload(self, loaded: LoadedModel) -> None:
        self.unloaded.append(loaded.spec.version)


def _loaded(owner: _Unloads, version: str) -> LoadedModel:
    spec = ModelSpec(id="m", weights_uri=f"s3://b/m/versions/{version}", version=version)
    return LoadedModel(spec, engine=None, owner=owner)  # type: ignore[arg-type]


def test_a_superseded_version_drains_before_it_unloads() -> None:
    owner = _Unloads()
    v1, v2 = _loaded(owner, "1"), _loaded(owner, "2")
    assert v1.acquire()  # a request in flight on version 1
    assert v1.supersede(v2)
    assert v1.newest() is v2 and not v1.acquire()  # new requests go to version 2
    assert owner.unloaded == []  # version 1 still answers the request in flight
    v1.release()
    assert owner.unloaded == ["1"]
    v3 = _loaded(owner, "3")
    assert v2.acquire() and v2.supersede(v3)
    v1.close()  # Serve evicts the chain it holds: every version goes, each once
    assert owner.unloaded == ["1", "3"]
    v2.release()
    v1.close()
    assert owner.unloaded == ["1", "3", "2"]
    assert not v3.supersede(_loaded(owner, "4"))  # being evicted: no successor attached


@pytest.fixture(scope="module")
def versioned_app(
    ray_local: None,
    shared_serve: None,
    s3_server: Any,
    model_bucket: str,
    tiny_model_dirs: list[Path],
    tmp_path_factory,
) -> Iterator[tuple[Served, ModelSpec]]:
    """One replica serving a versioned tiny model (version 1 published) that polls every 0.2 s."""
    from serving.app import ServingConfig

    use_local_ray()
    spec = _versioned(s3_server, model_bucket, version_poll_seconds=0.2)
    publish_version(tiny_model_dirs[0], spec.weights_uri, s3_server.storage_options)
    key = f"sk-test-{uuid.uuid4().hex}"
    config = ServingConfig(
        app_name=f"versions-test-{uuid.uuid4().hex[:6]}",
        max_models_per_replica=1,
        replica_cpus=0.5,
        ingress_cpus=0.1,
        api_key=key,
        cache=CacheConfig(
            root=str(tmp_path_factory.mktemp("node-cache")),
            namespace=f"versions-test-{uuid.uuid4().hex[:8]}",
        ),
    )
    with serving_app([spec], config) as app:
        yield app, spec


def test_requests_during_a_version_update_are_all_answered_by_one_version_or_the_other(
    versioned_app: tuple[Served, ModelSpec], s3_server: Any, tiny_model_dirs: list[Path]
) -> None:
    served, spec = versioned_app
    client = openai.OpenAI(base_url=served.url, api_key=served.api_key, max_retries=0, timeout=60)
    answers: list[tuple[float, float, str | None]] = []  # (sent, answered, version)
    errors: list[BaseException] = []
    stop = threading.Event()

    def ask(prompt: str) -> None:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                if len(answers) % 2:
                    out: Any = client.completions.create(
                        model=spec.id, prompt=prompt, max_tokens=24, temperature=0
                    )
                else:
                    out = client.chat.completions.create(
                        model=spec.id,
                        messages=[{"role": "user", "content": prompt}],
                        max_tokens=24,
                        temperature=0,
                    )
            except Exception as error:  # noqa: BLE001 - every failure is the test's finding
                errors.append(error)
                return
            answers.append((sent, time.monotonic(), out.system_fingerprint))

    def wait_for(predicate: Any, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert not errors, errors
            assert time.monotonic() < deadline, (
                f"waiting for {what}: {Counter(a[2] for a in answers)}"
            )
            time.sleep(0.05)

    prompts = ["The agent asked the model", "Ray schedules tasks", "Proteins fold into"]
    workers = [threading.Thread(target=ask, args=(p,)) for p in prompts]
    for worker in workers:
        worker.start()
    try:
        wait_for(lambda: len(answers) >= 6, "answers from version 1")
        published = publish_version(tiny_model_dirs[1], spec.weights_uri, s3_server.storage_options)
        wait_for(lambda: sum(a[2] == published.version for a in answers) >= 6, "version 2")
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=60)
    assert not errors, errors
    by_version = Counter(version for _, _, version in answers)
    assert set(by_version) == {"1", "2"} and by_version["1"] >= 6, by_version
    first_v2 = min(answered for _, answered, version in answers if version == "2")
    late = [version for sent, _, version in answers if sent > first_v2]
    assert late and set(late) == {"2"}  # once version 2 answered, no new request went back to 1
    stats = served.replica_stats()
    assert [(e.model_id, e.version) for e in stats.loads] == [("tiny-v", "1"), ("tiny-v", "2")]
    assert stats.versions == {"tiny-v": "2"} and stats.resident == ["tiny-v"]
    assert stats.unloads == ["tiny-v"]  # version 1, once drained
    assert stats.failures == 0
    deadline = time.monotonic() + 10  # unload reports are fire-and-forget
    while served.cache_stats().engines != {"tiny-v": 1}:
        assert time.monotonic() < deadline, served.cache_stats().engines
        time.sleep(0.1)
