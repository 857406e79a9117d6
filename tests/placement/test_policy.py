"""Policies on hand-built tables (pure Python, no Ray)."""

from __future__ import annotations

import pytest

from placement import (
    Demand,
    InfeasibleDemandError,
    Inventory,
    LocalityPolicy,
    LocalityWeights,
    NoCapacityError,
    NodeTable,
    RandomPolicy,
    RayDefaultPolicy,
    SpreadPolicy,
    make_policy,
)
from placement.core import choose, decide, note_placed


def _table(cpu_nodes: int = 3, gpu_nodes: int = 1) -> NodeTable:
    t = NodeTable()
    for i in range(cpu_nodes):
        t.add_node(f"c{i}", cpus=8, memory=64e9)
    for i in range(gpu_nodes):
        t.add_node(f"g{i}", cpus=8, gpus=4, memory=64e9, gpu_type="A100")
    return t


def _best(policy, demand: Demand, table: NodeTable, inv: Inventory | None = None) -> str:
    return policy.rank(demand, table, inv or Inventory(), 3)[0].node_id


def test_locality_follows_the_bytes_weighted_by_size() -> None:
    inv = Inventory()
    inv.record("c2", "s3://big", 5_000_000_000, "data")
    inv.record("c1", "s3://small", 1_000_000, "data")
    d = Demand(name="a", data_uris=("s3://big", "s3://small"))
    ranked = LocalityPolicy().rank(d, _table(), inv, 3)
    assert ranked[0].node_id == "c2"
    assert ranked[0].local_bytes == 5_000_000_000 and ranked[0].missing_bytes == 1_000_000
    assert ranked[0].terms["transfer"] == pytest.approx(-1e6 / 1.25e9)
    assert ranked[0].score == pytest.approx(sum(ranked[0].terms.values()))


def test_locality_counts_models_and_checkpoints() -> None:
    inv = Inventory()
    inv.record("c1", "llama-8b", 16_000_000_000, "model")
    assert _best(LocalityPolicy(), Demand(name="m", model_ids=("llama-8b",)), _table(), inv) == "c1"
    inv.record("c0", "ckpt:x", 8_000_000_000, "checkpoint")
    d = Demand(name="x", checkpoint_key="ckpt:x")
    assert _best(LocalityPolicy(), d, _table(), inv) == "c0"


def test_gpu_demand_only_where_a_gpu_is_free() -> None:
    t = _table(cpu_nodes=3, gpu_nodes=2)
    inv = Inventory()
    inv.record(
        "c0", "s3://data", 10**10, "data"
    )  # locality must not pull a GPU demand to a CPU node
    g = Demand(name="g", gpus=2, data_uris=("s3://data",))
    for policy in (LocalityPolicy(), RayDefaultPolicy(), SpreadPolicy(), RandomPolicy()):
        assert {c.node_id for c in policy.rank(g, t, inv, 5)} <= {"g0", "g1"}
    t.allocate(t.index["g0"], Demand(name="x", gpus=3))
    assert _best(LocalityPolicy(), g, t, inv) == "g1"


def test_gpu_fit_weight_turns_on_best_fit() -> None:
    t = _table(cpu_nodes=0, gpu_nodes=2)
    t.allocate(t.index["g1"], Demand(name="x", gpus=2))
    assert _best(LocalityPolicy(), Demand(name="g", gpus=1), t) == "g0"  # default: spread GPU load
    assert _best(LocalityPolicy(LocalityWeights(gpu_fit=2.0)), Demand(name="g", gpus=1), t) == "g1"


def test_cpu_demand_kept_off_gpu_nodes_while_cpu_nodes_have_room() -> None:
    t = _table(cpu_nodes=2, gpu_nodes=2)
    d = Demand(name="c", cpus=4)
    assert _best(LocalityPolicy(), d, t).startswith("c")
    for i in range(2):
        t.allocate(t.index[f"c{i}"], Demand(name="fill", cpus=8))
    ranked = LocalityPolicy().rank(d, t, Inventory(), 3)
    assert ranked[0].node_id.startswith("g") and ranked[0].terms["gpu_guard"] == 0.0


def test_load_balance_and_tunable_weights() -> None:
    t = _table(cpu_nodes=3, gpu_nodes=0)
    t.allocate(0, Demand(name="x", cpus=6))
    t.allocate(1, Demand(name="y", cpus=2))
    assert _best(LocalityPolicy(), Demand(name="d"), t) == "c2"
    inv = Inventory()
    inv.record("c0", "s3://d", 100_000_000, "data")  # 0.08 s to move: load (0.875 vs 0.125) wins
    d = Demand(name="d", data_uris=("s3://d",))
    assert _best(LocalityPolicy(), d, t, inv) == "c2"
    heavy = LocalityPolicy(LocalityWeights(transfer=100.0))
    assert _best(heavy, d, t, inv) == "c0"


def test_sampling_keeps_holders_on_big_clusters() -> None:
    t = NodeTable()
    for i in range(5000):
        t.add_node(f"n{i}", cpus=8)
    inv = Inventory()
    inv.record("n4321", "ckpt:a", 10**9, "checkpoint")
    policy = LocalityPolicy(LocalityWeights(sample_nodes=64))
    for _ in range(20):
        assert _best(policy, Demand(name="a", checkpoint_key="ckpt:a"), t, inv) == "n4321"


def test_ray_default_packs_then_spreads_and_avoids_gpu_nodes() -> None:
    t = _table(cpu_nodes=4, gpu_nodes=1)
    p = RayDefaultPolicy(seed=1)
    chosen = []
    for i in range(6):
        d = Demand(name=f"d{i}", cpus=1)
        node = _best(p, d, t)
        chosen.append(node)
        t.allocate(t.index[node], d)
    assert chosen[:3] == ["c0", "c0", "c0"]  # local node until half full (4/8 would reach 0.5)
    assert set(chosen[3:]) <= {"c1", "c2", "c3"}


def test_spread_round_robin_and_random_within_fit() -> None:
    t = _table(cpu_nodes=3, gpu_nodes=0)
    s = SpreadPolicy()
    assert [_best(s, Demand(name="d"), t) for _ in range(4)] == ["c0", "c1", "c2", "c0"]
    t.allocate(1, Demand(name="x", cpus=8))
    r = RandomPolicy(seed=3)
    assert {_best(r, Demand(name="d"), t) for _ in range(50)} == {"c0", "c2"}
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("best")


def test_choose_infeasible_vs_no_capacity_and_decide_reasons() -> None:
    t = _table(cpu_nodes=1, gpu_nodes=1)
    with pytest.raises(InfeasibleDemandError, match="8 GPUs"):
        choose(Demand(name="g", gpus=8), t, Inventory(), LocalityPolicy())
    t.allocate(t.index["g0"], Demand(name="x", gpus=4))
    with pytest.raises(NoCapacityError):
        choose(Demand(name="g", gpus=1), t, Inventory(), LocalityPolicy())
    d = decide(
        Demand(name="c", cpus=1),
        t,
        Inventory(),
        LocalityPolicy(),
        cause="node z lost",
        generation=2,
    )
    assert d.node_id == "c0" and d.generation == 2 and d.reasons[0] == "re-placed: node z lost"
    assert "c0" in d.explain() and "gpu_guard" in d.explain()
    with pytest.raises(ValueError, match="holds no placement group"):
        d.actor_options()


def test_note_placed_moves_the_checkpoint() -> None:
    inv = Inventory()
    inv.record("a", "ckpt:x", 50, "checkpoint")
    note_placed(inv, Demand(name="x", checkpoint_key="ckpt:x"), "b")
    assert inv.holders("ckpt:x") == {"b": 50}
    note_placed(
        inv, Demand(name="y", checkpoint_key="ckpt:y"), "b"
    )  # size unknown: nothing recorded
    assert inv.holders("ckpt:y") == {}
