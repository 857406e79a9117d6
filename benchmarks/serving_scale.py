"""Serving 64 models on 32 GPUs: our router and replica manager against Serve's multiplexing and static
partitioning, in the simulator (:mod:`serving.sim`), on the same traces.

Workload: 64 models (``serving.sim.workload.MIX``: 8 x 1 B, 8 x 3 B, 20 x 8 B, 12 x 13 B, 10 x 34 B in
bf16, 6 x 70 B in FP8), Zipf popularity (exponent 1.0, over a seeded random order of the models),
Poisson arrivals plus bursts (one every 60 s on average, on a random model, 30-120 s long, +25 % of
the base rate on that model alone), output tokens geometric with mean 200 (cap 1024). Cluster: 32
GPUs (141 GB at 90 % for engines, 32 requests at once each), 8 per node, 200 GB of host memory per GPU
for parked engines, every node's disk cache holding every model. Costs: :mod:`serving.sim.costs`
(each figure with its source). Each run: 30 simulated minutes, the first 5 not measured.

A rate is **sustained** when every request finished and the p99 time to first token (queueing plus
model switch; generation time is the model's own) stays under the target (10 s). For each policy the
benchmark sweeps base rates and reports the highest sustained one (the measured arrival rate, bursts
included), and at the seed's rate (850 req/min base) the switches per minute and the GPU-seconds
per minute spent switching (loads, wakes, parks).

Goal: >= 850 req/min sustained by ours and >= 1.5x the sustained rate of Serve's multiplexing.

    python -m benchmarks.serving_scale [--seed 1] [--rates 300 450 ...] [--minutes 30]
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from rich.console import Console
from rich.table import Table

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

POLICIES = ("ours", "serve-multiplex", "static")
SEED_RATE = 850.0


def _policy(name: str, rate: float) -> Any:
    if name == "ours":
        return OursPolicy()
    if name == "serve-multiplex":
        return ServeMultiplexPolicy()
    return StaticPolicy(rate)


def sweep(rates: list[float], minutes: float, seed: int) -> dict[str, Any]:
    """Runs every policy at every base rate on the same traces; returns the results by policy."""
    models = model_mix(seed=seed)
    config = SimConfig()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in POLICIES}
    for rate in sorted(set(rates) | {SEED_RATE}):
        trace = bursty_trace(models, rate, minutes * 60.0, seed=seed)
        for name in POLICIES:
            result = Simulation(models, config, Costs(), _policy(name, rate)).run(trace)
            row = result.model_dump()
            row["base_rate_per_min"] = rate
            runs[name].append(row)
    return {"config": config.model_dump(), "runs": runs}


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Sustained rate per policy, the seed-rate figures and the goal checks."""
    summary: dict[str, Any] = {}
    for name, rows in runs.items():
        ok = [r["rate_per_min"] for r in rows if r["goodput_ok"]]
        at_seed = next(r for r in rows if r["base_rate_per_min"] == SEED_RATE)
        summary[name] = {
            "sustained_req_per_min": max(ok) if ok else 0.0,
            "at_850": {
                k: at_seed[k]
                for k in (
                    "rate_per_min",
                    "ttft_p99_s",
                    "latency_p99_s",
                    "switches_per_min",
                    "switches_by_tier",
                    "gpu_switch_s_per_min",
                    "goodput_ok",
                )
            },
        }
    ours = summary["ours"]["sustained_req_per_min"]
    serve = summary["serve-multiplex"]["sustained_req_per_min"]
    summary["goals"] = {
        "ours_ge_850": ours >= 850,
        "ratio_vs_serve_multiplex": round(ours / serve, 2) if serve else None,
        "ratio_ge_1_5": bool(serve) and ours >= 1.5 * serve,
    }
    return summary


def print_tables(runs: dict[str, list[dict[str, Any]]], summary: dict[str, Any]) -> None:
    console = Console(width=130)
    table = Table(
        title="p99 time to first token (s) by base rate; * = sustained (<= 10 s, all done)"
    )
    table.add_column("base req/min", justify="right")
    for name in POLICIES:
        table.add_column(name, justify="right")
    for i, row in enumerate(runs["ours"]):
        cells = [f"{row['base_rate_per_min']:.0f} ({row['rate_per_min']:.0f})"]
        for name in POLICIES:
            r = runs[name][i]
            cells.append(f"{r['ttft_p99_s']:.1f}{'*' if r['goodput_ok'] else ''}")
        table.add_row(*cells)
    console.print(table)
    table = Table(title="32 GPUs, 64 models: sustained rate, and switching at 850 req/min base")
    for column in (
        "policy",
        "sustained req/min",
        "p99 TTFT @850",
        "p99 latency @850",
        "switches/min",
        "by tier (parked/disk/remote)",
        "GPU-s switching/min",
    ):
        table.add_column(column, justify="right")
    for name in POLICIES:
        s, a = summary[name], summary[name]["at_850"]
        tiers = a["switches_by_tier"]
        table.add_row(
            name,
            f"{s['sustained_req_per_min']:.0f}",
            f"{a['ttft_p99_s']:.1f}",
            f"{a['latency_p99_s']:.1f}",
            f"{a['switches_per_min']:.1f}",
            f"{tiers['parked']}/{tiers['disk']}/{tiers['remote']}",
            f"{a['gpu_switch_s_per_min']:.0f}",
        )
    console.print(table)
    console.print(f"goals: {summary['goals']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=[300, 450, 600, 700, 850, 1000, 1150, 1300, 1500],
        help="base request rates (req/min) to sweep",
    )
    args = parser.parse_args()
    started = time.perf_counter()
    result = sweep(args.rates, args.minutes, args.seed)
    summary = summarise(result["runs"])
    print_tables(result["runs"], summary)
    line = {
        "benchmark": "serving_scale",
        "seed": args.seed,
        "gpus": result["config"]["gpus"],
        "models": 64,
        "ttft_target_s": result["config"]["ttft_target_s"],
        "summary": summary,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
