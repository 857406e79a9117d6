"""Launching the MOF agents, watching them, and collecting what they found."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from academy_ray import Handle, Runtime
from examples.common.runtime import retry
from examples.mof.agents import Assembler, Database, Estimator, Generator, Validator
from examples.mof.smiles_lm import LlmConfig

AGENTS = ("database", "estimator", "validator", "assembler", "generator")
"""Agent names, in launch order (each gets its downstream's handle)."""

logger = logging.getLogger(__name__)


class MofConfig(BaseModel):
    """Settings of one MOF discovery run.

    Attributes:
        budget: Candidates the Generator proposes in all (invalid ones included).
        batch: Candidates per Generator batch.
        retrain_every: Scored candidates between two retrains of the Generator (0: never: the
            control arm).
        insertions: Widom insertions per framework.
        max_strain: Largest UFF strain (kcal/mol) of a stable linker.
        high_water: Validator queue depth at which it throttles the Assembler.
        low_water: Depth at which it lets the Assembler go again.
        seed: Random seed of the Generator.
        llm: When set, the Generator also samples linkers from this served model.
        max_pending: The Generator proposes only while at most this many candidates are not final
            (0: no limit; it then runs ahead of the results by the Assembler's backpressure only).
        learned_share: Share of the Generator's draws that come from its learned model (the served
            model with ``llm``, else the trigram model); the rest are mutations and crossovers.
        screen: Once the first retrain has fitted the surrogate, each batch is drawn this many times
            over and the surrogate keeps the linkers it predicts best (1: no screen).
        best_share: Share of the scored linkers (the best by uptake, at least 4) a retrain trains on.
    """

    budget: int = 150
    batch: int = 4
    retrain_every: int = Field(default=10, ge=0)
    insertions: int = 2000
    max_strain: float = 5.0
    high_water: int = 6
    low_water: int = 2
    seed: int = 0
    llm: LlmConfig | None = None
    learned_share: float = Field(default=0.3, ge=0.0, le=1.0)
    max_pending: int = Field(default=0, ge=0)
    screen: int = Field(default=1, ge=1)
    best_share: float = Field(default=0.25, gt=0.0, le=1.0)


class Handles(BaseModel):
    """The running pipeline's agents."""

    model_config = {"arbitrary_types_allowed": True}

    database: Any
    estimator: Any
    validator: Any
    assembler: Any
    generator: Any


AGENT_CPUS = {"num_cpus": 0.1}


async def launch(rt: Runtime, config: MofConfig) -> Handles:
    """Launches (or re-attaches to, by name) the five agents of the pipeline."""
    database = await rt.launch(
        Database,
        kwargs={"retrain_every": config.retrain_every, "best_share": config.best_share},
        name="database",
        resources=AGENT_CPUS,
        get_if_exists=True,
    )
    estimator = await rt.launch(
        Estimator,
        args=(database,),
        kwargs={"insertions": config.insertions},
        name="estimator",
        resources=AGENT_CPUS,
        get_if_exists=True,
    )
    assembler_ref: Handle[Any] = Handle("assembler", rt.namespace)
    validator = await rt.launch(
        Validator,
        args=(database, estimator, assembler_ref),
        kwargs={
            "max_strain": config.max_strain,
            "high_water": config.high_water,
            "low_water": config.low_water,
        },
        name="validator",
        resources=AGENT_CPUS,
        get_if_exists=True,
    )
    assembler = await rt.launch(
        Assembler,
        args=(database, validator),
        name="assembler",
        resources=AGENT_CPUS,
        get_if_exists=True,
    )
    generator = await rt.launch(
        Generator,
        args=(assembler, database),
        kwargs={
            "budget": config.budget,
            "batch": config.batch,
            "seed": config.seed,
            "llm": config.llm,
            "learned_share": config.learned_share,
            "max_pending": config.max_pending,
            "screen": config.screen,
        },
        name="generator",
        resources=AGENT_CPUS,
        models=[config.llm.model] if config.llm is not None else (),
        get_if_exists=True,
    )
    await database.set_generator(generator)
    return Handles(
        database=database,
        estimator=estimator,
        validator=validator,
        assembler=assembler,
        generator=generator,
    )


def attach(rt: Runtime) -> Handles:
    """Handles to a running pipeline in ``rt``'s namespace (from another driver or a notebook)."""
    return Handles(**{name: rt.get(name) for name in AGENTS})


class Progress(BaseModel):
    """A snapshot of the pipeline."""

    funnel: dict[str, int]
    generator: dict[str, Any]
    queues: dict[str, int]
    throttles: int
    elapsed_s: float
    paused: dict[str, bool] = Field(default_factory=dict)

    @property
    def done(self) -> bool:
        """The budget is spent and every candidate reached a final stage."""
        return (
            bool(self.generator.get("finished"))
            and self.funnel.get("pending", 1) == 0
            and (self.funnel.get("generated", 0) >= self.generator.get("issued", 0))
        )


async def snapshot(handles: Handles, started: float) -> Progress:
    """Asks the agents where they are (retrying while one restarts)."""
    funnel = await retry(handles.database.funnel)
    generator = await retry(handles.generator.status)
    queues = {}
    paused = {}
    throttles = 0
    for name in ("assembler", "validator", "estimator"):
        status = await retry(getattr(handles, name).status)
        queues[name] = status.queued
        paused[name] = status.throttled
        if name == "assembler":
            throttles = status.throttle_events
    return Progress(
        funnel=funnel,
        generator=generator,
        queues=queues,
        throttles=throttles,
        elapsed_s=time.monotonic() - started,
        paused=paused,
    )


async def run_until_done(
    handles: Handles,
    timeout: float = 600.0,
    on_progress: Callable[[Progress], None] | None = None,
    interval: float = 0.5,
) -> Progress:
    """Polls the pipeline until the budget is spent and every candidate is final.

    Raises:
        TimeoutError: Not done within ``timeout`` seconds.
    """
    started = time.monotonic()
    while True:
        progress = await snapshot(handles, started)
        if on_progress is not None:
            on_progress(progress)
        if progress.done:
            return progress
        if progress.elapsed_s > timeout:
            raise TimeoutError(f"MOF pipeline not done after {timeout} s: {progress}")
        await asyncio.sleep(interval)


async def stop_all(rt: Runtime) -> None:
    """Stops the pipeline's agents (those still running) and the namespace's placement controller."""
    for name in reversed(AGENTS):
        try:
            await rt.stop(name)
        except Exception as error:  # noqa: BLE001 - already gone
            logger.debug("cleanup: %s", error)
    rt.stop_placement()
