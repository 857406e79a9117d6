"""NodeTable feasibility, selectors, bookkeeping and infeasibility reasons."""

from __future__ import annotations

from placement import Demand, NodeTable


def _table() -> NodeTable:
    t = NodeTable(capacity=1)  # grows
    t.add_node("cpu", cpus=4, memory=8e9, labels={"zone": "a"})
    t.add_node("gpu", cpus=8, gpus=2, memory=8e9, gpu_type="A100", custom={"ssd": 1})
    t.add_node("busy", cpus=4, memory=8e9, free={"CPU": 1})
    return t


def test_feasible_now_and_ever() -> None:
    t = _table()
    d = Demand(name="d", cpus=2)
    assert t.feasible_now(d).tolist() == [True, True, False]
    assert t.feasible_ever(d).tolist() == [True, True, True]
    g = Demand(name="g", cpus=1, gpus=2, gpu_type="A100")
    assert t.feasible_now(g).tolist() == [False, True, False]
    assert not t.feasible_now(Demand(name="h", gpus=1, gpu_type="H100")).any()
    assert t.feasible_now(Demand(name="s", cpus=1, resources={"ssd": 1})).tolist() == [
        False,
        True,
        False,
    ]


def test_selectors() -> None:
    t = _table()
    assert t.feasible_now(Demand(name="a", affinity=("zone=a",))).tolist() == [True, False, False]
    assert t.feasible_now(Demand(name="a", affinity=("gpu",))).tolist() == [False, True, False]
    assert t.feasible_now(
        Demand(name="a", anti_affinity=("cpu", "ray.io/accelerator-type=A100"))
    ).tolist() == [False, False, True]


def test_allocate_release_and_dead_nodes() -> None:
    t = _table()
    g = Demand(name="g", cpus=1, gpus=2)
    t.allocate(1, g)
    assert t.gpu_free[1] == 0 and not t.feasible_now(g).any() and t.feasible_ever(g).any()
    t.release(1, g)
    assert t.gpu_free[1] == 2
    t.set_alive("gpu", False)
    assert not t.feasible_ever(g).any()
    assert "no live node can ever fit demand 'g'" in t.why_infeasible(g)


def test_why_infeasible_names_each_shortfall() -> None:
    t = _table()
    assert t.why_infeasible(Demand(name="ok", cpus=1)) == ""
    msg = t.why_infeasible(Demand(name="x", cpus=64, gpus=1, gpu_type="H100", resources={"tpu": 1}))
    assert "64 CPUs (largest node: 8)" in msg
    assert "1 GPUs of type H100 (largest such node: 0; known GPU types: A100)" in msg
    assert "custom resource 'tpu'" in msg
    assert "affinity" in t.why_infeasible(Demand(name="y", affinity=("zone=mars",)))
    assert NodeTable().why_infeasible(Demand(name="z")) == "the cluster has no live node"
