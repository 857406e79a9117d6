"""What the MOF agents pass to each other and what the Database stores (pydantic wire types)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from examples.mof.framework import Structure

Stage = Literal[
    "generated", "invalid", "valid", "assembly_failed", "assembled", "unstable", "stable", "scored"
]
"""Where a candidate got to. ``invalid``, ``assembly_failed``, ``unstable`` and ``scored`` are final."""

FUNNEL: tuple[str, ...] = ("generated", "valid", "assembled", "stable", "scored")
FINAL: frozenset[str] = frozenset({"invalid", "assembly_failed", "unstable", "scored"})
RANK: dict[str, int] = {
    "generated": 0,
    "invalid": 1,
    "valid": 1,
    "assembly_failed": 2,
    "assembled": 2,
    "unstable": 3,
    "stable": 3,
    "scored": 4,
}
"""Funnel depth of each stage: a candidate at depth d has passed every funnel step before d."""


class Candidate(BaseModel):
    """A proposed linker.

    Attributes:
        id: Unique id (``L000042``).
        smiles: The linker as proposed (canonical SMILES when valid).
        origin: How it was made: ``ngram`` (trigram model), ``llm`` (the served model), ``ngram_fallback``
            (trigram model standing in for a failed served-model draw), ``mutation`` or ``crossover``.
        model_version: Generator model version that proposed it (its retrain count).
        llm_version: For ``llm`` draws, the served model's version that answered (``1``: the model
            trained before the run; each fine-tune publishes the next).
    """

    id: str
    smiles: str
    origin: str
    model_version: int
    llm_version: int | None = None


class WorkItem(BaseModel):
    """A candidate travelling down the pipeline with what earlier stages found."""

    candidate: Candidate
    structure: Structure | None = None
    properties: dict[str, float] = Field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.candidate.id


class Event(BaseModel):
    """One candidate reaching one stage (recorded idempotently by the Database by ``(id, stage)``)."""

    candidate: Candidate
    stage: Stage
    properties: dict[str, float] = Field(default_factory=dict)
    reason: str | None = None
    structure: Structure | None = None


class StageStatus(BaseModel):
    """What a pipeline stage reports about itself."""

    name: str
    queued: int
    processed: int
    accepted: int = 0
    throttled: bool = False
    throttle_events: int = 0
    extra: dict[str, Any] = Field(default_factory=dict)
