"""Model switch on a GPU: sleep mode (weights parked in pinned CPU memory) against an engine restart.

Usage: ``python -m benchmarks.gpu_sleep [--hidden 2048 --layers 12 --switches 6 --json out.json]``
(needs a CUDA GPU; no Ray). Two random Llama models of the given shape are made locally and
served by the transformers engine in bfloat16. Switching from one to the other is timed two ways
in the same process, alternating: the baseline unloads the engine and loads the other model from
local disk (an engine restart with the file in the page cache: the best case for a restart), the
sleep path puts the current engine to sleep and wakes the other. Every switch is checked: the
woken model gives the same greedy tokens as before it slept. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from serving.engines import GenerationParams
from serving.engines.transformers_engine import TransformersEngine
from serving.tiny import make_tiny_llama

PROMPT = "Metal organic frameworks adsorb"


async def _greedy(engine: TransformersEngine) -> str:
    params = GenerationParams(max_tokens=16, temperature=0)
    return "".join([c.text async for c in engine.generate(PROMPT, params)])


async def _load(path: Path, dtype: str) -> tuple[TransformersEngine, float]:
    import torch

    start = time.perf_counter()
    engine = TransformersEngine(dtype=dtype, device="cuda")
    await engine.load(str(path))
    torch.cuda.synchronize()
    return engine, time.perf_counter() - start


async def run(hidden: int, layers: int, switches: int, dtype: str) -> dict[str, Any]:
    import torch

    root = Path(tempfile.mkdtemp(prefix="gpu-sleep-"))
    made = time.perf_counter()
    paths = [
        make_tiny_llama(root / f"m{i}", seed=i, hidden_size=hidden, layers=layers, heads=16)
        for i in range(2)
    ]
    made = time.perf_counter() - made

    # Reference outputs, and a warm-up of CUDA and the page cache.
    reference = []
    for path in paths:
        engine, _ = await _load(path, dtype)
        reference.append(await _greedy(engine))
        engine.unload()

    restart, sleep, wake, hot = [], [], [], []
    correct = True
    # Sleep path: both engines exist; one awake at a time.
    engines = [(await _load(p, dtype))[0] for p in paths]
    weights = sum(p.numel() * p.element_size() for p in engines[0]._model.parameters())
    params = sum(p.numel() for p in engines[0]._model.parameters())
    torch.cuda.synchronize()
    both_awake = torch.cuda.memory_allocated()
    await engines[1].sleep()
    freed_by_sleep = both_awake - torch.cuda.memory_allocated()
    awake = 0
    for index in range(switches):
        # Baseline: an engine restart (unload, load the other model from local disk).
        current, _ = await _load(paths[index % 2], dtype)
        current.unload()
        torch.cuda.synchronize()
        _, seconds = await _load(paths[(index + 1) % 2], dtype)
        restart.append(seconds)
        _.unload()
        # Sleep mode: park the awake engine, wake the other.
        start = time.perf_counter()
        await engines[awake].sleep()
        sleep.append(time.perf_counter() - start)
        other = 1 - awake
        start = time.perf_counter()
        await engines[other].wake()
        wake.append(time.perf_counter() - start)
        awake = other
        start = time.perf_counter()
        correct &= await _greedy(engines[awake]) == reference[awake]
        hot.append(time.perf_counter() - start)
    for engine in engines:
        engine.unload()

    switch = [s + w for s, w in zip(sleep, wake, strict=True)]
    result = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "params": params,
        "weights_bytes_on_gpu": weights,
        "dtype": dtype,
        "switches": switches,
        "make_models_s": round(made, 2),
        "restart_median_s": statistics.median(restart),
        "sleep_median_s": statistics.median(sleep),
        "wake_median_s": statistics.median(wake),
        "sleep_wake_switch_median_s": statistics.median(switch),
        "speedup_vs_restart": statistics.median(restart) / statistics.median(switch),
        "wake_gb_per_s": weights / statistics.median(wake) / 1e9,
        "gpu_bytes_freed_by_sleep": freed_by_sleep,
        "hot_16_tokens_median_s": statistics.median(hot),
        "same_tokens_after_wake": correct,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--switches", type=int, default=6)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    result = asyncio.run(run(args.hidden, args.layers, args.switches, args.dtype))
    print(
        f"GPU {result['gpu']}, {result['params'] / 1e9:.2f} B params, "
        f"{result['weights_bytes_on_gpu'] / 2**30:.2f} GiB of weights ({result['dtype']})"
    )
    print(f"{'switch':<34}{'median s':>10}")
    print(f"{'engine restart (baseline)':<34}{result['restart_median_s']:>10.3f}")
    print(f"{'sleep (weights -> pinned CPU)':<34}{result['sleep_median_s']:>10.3f}")
    print(f"{'wake (weights -> GPU)':<34}{result['wake_median_s']:>10.3f}")
    print(f"{'sleep + wake':<34}{result['sleep_wake_switch_median_s']:>10.3f}")
    print(
        f"speed-up vs restart: {result['speedup_vs_restart']:.1f}x; "
        f"GPU bytes freed by a sleep: {result['gpu_bytes_freed_by_sleep']}; "
        f"same tokens after wake: {result['same_tokens_after_wake']}"
    )
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
