"""GenSLM-style enzyme design agents: User, Generation and SequenceAnalysis.

* **Generation** samples codon sequences from the tiny codon LM served by `serving` (OpenAI API).
* **SequenceAnalysis** translates them (Biopython), aligns each protein to the parent and keeps the
  promising ones in its checkpointed repository (idempotent by gene id).
* **User** triggers rounds of generation and analysis, then monitors the repository.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from pydantic import BaseModel, Field

from academy_ray import Agent, Handle, action, loop, timer
from examples.common.runtime import retry
from examples.genslm.analysis import GeneAnalysis, analyze
from examples.genslm.codon import codons_of, parent_gene

logger = logging.getLogger(__name__)


class Gene(BaseModel):
    """A generated gene: id, DNA (no spaces), the sampling temperature, round and served version."""

    id: str
    dna: str
    temperature: float
    round: int
    model_version: str | None = None


class FineTuning(BaseModel):
    """How the User fine-tunes the served codon LM after each round.

    Attributes:
        weights_uri: The served model's versioned weights URI (each fine-tune publishes the next version).
        steps: Optimiser steps of each fine-tune.
        cpus: CPUs of the fine-tuning Ray actor.
        repeat: Each promising gene appears this many times in the fine-tune's texts.
    """

    weights_uri: str
    steps: int = Field(default=40, ge=1)
    cpus: float = Field(default=0.25, gt=0)
    repeat: int = Field(default=4, ge=1)


def orf_text(dna: str) -> str:
    """A gene's codons up to and including the first stop codon, space-separated (the LM's format)."""
    codons = codons_of(dna)
    for i, codon in enumerate(codons):
        if codon in ("TAA", "TAG", "TGA"):
            return " ".join(codons[: i + 1])
    return " ".join(codons)


class Generation(Agent):
    """Samples genes from the served codon LM, prompted with the parent's first codons.

    Args:
        base_url: The serving app's OpenAI API root (``http://host:port/.../v1``).
        model: Model id in the serving app.
        prompt_codons: Parent codons given as the prompt.
        max_codons: Codons to sample at most (the model ends a gene with its end token).
        seed: Run seed (sampling seeds are derived from it, the round and the gene's index).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        prompt_codons: int = 6,
        max_codons: int = 200,
        seed: int = 0,
    ) -> None:
        self.seed = seed
        self.base_url = base_url
        self.model = model
        self.prompt = " ".join(codons_of(parent_gene())[:prompt_codons])
        self.max_codons = max_codons
        self.sampled = 0
        self.client: Any = None

    async def agent_on_startup(self) -> None:
        from serving import Client

        self.client = Client(self.base_url, timeout=120.0)

    @action(checkpoint=False)
    async def generate(self, round: int, n: int, temperature: float) -> list[Gene]:
        """Samples ``n`` genes at ``temperature`` (seeded by round and index: a retry gives the same)."""
        genes = []
        for i in range(n):
            completion = await self.client.acomplete(
                self.model,
                self.prompt,
                max_tokens=self.max_codons,
                temperature=temperature,
                seed=self.seed * 100_000 + round * 1000 + i,
            )
            dna = (self.prompt + " " + completion.text).replace(" ", "")
            genes.append(
                Gene(
                    id=f"g{round:02d}-{i:03d}",
                    dna=dna,
                    temperature=temperature,
                    round=round,
                    model_version=completion.model_version,
                )
            )
            self.sampled += 1
        return genes

    @action(checkpoint=False)
    async def wait_for_version(self, version: str, timeout: float = 60.0) -> bool:
        """Waits until the served model answers with ``version`` (True) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = await self.client.acomplete(self.model, self.prompt, max_tokens=1)
            if answer.model_version == version:
                return True
            await asyncio.sleep(0.2)
        return False


class SequenceAnalysis(Agent):
    """Translates, aligns to the parent, and stores promising genes in its repository.

    State: ``analyzed`` (gene id -> identity, ORF, temperature, round) and ``repository`` (the promising
    genes in full).
    """

    agent_state_fields = ("analyzed", "repository")

    def __init__(self, threshold: float = 0.8) -> None:
        self.threshold = threshold
        self.analyzed: dict[str, dict[str, Any]] = {}
        self.repository: dict[str, dict[str, Any]] = {}

    @action
    async def analyze(self, genes: list[Gene]) -> list[GeneAnalysis]:
        """Analyses genes not seen before; returns the analysis of every gene given."""
        results = []
        for gene in genes:
            result = await self.agent_run_sync(analyze, gene.id, gene.dna)
            results.append(result)
            if gene.id in self.analyzed:
                continue
            self.analyzed[gene.id] = {
                "id": gene.id,
                "round": gene.round,
                "temperature": gene.temperature,
                "orf": result.orf,
                "identity": result.identity,
                "score": result.score,
                "length": result.length,
                "model_version": gene.model_version,
            }
            if result.orf and result.identity >= self.threshold:
                self.repository[gene.id] = {
                    **result.model_dump(),
                    "round": gene.round,
                    "temperature": gene.temperature,
                }
        return results

    @action(checkpoint=False)
    async def summary(self) -> dict[str, Any]:
        """Funnel counts and the best identity so far."""
        rows = list(self.analyzed.values())
        return {
            "generated": len(rows),
            "translated": sum(r["orf"] for r in rows),
            "promising": len(self.repository),
            "best_identity": max((r["identity"] for r in rows), default=0.0),
            "threshold": self.threshold,
        }

    @action(checkpoint=False)
    async def export(self) -> dict[str, Any]:
        """Every analysis and the repository."""
        return {"analyzed": list(self.analyzed.values()), "repository": self.repository}


class User(Agent):
    """Triggers rounds of generation and analysis (temperature per round), then monitors the repository.

    State: ``rounds`` (one summary per finished round), ``monitor`` (repository size over time),
    ``finished``.
    """

    agent_state_fields = ("rounds", "monitor", "finished")

    def __init__(
        self,
        generation: Handle[Any],
        analysis: Handle[Any],
        temperatures: list[float],
        per_round: int = 8,
        fine_tuning: FineTuning | None = None,
    ) -> None:
        self.generation = generation
        self.analysis = analysis
        self.temperatures = temperatures
        self.per_round = per_round
        self.fine_tuning = fine_tuning
        self._tuner: Any = None
        self.rounds: list[dict[str, Any]] = []
        self.monitor: list[dict[str, Any]] = []
        self.finished = False
        self.started = time.time()

    async def agent_on_startup(self) -> None:
        if self.fine_tuning is not None:
            from examples.common.llm import start_fine_tuner

            self._tuner = start_fine_tuner(self.fine_tuning.cpus)

    async def _fine_tune(self, number: int) -> str | None:
        """Fine-tunes the served model on the promising (complete) genes so far; returns the version
        published once the app serves it (None: nothing promising yet, or the fine-tune failed)."""
        assert self.fine_tuning is not None and self._tuner is not None
        from examples.common.llm import FineTune

        repository = (await retry(self.analysis.export))["repository"]
        texts = [orf_text(gene["dna"]) for gene in repository.values()]
        if not texts:
            return None
        job = FineTune(
            texts=texts * self.fine_tuning.repeat, steps=self.fine_tuning.steps, seed=number
        )
        try:
            result = await self._tuner.fine_tune.remote(self.fine_tuning.weights_uri, job)
        except Exception as error:  # noqa: BLE001 - the next round samples the served version
            logger.warning("fine-tuning the codon LM failed: %r", error)
            return None
        version = str(result["version"])
        await retry(self.generation.wait_for_version, version)
        return version

    @action
    async def round_done(self, summary: dict[str, Any]) -> int:
        """Records a finished round (checkpointed: a restarted User resumes with the next round)."""
        if all(r["round"] != summary["round"] for r in self.rounds):
            self.rounds.append(summary)
        self.finished = len(self.rounds) >= len(self.temperatures)
        return len(self.rounds)

    @action
    async def observe(self, snapshot: dict[str, Any]) -> None:
        """Adds one monitoring snapshot of the repository."""
        self.monitor.append(snapshot)

    @action(checkpoint=False)
    async def status(self) -> dict[str, Any]:
        """Rounds done, total rounds, finished, the latest monitoring snapshot."""
        return {
            "rounds_done": len(self.rounds),
            "rounds": len(self.temperatures),
            "finished": self.finished,
            "latest": self.monitor[-1] if self.monitor else None,
            "round_summaries": self.rounds,
        }

    @action(checkpoint=False)
    async def monitor_log(self) -> list[dict[str, Any]]:
        """Every monitoring snapshot so far."""
        return self.monitor

    @loop
    async def campaign(self, shutdown: asyncio.Event) -> None:
        """Runs the rounds not done yet."""
        for number, temperature in enumerate(self.temperatures):
            if shutdown.is_set():
                return
            if any(r["round"] == number for r in self.rounds):
                continue
            genes = await retry(self.generation.generate, number, self.per_round, temperature)
            results = await retry(self.analysis.analyze, genes)
            orfs = [r for r in results if r.orf]
            threshold = (await retry(self.analysis.summary))["threshold"]
            summary = {
                "round": number,
                "temperature": temperature,
                "model_versions": sorted({str(g.model_version) for g in genes}),
                "generated": len(results),
                "translated": len(orfs),
                "orf_rate": len(orfs) / max(1, len(results)),
                "promising": sum(r.identity >= threshold for r in orfs),
                "mean_identity": sum(r.identity for r in orfs) / max(1, len(orfs)),
                "best_identity": max((r.identity for r in orfs), default=0.0),
                "fine_tuned_to": None,
            }
            if self.fine_tuning is not None and number < len(self.temperatures) - 1:
                summary["fine_tuned_to"] = await self._fine_tune(number)
            await retry(self.agent_handle.round_done, summary)

    @timer(1.0)
    async def watch(self) -> None:
        """Monitors the repository once a second."""
        summary = await retry(self.analysis.summary)
        await self.agent_handle.observe({"t": time.time() - self.started, **summary})
