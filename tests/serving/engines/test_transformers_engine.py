"""The transformers engine on a tiny local model."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.engines import GenerationParams
from serving.engines.transformers_engine import TransformersEngine
from serving.errors import EngineError, WeightsError


@pytest.fixture(scope="module")
async def engine(tiny_model_dirs: list[Path]):
    eng = TransformersEngine()
    await eng.load(str(tiny_model_dirs[0]))
    yield eng
    eng.unload()


async def _text(eng: TransformersEngine, prompt: str, **kw: object) -> tuple[str, list]:
    chunks = [c async for c in eng.generate(prompt, GenerationParams(**kw))]
    return "".join(c.text for c in chunks), chunks


async def test_streams_tokens_and_ends_with_finish_reason(engine: TransformersEngine) -> None:
    _, chunks = await _text(engine, "The agent asked the model", max_tokens=12, temperature=0)
    assert chunks[-1].finish_reason in ("length", "stop")
    assert all(c.finish_reason is None for c in chunks[:-1])
    assert sum(c.tokens for c in chunks) <= 12
    if chunks[-1].finish_reason == "length":
        assert sum(c.tokens for c in chunks) == 12
    assert engine.max_context == 256


async def test_greedy_is_deterministic_and_seeded_sampling_repeats(
    engine: TransformersEngine,
) -> None:
    a, _ = await _text(engine, "Proteins fold into", max_tokens=8, temperature=0)
    b, _ = await _text(engine, "Proteins fold into", max_tokens=8, temperature=0)
    c, _ = await _text(
        engine, "Proteins fold into", max_tokens=8, temperature=1.0, seed=7, top_p=0.9
    )
    d, _ = await _text(
        engine, "Proteins fold into", max_tokens=8, temperature=1.0, seed=7, top_p=0.9
    )
    assert a == b and c == d


async def test_stop_string_cuts_output(engine: TransformersEngine) -> None:
    full, _ = await _text(engine, "Ray schedules tasks", max_tokens=20, temperature=0)
    if len(full) < 4:
        pytest.skip("the random model stopped too early to pick a stop string")  # pragma: no cover
    stop = full[2:4]
    cut, chunks = await _text(
        engine, "Ray schedules tasks", max_tokens=20, temperature=0, stop=[stop]
    )
    assert cut == full[: full.find(stop)] and chunks[-1].finish_reason == "stop"


async def test_chat_template_and_token_count(engine: TransformersEngine) -> None:
    prompt = engine.chat_prompt([{"role": "user", "content": "hello"}])
    assert prompt == "user: hello\nassistant:"
    assert engine.count_tokens(prompt) > 0


async def test_unload_is_idempotent_and_generate_after_unload_fails(
    tiny_model_dirs: list[Path],
) -> None:
    eng = TransformersEngine()
    await eng.load(str(tiny_model_dirs[1]))
    eng.unload()
    eng.unload()
    with pytest.raises((EngineError, RuntimeError)):
        await _text(eng, "hello there friend", max_tokens=2)


async def test_load_from_a_folder_without_weights(tmp_path: Path) -> None:
    with pytest.raises(WeightsError):
        await TransformersEngine().load(str(tmp_path))


async def test_no_sleep_on_the_cpu_and_bad_device(tiny_model_dirs: list[Path]) -> None:
    eng = TransformersEngine(device="cpu")
    await eng.load(str(tiny_model_dirs[0]))
    try:
        assert eng.device == "cpu" and eng.supports_sleep is False
        with pytest.raises(EngineError, match="only on CUDA"):
            await eng.sleep()
        with pytest.raises(EngineError, match="only on CUDA"):
            await eng.wake()
    finally:
        eng.unload()
    with pytest.raises(EngineError, match="device must be"):
        TransformersEngine(device="tpu")


async def test_concurrent_generations_on_one_model_interleave_safely(
    engine: TransformersEngine,
) -> None:
    import asyncio

    prompt = "Many agents ask at once"
    alone = {n: (await _text(engine, prompt, max_tokens=n, temperature=0))[0] for n in (2, 5, 16)}
    # Short streams end while longer ones are mid-way (the first one started ends first): each
    # step must run in inference mode anyway.
    together = await asyncio.gather(
        *(_text(engine, prompt, max_tokens=n, temperature=0) for n in (2, 16, 5, 16))
    )
    assert [text for text, _ in together] == [alone[2], alone[16], alone[5], alone[16]]
