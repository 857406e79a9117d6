"""Inference engines behind the :class:`~serving.engines.base.Engine` protocol."""

from __future__ import annotations

from serving.engines.base import Engine, GenerationChunk, GenerationParams
from serving.spec import ModelSpec


def make_engine(spec: ModelSpec) -> Engine:
    """Creates (not loads) the engine ``spec`` asks for, configured by ``spec.engine_args``."""
    args = dict(spec.engine_args)
    tp = spec.tensor_parallel_size
    if spec.engine == "transformers":
        from serving.engines.transformers_engine import TransformersEngine

        return TransformersEngine(max_context=spec.max_context, tensor_parallel_size=tp, **args)
    from serving.engines.vllm_engine import VLLMEngine

    sleep_mode = args.pop("sleep_mode", None)
    return VLLMEngine(
        engine_args=args,
        max_context=spec.max_context,
        sleep_mode=sleep_mode,
        tensor_parallel_size=tp,
    )


def import_libraries(engine: str) -> None:
    """Imports the libraries an ``engine`` kind's first load would otherwise import.

    A replica calls this before it takes requests: the first load in a fresh process importing
    torch and transformers took 3.5-4.9 s of a tiny model's 4.4-5.7 s switch on 2 cores
    (``python -m benchmarks.serving_scale --real --trace``), against 0.02-0.06 s for later loads.

    Raises:
        ImportError: the engine's library is not installed (its loads would fail as well).
    """
    if engine == "transformers":
        from serving.engines.transformers_engine import import_libraries as transformers_libraries

        transformers_libraries()
    else:
        from serving.engines.vllm_engine import import_libraries as vllm_libraries

        vllm_libraries()


__all__ = ["Engine", "GenerationChunk", "GenerationParams", "import_libraries", "make_engine"]
