"""`Demand`: what a thing to be placed needs (resources, data, models, affinity).

`placement` knows nothing about agents or models: a demand is a name, resources and a set of
*keys* (data URIs, model ids, a checkpoint key) whose bytes may already be local on some node
(see :class:`placement.inventory.Inventory`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Demand(BaseModel):
    """A request for one node's worth of resources, plus locality hints.

    Attributes:
        name: Unique name of the thing placed (e.g. an agent name). Re-placing the same name
            replaces its earlier decision.
        cpus: Logical CPUs (Ray ``CPU`` resource).
        gpus: GPUs (Ray ``GPU`` resource). A demand with ``gpus > 0`` only ever goes to a node
            with that many free GPUs.
        gpu_type: Required accelerator type (e.g. ``"A100"``), matched against the node's Ray
            ``accelerator_type:<T>`` resource or ``ray.io/accelerator-type`` label. ``None``: any.
        memory_bytes: Ray ``memory`` resource to reserve (0: none).
        resources: Extra custom Ray resources, e.g. ``{"agent_slot": 1}``.
        data_uris: Data objects the thing reads; bytes already local on a node count for it.
        model_ids: Model weights it needs (reported by model caches into the inventory).
        checkpoint_key: Inventory key of its state checkpoint (warm on the node it last ran on).
        affinity: Hard selectors: if non-empty, the node must match at least one. A selector is a
            node id (hex) or a label ``"key=value"``.
        anti_affinity: Hard selectors the node must match none of.
        reserve: True (default): the choice is reserved with a pinned placement group and the
            launcher creates its actor into it. False: the node is chosen, booked in the
            scheduler's ledger and recorded (explain, re-placement on node loss) but no placement
            group is made; the launcher's actor claims the resources itself on that node, e.g. a
            Ray Serve replica constrained by :meth:`Decision.label_selector`.
        gpu_bundles: Split the reservation into this many bundles, all on the one chosen node
            (``STRICT_PACK``): bundle 0 holds the CPUs, memory, custom resources and its share of
            the GPUs (``gpus / gpu_bundles``), every other bundle only its share of the GPUs. One
            bundle per GPU worker, e.g. per tensor-parallel rank of a model. 1: one bundle.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=256)
    cpus: float = Field(default=1.0, ge=0)
    gpus: float = Field(default=0.0, ge=0)
    gpu_type: str | None = None
    memory_bytes: int = Field(default=0, ge=0)
    resources: dict[str, float] = Field(default_factory=dict)
    data_uris: tuple[str, ...] = ()
    model_ids: tuple[str, ...] = ()
    checkpoint_key: str | None = None
    affinity: tuple[str, ...] = ()
    anti_affinity: tuple[str, ...] = ()
    reserve: bool = True
    gpu_bundles: int = Field(default=1, ge=1)

    @field_validator("resources")
    @classmethod
    def _check_resources(cls, value: dict[str, float]) -> dict[str, float]:
        for key, amount in value.items():
            if key in ("CPU", "GPU", "memory"):
                raise ValueError(f"use the cpus/gpus/memory_bytes fields, not resources[{key!r}]")
            if amount < 0:
                raise ValueError(f"resource {key!r} must be >= 0, got {amount}")
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Demand:
        if self.gpu_type is not None and self.gpus <= 0:
            raise ValueError("gpu_type is set but gpus is 0")
        if self.gpu_bundles > 1 and self.gpus <= 0:
            raise ValueError(
                f"gpu_bundles={self.gpu_bundles} splits the GPUs into bundles, but gpus is 0"
            )
        if (
            self.cpus <= 0
            and self.gpus <= 0
            and self.memory_bytes <= 0
            and not any(v > 0 for v in self.resources.values())
        ):
            raise ValueError(
                "a demand must request some resource (cpus, gpus, memory_bytes or resources): "
                "Ray placement groups cannot reserve an empty bundle"
            )
        return self

    def locality_keys(self) -> tuple[str, ...]:
        """All inventory keys whose local bytes count for this demand (data, models, checkpoint)."""
        keys = (*self.data_uris, *self.model_ids)
        if self.checkpoint_key is not None:
            keys = (*keys, self.checkpoint_key)
        return keys

    def bundle(self) -> dict[str, float]:
        """The Ray placement-group bundle that reserves this demand's resources."""
        bundle: dict[str, float] = {}
        if self.cpus > 0:
            bundle["CPU"] = self.cpus
        if self.gpus > 0:
            bundle["GPU"] = self.gpus
        if self.memory_bytes > 0:
            bundle["memory"] = float(self.memory_bytes)
        bundle.update({k: v for k, v in self.resources.items() if v > 0})
        return bundle

    def gpus_per_bundle(self) -> float:
        """GPUs in each of the :attr:`gpu_bundles` bundles."""
        return self.gpus / self.gpu_bundles

    def bundles(self) -> list[dict[str, float]]:
        """The placement group's bundles, all on one node: the total :meth:`bundle` split into
        :attr:`gpu_bundles` (bundle 0 keeps the CPUs, memory and custom resources)."""
        if self.gpu_bundles == 1:
            return [self.bundle()]
        share = self.gpus_per_bundle()
        first = {**self.bundle(), "GPU": share}
        return [first, *({"GPU": share} for _ in range(self.gpu_bundles - 1))]
