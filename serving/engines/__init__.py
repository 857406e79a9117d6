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


__all__ = ["Engine", "GenerationChunk", "GenerationParams", "make_engine"]
