"""Model switch time: cold (object storage), warm (node cache) and hot (resident), per engine.

Runs a real SeaweedFS S3 server, publishes 8 locally made Llama models, and serves them with the
serving app on ONE replica. Next to it runs the baseline: a plain Serve multiplexed loader that
downloads the model from object storage on every load. Prints one JSON document with the
figures and the warm-vs-baseline ratio (goal: >= 5x with the transformers engine).

    .venv/bin/python -m benchmarks.model_switch            # transformers + vLLM (if .venv-vllm)
    .venv/bin/python -m benchmarks.model_switch --no-vllm
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

PROMPT = "The agent asked the model to rank candidate linkers"


# ---------------------------------------------------------------------------- baseline
class BaselineServer:
    """Serve's documented multiplexing pattern: download from object storage on every load."""

    def __init__(self, specs: list[Any]) -> None:
        from ray import serve

        self._specs = {s.id: s for s in specs}

        async def load(model_id: str) -> Any:
            return await asyncio.to_thread(self._load, model_id)

        self._get = serve.multiplexed(max_num_models_per_replica=1)(load)
        self._load_seconds: list[float] = []

    def _load(self, model_id: str) -> Any:
        import fsspec
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(1)
        start = time.perf_counter()
        spec = self._specs[model_id]
        tmp = tempfile.mkdtemp(prefix="baseline-")
        fs, base = fsspec.core.url_to_fs(spec.weights_uri, **spec.storage_options)
        fs.get(base + "/", tmp, recursive=True)
        tok = AutoTokenizer.from_pretrained(tmp)
        model = AutoModelForCausalLM.from_pretrained(tmp).eval()
        shutil.rmtree(tmp, ignore_errors=True)
        self._load_seconds.append(time.perf_counter() - start)
        return (tok, model)

    async def generate(self, prompt: str, max_tokens: int) -> int:
        import torch
        from ray import serve

        tok, model = await self._get(serve.get_multiplexed_model_id())

        def run() -> int:
            with torch.inference_mode():
                ids = tok(prompt, return_tensors="pt")["input_ids"]
                out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
            return int(out.shape[1] - ids.shape[1])

        return await asyncio.to_thread(run)

    def load_seconds(self) -> list[float]:
        return list(self._load_seconds)


# ---------------------------------------------------------------------------- helpers
async def _request(handle: Any, model_id: str, max_tokens: int) -> float:
    start = time.perf_counter()
    stream = handle.options(multiplexed_model_id=model_id, stream=True).generate.remote(
        {"prompt": PROMPT, "params": {"max_tokens": max_tokens, "temperature": 0.0}}
    )
    async for _ in stream:
        pass
    return time.perf_counter() - start


async def _baseline_request(handle: Any, model_id: str, max_tokens: int) -> float:
    start = time.perf_counter()
    await handle.options(multiplexed_model_id=model_id).generate.remote(PROMPT, max_tokens)
    return time.perf_counter() - start


def _med(values: list[float]) -> float | None:
    return round(statistics.median(values), 4) if values else None


def _deploy_ours(
    specs: list[Any], name: str, max_models: int, cache: Any, runtime_env: Any = None
) -> Any:
    from ray import serve

    from serving.deployment import ModelServer, ReplicaConfig

    options: dict[str, Any] = {"num_cpus": 0.5}
    if runtime_env:
        options["runtime_env"] = runtime_env
    app = (
        serve.deployment(ModelServer)
        .options(name="ModelServer", ray_actor_options=options)
        .bind(specs, ReplicaConfig(max_models=max_models, cache=cache))
    )
    return serve.run(app, name=name, route_prefix=None)


async def bench_transformers(
    specs: list[Any], cache: Any, max_tokens: int, rounds: int
) -> dict[str, Any]:
    from ray import serve

    # Switch times: one model per replica, so every change of model is a load.
    ours = _deploy_ours(specs, "bench-tf", 1, cache)
    base = serve.run(
        serve.deployment(BaselineServer).options(ray_actor_options={"num_cpus": 0.5}).bind(specs),
        name="bench-baseline",
        route_prefix=None,
    )
    lat: dict[str, list[float]] = {"cold": [], "warm": [], "hot": [], "baseline": []}
    for spec in specs:  # cold: first load from object storage, then hot on the same model
        lat["cold"].append(await _request(ours, spec.id, max_tokens))
        lat["hot"].append(await _request(ours, spec.id, max_tokens))
    for spec in specs:  # warm: every model was evicted, the node cache holds it
        lat["warm"].append(await _request(ours, spec.id, max_tokens))
    for spec in specs:
        lat["baseline"].append(await _baseline_request(base, spec.id, max_tokens))
    for spec in specs:
        lat["baseline"].append(await _baseline_request(base, spec.id, max_tokens))
    stats = await ours.stats.remote()
    switch = {
        tier: [e.seconds for e in stats.loads if e.tier == tier]
        for tier in ("object_storage", "disk")
    }
    base_loads = await base.load_seconds.remote()
    serve.delete("bench-tf")
    # Throughput: 8 models round-robin on one replica holding 2 (every request switches).
    rr = _deploy_ours(specs, "bench-tf-rr", 2, cache)
    await _request(rr, specs[0].id, max_tokens)  # warm the new replica's imports, as the baseline's
    n = rounds * len(specs)
    start = time.perf_counter()
    for i in range(n):
        await _request(rr, specs[i % len(specs)].id, max_tokens)
    ours_rpm = n / (time.perf_counter() - start) * 60
    start = time.perf_counter()
    for i in range(n):
        await _baseline_request(base, specs[i % len(specs)].id, max_tokens)
    base_rpm = n / (time.perf_counter() - start) * 60
    serve.delete("bench-tf-rr")
    serve.delete("bench-baseline")
    warm, baseline = _med(switch["disk"]), _med(base_loads)
    return {
        "switch_seconds_median": {
            "cold_object_storage": _med(switch["object_storage"]),
            "warm_node_cache": warm,
            "hot_resident": 0.0,
            "baseline_object_storage_every_load": baseline,
        },
        "request_seconds_median": {k: _med(v) for k, v in lat.items()},
        "requests_per_minute_8_models_round_robin": {
            "ours": round(ours_rpm, 1),
            "baseline": round(base_rpm, 1),
            "requests": n,
        },
        "ratios": {
            "baseline_over_warm_switch": round(baseline / warm, 2) if warm and baseline else None,
            "baseline_over_warm_request": round(_med(lat["baseline"]) / _med(lat["warm"]), 2),
            "cold_over_warm_switch": round(_med(switch["object_storage"]) / warm, 2)
            if warm
            else None,
            "rpm_ours_over_baseline": round(ours_rpm / base_rpm, 2),
        },
    }


async def bench_vllm(specs: list[Any], cache: Any, max_tokens: int) -> dict[str, Any]:
    import ray
    from ray import serve

    from serving.engines.vllm_cpu import runtime_env

    env = runtime_env()
    vspecs = [
        s.model_copy(
            update={"id": f"v-{s.id}", "engine": "vllm", "engine_args": {"dtype": "float32"}}
        )
        for s in specs[:2]
    ]
    ours = _deploy_ours(vspecs, "bench-vllm", 1, cache, env)
    a, b = vspecs[0].id, vspecs[1].id
    cold = await _request(ours, a, max_tokens)
    hot = await _request(ours, a, max_tokens)
    await _request(ours, b, max_tokens)
    warm = await _request(ours, a, max_tokens)
    stats = await ours.stats.remote()
    serve.delete("bench-vllm")

    # Engine start without reading weights (vLLM's dummy loader), to split the switch time.
    @ray.remote(num_cpus=0.5, runtime_env=env)
    def dummy_start(path: str) -> float:
        from serving.engines.vllm_engine import VLLMEngine

        async def run() -> float:
            eng = VLLMEngine(engine_args={"dtype": "float32"}, load_format="dummy")
            await eng.load(path)
            seconds = eng.start_seconds
            eng.unload()
            return seconds

        return asyncio.run(run())

    from serving.cache import node_cache

    local = await node_cache(cache).ensure.remote(vspecs[0], False)
    engine_start = await dummy_start.remote(local.path)
    loads = {(e.model_id, e.tier): e for e in stats.loads}
    cold_ev, warm_ev = loads[(a, "object_storage")], loads[(a, "disk")]
    return {
        "switch_seconds": {
            "cold_object_storage": round(cold_ev.seconds, 3),
            "warm_node_cache": round(warm_ev.seconds, 3),
            "hot_resident": 0.0,
        },
        "warm_split_seconds": {
            "node_cache": round(warm_ev.cache_seconds, 3),
            "engine_start_without_weights": round(engine_start, 3),
            "weight_loading": round(max(0.0, warm_ev.engine_seconds - engine_start), 3),
        },
        "cold_split_seconds": {
            "object_storage_fetch": round(cold_ev.cache_seconds, 3),
            "engine_start_and_weights": round(cold_ev.engine_seconds, 3),
        },
        "request_seconds": {
            "cold": round(cold, 3),
            "warm": round(warm, 3),
            "hot": round(hot, 3),
        },
        "ratios": {"engine_restart_over_hot_request": round(warm / hot, 1)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=512, help="hidden size of the made models")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds over the models")
    parser.add_argument("--no-vllm", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    args = parser.parse_args()

    import ray
    from ray import serve

    from serving.cache import CacheConfig, default_cache_root, kill_node_caches
    from serving.engines.vllm_cpu import vllm_venv
    from serving.tiny import publish_tiny_models
    from tests.harness import S3Server

    work = Path(tempfile.mkdtemp(prefix="model-switch-"))
    (work / "s3").mkdir()
    s3 = S3Server(work / "s3")
    cache_root = Path(default_cache_root()).parent / f"model-switch-{uuid.uuid4().hex[:8]}"
    cache = CacheConfig(root=str(cache_root), namespace=f"bench-{uuid.uuid4().hex[:6]}")
    result: dict[str, Any] = {}
    try:
        s3.start()
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
        bucket = s3.new_bucket()
        specs, model_bytes = publish_tiny_models(
            work,
            f"s3://{bucket}",
            args.models,
            s3.storage_options,
            hidden_size=args.hidden,
            layers=args.layers,
            heads=8,
        )
        serve.start(http_options={"host": "127.0.0.1", "port": 0})
        result = {
            "setup": {
                "models": args.models,
                "model_bytes": model_bytes,
                "hidden": args.hidden,
                "layers": args.layers,
                "max_tokens": args.max_tokens,
                "cache_root": cache.root,
                "cpus": os.cpu_count(),
            },
            "transformers": asyncio.run(
                bench_transformers(specs, cache, args.max_tokens, args.rounds)
            ),
        }
        if args.no_vllm:
            result["vllm"] = "skipped (--no-vllm)"
        elif not (vllm_venv() / "bin" / "python").exists():
            result["vllm"] = f"skipped (no {vllm_venv()}; run scripts/vllm-cpu-venv.sh)"
        else:
            # A cache of its own, so that the vLLM cold load really comes from object storage.
            vcache = cache.model_copy(
                update={"root": cache.root + "-vllm", "namespace": cache.namespace + "-vllm"}
            )
            try:
                result["vllm"] = asyncio.run(bench_vllm(specs, vcache, args.max_tokens))
            finally:
                kill_node_caches(vcache)
                shutil.rmtree(vcache.root, ignore_errors=True)
    finally:
        if ray.is_initialized():
            serve.shutdown()
            kill_node_caches(cache)
            ray.shutdown()
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(cache_root, ignore_errors=True)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text, flush=True)


if __name__ == "__main__":
    main()
