"""The simulator: trace shapes, and policy comparisons on a small simulated cluster."""

from __future__ import annotations

import numpy as np
import pytest

from placement.policy import make_policy
from placement.sim import ClusterSpec, build_cluster, globus_trace, simulate, stateful_trace


def test_globus_trace_matches_published_shape() -> None:
    # 100 endpoints (~40,000 calls in the hour): the medians, the tail and the rate land as near the published
    # figures as with 400 (seeds 1-5: median 60-64 B, 0.029-0.031 s; mean 449-520x the median; 373-497 req/h)
    endpoints = 100
    trace = globus_trace(nodes=100, endpoints=endpoints, window_s=3600.0, seed=5)
    acts = trace.activations
    assert acts == sorted(acts, key=lambda a: a.arrive)
    args = np.array([a.arg_bytes for a in acts])
    durations = np.array([a.duration for a in acts])
    assert args.max() <= 10_000_000
    assert 20 < np.median(args) < 200  # published median 62 B
    assert 0.005 < np.median(durations) < 0.2  # published median 0.03 s
    assert durations.mean() > 100 * np.median(durations)  # heavy tail (published mean 49 s)
    per_endpoint_rate = len(acts) / endpoints  # per hour; published mean 404 req/h
    assert 150 < per_endpoint_rate < 1000


def test_stateful_trace_checkpoints_and_gpus() -> None:
    spec = ClusterSpec(nodes=100)
    table = build_cluster(spec)
    gpu_rows = [i for i in range(100) if table.gpu_total[i] > 0]
    trace = stateful_trace(100, gpu_rows, agents=200, sessions=3)
    assert trace.count() == 600
    ckpts = [b for k, b in trace.key_bytes.items() if k.startswith("ckpt:")]
    assert len(ckpts) == 200 and min(ckpts) >= 10e6 and max(ckpts) <= 10e9
    gpu_agents = [a.demand for a in trace.activations if a.demand.gpus > 0]
    assert 20 < len(gpu_agents) < 90
    homes = {key: node for node, key, _, _ in trace.initial}
    for d in gpu_agents:  # a GPU agent's checkpoint starts on a GPU node
        assert table.gpu_total[table.index[homes[d.checkpoint_key]]] > 0


@pytest.fixture(scope="module")
def small_runs() -> dict[str, object]:
    spec = ClusterSpec(nodes=300, seed=3)
    probe = build_cluster(spec)
    gpu_rows = [i for i in range(300) if probe.gpu_total[i] > 0]
    trace = stateful_trace(300, gpu_rows, agents=450, seed=4)
    return {
        name: simulate(build_cluster(spec), trace, make_policy(name))
        for name in ("locality", "ray-default", "spread", "random")
    }


def test_locality_moves_far_fewer_bytes_than_ray_default(small_runs) -> None:
    ours, ray_default = small_runs["locality"], small_runs["ray-default"]
    assert ours.bytes_moved < 0.5 * ray_default.bytes_moved
    assert ours.start_delay_median_s <= ray_default.start_delay_median_s


def test_every_policy_places_everything_and_no_gpu_misplaced(small_runs) -> None:
    for m in small_runs.values():
        assert m.placed == m.activations == 900
        assert m.misplaced_gpu == 0 and m.infeasible == 0
        assert 0 < m.gpu_utilisation <= 1
    assert small_runs["ray-default"].cpu_on_gpu_nodes == 0
    assert small_runs["random"].cpu_on_gpu_nodes > small_runs["locality"].cpu_on_gpu_nodes


def test_infeasible_demands_are_counted_not_hung() -> None:
    spec = ClusterSpec(nodes=20, gpu_fraction=0.0)
    trace = globus_trace(nodes=20, endpoints=30, window_s=120.0, gpu_endpoint_fraction=1.0, seed=2)
    m = simulate(build_cluster(spec), trace, make_policy("locality"))
    assert m.infeasible == m.activations > 0 and m.placed == 0
