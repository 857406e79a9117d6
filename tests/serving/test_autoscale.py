"""The replica count follows the load (``routing="policy"``, ``max_replicas``) on a simulated
cluster with tiny CPU models: a burst adds a replica, placed by ``placement`` on another node,
which takes a copy of the busy model; once the burst is over it is drained and removed while the
model still has traffic. No request fails on the way up or down."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from placement.client import PlacementClient
from serving.app import ServingConfig
from serving.cache import CacheConfig
from serving.placer import ReplicaPlacement
from serving.replica_pool import extra_replica_apps, extra_slot_name
from serving.spec import ModelSpec
from tests.harness import serving_app

pytestmark = pytest.mark.slow


def _complete(url: str, model: str, tokens: int) -> None:
    body = json.dumps({"model": model, "prompt": "hello there", "max_tokens": tokens}).encode()
    request = urllib.request.Request(
        url + "/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        assert json.loads(response.read())["choices"]


class Load:
    """Client threads sending requests of one model until stopped; failures are kept."""

    def __init__(self, url: str, model: str, clients: int, pause_s: float, tokens: int) -> None:
        self.stop = threading.Event()
        self.failures: list[BaseException] = []
        self.sent = 0

        def client() -> None:
            while not self.stop.is_set():
                try:
                    _complete(url, model, tokens)
                    self.sent += 1
                except BaseException as exc:  # noqa: BLE001 - asserted by the test
                    self.failures.append(exc)
                    return
                time.sleep(pause_s)

        self.threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def end(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


def _wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return found


@pytest.fixture(scope="module")
def app(
    sim_cluster, shared_serve, s3_specs, tmp_path_factory
) -> Iterator[tuple[str, ServingConfig, ModelSpec]]:
    ns = f"autoscale-{uuid.uuid4().hex[:6]}"
    client = PlacementClient(ns, poll_s=0.3)
    suffix = uuid.uuid4().hex[:6]
    spec = s3_specs[0].model_copy(update={"id": f"{s3_specs[0].id}-{suffix}"})
    config = ServingConfig(
        app_name=f"autoscale-{suffix}",
        route_prefix=f"/{suffix}",
        routing="policy",
        replicas=1,
        max_replicas=2,
        max_models_per_replica=1,
        copy_concurrency=2,
        demand_window_s=2.0,
        policy_tick_s=0.3,
        replica_cpus=0.5,
        ingress_cpus=0.0,
        placement=ReplicaPlacement(namespace=ns, timeout_s=60, spread_wait_s=2),
        cache=CacheConfig(
            root=str(tmp_path_factory.mktemp("autoscale-cache")),
            namespace=f"autoscale-cache-{suffix}",
            placement_namespace=ns,
        ),
    )
    with serving_app([spec], config, proxy_location="HeadOnly") as served:
        yield served.url, config, spec
    assert not extra_replica_apps(config.app_name)  # stop_models removed the added replicas
    client.shutdown()


def test_a_burst_adds_a_placed_replica_and_it_is_drained_after_without_a_failed_request(
    app: tuple[str, ServingConfig, ModelSpec],
) -> None:
    from ray import serve

    url, config, spec = app
    placement = PlacementClient.attach(config.placement.namespace)  # type: ignore[union-attr]
    assert placement is not None
    assert not extra_replica_apps(config.app_name)
    base = serve.get_deployment_handle("ModelServer-0", app_name=config.app_name)
    base_node = base.state.remote().result(timeout_s=60).node_id

    burst = Load(url, spec.id, clients=4, pause_s=0.0, tokens=16)
    try:
        (index,) = _wait_for(lambda: extra_replica_apps(config.app_name), "a replica added")
        added = serve.get_deployment_handle(
            "ModelServer", app_name=f"{config.app_name}--replica-{index}"
        )
        state = _wait_for(
            lambda: (s := added.state.remote().result(timeout_s=60)).served_by_tier and s,
            "the added replica serving the busy model",
        )
        slot = placement.explain_sync(extra_slot_name(config.app_name, index))
        assert (
            slot is not None and slot.node_id == state.node_id != base_node
        )  # spread by placement
        assert spec.id in state.resident
    finally:
        burst.end()
    assert not burst.failures, burst.failures

    trickle = Load(url, spec.id, clients=1, pause_s=0.3, tokens=2)  # the model keeps traffic
    try:
        _wait_for(lambda: not extra_replica_apps(config.app_name), "the added replica removed")
        sent = trickle.sent
        _wait_for(lambda: trickle.sent > sent + 2, "requests served after the removal")
    finally:
        trickle.end()
    assert not trickle.failures, trickle.failures
    assert spec.id in base.state.remote().result(timeout_s=60).resident  # the last copy stayed
    assert placement.explain_sync(extra_slot_name(config.app_name, index)) is None  # released
