"""Placement policies compared in the discrete-event simulator at 1,000 and 10,000 nodes.

Runs the same traces (a Globus-Compute-shaped function trace, a long-lived stateful-agent trace and
model replicas with tensor-parallel sizes 1-8, each N one-GPU bundles on one node; sizes above the
nodes' 4 GPUs are refused and counted as infeasible) through our LocalityPolicy and the baselines
(Ray's default hybrid pack-then-spread, spread, random)
and prints a table plus a JSON document with every figure and the goal checks:

* stateful trace: at least 50% fewer bytes moved than ray-default,
* zero misplaced GPU demands,
* median decision latency under 1 ms at 10,000 nodes.

Usage: python -m benchmarks.placement_sim [--sizes 1000 10000] [--agents-per-node 1.5]
"""

from __future__ import annotations

import argparse
import gc
import json
import time

from placement.policy import make_policy
from placement.sim import (
    ClusterSpec,
    build_cluster,
    globus_trace,
    model_replica_trace,
    simulate,
    stateful_trace,
)

POLICIES = ("locality", "ray-default", "spread", "random")


def run(sizes: list[int], agents_per_node: float, endpoints_per_node: float, seed: int) -> dict:
    results = []
    for nodes in sizes:
        spec = ClusterSpec(nodes=nodes, seed=seed)
        probe = build_cluster(spec)
        gpu_rows = [i for i in range(nodes) if probe.gpu_total[i] > 0]
        traces = [
            stateful_trace(nodes, gpu_rows, agents=int(agents_per_node * nodes), seed=seed + 1),
            globus_trace(nodes, endpoints=max(1, int(endpoints_per_node * nodes)), seed=seed + 2),
            model_replica_trace(
                gpu_rows, replicas=nodes // 5, models=max(1, nodes // 50), seed=seed + 3
            ),
        ]
        for trace in traces:
            for name in POLICIES:
                gc.collect()
                m = simulate(
                    build_cluster(spec), trace, make_policy(name), spec.bandwidth_bytes_per_s
                )
                results.append(m.model_dump())
    return {"results": results}


def goals(results: list[dict]) -> dict:
    out: dict = {
        "stateful_bytes_reduction_vs_ray_default": {},
        "model_replicas_bytes_reduction_vs_ray_default": {},
        "misplaced_gpu_total": 0,
    }
    by = {(r["nodes"], r["trace"], r["policy"]): r for r in results}
    for (nodes, trace, policy), r in by.items():
        out["misplaced_gpu_total"] += r["misplaced_gpu"]
        if trace in ("stateful", "model-replicas") and policy == "locality":
            base = by[(nodes, trace, "ray-default")]["bytes_moved"]
            key = f"{trace.replace('-', '_')}_bytes_reduction_vs_ray_default"
            out[key][str(nodes)] = 1 - r["bytes_moved"] / base if base else 0.0
    big = max(n for n, _, _ in by)
    out["locality_decision_ms_median_at_max_nodes"] = max(
        r["decision_ms_median"] for (n, _, p), r in by.items() if n == big and p == "locality"
    )
    out["max_nodes"] = big
    out["ok_bytes"] = all(v >= 0.5 for v in out["stateful_bytes_reduction_vs_ray_default"].values())
    out["ok_misplaced"] = out["misplaced_gpu_total"] == 0
    out["ok_latency"] = out["locality_decision_ms_median_at_max_nodes"] < 1.0
    return out


def table(results: list[dict]) -> str:
    head = (
        f"{'nodes':>6} {'trace':<14} {'policy':<12} {'acts':>6} {'infeas':>6} {'GB moved':>9} "
        f"{'vs ray':>7} "
        f"{'delay med s':>11} {'delay p99 s':>11} {'GPU util':>8} {'misGPU':>6} {'GPUblk':>6} "
        f"{'CPU@GPU':>7} {'dec med ms':>10} {'dec p99 ms':>10}"
    )
    lines = [head, "-" * len(head)]
    base = {
        (r["nodes"], r["trace"]): r["bytes_moved"] for r in results if r["policy"] == "ray-default"
    }
    for r in results:
        b = base.get((r["nodes"], r["trace"])) or 1
        lines.append(
            f"{r['nodes']:>6} {r['trace']:<14} {r['policy']:<12} {r['activations']:>6} "
            f"{r['infeasible']:>6} {r['bytes_moved'] / 1e9:>9.1f} {r['bytes_moved'] / b:>7.2f} "
            f"{r['start_delay_median_s']:>11.3f} "
            f"{r['start_delay_p99_s']:>11.1f} {r['gpu_utilisation']:>8.3f} {r['misplaced_gpu']:>6} "
            f"{r['gpu_blocked_by_cpu']:>6} {r['cpu_on_gpu_nodes']:>7} {r['decision_ms_median']:>10.3f} "
            f"{r['decision_ms_p99']:>10.3f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--agents-per-node", type=float, default=1.5)
    parser.add_argument("--endpoints-per-node", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    t0 = time.perf_counter()
    out = run(args.sizes, args.agents_per_node, args.endpoints_per_node, args.seed)
    out["goals"] = goals(out["results"])
    out["config"] = {
        **vars(args),
        "cluster": ClusterSpec().model_dump(),
        "wall_s": time.perf_counter() - t0,
    }
    print(table(out["results"]))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
