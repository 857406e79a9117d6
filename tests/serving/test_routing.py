"""Policy routing on the real Serve app: two replicas on a simulated cluster, tiny CPU models.

One app for the module (``routing="policy"``, one model per replica, a 3 s demand window): a
burst spreads a model to the second replica and back, the last copy of a model with traffic is
never evicted, and a model comes back from its node's disk rather than from object storage.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from placement.client import PlacementClient
from serving.app import ServingConfig
from serving.cache import CacheConfig
from serving.placer import ReplicaPlacement
from serving.spec import ModelSpec
from tests.harness import serving_app

pytestmark = pytest.mark.slow

WINDOW_S = 3.0


def _complete(url: str, model: str, tokens: int = 3) -> dict[str, Any]:
    body = json.dumps({"model": model, "prompt": "hello there", "max_tokens": tokens}).encode()
    req = urllib.request.Request(
        url + "/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


class App:
    """The deployed app: its URL, config and the replicas' handles."""

    def __init__(self, url: str, config: ServingConfig, specs: list[ModelSpec]) -> None:
        from ray import serve

        self.url, self.config, self.specs = url, config, specs
        self.replicas = [
            serve.get_deployment_handle(f"ModelServer-{i}", app_name=config.app_name)
            for i in range(config.replicas)
        ]

    def states(self) -> list[Any]:
        return [r.state.remote().result(timeout_s=60) for r in self.replicas]

    def stats(self) -> list[Any]:
        return [r.stats.remote().result(timeout_s=60) for r in self.replicas]

    def holders(self, model: str) -> list[int]:
        return [i for i, s in enumerate(self.states()) if model in s.resident]

    def wait_for(self, check: Any, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, self.states()
            time.sleep(0.2)


@pytest.fixture(scope="module")
def app(sim_cluster, shared_serve, s3_specs, tmp_path_factory) -> Iterator[App]:
    ns = f"routing-{uuid.uuid4().hex[:6]}"
    client = PlacementClient(ns, poll_s=0.3)
    suffix = uuid.uuid4().hex[:6]
    specs = [s.model_copy(update={"id": f"{s.id}-{suffix}"}) for s in s3_specs[:3]]
    config = ServingConfig(
        app_name=f"routing-{suffix}",
        route_prefix=f"/{suffix}",
        routing="policy",
        replicas=2,
        max_models_per_replica=1,
        copy_concurrency=2,
        demand_window_s=WINDOW_S,
        policy_tick_s=0.3,
        replica_cpus=0.5,
        ingress_cpus=0.0,
        placement=ReplicaPlacement(namespace=ns, timeout_s=60),
        cache=CacheConfig(
            root=str(tmp_path_factory.mktemp("routing-cache")),
            namespace=f"routing-cache-{suffix}",
            placement_namespace=ns,
        ),
    )
    with serving_app(specs, config, proxy_location="HeadOnly") as served:
        yield App(served.url, config, specs)
    client.shutdown()


def test_a_model_comes_back_from_its_nodes_disk_not_from_object_storage(app: App) -> None:
    model = app.specs[0].id
    assert _complete(app.url, model)["choices"]
    (first,) = app.holders(model)
    other = 1 - first
    assert app.states()[first].node_id != app.states()[other].node_id  # spread on two nodes
    assert _complete(app.url, model)["choices"]  # resident now
    app.replicas[first].evict.remote(model).result(timeout_s=60)
    assert _complete(app.url, model)["choices"]
    stats = app.stats()
    tiers = [e.tier for e in stats[first].loads if e.model_id == model]
    assert tiers == ["object_storage", "disk"], tiers  # back from the node disk ...
    assert not [e for e in stats[other].loads if e.model_id == model]  # ... not remote elsewhere
    served = app.states()[first].served_by_tier
    assert served.get("resident", 0) >= 1 and served.get("object_storage") == 1


def test_a_burst_spreads_a_model_to_the_second_replica_and_back(app: App) -> None:
    model = app.specs[1].id
    time.sleep(WINDOW_S)  # the first test's model has no recent traffic any more
    stop = threading.Event()
    failures: list[BaseException] = []

    def client() -> None:
        while not stop.is_set():
            try:
                _complete(app.url, model, tokens=16)
            except BaseException as exc:  # noqa: BLE001 - reported by the assert below
                failures.append(exc)
                return

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        app.wait_for(lambda: len(app.holders(model)) == 2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not failures, failures
    app.wait_for(lambda: len(app.holders(model)) == 1)  # consolidated once the burst is over


def test_the_last_copy_of_a_model_with_traffic_is_never_evicted(app: App) -> None:
    steady, others = app.specs[2].id, [app.specs[0].id, app.specs[1].id]
    time.sleep(WINDOW_S)
    stop = threading.Event()
    failures: list[BaseException] = []

    def trickle() -> None:
        while not stop.is_set():
            try:
                _complete(app.url, steady)
            except BaseException as exc:  # noqa: BLE001 - reported by the assert below
                failures.append(exc)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        app.wait_for(lambda: len(app.holders(steady)) == 1)
        loads_before = sum(1 for s in app.stats() for e in s.loads if e.model_id == steady)
        for model in others * 2:  # they take turns on the other replica
            assert _complete(app.url, model)["choices"]
            assert app.holders(steady), "the steady model lost its last copy"
    finally:
        stop.set()
        thread.join()
    assert not failures, failures
    loads_after = sum(1 for s in app.stats() for e in s.loads if e.model_id == steady)
    assert loads_after == loads_before  # never evicted, so never loaded again
