"""A light engine on Hugging Face transformers (tests, laptops, the embedded default; CUDA too)."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from serving.engines.base import (
    GenerationChunk,
    GenerationParams,
    TokenizerPrompts,
    find_stop,
    require_safetensors,
)
from serving.errors import EngineError, WeightsError
from serving.tensor_parallel import group_gpu_indices


def import_libraries() -> None:
    """Imports torch and the transformers modules every load uses (their model classes' common
    base and generation code; an architecture's own module is small)."""
    import torch  # noqa: F401
    from transformers import (  # noqa: F401
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationMixin,
        PreTrainedModel,
    )


class TransformersEngine(TokenizerPrompts):
    """Runs a causal LM with transformers, one token at a time with a KV cache.

    On CUDA it has a sleep mode: :meth:`sleep` moves the weights into pinned CPU memory and frees
    the GPU memory, :meth:`wake` copies them back, so a switched-out model costs no GPU memory and
    no reload from disk.

    Args:
        threads: torch intra-op threads (1 keeps several replicas from fighting over cores).
        max_context: overrides the model's ``max_position_embeddings``.
        dtype: torch dtype name for the weights.
        device: ``"cpu"``, ``"cuda"``/``"cuda:<n>"``, or ``"auto"`` (CUDA when torch sees a GPU:
            inside a Ray actor only when it was given ``num_gpus``, or in a tensor-parallel
            replica's placement group, whose GPUs it then uses).
        tensor_parallel_size: GPUs the model is spread over on CUDA, with a device map (layers
            split over the GPUs of the replica's placement group; needs ``accelerate``). On the
            CPU the model runs whole.
    """

    def __init__(
        self,
        threads: int = 1,
        max_context: int | None = None,
        dtype: str = "float32",
        device: str = "auto",
        tensor_parallel_size: int = 1,
    ):
        if device != "auto" and device != "cpu" and not device.startswith("cuda"):
            raise EngineError(f"device must be 'auto', 'cpu' or 'cuda[:n]', got {device!r}")
        self._threads = threads
        self._override_context = max_context
        self._dtype = dtype
        self._device_setting = device
        self._tensor_parallel_size = max(1, tensor_parallel_size)
        self._sharded = False
        self.device = "cpu"
        self.max_context = max_context or 0
        self._model: Any = None
        self._tokenizer: Any = None
        self._asleep = False
        # One thread per engine: torch calls never block the replica's event loop, and requests
        # on one model run one after another.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tf-engine")
        self._closed = False
        self._lock = threading.Lock()

    async def load(self, path: str) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._load, path)

    def _load(self, path: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(self._threads)
        device = self._device_setting
        group_gpus: list[int] | None = None
        if device == "auto":
            if torch.cuda.is_available():
                group_gpus = group_gpu_indices()  # a tensor-parallel replica's GPUs, else None
                device = f"cuda:{group_gpus[0]}" if group_gpus else "cuda"
            else:
                device = "cpu"
        placement: dict[str, Any] = {}
        if device != "cpu" and self._tensor_parallel_size > 1:
            placement = self._device_map(torch, group_gpus)
            device = f"cuda:{min(placement['max_memory'])}"
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        except ImportError:
            pass
        require_safetensors(path)
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
            self._model = AutoModelForCausalLM.from_pretrained(
                path,
                dtype=getattr(torch, self._dtype),
                use_safetensors=True,  # never unpickle .bin/.pt weights
                trust_remote_code=False,
                **placement,
            )
        except (OSError, ValueError) as exc:
            raise WeightsError(f"cannot load model from {path}: {exc}") from exc
        except Exception as exc:
            raise EngineError(f"transformers failed to load {path}: {exc!r}") from exc
        self._model.eval()
        self._sharded = bool(placement)
        if device != "cpu" and not self._sharded:
            self._model.to(device)
        self.device = device
        # transformers 5.2x renamed ``past_key_values`` to ``cache``; support both spellings.
        params = inspect.signature(self._model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        context = getattr(self._model.config, "max_position_embeddings", None) or 2048
        self.max_context = self._override_context or int(context)

    def _device_map(self, torch: Any, group_gpus: list[int] | None) -> dict[str, Any]:
        """``from_pretrained`` arguments that spread the model over ``tensor_parallel_size`` GPUs
        (the placement group's, else the first visible ones).

        Raises:
            EngineError: fewer GPUs than that, or ``accelerate`` (which device maps need) missing.
        """
        tp = self._tensor_parallel_size
        gpus = group_gpus if group_gpus is not None else list(range(torch.cuda.device_count()))
        if len(gpus) < tp:
            raise EngineError(
                f"tensor_parallel_size={tp} but this replica has {len(gpus)} GPU(s) {gpus}"
            )
        try:
            import accelerate  # noqa: F401 - transformers needs it for a device map
        except ImportError as exc:
            raise EngineError(
                f"spreading a model over {tp} GPUs needs the accelerate package "
                f"(pip install 'academy-ray[multi-gpu]'; {exc})"
            ) from exc
        memory = {index: int(torch.cuda.mem_get_info(index)[0]) for index in gpus[:tp]}
        return {"device_map": "auto", "max_memory": memory}

    def _steps(
        self, prompt: str, params: GenerationParams
    ) -> Generator[GenerationChunk, None, None]:
        import torch

        if self._model is None:
            raise EngineError("the model is not loaded (it was unloaded)")
        if self._asleep:
            raise EngineError("the engine is asleep: wake it first")
        ids = self._tokenizer(prompt, return_tensors="pt")["input_ids"].to(self.device)
        eos = self._tokenizer.eos_token_id
        generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
        past: Any = None
        pending = 0
        generated: list[int] = []
        emitted = ""
        next_input = ids
        finish: str = "length"
        # Inference mode is entered per step, never across a yield: it is a thread-local stack,
        # and generations interleaved on the engine thread would otherwise pop each other's mode.
        for _ in range(params.max_tokens):
            with torch.inference_mode():
                kwargs = {self._cache_kw: past} if past is not None else {}
                out = self._model(input_ids=next_input, use_cache=True, **kwargs)
                past = getattr(out, self._cache_kw, None)
                if past is None:
                    past = out.past_key_values
                logits = out.logits[0, -1].float()
                if params.temperature == 0.0:
                    token = int(torch.argmax(logits))
                else:
                    probs = torch.softmax(logits / params.temperature, dim=-1)
                    if params.top_p < 1.0:
                        sorted_p, order = torch.sort(probs, descending=True)
                        keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < params.top_p
                        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
                    # Sampled on the CPU: one seed gives the same tokens on every device.
                    token = int(torch.multinomial(probs.cpu(), 1, generator=generator))
            if token == eos:
                finish = "stop"
                break
            generated.append(token)
            pending += 1
            next_input = torch.tensor([[token]], device=self.device)
            text = self._tokenizer.decode(generated, skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue  # an incomplete UTF-8 sequence: wait for the next token
            cut = find_stop(text, params.stop)
            if cut >= 0:
                delta = text[len(emitted) : cut]
                yield GenerationChunk(text=delta, tokens=pending)
                pending = 0
                finish = "stop"
                emitted = text[:cut]
                break
            yield GenerationChunk(text=text[len(emitted) :], tokens=pending)
            pending = 0
            emitted = text
        if pending:
            text = self._tokenizer.decode(generated, skip_special_tokens=True)
            yield GenerationChunk(text=text[len(emitted) :], tokens=pending)
        yield GenerationChunk(finish_reason=finish)  # type: ignore[arg-type]

    async def generate(
        self, prompt: str, params: GenerationParams
    ) -> AsyncIterator[GenerationChunk]:
        loop = asyncio.get_running_loop()
        steps = self._steps(prompt, params)
        sentinel = object()
        try:
            while True:
                chunk = await loop.run_in_executor(self._pool, next, steps, sentinel)
                if chunk is sentinel:
                    return
                yield chunk  # type: ignore[misc]
        finally:
            await loop.run_in_executor(self._pool, steps.close)

    def unload(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._model = None
        self._tokenizer = None
        self._pool.shutdown(wait=False)  # reference counting frees the tensors; no gc.collect()
        if self.device != "cpu":
            _empty_cuda_cache()  # give the freed weights' blocks back to other engines

    @property
    def supports_sleep(self) -> bool:
        """True on one CUDA device (weights can wait in CPU memory), False on the CPU or when
        the model is spread over several GPUs."""
        return self.device != "cpu" and not self._sharded

    async def sleep(self) -> None:
        """Moves the weights to pinned CPU memory and frees their GPU memory (CUDA only)."""
        if not self.supports_sleep:
            raise EngineError(_NO_SLEEP)
        await asyncio.get_running_loop().run_in_executor(self._pool, self._move, "cpu")

    async def wake(self) -> None:
        """Copies slept weights back to the GPU."""
        if not self.supports_sleep:
            raise EngineError(_NO_SLEEP)
        await asyncio.get_running_loop().run_in_executor(self._pool, self._move, self.device)

    def _move(self, target: str) -> None:
        import torch

        if self._model is None:
            raise EngineError("the model is not loaded (it was unloaded)")
        to_cpu = target == "cpu"
        if to_cpu == self._asleep:
            return  # already there
        with torch.no_grad():
            for tensor in [*self._model.parameters(), *self._model.buffers()]:
                if to_cpu:
                    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
                    host.copy_(tensor.data)
                    tensor.data = host
                else:
                    tensor.data = tensor.data.to(target, non_blocking=True)
        torch.cuda.synchronize()
        if to_cpu:
            torch.cuda.empty_cache()
        self._asleep = to_cpu


_NO_SLEEP = "the transformers engine sleeps only on CUDA (its weights are on the CPU)"


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
