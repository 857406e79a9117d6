"""The Ray-free replica count: one replica added per step under load, one drained after a quiet
cooldown, never one that holds the last loaded copy of a model with traffic."""

from __future__ import annotations

import pytest

from serving.policy import ClusterView, ModelDemand, ModelTargets, ReplicaScaler, ReplicaView


def _demand(model_id: str, in_flight: int = 0, rate: float = 0.0) -> ModelDemand:
    active = in_flight > 0 or rate > 0
    return ModelDemand(
        model_id=model_id,
        rate=rate,
        in_flight=in_flight,
        latency_s=1.0,
        last_request_s=0.0 if active else None,
        active=active,
    )


def _trickle(model_id: str) -> ModelDemand:
    """Recent traffic, next to no load."""
    return _demand(model_id, rate=0.1)


def _cluster(*holdings: tuple[str, ...]) -> ClusterView:
    return ClusterView(
        replicas=[
            ReplicaView(replica_id=str(i), node_id=f"n{i}", resident=dict.fromkeys(models, 1.0))
            for i, models in enumerate(holdings)
        ]
    )


TARGETS = {m: ModelTargets(model_id=m, concurrency=2) for m in ("a", "b")}


def _scaler(**kwargs: object) -> ReplicaScaler:
    options: dict[str, object] = {
        "bounds": (1, 3),
        "capacity": 1.0,
        "concurrency": 2.0,
        "cooldown_ticks": 3,
        "fixed": frozenset({"0"}),
    }
    options.update(kwargs)
    return ReplicaScaler(**options)  # type: ignore[arg-type]


def test_load_adds_one_replica_at_a_time_up_to_the_maximum() -> None:
    scaler = _scaler()
    cluster = _cluster(("a",))
    busy = {"a": _demand("a", in_flight=8)}  # wants ceil(8 / 1.4) = 6, at most 3
    first = scaler.step(cluster, busy, TARGETS)
    assert first.add and first.desired == 3
    assert not scaler.step(cluster, busy, TARGETS, adding=1).add  # one at a time
    cluster.replicas.append(ReplicaView(replica_id="1", node_id="n1"))
    assert scaler.step(cluster, busy, TARGETS).add
    cluster.replicas.append(ReplicaView(replica_id="2", node_id="n2"))
    assert not scaler.step(cluster, busy, TARGETS).add  # at the maximum


def test_quiet_load_drains_one_replica_after_the_cooldown_never_a_fixed_one() -> None:
    scaler = _scaler()
    cluster = _cluster(("a",), ("a",), ("a",))
    quiet = {"a": _trickle("a")}
    steps = [scaler.step(cluster, quiet, TARGETS) for _ in range(4)]
    assert [s.drain for s in steps[:3]] == [None, None, None]  # the low load must last
    assert steps[3].drain == "2"  # the newest of the idle ones
    cluster.replicas.pop()
    steps = [scaler.step(cluster, quiet, TARGETS) for _ in range(4)]
    assert steps[3].drain == "1"
    cluster.replicas.pop()
    assert all(scaler.step(cluster, quiet, TARGETS).drain is None for _ in range(6))  # at min


def test_a_load_between_the_two_thresholds_changes_nothing() -> None:
    scaler = _scaler(bounds=(1, 4))
    cluster = _cluster(("a",), ("a",))
    # 2 in flight: 2 replicas at 0.7 x 2, 3 at half of that: keep two, add none
    middle = {"a": _demand("a", in_flight=2)}
    assert all(
        s.drain is None and not s.add
        for s in (scaler.step(cluster, middle, TARGETS) for _ in range(8))
    )


def test_a_burst_restarts_the_cooldown() -> None:
    scaler = _scaler()
    cluster = _cluster(("a",), ("a",))
    quiet, busy = {"a": _trickle("a")}, {"a": _demand("a", in_flight=2)}
    for _ in range(3):
        assert scaler.step(cluster, quiet, TARGETS).drain is None
    assert scaler.step(cluster, busy, TARGETS).drain is None  # between thresholds: streak ends
    assert [scaler.step(cluster, quiet, TARGETS).drain for _ in range(4)] == [None] * 3 + ["1"]


def test_the_last_copy_of_a_model_with_traffic_is_copied_before_its_replica_is_drained() -> None:
    scaler = _scaler(capacity=2.0)
    cluster = _cluster(("a",), ("b",), ())
    cluster.replicas[0].capacity = 2.0
    demand = {"a": _trickle("a")}  # b has no traffic: its replica may go
    steps = [scaler.step(cluster, demand, TARGETS) for _ in range(4)]
    assert steps[3].drain in {"1", "2"}
    cluster = _cluster(("a",), ("b",))
    cluster.replicas[0].capacity = 2.0
    scaler = _scaler(capacity=2.0)
    both = {"a": _trickle("a"), "b": _trickle("b")}
    steps = [scaler.step(cluster, both, TARGETS) for _ in range(4)]
    assert steps[3].drain is None  # replica 1 holds b's only copy
    (copy,) = steps[3].copies
    assert (copy.replica_id, copy.model_id) == ("0", "b")  # b goes where there is room
    cluster.replicas[0].loading["b"] = 1.0
    assert scaler.step(cluster, both, TARGETS).drain is None  # loading is not loaded
    cluster.replicas[0].resident["b"] = cluster.replicas[0].loading.pop("b")
    assert scaler.step(cluster, both, TARGETS).drain == "1"


def test_no_room_for_the_copies_keeps_every_replica() -> None:
    scaler = _scaler(capacity=2.0, cooldown_ticks=0)
    cluster = _cluster(("a",), ("b",))  # each replica full (room 1)
    both = {"a": _trickle("a"), "b": _trickle("b")}
    step = scaler.step(cluster, both, TARGETS)
    assert step.drain is None and not step.copies and not step.add


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="bounds"):
        _scaler(bounds=(2, 1))
    with pytest.raises(ValueError, match="utilisation"):
        _scaler(utilisation=0)


def test_the_simulator_scales_the_replicas_with_the_same_scaler() -> None:
    import numpy as np

    from serving.sim import Costs, OursPolicy, SimConfig, Simulation, Trace, model_mix

    models = model_mix(((1, 4, 2.0), (8, 4, 2.0), (34, 2, 2.0)), seed=3)  # 300 GB when all busy
    rng = np.random.default_rng(0)
    busy = np.sort(rng.uniform(0, 60, 600))  # every model, 10 requests/s for a minute
    quiet = np.sort(rng.uniform(60, 300, 40))  # then a trickle
    times = np.concatenate([busy, quiet])
    trace = Trace(
        times=times.tolist(),
        models=rng.integers(0, len(models), len(times)).tolist(),
        tokens=[50] * len(times),
        horizon=300.0,
    )
    config = SimConfig(gpus=4, gpus_per_node=2, gpu_memory_gb=100, warmup_s=0, window_s=10)
    policy = OursPolicy(autoscale=(1, 4), replica_start_s=5.0, cooldown_ticks=10)
    result = Simulation(models, config, Costs(), policy).run(trace)
    assert result.finished == result.requests == len(times)
    counts = [n for _, n in policy.replica_counts]
    assert counts[0] == 1 and max(counts) >= 3  # up for the burst ...
    assert counts[-1] < max(counts)  # ... and down after it
