"""Multi-GPU (tensor-parallel) demands: N GPU bundles on one node, chosen by GPU fit and weight
locality (pure Python, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from placement import (
    Demand,
    InfeasibleDemandError,
    Inventory,
    LocalityPolicy,
    NoCapacityError,
    NodeTable,
    RayDefaultPolicy,
)
from placement.core import choose, decide
from placement.sim import ClusterSpec, build_cluster, model_replica_trace, simulate


def _tp(name: str, size: int, *models: str) -> Demand:
    return Demand(name=name, cpus=1, gpus=size, gpu_bundles=size, model_ids=models)


def _gpu_table() -> NodeTable:
    t = NodeTable()
    t.add_node("c0", cpus=16, memory=64e9)
    t.add_node("g0", cpus=16, gpus=4, memory=64e9, free={"GPU": 2})
    t.add_node("g1", cpus=16, gpus=4, memory=64e9)
    t.add_node("g2", cpus=16, gpus=8, memory=64e9, free={"GPU": 1})
    t.add_node("g3", cpus=16, gpus=2, memory=64e9)
    return t


def test_a_tensor_parallel_demand_is_one_bundle_per_rank_on_one_node() -> None:
    d = Demand(name="m", cpus=2, gpus=4, gpu_bundles=4, memory_bytes=10, resources={"slot": 1})
    assert d.bundles() == [
        {"CPU": 2, "GPU": 1, "memory": 10.0, "slot": 1},
        {"GPU": 1},
        {"GPU": 1},
        {"GPU": 1},
    ]
    assert d.bundle() == {"CPU": 2, "GPU": 4, "memory": 10.0, "slot": 1}  # the node must hold all
    assert Demand(name="one", gpus=2).bundles() == [{"CPU": 1, "GPU": 2}]
    with pytest.raises(ValueError, match="gpus is 0"):
        Demand(name="bad", gpu_bundles=2)
    with pytest.raises(ValueError):
        Demand(name="bad", gpus=1, gpu_bundles=0)


def test_the_node_holding_the_weights_wins_among_those_with_enough_free_gpus() -> None:
    t, inv = _gpu_table(), Inventory()
    for node in ("g2", "g3"):  # g2 holds them but has one free GPU: not a candidate for TP=2
        inv.record(node, "llama-70b", 140_000_000_000, "model")
    decision = decide(_tp("r0", 2, "llama-70b"), t, inv, LocalityPolicy())
    assert decision.node_id == "g3"
    assert decision.bundles == [{"CPU": 1, "GPU": 1}, {"GPU": 1}]
    assert decision.candidates[0].local_bytes == 140_000_000_000
    assert {c.node_id for c in decision.candidates} == {"g0", "g1", "g3"}  # never c0 or g2
    text = decision.explain()
    assert "2 bundles of 1 GPU on this one node" in text
    assert "3 of 4 GPU node(s) had room for it now" in text
    assert "140000000000 of 140000000000 bytes" in text


def test_gpu_fit_then_typed_refusals_infeasible_and_no_capacity() -> None:
    t, inv, policy = _gpu_table(), Inventory(), LocalityPolicy()
    assert choose(_tp("r4", 4), t, inv, policy)[0].node_id == "g1"  # the only 4 free GPUs
    with pytest.raises(InfeasibleDemandError) as info:
        choose(_tp("r16", 16), t, inv, policy)
    message = str(info.value)
    assert "16 GPUs on one node (16 bundles of 1 GPU, STRICT_PACK)" in message
    assert "largest node: 8" in message
    with pytest.raises(NoCapacityError, match="r8"):
        choose(_tp("r8", 8), t, inv, policy)  # g2 could hold it, but 7 of its GPUs are busy


def test_at_10000_nodes_every_rank_group_fits_one_node_and_the_cluster_fills_exactly() -> None:
    t = build_cluster(
        ClusterSpec(nodes=10_000, gpu_fraction=0.05, gpus_per_gpu_node=8, background_gpu=0.3)
    )
    n = len(t)
    inv = Inventory()
    holders = [t.ids[i] for i in np.flatnonzero(t.gpu_free[:n] >= 4)[:3]]
    for node in holders:
        inv.record(node, "llama-70b", 140_000_000_000, "model")
    fits = (t.gpu_free[:n] >= 4) & (t.cpu_free[:n] >= 1)
    expected = int(np.minimum(np.floor(t.gpu_free[:n] / 4), np.floor(t.cpu_free[:n]))[fits].sum())
    policy, placed, first = LocalityPolicy(), 0, []
    while True:
        demand = _tp(f"r{placed}", 4, "llama-70b")
        try:
            best = choose(demand, t, inv, policy, k=1)[0]
        except NoCapacityError:
            break
        row = t.index[best.node_id]
        assert t.gpu_free[row] >= 4 and t.gpu_total[row] >= 4
        t.allocate(row, demand)
        first.append(best.node_id)
        placed += 1
    assert placed == expected > 100
    assert set(first[:1]) <= set(holders)  # the weights pull the first replica
    assert (t.gpu_free[:n] >= 0).all() and not ((t.gpu_free[:n] >= 4) & (t.cpu_free[:n] >= 1)).any()
    with pytest.raises(InfeasibleDemandError, match="largest node: 8"):
        choose(_tp("huge", 16), t, inv, policy)


def test_the_simulator_places_model_replicas_by_weights_and_counts_impossible_sizes() -> None:
    spec = ClusterSpec(nodes=2000, gpu_fraction=0.1, gpus_per_gpu_node=8, background_gpu=0.2)
    gpu_rows = np.flatnonzero(build_cluster(spec).gpu_total[: spec.nodes] > 0).tolist()
    trace = model_replica_trace(gpu_rows, replicas=300, sizes=(1, 2, 4, 8, 16))
    impossible = sum(1 for a in trace.activations if a.demand.gpus > 8)
    runs = {
        name: simulate(build_cluster(spec), trace, policy)
        for name, policy in (("locality", LocalityPolicy()), ("ray", RayDefaultPolicy()))
    }
    for metrics in runs.values():
        assert metrics.misplaced_gpu == 0  # every rank group fitted one node's free GPUs
        assert metrics.infeasible == impossible > 0  # refused, never queued for ever
        assert metrics.placed == metrics.activations - impossible
    # weights staged: 11.6 TB with locality, 18.0 TB with Ray's default (seeded trace)
    assert runs["locality"].bytes_moved < 0.8 * runs["ray"].bytes_moved
