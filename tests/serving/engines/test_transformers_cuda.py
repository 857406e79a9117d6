"""The transformers engine's sleep mode on a real GPU (skipped where torch sees no CUDA device)."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.engines import GenerationParams
from serving.engines.transformers_engine import TransformersEngine
from serving.errors import EngineError

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


async def _greedy(eng: TransformersEngine, prompt: str) -> str:
    params = GenerationParams(max_tokens=12, temperature=0)
    return "".join([c.text async for c in eng.generate(prompt, params)])


async def test_sleep_frees_gpu_memory_and_wake_gives_the_same_tokens(
    tiny_model_dirs: list[Path],
) -> None:
    # Compared with the memory in use just before each step: CUDA libraries keep workspaces (e.g.
    # cuBLAS, 32 MiB on an H200) allocated through torch once the first matrix product ran.
    eng = TransformersEngine(device="auto")
    await eng.load(str(tiny_model_dirs[1]))
    try:
        assert eng.device == "cuda" and eng.supports_sleep
        weights = sum(p.numel() * p.element_size() for p in eng._model.parameters())
        first = await _greedy(eng, "Metal organic frameworks")

        torch.cuda.synchronize()
        awake = torch.cuda.memory_allocated()
        await eng.sleep()
        assert awake - torch.cuda.memory_allocated() >= weights  # the weights left the GPU
        assert all(p.device.type == "cpu" and p.is_pinned() for p in eng._model.parameters())
        with pytest.raises(EngineError, match="asleep"):
            await _greedy(eng, "Metal organic frameworks")
        await eng.sleep()  # idempotent

        asleep = torch.cuda.memory_allocated()
        await eng.wake()
        assert torch.cuda.memory_allocated() - asleep >= weights
        assert all(p.device.type == "cuda" for p in eng._model.parameters())
        assert await _greedy(eng, "Metal organic frameworks") == first
        torch.cuda.synchronize()
        loaded = torch.cuda.memory_allocated()
    finally:
        eng.unload()
    torch.cuda.synchronize()
    assert loaded - torch.cuda.memory_allocated() >= weights  # unload frees them too
