"""Model specifications and the model registry."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from serving.errors import ModelNotFoundError

EngineKind = Literal["transformers", "vllm"]


class ModelSpec(BaseModel):
    """What a model is and where its weights live.

    Attributes:
        id: the model name clients use (OpenAI's ``model`` field).
        weights_uri: an fsspec folder URI (``s3://bucket/models/x``, ``file:///...``) holding the
            safetensors files, ``config.json``, the tokenizer files and the checksum manifest that
            :func:`serving.storage.publish_model` writes.
        engine: which engine runs it.
        engine_args: engine keyword arguments (e.g. vLLM's ``max_model_len``, ``dtype``).
        gpus: GPUs one copy of the model needs (0 for CPU; with tensor parallelism, left 0 or
            ``tensor_parallel_size``).
        tensor_parallel_size: GPUs one copy of the model is split over (one tensor-parallel rank
            each). Above 1, a replica serving it reserves that many one-GPU bundles on one node
            (see :mod:`serving.tensor_parallel`); a size no node can hold is refused when the
            app is deployed.
        max_context: context length in tokens; ``None`` reads ``max_position_embeddings`` from config.
        storage_options: fsspec keyword arguments for ``weights_uri`` (credentials, endpoint).
        owned_by: OpenAI's ``owned_by`` field in ``/v1/models``.
        versioned: ``weights_uri`` holds versions (``versions/<name>/`` and ``current.json``,
            see :mod:`serving.versions`) rather than one model folder.
        version: a versioned spec pinned to this version (``None``: follow the current one); on
            a concrete spec (:func:`serving.versions.resolve_version`), the version it is.
        version_poll_seconds: how often replicas look for a new current version.
        min_replicas: replicas that keep the model loaded even without traffic (policy routing).
        max_replicas: most replicas that load it at once (``None``: no bound).
        latency_target_s: while the model's recent latency is above this and its requests queue,
            the replica manager loads it on one more replica (``None``: load-based only).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]*$")
    weights_uri: str = Field(min_length=1)
    engine: EngineKind = "transformers"
    engine_args: dict[str, Any] = Field(default_factory=dict)
    gpus: float = Field(default=0.0, ge=0)
    max_context: int | None = Field(default=None, gt=0)
    storage_options: dict[str, Any] = Field(default_factory=dict, repr=False)
    owned_by: str = "academy-ray"
    versioned: bool = False
    version: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    version_poll_seconds: float = Field(default=2.0, gt=0)
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    latency_target_s: float | None = Field(default=None, gt=0)
    tensor_parallel_size: int = Field(default=1, ge=1)

    @field_validator("weights_uri")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_tensor_parallel(self) -> ModelSpec:
        tp = self.tensor_parallel_size
        if tp > 1 and self.gpus not in (0, tp):
            raise ValueError(
                f"tensor_parallel_size={tp} runs one rank per GPU: gpus must be {tp} "
                f"(or left 0), not {self.gpus:g}"
            )
        return self


class ModelRegistry:
    """The set of models a deployment can serve, by id."""

    def __init__(self, specs: Iterable[ModelSpec] = ()) -> None:
        self._specs: dict[str, ModelSpec] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: ModelSpec) -> None:
        """Registers a model.

        Raises:
            ValueError: a different model with the same id is already registered.
        """
        old = self._specs.get(spec.id)
        if old is not None and old != spec:
            raise ValueError(f"model id {spec.id!r} is already registered with another spec")
        self._specs[spec.id] = spec

    def get(self, model_id: str) -> ModelSpec:
        """Returns a model's spec.

        Raises:
            ModelNotFoundError: no model has this id.
        """
        try:
            return self._specs[model_id]
        except KeyError:
            raise ModelNotFoundError(
                f"The model {model_id!r} does not exist", param="model"
            ) from None

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._specs

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(self._specs.values())

    def __len__(self) -> int:
        return len(self._specs)

    def ids(self) -> list[str]:
        """Model ids in registration order."""
        return list(self._specs)
