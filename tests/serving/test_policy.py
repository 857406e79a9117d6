"""The Ray-free serving policy: demand, tier-aware routing, replica management, replica count."""

from __future__ import annotations

import pytest

from serving.policy import (
    ClusterView,
    DemandTracker,
    ModelDemand,
    ModelTargets,
    ReplicaManager,
    ReplicaView,
    Router,
    Tier,
    desired_replicas,
    evictable,
)


def _demand(
    model_id: str, rate: float = 0.0, in_flight: int = 0, latency: float = 1.0
) -> ModelDemand:
    active = rate > 0 or in_flight > 0
    return ModelDemand(
        model_id=model_id,
        rate=rate,
        in_flight=in_flight,
        latency_s=latency,
        last_request_s=0.0 if active else None,
        active=active,
    )


def _replica(name: str, node: str = "n1", capacity: float = 2, **kwargs: object) -> ReplicaView:
    return ReplicaView(replica_id=name, node_id=node, capacity=capacity, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------ demand
def test_demand_rate_counts_only_the_window_and_in_flight_keeps_a_model_active() -> None:
    tracker = DemandTracker(window_s=10)
    for t in range(5):
        tracker.arrived("a", float(t))
    assert tracker.demand("a", 5.0).rate == pytest.approx(0.5)
    for _ in range(5):
        tracker.finished("a", 2.0)
    assert tracker.demand("a", 5.0).latency_s == pytest.approx(2.0)
    assert tracker.demand("a", 20.0).rate == 0 and not tracker.demand("a", 20.0).active
    tracker.arrived("a", 21.0)
    assert tracker.demand("a", 40.0).active  # still in flight, outside the window
    assert not tracker.demand("never", 40.0).active


def test_demand_memory_is_bounded_under_a_burst() -> None:
    tracker = DemandTracker(window_s=60, max_arrivals=100)
    for i in range(10_000):
        tracker.arrived("a", i * 0.001)
    demand = tracker.demand("a", 10.0)
    assert demand.rate == pytest.approx(100 / (10.0 - 9.9), rel=0.02)
    assert demand.in_flight == 10_000


def test_demand_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="window_s"):
        DemandTracker(window_s=0)
    with pytest.raises(ValueError, match="latency_weight"):
        DemandTracker(latency_weight=0)


# ------------------------------------------------------------------ routing
def test_routing_prefers_resident_then_loading_then_parked_then_disk_then_remote() -> None:
    router = Router()
    targets = {"m": ModelTargets(model_id="m")}
    order = []
    replicas = {
        Tier.RESIDENT: _replica("resident", resident={"m": 1}),
        Tier.LOADING: _replica("loading", loading={"m": 1}),
        Tier.PARKED: _replica("parked", parked={"m"}),
        Tier.DISK: _replica("disk", node="has-disk"),
        Tier.REMOTE: _replica("remote", node="bare"),
    }
    for tier in Tier:
        cluster = ClusterView(
            replicas=[r for t, r in replicas.items() if t >= tier], disk={"has-disk": {"m"}}
        )
        route = router.route("m", cluster, {}, targets)
        assert route is not None
        order.append((route.tier, route.replica_id))
    assert order == [(t, t.label) for t in Tier]


def test_routing_ties_are_broken_by_queue_length() -> None:
    cluster = ClusterView(
        replicas=[
            _replica("busy", resident={"m": 1}, queue=5, model_queue={"m": 5}),
            _replica("idle", resident={"m": 1}, queue=1, model_queue={"m": 1}),
            _replica("parked-busy", parked={"x"}, queue=9),
            _replica("parked-idle", parked={"x"}, queue=0),
        ]
    )
    assert Router().route("m", cluster, {}, {}).replica_id == "idle"  # type: ignore[union-attr]
    assert Router().route("x", cluster, {}, {}).replica_id == "parked-idle"  # type: ignore[union-attr]


def test_a_saturated_model_spills_to_a_new_copy_on_the_best_tier() -> None:
    targets = {"hot": ModelTargets(model_id="hot", concurrency=2)}
    cluster = ClusterView(
        replicas=[
            _replica("a", resident={"hot": 1}, queue=4, model_queue={"hot": 4}),
            _replica("b", node="n2"),
            _replica("c", parked={"hot"}),
        ]
    )
    route = Router(spill_factor=2).route("hot", cluster, {}, targets)
    assert route is not None and (route.replica_id, route.tier) == ("c", Tier.PARKED)
    cluster.replicas[2].parked.clear()  # a load from disk or storage: the queue is faster
    route = Router(spill_factor=2).route("hot", cluster, {}, targets)
    assert route is not None and (route.replica_id, route.tier) == ("a", Tier.RESIDENT)
    cluster.replicas[2].parked.add("hot")
    capped = {"hot": ModelTargets(model_id="hot", concurrency=2, max_replicas=1)}
    route = Router(spill_factor=2).route("hot", cluster, {}, capped)
    assert route is not None and (route.replica_id, route.tier) == ("a", Tier.RESIDENT)


def test_routing_evicts_idle_models_never_the_last_copy_of_an_active_one() -> None:
    cluster = ClusterView(
        replicas=[
            _replica("a", capacity=2, resident={"busy": 1, "idle": 1}),
            _replica("b", capacity=1, resident={"only": 1}),
        ]
    )
    demand = {"busy": _demand("busy", rate=1), "only": _demand("only", rate=0.1)}
    route = Router().route("new", cluster, demand, {})
    assert route is not None and route.replica_id == "a" and route.evict == ["idle"]
    cluster.replicas[0].resident = {"busy": 1, "busy2": 1}
    demand["busy2"] = _demand("busy2", rate=0.5)
    assert Router().route("new", cluster, demand, {}) is None  # everyone's last copy: wait


def test_a_model_with_requests_on_a_replica_is_not_evicted_there() -> None:
    replica = _replica("a", resident={"m": 1}, model_queue={"m": 1})
    other = _replica("b", resident={"m": 1})
    cluster = ClusterView(replicas=[replica, other])
    assert not evictable("m", replica, cluster, {}, {})
    assert evictable("m", other, cluster, {}, {})
    pinned = {"m": ModelTargets(model_id="m", min_replicas=2)}
    assert not evictable("m", other, cluster, {}, pinned)


def test_a_model_bigger_than_every_replica_has_no_route() -> None:
    cluster = ClusterView(replicas=[_replica("a", capacity=10)])
    assert (
        Router().route("big", cluster, {}, {"big": ModelTargets(model_id="big", size=11)}) is None
    )


# ------------------------------------------------------------------ replica management
def _cluster(n: int, capacity: float = 2) -> ClusterView:
    return ClusterView(replicas=[_replica(f"r{i}", capacity=capacity) for i in range(n)])


def test_a_hot_model_gets_more_copies_one_per_tick_and_back() -> None:
    manager = ReplicaManager(utilisation=0.5, cooldown_ticks=3)
    targets = {"hot": ModelTargets(model_id="hot", concurrency=4)}
    cluster = _cluster(4)
    cluster.replicas[0].resident = {"hot": 1}
    burst = {"hot": _demand("hot", rate=10, latency=1.0)}  # 10 busy / (4 * 0.5) = 5 -> 4 replicas
    copies = []
    for _ in range(4):
        plan = manager.plan(cluster, burst, targets)
        for load in plan.loads:
            replica = cluster.replica(load.replica_id)
            replica.resident[load.model_id] = replica.loading.pop(load.model_id)
        copies.append(len(cluster.copies("hot")))
    assert copies == [2, 3, 4, 4]
    calm = {"hot": _demand("hot", rate=0.5, latency=1.0)}
    assert manager.plan(cluster, calm, targets).empty()  # cooling down: it just grew
    for _ in range(5):
        manager.plan(cluster, calm, targets)
    assert len(cluster.copies("hot")) == 1  # consolidated, never below one while active


def test_scale_down_has_hysteresis() -> None:
    manager = ReplicaManager(utilisation=0.5, cooldown_ticks=0)
    targets = {"m": ModelTargets(model_id="m", concurrency=4)}
    cluster = _cluster(2)
    cluster.replicas[0].resident = {"m": 1}
    cluster.replicas[1].resident = {"m": 1}
    # 3 busy: wants 2 copies at 50 % utilisation, would need 3 at 25 %: keeps both
    plan = manager.plan(cluster, {"m": _demand("m", rate=3)}, targets)
    assert plan.empty()
    plan = manager.plan(cluster, {"m": _demand("m", rate=1)}, targets)
    assert [e.model_id for e in plan.evictions] == ["m"]


def test_an_idle_model_is_consolidated_to_one_copy_and_min_replicas_are_kept() -> None:
    manager = ReplicaManager(cooldown_ticks=0)
    targets = {
        "idle": ModelTargets(model_id="idle"),
        "pinned": ModelTargets(model_id="pinned", min_replicas=2),
    }
    cluster = _cluster(3)
    for replica in cluster.replicas:
        replica.resident = {"idle": 1}
    for _ in range(3):
        plan = manager.plan(cluster, {}, targets)
        for load in plan.loads:
            replica = cluster.replica(load.replica_id)
            replica.resident[load.model_id] = replica.loading.pop(load.model_id)
    assert len(cluster.copies("idle")) == 1
    assert len(cluster.copies("pinned")) == 2


def test_latency_over_target_adds_a_copy_and_max_replicas_caps_it() -> None:
    manager = ReplicaManager()
    cluster = _cluster(4)
    cluster.replicas[0].resident = {"m": 1}
    slow = {"m": _demand("m", rate=0.1, in_flight=3, latency=9.0)}
    targets = {"m": ModelTargets(model_id="m", latency_target_s=2.0, concurrency=100)}
    assert len(manager.plan(cluster, slow, targets).loads) == 1
    cluster = _cluster(4)
    cluster.replicas[0].resident = {"m": 1}
    capped = {"m": targets["m"].model_copy(update={"max_replicas": 1})}
    assert manager.plan(cluster, slow, capped).empty()


def test_a_scale_up_never_evicts_the_last_copy_of_an_active_model() -> None:
    manager = ReplicaManager(utilisation=0.5)
    cluster = ClusterView(
        replicas=[
            _replica("a", capacity=1, resident={"hot": 1}),
            _replica("b", capacity=1, resident={"warm": 1}),
        ]
    )
    demand = {"hot": _demand("hot", rate=50), "warm": _demand("warm", rate=0.01)}
    plan = manager.plan(cluster, demand, {})
    assert plan.empty()
    assert cluster.copies("warm")[0].replica_id == "b"


# ------------------------------------------------------------------ replica count
def test_the_replica_count_follows_total_load_and_room_within_bounds() -> None:
    targets = {f"m{i}": ModelTargets(model_id=f"m{i}") for i in range(6)}
    quiet = {"m0": _demand("m0", rate=0.1)}
    assert desired_replicas(quiet, targets, capacity=2, concurrency=8, bounds=(1, 10)) == 1
    busy = {f"m{i}": _demand(f"m{i}", rate=5) for i in range(6)}  # 30 busy, 6 models
    assert desired_replicas(busy, targets, capacity=2, concurrency=8, bounds=(1, 10)) == 6
    assert desired_replicas(busy, targets, capacity=2, concurrency=8, bounds=(1, 4)) == 4
    spread = {f"m{i}": _demand(f"m{i}", rate=0.01) for i in range(6)}  # little load, 6 models
    assert desired_replicas(spread, targets, capacity=2, concurrency=8, bounds=(1, 10)) == 3
    with pytest.raises(ValueError, match="bounds"):
        desired_replicas(busy, targets, capacity=2, concurrency=8, bounds=(0, 4))


def test_a_model_no_replica_can_take_gets_room_by_moving_the_blockers() -> None:
    manager = ReplicaManager(cooldown_ticks=0)
    sizes = {"big": 3, "a": 1, "b": 2, "c": 2, "d": 2}
    targets = {m: ModelTargets(model_id=m, size=size) for m, size in sizes.items()}
    cluster = ClusterView(
        replicas=[
            _replica("r0", capacity=4, resident={"a": 1, "b": 2}),
            _replica("r1", capacity=4, resident={"c": 2}),
            _replica("r2", capacity=4, resident={"d": 2}),
        ]
    )
    demand = {m: _demand(m, rate=1) for m in sizes}  # every copy is a last copy with traffic
    plan = manager.plan(cluster, demand, targets)
    assert [(r.model_id, r.replica_id) for r in plan.loads] == [("c", "r2")]  # least to move
    cluster.replica("r2").resident["c"] = cluster.replica("r2").loading.pop("c")
    plan = manager.plan(cluster, demand, targets)
    assert [(r.model_id, r.replica_id, r.evict) for r in plan.loads] == [("big", "r1", ["c"])]


def test_a_request_that_waited_past_patience_evicts_the_least_recently_used_model() -> None:
    cluster = ClusterView(
        replicas=[
            _replica("a", capacity=1, resident={"old": 1}, last_used={"old": 1.0}),
            _replica("b", capacity=1, resident={"new": 1}, last_used={"new": 5.0}),
        ]
    )
    demand = {"old": _demand("old", rate=0.1), "new": _demand("new", rate=0.1)}
    router = Router(patience_s=2.0)
    assert router.route("x", cluster, demand, {}, waited_s=1.0) is None  # both are last copies
    route = router.route("x", cluster, demand, {}, waited_s=2.0)
    assert route is not None and (route.replica_id, route.evict) == ("a", ["old"])
    cluster.replicas[0].model_queue["old"] = 1  # a model with a request there is never evicted
    route = router.route("x", cluster, demand, {}, waited_s=2.0)
    assert route is not None and route.evict == ["new"]
