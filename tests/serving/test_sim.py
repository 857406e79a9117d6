"""The serving simulator: deterministic traces, costs scaled by size, the policy rules kept at scale."""

from __future__ import annotations

import pytest

from serving.policy import Tier
from serving.sim import (
    Costs,
    OursPolicy,
    ServeMultiplexPolicy,
    SimConfig,
    Simulation,
    StaticPolicy,
    bursty_trace,
    model_mix,
)
from serving.sim.workload import copies_for

SMALL = ((1, 4, 2.0), (8, 4, 2.0), (34, 2, 2.0))  # 10 models


def test_the_model_mix_and_traces_are_seeded_and_bursts_do_not_depend_on_the_rate() -> None:
    models = model_mix()
    assert len(models) == 64 and {m.params_b for m in models} == {1, 3, 8, 13, 34, 70}
    assert sum(m.popularity for m in models) == pytest.approx(1.0)
    a, b = bursty_trace(models, 600, 300, seed=3), bursty_trace(models, 600, 300, seed=3)
    assert a == b and a.times == sorted(a.times)
    assert bursty_trace(models, 600, 300, seed=4) != a


def test_switch_costs_scale_with_the_weights() -> None:
    costs = Costs()
    assert costs.wake_s(0.94 * (1 << 30)) == pytest.approx(0.048)
    assert costs.disk_load_s(2 * 10**9) - costs.engine_start_s == pytest.approx(
        2 * (costs.disk_load_s(10**9) - costs.engine_start_s)
    )
    assert (
        costs.wake_s(70e9) < costs.disk_load_s(70e9) < costs.disk_load_s(70e9) + costs.fetch_s(70e9)
    )
    assert costs.service_s(16e9, 100, 1.0) == pytest.approx(2 * costs.service_s(16e9, 100, 0.0))


def test_static_copies_follow_the_rates_and_cover_every_model() -> None:
    assert copies_for([3.0, 1.0, 0.0], 7) == [4, 2, 1]
    with pytest.raises(ValueError):
        copies_for([1.0, 1.0], 1)


def test_ours_never_evicts_the_last_copy_of_a_model_with_recent_traffic() -> None:
    models = model_mix(SMALL, seed=2)
    config = SimConfig(gpus=4, gpus_per_node=2, gpu_memory_gb=100, warmup_s=0, window_s=30)
    trace = bursty_trace(models, 120, 300, seed=2, burst_every_s=30)
    policy = OursPolicy(patience_s=float("inf"))  # the rule alone, without its starvation guard
    sim = Simulation(models, config, Costs(), policy)
    broken: list[str] = []
    evict = sim.evict

    def checked(replica, model_id):  # type: ignore[no-untyped-def]
        copies = sum(1 for r in sim.replicas if model_id in r.view.resident)
        demand = policy.tracker.demand(model_id, sim.now)
        if model_id in replica.view.resident and copies <= 1 and demand.active:
            broken.append(model_id)
        return evict(replica, model_id)

    sim.evict = checked  # type: ignore[method-assign]
    result = sim.run(trace)
    assert result.finished == result.requests > 0
    assert broken == []
    assert sum(result.switches_by_tier.values()) > 0  # the check saw switches


def test_all_three_policies_finish_a_small_trace_and_ours_uses_the_fast_tiers() -> None:
    models = model_mix(SMALL, seed=1)
    config = SimConfig(gpus=4, gpus_per_node=2, gpu_memory_gb=100, warmup_s=60, staged=False)
    trace = bursty_trace(models, 200, 400, seed=5)
    results = {}
    for policy in (OursPolicy(), ServeMultiplexPolicy(), StaticPolicy(200)):
        results[policy.name] = Simulation(models, config, Costs(), policy).run(trace)
    assert all(r.finished == r.requests for r in results.values())
    assert results["static"].switches_per_min == 0
    ours = results["ours"].switches_by_tier
    assert ours[Tier.REMOTE.label] <= results["serve-multiplex"].switches_by_tier["remote"]
