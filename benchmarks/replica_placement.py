"""Model replicas placed by the node caches' inventory vs Ray Serve's own placement, same run.

A simulated cluster (``ray.cluster_utils.Cluster``: head with 1 CPU and 3 workers with 2 CPUs each)
and a real SeaweedFS S3 server holding ``--models`` locally made Llama models. ONE worker node's
model cache is pre-warmed with every model (the "warm node"). Then, ``--rounds`` times and in
alternating order, the serving app is deployed with ONE model replica

* placed by ``placement`` (``ServingConfig.placement`` on: the replica goes where the weights are),
* placed by Serve itself (``placement=None``: the baseline),

and the first request of every model is sent (streamed, timed to the first token). For each
deployment the script records the replica's node (warm or not), the tier each model was loaded
from (``disk``: the node cache's warm copy, ``object_storage``: a cold fetch) and the times. After
each deployment the copies that the cold nodes fetched are evicted, so every deployment starts
from the same state: only the warm node holds the models.

Prints a table, then one JSON line: the fraction of replicas on the warm node, the median time to
serve the first request of all models, and the Serve-over-placement ratio (also without the first
model, whose request pays the new replica's one-time engine imports in both modes, and with the
deployment time added, which includes placement's own cost: placer actor and decision).

    .venv/bin/python -m benchmarks.replica_placement [--models 4] [--rounds 3] [--hidden 512]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PROMPT = "The agent asked the model to rank candidate linkers"
MODES = ("placement", "serve")


def _first_token(url: str, model: str, max_tokens: int) -> tuple[float, float]:
    """Streams one completion; returns (seconds to the first token, seconds to the end)."""
    body = json.dumps(
        {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "stream": True}
    ).encode()
    req = urllib.request.Request(
        url + "/completions", data=body, headers={"Content-Type": "application/json"}
    )
    start = time.perf_counter()
    first: float | None = None
    with urllib.request.urlopen(req, timeout=180) as resp:
        for raw in resp:
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                break
            event = json.loads(data)
            if "error" in event:
                raise RuntimeError(f"model {model}: {event['error']}")
            if first is None:
                first = time.perf_counter() - start
    end = time.perf_counter() - start
    if first is None:
        raise RuntimeError(f"model {model}: the stream ended without a token")
    return first, end


def _replica_stats(app_name: str) -> Any:
    from ray import serve

    handle = serve.get_deployment_handle("ModelServer", app_name=app_name)
    return handle.stats.remote().result(timeout_s=60)


def _med(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _reset_cold_nodes(cache: Any, warm: str, specs: list[Any]) -> int:
    """Evicts the models from every node cache but the warm node's; returns the copies dropped."""
    import ray

    from serving.cache import node_caches

    dropped = 0
    for actor in node_caches(cache):
        if ray.get(actor.node_id.remote()) == warm:
            continue
        for spec in specs:
            dropped += int(ray.get(actor.evict.remote(spec.id)))
    return dropped


def run_trial(
    mode: str,
    index: int,
    specs: list[Any],
    cache: Any,
    namespace: str,
    port: int,
    max_tokens: int,
) -> dict[str, Any]:
    """Deploys one app of one replica (``mode``: 'placement' or 'serve') and times first requests."""
    from serving.app import ServingConfig, serve_models, stop_models
    from serving.placer import ReplicaPlacement

    tag = uuid.uuid4().hex[:6]
    config = ServingConfig(
        app_name=f"bench-{mode}-{index}-{tag}",
        route_prefix=f"/{tag}",
        replicas=1,
        max_models_per_replica=len(specs),
        replica_cpus=0.5,
        ingress_cpus=0.1,
        cache=cache,
        placement=ReplicaPlacement(namespace=namespace, timeout_s=60)
        if mode == "placement"
        else None,
    )
    start = time.perf_counter()
    url = serve_models(specs, config, port=port, proxy_location="HeadOnly")
    deploy_s = time.perf_counter() - start
    try:
        ttft: list[float] = []
        for spec in specs:
            first, _ = _first_token(url, spec.id, max_tokens)
            ttft.append(first)
        stats = _replica_stats(config.app_name)
    finally:
        stop_models(config)
    loads = {e.model_id: e for e in stats.loads}
    return {
        "mode": mode,
        "node_id": stats.node_id,
        "deploy_s": deploy_s,
        "ttft_s": ttft,
        "first_requests_s": sum(ttft),
        "tiers": [loads[s.id].tier if s.id in loads else "?" for s in specs],
        "switch_s": [loads[s.id].seconds if s.id in loads else None for s in specs],
        "cache_s": [loads[s.id].cache_seconds if s.id in loads else None for s in specs],
    }


def _node_role(node_id: str, warm: str, roles: dict[str, str]) -> str:
    role = roles.get(node_id, node_id[:8])
    return f"{role} (warm)" if node_id == warm else role


def _print_table(trials: list[dict[str, Any]], warm: str, roles: dict[str, str]) -> None:
    header = (
        f"{'round':>5} {'mode':<9} {'replica node':<15} {'tiers':<26} "
        f"{'deploy s':>8} {'first reqs s':>12}  ttft per model s"
    )
    print(header)
    print("-" * len(header))
    for t in trials:
        tiers = ",".join(
            "disk" if x == "disk" else "obj" if x == "object_storage" else x for x in t["tiers"]
        )
        print(
            f"{t['round']:>5} {t['mode']:<9} {_node_role(t['node_id'], warm, roles):<15} "
            f"{tiers:<26} {t['deploy_s']:>8.2f} {t['first_requests_s']:>12.2f}  "
            + " ".join(f"{x:.2f}" for x in t["ttft_s"])
        )
    print()


def summarize(trials: list[dict[str, Any]], warm: str) -> dict[str, Any]:
    """The per-mode figures and the Serve-over-placement ratio."""
    out: dict[str, Any] = {"warm_node_fraction": {}, "first_requests_all_models_s_median": {}}
    out["first_requests_models_2_to_k_s_median"] = {}
    out["deploy_s_median"] = {}
    out["deploy_plus_first_requests_s_median"] = {}
    out["disk_tier_fraction"] = {}
    for mode in MODES:
        mine = [t for t in trials if t["mode"] == mode]
        out["warm_node_fraction"][mode] = round(
            sum(t["node_id"] == warm for t in mine) / len(mine), 3
        )
        out["first_requests_all_models_s_median"][mode] = _med(
            [t["first_requests_s"] for t in mine]
        )
        out["first_requests_models_2_to_k_s_median"][mode] = _med(
            [sum(t["ttft_s"][1:]) for t in mine]
        )
        out["deploy_s_median"][mode] = _med([t["deploy_s"] for t in mine])
        out["deploy_plus_first_requests_s_median"][mode] = _med(
            [t["deploy_s"] + t["first_requests_s"] for t in mine]
        )
        tiers = [x for t in mine for x in t["tiers"]]
        out["disk_tier_fraction"][mode] = round(tiers.count("disk") / len(tiers), 3)
    switches: dict[str, list[float]] = {"disk": [], "object_storage": []}
    for t in trials:
        for tier, seconds in zip(t["tiers"], t["switch_s"], strict=False):
            if tier in switches and seconds is not None:
                switches[tier].append(seconds)
    out["model_switch_s_median_by_tier"] = {k: _med(v) for k, v in switches.items()}

    def ratio(key: str) -> float | None:
        placed, served = out[key]["placement"], out[key]["serve"]
        return round(served / placed, 2) if placed and served else None

    # The headline: first request of all K models; then without the first model (whose request
    # also pays the new replica's one-time engine imports), and with the deployment time added
    # (placement pays for its placer actor and the placement decision there).
    out["ratio_serve_over_placement"] = ratio("first_requests_all_models_s_median")
    out["ratio_serve_over_placement_models_2_to_k"] = ratio("first_requests_models_2_to_k_s_median")
    out["ratio_serve_over_placement_with_deploy"] = ratio("deploy_plus_first_requests_s_median")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=4, help="models K in object storage")
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds R (one deployment per mode each)"
    )
    parser.add_argument("--hidden", type=int, default=512, help="hidden size of the made models")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--warm-worker", type=int, default=0, choices=(0, 1, 2))
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    args = parser.parse_args()

    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from placement.client import PlacementClient
    from serving.cache import CacheConfig, default_cache_root, kill_node_caches, node_cache
    from serving.tiny import publish_tiny_models
    from tests.harness import S3Server, free_port, wait_alive

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="replica-placement-"))
    (work / "s3").mkdir()
    s3 = S3Server(work / "s3")
    cache_root = Path(default_cache_root()).parent / f"replica-placement-{uuid.uuid4().hex[:8]}"
    namespace = f"bench-replica-placement-{uuid.uuid4().hex[:6]}"
    cache = CacheConfig(
        root=str(cache_root),
        namespace=f"bench-rp-cache-{uuid.uuid4().hex[:6]}",
        placement_namespace=namespace,
    )
    cluster: Any = None
    client: Any = None
    trials: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    try:
        s3.start()
        bucket = s3.new_bucket()
        specs, model_bytes = publish_tiny_models(
            work,
            f"s3://{bucket}",
            args.models,
            s3.storage_options,
            id_prefix="rp-m",
            keep_folders=False,
            hidden_size=args.hidden,
            layers=args.layers,
            heads=8,
        )

        cluster = Cluster(
            initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
        )
        roles = {str(cluster.head_node.node_id): "head"}
        workers = []
        for w in range(3):
            node = cluster.add_node(num_cpus=2)
            workers.append(str(node.node_id))
            roles[str(node.node_id)] = f"worker-{w}"
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        wait_alive(4, timeout=90.0)
        client = PlacementClient(namespace, poll_s=0.3)
        warm = workers[args.warm_worker]

        prewarm_start = time.perf_counter()
        warm_cache = node_cache(cache, warm)
        prewarm = [ray.get(warm_cache.ensure.remote(spec, False), timeout=180) for spec in specs]
        prewarm_s = time.perf_counter() - prewarm_start
        assert all(p.tier == "object_storage" for p in prewarm), [p.tier for p in prewarm]

        port = free_port()
        for r in range(args.rounds):
            order = MODES if r % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                trial = run_trial(mode, r, specs, cache, namespace, port, args.max_tokens)
                trial["round"] = r
                trial["evicted_from_cold_nodes"] = _reset_cold_nodes(cache, warm, specs)
                trials.append(trial)
                print(
                    f"round {r} {mode}: {_node_role(trial['node_id'], warm, roles)}, "
                    f"tiers {trial['tiers']}, first requests {trial['first_requests_s']:.2f} s",
                    flush=True,
                )

        print()
        _print_table(trials, warm, roles)
        result = {
            "benchmark": "replica_placement",
            "setup": {
                "models": args.models,
                "rounds": args.rounds,
                "model_bytes": model_bytes,
                "hidden": args.hidden,
                "layers": args.layers,
                "max_tokens": args.max_tokens,
                "cluster": "head 1 CPU + 3 workers x 2 CPU (ray.cluster_utils.Cluster)",
                "warm_node": roles[warm],
                "prewarm_cold_fetch_s_per_model_median": _med([p.seconds for p in prewarm]),
                "prewarm_s": round(prewarm_s, 3),
                "cpus": os.cpu_count(),
            },
            **summarize(trials, warm),
            "trials": [
                {
                    "round": t["round"],
                    "mode": t["mode"],
                    "node": roles.get(t["node_id"], t["node_id"]),
                    "on_warm_node": t["node_id"] == warm,
                    "tiers": t["tiers"],
                    "deploy_s": round(t["deploy_s"], 3),
                    "first_requests_s": round(t["first_requests_s"], 3),
                    "ttft_s": [round(x, 3) for x in t["ttft_s"]],
                    "switch_s": [round(x, 3) if x is not None else None for x in t["switch_s"]],
                }
                for t in trials
            ],
            "wall_s": round(time.perf_counter() - started, 1),
        }
    finally:
        if ray.is_initialized():
            try:
                serve.shutdown()
            finally:
                if client is not None:
                    client.shutdown()
                kill_node_caches(cache)
                ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(cache_root, ignore_errors=True)
    text = json.dumps(result)
    if args.out:
        args.out.write_text(text + "\n")
    print(text, flush=True)


if __name__ == "__main__":
    main()
