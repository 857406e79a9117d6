"""Scheduler on a real 4-node Ray cluster: pinning, locality, GPU fit, infeasible, and which pin survives node loss."""

from __future__ import annotations

import time

import pytest
import ray
from ray.util.placement_group import placement_group_table

from placement import Demand, InfeasibleDemandError, Inventory, NoCapacityError, Scheduler


@ray.remote(max_restarts=-1, max_task_retries=-1)
class Where:
    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


def _release_all(sched: Scheduler) -> None:
    """Releases everything and waits until Ray's resource view shows the CPUs free again."""
    for d in sched.decisions():
        sched.release(d.name)
    _wait_for(lambda: ray.available_resources().get("CPU", 0) >= ray.cluster_resources()["CPU"], 30)


def _pg_node(decision) -> str:
    from ray.util.placement_group import PlacementGroup

    pg = PlacementGroup(ray.PlacementGroupID(bytes.fromhex(decision.placement_group_id)))
    return placement_group_table(pg)["bundles_to_node_id"][0]


@pytest.mark.parametrize("pin", ["soft", "label"])
def test_pinned_group_lands_on_every_chosen_node(sim_cluster, pin) -> None:
    sched = Scheduler(pin=pin)
    for role in ("cpu-a", "cpu-b", "gpu"):
        for i in range(3):
            d = sched.place(
                Demand(name=f"{pin}-{role}-{i}", cpus=0.5, affinity=(sim_cluster.nodes[role],))
            )
            assert d.node_id == sim_cluster.nodes[role]
            assert _pg_node(d) == sim_cluster.nodes[role]
            assert not any("Ray put the group" in r for r in d.reasons)
    _release_all(sched)


def test_data_on_node_b_sends_demand_to_b(sim_cluster) -> None:
    inv = Inventory()
    inv.record(sim_cluster.nodes["cpu-b"], "s3://bucket/big.parquet", 2_000_000_000, "data")
    sched = Scheduler(inventory=inv)
    d = sched.place(Demand(name="reader", cpus=1, data_uris=("s3://bucket/big.parquet",)))
    assert d.node_id == sim_cluster.nodes["cpu-b"]
    assert d.candidates[0].local_bytes == 2_000_000_000
    actor = Where.options(**d.actor_options()).remote()
    assert ray.get(actor.node.remote()) == sim_cluster.nodes["cpu-b"]
    ray.kill(actor)
    _release_all(sched)


def test_gpu_demand_only_on_gpu_node_and_cpu_demands_avoid_it(sim_cluster) -> None:
    sched = Scheduler()
    g = sched.place(Demand(name="trainer", cpus=1, gpus=1, gpu_type="T4"))
    assert g.node_id == sim_cluster.nodes["gpu"]
    cpu = [sched.place(Demand(name=f"cpu-{i}", cpus=0.5)) for i in range(4)]
    assert sim_cluster.nodes["gpu"] not in {d.node_id for d in cpu}
    # The only GPU is taken: a second GPU demand fits nowhere now, but could later.
    with pytest.raises(NoCapacityError):
        sched.place(Demand(name="trainer-2", cpus=1, gpus=1))
    _release_all(sched)


def test_impossible_demands_fail_fast_with_reason(sim_cluster) -> None:
    sched = Scheduler()
    with pytest.raises(InfeasibleDemandError, match="GPUs of type H100"):
        sched.place(Demand(name="x", gpus=1, gpu_type="H100"))
    with pytest.raises(InfeasibleDemandError, match="64 CPUs"):
        sched.place(Demand(name="y", cpus=64))
    with pytest.raises(InfeasibleDemandError, match="custom resource 'tpu'"):
        sched.place(Demand(name="z", cpus=1, resources={"tpu": 1}))
    assert sched.decisions() == []


def _wait_for(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return predicate()


def test_soft_pin_survives_node_loss_but_label_pin_does_not(sim_cluster) -> None:
    """The pinning choice: a soft-targeted group is rescheduled by Ray when its node dies (its
    restartable actor comes back elsewhere); a node-id label selector group can never be."""
    doomed = sim_cluster.add("doomed", num_cpus=2, resources={"doomed": 1})
    soft, label = Scheduler(pin="soft"), Scheduler(pin="label")
    ds = soft.place(Demand(name="soft", cpus=0.5, affinity=(doomed,)))
    dl = label.place(Demand(name="label", cpus=0.5, affinity=(doomed,)))
    assert ds.node_id == dl.node_id == doomed
    a_soft = Where.options(**ds.actor_options()).remote()
    a_label = Where.options(**dl.actor_options()).remote()
    assert ray.get([a_soft.node.remote(), a_label.node.remote()]) == [doomed, doomed]

    sim_cluster.kill("doomed")
    moved = _wait_for(
        lambda: (
            _pg_node(ds) not in (None, doomed)
            and placement_group_table(_pg(ds))["state"] == "CREATED"
        ),
        30,
    )
    assert moved, placement_group_table(_pg(ds))
    assert ray.get(a_soft.node.remote(), timeout=30) not in (doomed, None)
    label_state = placement_group_table(_pg(dl))
    assert label_state["state"] != "CREATED", label_state
    # Our scheduler sees both decisions as lost and would re-place them.
    assert {d.name for d in soft.lost()} == {"soft"}
    soft.release("soft")
    label.release("label")
    ray.kill(a_soft)
    ray.kill(a_label)


def _pg(decision):
    from ray.util.placement_group import PlacementGroup

    return PlacementGroup(ray.PlacementGroupID(bytes.fromhex(decision.placement_group_id)))
