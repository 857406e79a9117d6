"""Model replicas placed by ``placement`` on a simulated 4-node cluster (real Serve, real S3).

One app (`placed`) is followed through its life by the tests in the order they are written: placed
where its weights are, re-placed when that node is lost, redeployed by a restarted controller's adopted
launcher, and finally deleted behind the placer's back. (An app each cost ~7 s to deploy and ~3 s to
delete.) Run alone, a test gets the app deployed for it.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import ray

from placement.client import PlacementClient
from serving.app import ServingConfig, serve_models, stop_models
from serving.cache import CacheConfig, kill_node_caches, node_cache
from serving.placer import ReplicaPlacement, placer_name, slot_name
from serving.spec import ModelSpec
from tests.harness import serve_port

pytestmark = pytest.mark.slow


def _complete(url: str, model: str, api_key: str | None = None) -> dict[str, Any]:
    body = json.dumps({"model": model, "prompt": "hello", "max_tokens": 3}).encode()
    headers = {"Content-Type": "application/json"}
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url + "/completions", data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def _replica_stats(app_name: str) -> Any:
    from ray import serve

    handle = serve.get_deployment_handle("ModelServer", app_name=app_name)
    return handle.stats.remote().result(timeout_s=60)


@pytest.fixture(scope="module")
def namespace(sim_cluster, shared_serve) -> Iterator[str]:
    """A placement namespace with its controller, shut down at the end. The apps deploy on the Serve
    instance the serving modules on the simulated cluster share (`serve_port`)."""
    ns = f"serving-placer-{uuid.uuid4().hex[:6]}"
    client = PlacementClient(ns, poll_s=0.3)
    yield ns
    client.shutdown()


def _config(ns: str, tmp_path, **overrides: Any) -> ServingConfig:
    cache = CacheConfig(
        root=str(tmp_path / "cache"),
        namespace=f"placer-cache-{uuid.uuid4().hex[:6]}",
        placement_namespace=ns,
    )
    return ServingConfig(
        app_name=f"placed-{uuid.uuid4().hex[:6]}",
        route_prefix=f"/{uuid.uuid4().hex[:6]}",
        replica_cpus=0.5,
        # Zero: Serve places the ingress where it likes, and with tiny test models (400 KB) the
        # load term of the policy would outweigh the bytes a node holds.
        ingress_cpus=0.0,
        placement=ReplicaPlacement(namespace=ns, timeout_s=60),
        cache=cache,
        **overrides,
    )


def _fresh(specs: list[ModelSpec]) -> list[ModelSpec]:
    """The specs under ids of their own (placement's inventory is shared by the module's tests)."""
    suffix = uuid.uuid4().hex[:6]
    return [spec.model_copy(update={"id": f"{spec.id}-{suffix}"}) for spec in specs]


def _warm(config: ServingConfig, node_id: str, specs: list[ModelSpec]) -> None:
    cache = node_cache(config.cache, node_id)
    for spec in specs:
        ray.get(cache.ensure.remote(spec, False), timeout=120)


@dataclass
class Placed:
    """The module's app: its URL, config, models and the node its weights were put on."""

    url: str
    config: ServingConfig
    specs: list[ModelSpec]
    doomed: str  # the node added for it, holding both models' weights (lost in a test)


@pytest.fixture(scope="module")
def placed(sim_cluster, namespace, s3_specs, tmp_path_factory) -> Iterator[Placed]:
    """One replica of two models, with an API key; both models' weights warm on a node added for it
    (``doomed-serve``), the first model's on cpu-a too (the next best)."""
    specs = _fresh(s3_specs[:2])
    doomed = sim_cluster.add("doomed-serve", num_cpus=2)
    api_key = f"sk-placed-{uuid.uuid4().hex}"
    config = _config(namespace, tmp_path_factory.mktemp("placed"), replicas=1, api_key=api_key)
    _warm(config, doomed, specs)
    _warm(config, sim_cluster.nodes["cpu-a"], specs[:1])
    url = serve_models(specs, config, port=serve_port(), proxy_location="HeadOnly")
    yield Placed(url, config, specs, doomed)
    stop_models(config)  # also after the last test deleted it: stop_models is idempotent
    kill_node_caches(config.cache)


def test_replicas_go_where_the_weights_are_and_gpu_replicas_to_gpu_nodes(
    sim_cluster, namespace, placed: Placed, tmp_path
) -> None:
    client = PlacementClient(namespace)
    decision = client.explain_sync(slot_name(placed.config.app_name, 0))
    assert decision is not None and decision.node_id == placed.doomed, decision
    assert decision.placement_group_id is None
    assert "bytes" in decision.explain() and decision.candidates[0].local_bytes > 0
    answer = _complete(placed.url, placed.specs[0].id, placed.config.api_key)
    assert answer["choices"][0]["text"] is not None
    stats = _replica_stats(placed.config.app_name)
    assert stats.node_id == placed.doomed
    assert [e.tier for e in stats.loads] == ["disk"]  # the warm copy, not object storage

    # A GPU replica goes to the GPU node although the weights are on the doomed node.
    specs = placed.specs
    gpu_config = _config(namespace, tmp_path, replicas=1, replica_gpus=1)
    _warm(gpu_config, placed.doomed, specs)
    url = serve_models(specs, gpu_config, port=serve_port(), proxy_location="HeadOnly")
    slot = slot_name(gpu_config.app_name, 0)
    try:
        decision = client.explain_sync(slot)
        assert decision is not None and decision.node_id == sim_cluster.nodes["gpu"]
        assert _complete(url, specs[1].id)["object"] == "text_completion"
        assert _replica_stats(gpu_config.app_name).node_id == sim_cluster.nodes["gpu"]
    finally:
        stop_models(gpu_config)
        kill_node_caches(gpu_config.cache)
    assert client.explain_sync(slot) is None  # slot released


def test_replica_of_a_lost_node_is_replaced_where_the_weights_are(
    sim_cluster, namespace, placed: Placed
) -> None:
    url, config, specs, doomed = placed.url, placed.config, placed.specs, placed.doomed
    key = config.api_key
    a = sim_cluster.nodes["cpu-a"]
    client = PlacementClient(namespace)
    name = slot_name(config.app_name, 0)
    first = client.explain_sync(name)
    assert first is not None and first.node_id == doomed
    assert _complete(url, specs[0].id, key)["choices"]
    assert _replica_stats(config.app_name).node_id == doomed
    # The placer restarts (say its worker crashed) and forgets everything it held in memory:
    # the launchers carry what it needs to redeploy.
    placer = ray.get_actor(placer_name(config.app_name), namespace=namespace)
    ray.kill(placer, no_restart=False)
    deadline = time.monotonic() + 60
    while ray.get(placer.status.remote(), timeout=60)["nodes"]:  # the old one may answer first
        assert time.monotonic() < deadline, "the placer did not restart"
        time.sleep(0.2)

    sim_cluster.kill("doomed-serve")
    deadline = time.monotonic() + 90
    while True:
        now = client.explain_sync(name)
        if now is not None and now.generation == 2:
            break
        assert time.monotonic() < deadline, (now, client.failures_sync())
        time.sleep(0.3)
    assert now.node_id == a and now.cause == f"node {doomed} lost"
    while True:  # the placer redeploys; then requests are answered on cpu-a again
        try:
            answer = _complete(url, specs[0].id, key)
            stats = _replica_stats(config.app_name)
            if stats.node_id == a:
                break
        except Exception as exc:  # noqa: BLE001 - the rollover is still going on
            print("waiting for the redeployed replica:", repr(exc)[:200])
        assert time.monotonic() < deadline + 60, ray.get(placer.status.remote())
        time.sleep(0.5)
    assert answer["choices"]
    while (status := ray.get(placer.status.remote()))["redeploying"]:
        time.sleep(0.2)  # serve.run returns once the whole app is running
    assert status["redeploys"] == 1 and status["last_error"] is None
    assert status["nodes"] == [a] and status["generations"] == [2]
    assert [e.tier for e in stats.loads] == ["disk"]  # cpu-a's warm copy


def test_a_replica_no_node_can_hold_fails_fast_and_deploys_nothing(
    sim_cluster, namespace, s3_specs, tmp_path
) -> None:
    from ray import serve

    from placement import InfeasibleDemandError

    config = _config(namespace, tmp_path, replicas=1, replica_gpus=2)  # no node has 2 GPUs
    start = time.monotonic()
    with pytest.raises(InfeasibleDemandError, match="GPU") as raised:
        serve_models(_fresh(s3_specs[:1]), config, port=serve_port(), proxy_location="HeadOnly")
    assert type(raised.value) is InfeasibleDemandError  # the placement error itself, unwrapped
    assert time.monotonic() - start < 30
    assert PlacementClient(namespace).explain_sync(slot_name(config.app_name, 0)) is None
    assert config.app_name not in serve.status().applications
    stop_models(config)  # idempotent on an app that never ran


def test_the_journal_holds_no_api_key_or_s3_secret_and_an_adopted_slot_still_redeploys(
    namespace, placed: Placed
) -> None:
    """The placement journal (in the GCS) keeps the slot's launcher sealed: no API key, no S3
    secret; a restarted controller's adopted launcher fetches them from the namespace's secrets
    holder and redeploys the app, which still checks the API key."""
    import asyncio

    from ray.experimental import internal_kv

    from placement.client import CONTROLLER_NAME
    from placement.journal import KV_NAMESPACE, Journal

    url, config, specs = placed.url, placed.config, placed.specs
    api_key = str(config.api_key)
    s3_secret = str(specs[0].storage_options["secret"])
    client = PlacementClient(namespace)
    name = slot_name(config.app_name, 0)
    entries = 0
    for key in internal_kv._internal_kv_list("", namespace=KV_NAMESPACE):
        value = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE) or b""
        for secret in (api_key, s3_secret):
            assert secret.encode() not in key + value, f"{secret!r} in journal entry {key!r}"
        entries += key.endswith(f".d.{name}".encode())
    assert entries == 1

    controller = client.actor
    old_pid = ray.get(controller.info.remote())["pid"]
    ray.kill(controller, no_restart=False)
    deadline = time.monotonic() + 60
    while True:
        try:
            info = ray.get(controller.info.remote(), timeout=5)
            if info["pid"] != old_pid:
                break
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass
        assert time.monotonic() < deadline, "the controller did not come back"
        time.sleep(0.2)
    assert info["restored"] >= 1
    # The placer restarts too and forgets the app: only the adopted launcher knows it.
    placer = ray.get_actor(placer_name(config.app_name), namespace=namespace)
    ray.kill(placer, no_restart=False)
    while ray.get(placer.status.remote(), timeout=60)["nodes"]:
        assert time.monotonic() < deadline + 60, "the placer did not restart"
        time.sleep(0.2)

    # What a re-placement does: the adopted launcher is called with a newer decision.
    (entry,) = [
        e for e in Journal(f"{namespace}/{CONTROLLER_NAME}").load()[0] if e.demand.name == name
    ]
    decision = client.explain_sync(name)
    assert decision is not None
    newer = decision.model_copy(update={"generation": decision.generation + 1})
    asyncio.run(entry.launcher(newer))
    deadline = time.monotonic() + 120
    while (status := ray.get(placer.status.remote()))["redeploys"] < 1 or status["redeploying"]:
        assert time.monotonic() < deadline and status["last_error"] is None, status
        time.sleep(0.3)
    assert status["last_error"] is None

    answer = _complete(url, specs[0].id, api_key)
    assert answer["choices"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        _complete(url, specs[0].id)  # no key
    assert refused.value.code == 401


def test_an_app_deleted_behind_the_placers_back_is_not_resurrected(
    namespace, placed: Placed
) -> None:
    """Runs last: it deletes the module's app."""
    from ray import serve

    config = placed.config
    client = PlacementClient(namespace)
    name = slot_name(config.app_name, 0)
    decision = client.explain_sync(name)
    assert decision is not None
    placer = ray.get_actor(placer_name(config.app_name), namespace=namespace)
    redeploys = ray.get(placer.status.remote())["redeploys"]  # by the tests before
    serve.delete(config.app_name)  # not stop_models: the slot stays booked for now
    # What the controller's launcher does after a node loss: a newer decision for the slot.
    newer = decision.model_copy(update={"generation": decision.generation + 1})
    ray.get(placer.relocate.remote(newer))
    deadline = time.monotonic() + 30
    while client.explain_sync(name) is not None:
        assert time.monotonic() < deadline, ray.get(placer.status.remote())
        time.sleep(0.2)
    assert config.app_name not in serve.status().applications
    assert ray.get(placer.status.remote())["redeploys"] == redeploys
