"""The five MOF discovery agents: Generator, Assembler, Validator, Estimator and Database.

Delivery is at-least-once and every receiver is idempotent, so a crash anywhere (the agent is restarted
from its checkpoint) neither loses nor double counts a candidate:

* a stage's inbox is checkpointed state: ``submit`` returns only once the item is durable;
* a stage works on the head of its inbox and removes it (through its own checkpointed ``done`` action)
  only after the Database and the next stage acknowledged the results;
* the Database records an event once per ``(candidate, stage)``; a stage ignores ids it already holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, ClassVar

import numpy as np
import ray

from academy_ray import Agent, AgentError, AgentNotFoundError, Handle, action, event, loop
from examples.common.runtime import retry
from examples.mof.framework import (
    AssemblyError,
    Linker3D,
    build_framework,
    embed_linker,
    straightened_strain,
)
from examples.mof.linkers import (
    SEED_LINKERS,
    NgramModel,
    canonical_linker,
    crossover,
    mutate,
    tokenize,
)
from examples.mof.records import FINAL, FUNNEL, Candidate, Event, StageStatus, WorkItem
from examples.mof.smiles_lm import BOS, LlmConfig, fine_tune_texts
from examples.mof.surrogate import MIN_POINTS, UptakeSurrogate
from examples.mof.widom import widom_uptake

logger = logging.getLogger(__name__)

IDLE_S = 0.05
DRAW_COUNTS = ("drawn", "valid", "sent", "duplicate")
"""What the Generator counts of its draws per origin: new or invalid strings drawn, the valid ones among
them, those sent down the pipeline (the surrogate screen drops the rest), and valid draws it already
knew (drawn again instead)."""
RESYNC_S = 1.0  # how often the Validator restates its backpressure to the Assembler


class Database(Agent):
    """Records every candidate and event; retrains the Generator on the best scored linkers every few scores.

    ``retrain_every=0`` never retrains (the control arm of `benchmarks.examples_learning`). A retrain
    hands the Generator the best ``best_share`` of the scored linkers by uptake (at least ``min_best``;
    scored means assembled, validated stable and estimated) and every scored linker's uptake (its
    surrogate's training data).

    State: ``records`` (candidate id -> record), ``retrains`` (when, after how many scores, best
    uptake), ``best_structures`` (the top-k frameworks), ``history`` ((time, uptake) per score).
    """

    agent_state_fields = (
        "records",
        "retrains",
        "best_structures",
        "history",
        "started",
        "generator_name",
    )

    def __init__(
        self,
        retrain_every: int = 10,
        keep_structures: int = 5,
        best_share: float = 0.25,
        min_best: int = 4,
    ) -> None:
        self.retrain_every = retrain_every
        self.keep_structures = keep_structures
        self.best_share = best_share
        self.min_best = min_best
        self.records: dict[str, dict[str, Any]] = {}
        self.retrains: list[dict[str, float]] = []
        self.best_structures: dict[str, dict[str, Any]] = {}
        self.history: list[list[float]] = []
        self.started = time.time()
        self.generator_name: str | None = None
        self.retrain_needed = asyncio.Event()

    @action
    async def set_generator(self, generator: Handle[Any]) -> None:
        """Who to retrain (given after launch: the Generator needs the Database's handle too)."""
        self.generator_name = generator.name

    @action
    async def record(self, events: list[Event]) -> int:
        """Records events; an event already recorded for its ``(candidate, stage)`` is ignored.

        Returns:
            How many events were new.
        """
        new = 0
        for ev in events:
            rec = self.records.setdefault(
                ev.candidate.id,
                {
                    "id": ev.candidate.id,
                    "smiles": ev.candidate.smiles,
                    "origin": ev.candidate.origin,
                    "model_version": ev.candidate.model_version,
                    "llm_version": ev.candidate.llm_version,
                    "stages": {},
                    "reason": None,
                },
            )
            if ev.stage in rec["stages"]:
                continue
            new += 1
            rec["stages"][ev.stage] = time.time() - self.started
            rec.update({k: float(v) for k, v in ev.properties.items()})
            if ev.reason:
                rec["reason"] = ev.reason
            if ev.stage == "scored":
                self._scored(rec, ev)
        return new

    def _scored(self, rec: dict[str, Any], ev: Event) -> None:
        uptake = float(rec["uptake_mol_kg"])
        self.history.append([rec["stages"]["scored"], uptake])
        if ev.structure is not None:
            self.best_structures[rec["id"]] = ev.structure.model_dump()
            ranked = sorted(
                self.best_structures,
                key=lambda i: self.records[i].get("uptake_mol_kg", 0.0),
                reverse=True,
            )
            for drop in ranked[self.keep_structures :]:
                del self.best_structures[drop]
        if (
            self.retrain_every
            and len(self.history) - self._scored_at_last_retrain() >= self.retrain_every
        ):
            self.retrain_needed.set()

    def _scored_at_last_retrain(self) -> int:
        return int(self.retrains[-1]["n_scored"]) if self.retrains else 0

    @event("retrain_needed")
    async def retrain(self) -> None:
        """Retrains the Generator on the best scored linkers (and all scored uptakes)."""
        if self.generator_name is None:
            return
        generator: Handle[Any] = Handle(self.generator_name, self.agent_context.namespace)
        scored = [r for r in self.records.values() if "scored" in r["stages"]]
        scored.sort(key=lambda r: r["uptake_mol_kg"], reverse=True)
        keep = max(self.min_best, int(len(scored) * self.best_share))
        best = [r["smiles"] for r in scored[:keep]]
        uptakes = {r["smiles"]: float(r["uptake_mol_kg"]) for r in scored}
        try:
            done = await retry(generator.retrain, best, uptakes)
        except Exception as error:  # noqa: BLE001 - the generator may have finished and stopped
            logger.info("retrain skipped: %s", error)
            return
        await retry(  # the storage may be down: retried until durable (idempotent by version)
            self.agent_handle.note_retrain,
            len(scored),
            float(scored[0]["uptake_mol_kg"]),
            int(done["version"]),
            done.get("llm_version"),
        )

    @action
    async def note_retrain(
        self, n_scored: int, best: float, version: int, llm_version: int | None = None
    ) -> None:
        """Records a retrain (a checkpointed action, so the record survives a crash); once per version.

        ``llm_version``: the served model's version the retrain published (None: not fine-tuned).
        """
        if any(r["version"] == version for r in self.retrains):
            return
        self.retrains.append(
            {
                "t": time.time() - self.started,
                "n_scored": n_scored,
                "best": best,
                "version": version,
                "llm_version": llm_version,
            }
        )

    @action(checkpoint=False)
    async def funnel(self) -> dict[str, int]:
        """Candidates that reached each funnel step, plus ``pending`` (not at a final stage yet)."""
        counts = dict.fromkeys(FUNNEL, 0)
        pending = 0
        for rec in self.records.values():
            for stage in FUNNEL:
                counts[stage] += stage in rec["stages"]
            if not FINAL.intersection(rec["stages"]):
                pending += 1
        counts["pending"] = pending
        counts["retrains"] = len(self.retrains)
        return counts

    @action(checkpoint=False)
    async def export(self) -> dict[str, Any]:
        """Everything recorded: records, retrains, history and the best structures."""
        return {
            "records": list(self.records.values()),
            "retrains": self.retrains,
            "history": self.history,
            "best_structures": self.best_structures,
        }


class Stage(Agent):
    """A pipeline stage with a checkpointed inbox, worked in order by one loop.

    Subclasses implement `process`: it returns the Database events and, if the item goes on, the item
    for the next stage.
    """

    agent_state_fields: ClassVar[tuple[str, ...]] = ("inbox", "processed", "seen")

    def __init__(self, database: Handle[Any], downstream: Handle[Any] | None = None) -> None:
        self.database = database
        self.downstream = downstream
        self.inbox: list[dict[str, Any]] = []
        self.processed = 0
        self.seen: list[str] = []
        self._seen: set[str] = set()
        self._resume = asyncio.Event()
        self._resume.set()
        self.throttle_events = 0

    async def agent_on_startup(self) -> None:
        self._seen = set(self.seen)

    def agent_restore(self, state: dict[str, Any]) -> None:
        super().agent_restore(state)
        self._seen = set(self.seen)

    @action
    async def submit(self, items: list[WorkItem]) -> int:
        """Queues items (ids already seen are ignored); returns the queue depth once durable."""
        for item in items:
            if item.id in self._seen:
                continue
            self._seen.add(item.id)
            self.seen.append(item.id)
            self.inbox.append(item.model_dump())
        await self.on_depth(len(self.inbox))
        return len(self.inbox)

    async def on_depth(self, depth: int) -> None:
        """Called after each submit with the new queue depth (backpressure hook)."""

    @action
    async def done(self, item_id: str) -> int:
        """Removes a finished item from the head of the inbox (durably)."""
        self.inbox = [item for item in self.inbox if item["candidate"]["id"] != item_id]
        self.processed += 1
        await self.on_depth(len(self.inbox))
        return len(self.inbox)

    @action(checkpoint=False)
    async def throttle(self, on: bool) -> None:
        """Pauses (``on``) or resumes this stage's work loop: the next stage's backpressure."""
        if on and self._resume.is_set():
            self.throttle_events += 1
            self._resume.clear()
        elif not on:
            self._resume.set()

    @action(checkpoint=False)
    async def status(self) -> StageStatus:
        """Queue depth, items processed, throttling."""
        return StageStatus(
            name=self.agent_name,
            queued=len(self.inbox),
            processed=self.processed,
            accepted=len(self.seen),
            throttled=not self._resume.is_set(),
            throttle_events=self.throttle_events,
        )

    async def process(self, item: WorkItem) -> tuple[list[Event], WorkItem | None]:
        """Does the stage's work on one item."""
        raise NotImplementedError

    @loop
    async def work(self, shutdown: asyncio.Event) -> None:
        """Works the inbox head first; forwards, records, then removes the item."""
        while not shutdown.is_set():
            if not self.inbox:
                await asyncio.sleep(IDLE_S)
                continue
            await self._resume.wait()
            item = WorkItem.model_validate(self.inbox[0])
            events, forward = await self.process(item)
            if forward is not None and self.downstream is not None:
                await retry(self.downstream.submit, [forward])
            await retry(self.database.record, events)
            await retry(self.agent_handle.done, item.id)


class Assembler(Stage):
    """Builds a cubic pcu framework around a Zn node from the linker's 3D geometry (RDKit + ASE)."""

    async def process(self, item: WorkItem) -> tuple[list[Event], WorkItem | None]:
        def assemble() -> tuple[Linker3D, Any, dict[str, float]]:
            linker = embed_linker(item.candidate.smiles)
            structure, props = build_framework(linker)
            return linker, structure, props

        try:
            _, structure, props = await self.agent_run_sync(assemble)
        except AssemblyError as error:
            return [
                Event(candidate=item.candidate, stage="assembly_failed", reason=str(error))
            ], None
        props = {f"framework_{k}": v for k, v in props.items()}
        forward = WorkItem(candidate=item.candidate, structure=structure, properties=props)
        return [Event(candidate=item.candidate, stage="assembled", properties=props)], forward


class Validator(Stage):
    """Stability: the linker's UFF strain when the framework holds it straight (RDKit).

    Throttles the Assembler while its own queue is deeper than ``high_water`` and until it has drained
    to ``low_water``.
    """

    def __init__(
        self,
        database: Handle[Any],
        downstream: Handle[Any] | None = None,
        assembler: Handle[Any] | None = None,
        max_strain: float = 5.0,
        high_water: int = 6,
        low_water: int = 2,
    ) -> None:
        super().__init__(database, downstream)
        self.assembler = assembler
        self.max_strain = max_strain
        self.high_water = high_water
        self.low_water = low_water
        self._throttling = False
        self.throttles_sent = 0

    @loop
    async def resync_throttle(self, shutdown: asyncio.Event) -> None:
        """Keeps telling the Assembler whether to pause (level-triggered, every ``RESYNC_S``).

        The edges sent by `on_depth` can arrive out of order when the Assembler restarts meanwhile:
        a "pause" retried during its outage may land after the "resume" that followed it, and the
        Assembler would stay paused with nothing left to resume it (seen in the chaos runs). The
        throttle flag is not checkpointed either, so the first resync after a (re)start derives it
        from this queue's depth.
        """
        if self.assembler is None:
            return
        self._throttling = len(self.inbox) >= self.high_water
        while not shutdown.is_set():
            try:
                await retry(self.assembler.throttle, self._throttling, not_found_s=0.0)
            except AgentNotFoundError:  # not launched yet, or being re-placed: it starts unpaused
                pass
            except AgentError as error:  # away for long: the next round tries again
                logger.info("throttle resync failed: %s", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(shutdown.wait(), RESYNC_S)

    async def on_depth(self, depth: int) -> None:
        if self.assembler is None:
            return
        if depth >= self.high_water and not self._throttling:
            self._throttling = True
            self.throttles_sent += 1
            await retry(self.assembler.throttle, True)
        elif depth <= self.low_water and self._throttling:
            self._throttling = False
            await retry(self.assembler.throttle, False)

    async def process(self, item: WorkItem) -> tuple[list[Event], WorkItem | None]:
        def validate() -> tuple[float, Any, dict[str, float]]:
            linker = embed_linker(item.candidate.smiles)
            relaxed, strain = straightened_strain(linker)
            structure, props = build_framework(relaxed)
            return strain, structure, props

        try:
            strain, structure, props = await self.agent_run_sync(validate)
        except AssemblyError as error:
            return [Event(candidate=item.candidate, stage="unstable", reason=str(error))], None
        props = {**item.properties, "strain_kcal_mol": strain, "framework_a": props["a"]}
        if strain > self.max_strain:
            reason = f"strain {strain:.1f} > {self.max_strain} kcal/mol"
            return [
                Event(candidate=item.candidate, stage="unstable", properties=props, reason=reason)
            ], None
        forward = WorkItem(candidate=item.candidate, structure=structure, properties=props)
        return [Event(candidate=item.candidate, stage="stable", properties=props)], forward

    @action(checkpoint=False)
    async def status(self) -> StageStatus:
        """Queue depth, items processed, throttle signals sent to the Assembler."""
        status = await super().status()
        status.extra = {"throttles_sent": self.throttles_sent, "throttling": self._throttling}
        return status


class Estimator(Stage):
    """CO2 uptake at 298 K and 0.1 bar by Widom insertion with Lennard-Jones (numpy)."""

    def __init__(
        self, database: Handle[Any], insertions: int = 2000, temperature: float = 298.0
    ) -> None:
        super().__init__(database, None)
        self.insertions = insertions
        self.temperature = temperature

    async def process(self, item: WorkItem) -> tuple[list[Event], WorkItem | None]:
        assert item.structure is not None
        seed = int(item.id.lstrip("L") or 0)
        uptake = await self.agent_run_sync(
            widom_uptake, item.structure, self.insertions, self.temperature, 1.0e4, 12.0, seed
        )
        props = {**item.properties, **uptake.model_dump()}
        props.pop("insertions", None)
        return [
            Event(
                candidate=item.candidate, stage="scored", properties=props, structure=item.structure
            )
        ], None


class Generator(Agent):
    """Proposes linkers from a trigram SMILES model, mutations and crossovers of its training set.

    The model (a numpy array) and the training set are retrained online by the Database. Generated
    candidates go through a checkpointed outbox, so none is lost or re-issued under another id.

    With ``max_pending`` set, a batch is proposed only while at most that many candidates (the
    batch included) are not final yet: proposals then follow the results, and a retrain shapes the
    rest of the run rather than a backlog.

    A share ``learned_share`` of the draws comes from the learned model, the rest from mutations and
    crossovers of the training set (55:15). With ``llm`` set, a share (``llm.ratio``) of the learned
    draws go to a model served by `serving` (through `serving.Client.acomplete`) instead of the trigram
    model; their origin is ``llm`` and ``llm_version`` names the served version that answered. A retrain
    refits the trigram model and the training set (the served model's prompts start with its linkers)
    and, when ``llm.weights_uri`` is set, fine-tunes the served model in a Ray actor that publishes the
    next version; the serving app moves to it without dropping a draw. A draw the served model cannot
    answer (app down, model unknown, timeout, any error) is logged and made by the trigram model
    instead, with origin ``ngram_fallback``; draws then skip the served model for ``llm.retry_after_s``.

    Surrogate screen: each retrain also fits an `UptakeSurrogate` on every scored linker's uptake; from
    then on, with ``screen`` > 1, each batch is drawn ``screen`` times over and the surrogate keeps the
    valid linkers it predicts best (the rest are dropped unsent). ``draws`` counts every draw, kept or
    not, by origin and served version: the learned model's valid rate is measured on them.
    """

    agent_state_fields = (
        "weights",
        "training",
        "model_version",
        "issued",
        "outbox",
        "known",
        "finished",
        "llm_stats",
        "fine_tunes",
        "surrogate_data",
        "draws",
    )

    def __init__(
        self,
        assembler: Handle[Any],
        database: Handle[Any],
        budget: int = 200,
        batch: int = 4,
        seed: int = 0,
        max_assembler_queue: int = 8,
        llm: LlmConfig | None = None,
        learned_share: float = 0.3,
        max_pending: int = 0,
        screen: int = 1,
    ) -> None:
        self.assembler = assembler
        self.database = database
        self.budget = budget
        self.batch = batch
        self.seed = seed
        self.max_assembler_queue = max_assembler_queue
        self.training: list[str] = list(SEED_LINKERS)
        self.weights = NgramModel.fit(self.training).weights
        self.model_version = 0
        self.issued = 0
        self.outbox: list[dict[str, Any]] = []
        self.known: list[str] = [str(canonical_linker(s)) for s in SEED_LINKERS]
        self.finished = False
        self.waits = 0
        self.llm = llm
        self.learned_share = learned_share
        self.max_pending = max_pending
        self.fine_tunes: list[dict[str, Any]] = []
        self.llm_stats: dict[str, Any] = {
            "requests": 0,
            "errors": 0,
            "fallbacks": 0,
            "last_error": None,
        }
        self._client: Any = None
        self._tuner: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._llm_paused_until = 0.0
        self.screen = screen
        self.surrogate_data: dict[str, float] = {}
        self._surrogate: UptakeSurrogate | None = None
        self.draws: dict[str, dict[str, int]] = {}

    def agent_restore(self, state: dict[str, Any]) -> None:
        super().agent_restore(state)
        self._fit_surrogate()

    def _fit_surrogate(self) -> None:
        if len(self.surrogate_data) >= MIN_POINTS:
            self._surrogate = UptakeSurrogate(
                list(self.surrogate_data), list(self.surrogate_data.values())
            )

    async def agent_on_startup(self) -> None:
        if self.llm is not None:
            from serving import Client

            self._client = Client(self.llm.base_url, timeout=self.llm.timeout_s)
            if self.llm.weights_uri is not None and self.llm.fine_tune_steps > 0:
                from examples.common.llm import start_fine_tuner

                # the driver's pre-started one if it is there (warm), else one of our own
                self._tuner = start_fine_tuner(
                    self.llm.fine_tune_cpus, self.llm.fine_tuner, self.agent_context.namespace
                )

    @action
    async def retrain(
        self, smiles: list[str], uptakes: dict[str, float] | None = None
    ) -> dict[str, Any]:
        """Retrains on ``smiles`` (the Database's best linkers) and ``uptakes`` (all scored so far).

        The trigram model is refitted (seeds plus ``smiles`` weighted x3); mutations, crossovers and
        the served model's prompts start from ``smiles`` (from the seeds too while there are fewer
        than 4); the surrogate screen is refitted on ``uptakes``. With a served model that has a
        versioned ``weights_uri``, a Ray actor (`FineTuner`) fine-tunes its current version on
        ``smiles`` and publishes the next version, which the serving app moves to.

        Returns:
            ``version`` (the Generator's retrain count) and ``llm_version`` (the version published, or
            None).
        """
        parents = list(dict.fromkeys(smiles))
        self.training = (
            parents if len(parents) >= 4 else list(dict.fromkeys([*parents, *SEED_LINKERS]))
        )
        self.weights = NgramModel.fit(list(SEED_LINKERS) + list(smiles) * 3).weights
        self.model_version += 1
        if uptakes:
            self.surrogate_data.update(uptakes)
            self._fit_surrogate()
        llm_version = None
        llm = self.llm
        if llm is not None and self._tuner is not None:
            from examples.common.llm import FineTune

            job = FineTune(
                texts=fine_tune_texts(smiles, llm.replay, seed=self.seed + self.model_version),
                steps=llm.fine_tune_steps,
                seed=self.seed + self.model_version,
                add_bos=True,
            )
            ref = self._tuner.fine_tune.remote(llm.weights_uri, job)
            submitted = time.monotonic()
            try:
                result = await asyncio.wait_for(
                    asyncio.wrap_future(ref.future()), llm.fine_tune_timeout_s
                )
            except Exception as error:  # noqa: BLE001 - the run goes on with the served version
                ray.cancel(ref)
                logger.warning("fine-tuning the served model failed: %r", error)
            else:
                llm_version = int(result["version"])
                wall = time.monotonic() - submitted
                self.fine_tunes.append({"retrain": self.model_version, "wall_s": wall, **result})
        return {"version": self.model_version, "llm_version": llm_version}

    @action
    async def commit(self, candidates: list[Candidate]) -> int:
        """Puts a batch into the checkpointed outbox and advances the id counter (idempotent by id)."""
        have = {c["id"] for c in self.outbox}
        for candidate in candidates:
            number = int(candidate.id.lstrip("L"))
            if number < self.issued or candidate.id in have:
                continue
            self.outbox.append(candidate.model_dump())
            self.issued = number + 1
            if canonical_linker(candidate.smiles):
                self.known.append(candidate.smiles)
        if self.issued >= self.budget and not self.outbox:
            self.finished = True
        return self.issued

    @action
    async def delivered(self, ids: list[str]) -> None:
        """Removes delivered candidates from the outbox."""
        gone = set(ids)
        self.outbox = [c for c in self.outbox if c["id"] not in gone]
        self.finished = self.issued >= self.budget and not self.outbox

    @action(checkpoint=False)
    async def status(self) -> dict[str, Any]:
        """Issued count, budget, model version, finished."""
        return {
            "issued": self.issued,
            "budget": self.budget,
            "model_version": self.model_version,
            "finished": self.finished,
            "backpressure_waits": self.waits,
            "llm": dict(self.llm_stats) if self.llm is not None else None,
            "fine_tunes": list(self.fine_tunes),
            "draws": {key: dict(counts) for key, counts in self.draws.items()},
            "surrogate_points": self._surrogate.points if self._surrogate is not None else 0,
        }

    def _count_draw(self, origin: str, llm_version: int | None, counts: tuple[str, ...]) -> None:
        """Adds one to each of ``counts`` (names in `DRAW_COUNTS`) of the origin and of its version."""
        keys = [origin] + ([f"{origin}:v{llm_version}"] if llm_version is not None else [])
        for key in keys:
            row = self.draws.setdefault(key, dict.fromkeys(DRAW_COUNTS, 0))
            for name in counts:
                row[name] += 1

    def _sample_llm(
        self, rng: np.random.Generator, start: int, attempt: int
    ) -> tuple[str, int | None] | None:
        """One linker from the served model and the version that wrote it (called in a worker
        thread), or None if it failed.

        The request runs on the agent's event loop (`serving.Client.acomplete`); its seed depends on the
        batch and the attempt, so a batch proposed again after a crash asks for the same samples.
        """
        assert self.llm is not None and self._loop is not None and self._client is not None
        prefix = tokenize(str(rng.choice(self.training)))[
            : int(rng.integers(self.llm.prompt_tokens + 1))
        ]
        prompt = BOS + "".join(prefix)
        request = self._client.acomplete(
            self.llm.model,
            prompt,
            max_tokens=self.llm.max_tokens,
            temperature=self.llm.temperature,
            seed=(self.seed * 1_000_003 + start * 1_009 + attempt) % 2**31,
        )
        future = asyncio.run_coroutine_threadsafe(request, self._loop)
        self.llm_stats["requests"] += 1
        try:
            completion = future.result(timeout=self.llm.timeout_s + 5.0)
        except Exception as error:  # noqa: BLE001 - any failure falls back to the trigram model
            future.cancel()
            self._llm_paused_until = time.monotonic() + self.llm.retry_after_s
            self.llm_stats["errors"] += 1
            self.llm_stats["last_error"] = f"{type(error).__name__}: {error}"[:300]
            logger.warning(
                "served model %s at %s failed (%s); falling back to the trigram model",
                self.llm.model,
                self.llm.base_url,
                self.llm_stats["last_error"],
            )
            return None
        version = completion.model_version
        by_version = self.llm_stats.setdefault("by_version", {})
        by_version[str(version)] = by_version.get(str(version), 0) + 1
        smiles = "".join(prefix) + completion.text.replace(" ", "")
        return smiles, int(version) if version and version.isdigit() else None

    def _propose(self, count: int, start: int) -> list[Candidate]:
        """``count`` candidates: drawn ``screen`` times over and ranked by the surrogate once fitted."""
        rng = np.random.default_rng([self.seed, start])
        model = NgramModel(self.weights)
        known = set(self.known)
        surrogate = self._surrogate if self.screen > 1 else None
        pool = count * self.screen if surrogate is not None else count
        out: list[Candidate] = []
        attempts = 0
        mutation_end = self.learned_share + (1.0 - self.learned_share) * 0.55 / 0.7
        while len(out) < pool and attempts < 50 * pool:
            attempts += 1
            roll = rng.random()
            llm_version = None
            if roll < self.learned_share:
                smiles, origin = "", "ngram"
                if self.llm is not None and rng.random() < self.llm.ratio:
                    paused = time.monotonic() < self._llm_paused_until
                    sampled = None if paused else self._sample_llm(rng, start, attempts)
                    if sampled is None:
                        origin = "ngram_fallback"
                        self.llm_stats["fallbacks"] += 1
                    else:
                        (smiles, llm_version), origin = sampled, "llm"
                if origin != "llm":
                    smiles = model.sample(rng, temperature=0.8)
            elif roll < mutation_end:
                smiles, origin = mutate(str(rng.choice(self.training)), rng), "mutation"
            else:
                first, second = rng.choice(self.training, size=2)
                smiles, origin = crossover(str(first), str(second), rng), "crossover"
            canonical = canonical_linker(smiles)
            if canonical is not None:
                if canonical in known:
                    self._count_draw(origin, llm_version, ("duplicate",))
                    continue  # propose something new
                known.add(canonical)
                smiles = canonical
            out.append(
                Candidate(
                    id="",
                    smiles=smiles,
                    origin=origin,
                    model_version=self.model_version,
                    llm_version=llm_version,
                )
            )
        keep = set(range(min(count, len(out))))
        if surrogate is not None:  # invalid ones are predicted 0: they go only if too few are valid
            keep = set(surrogate.pick([c.smiles for c in out], count))
        chosen = []
        for i, candidate in enumerate(out):
            valid = canonical_linker(candidate.smiles) is not None
            counts = ("drawn",) + ("valid",) * valid + ("sent",) * (i in keep)
            self._count_draw(candidate.origin, candidate.llm_version, counts)
            if i in keep:
                candidate.id = f"L{start + len(chosen):06d}"
                chosen.append(candidate)
        return chosen

    async def _deliver(self) -> None:
        batch = [Candidate.model_validate(c) for c in self.outbox]
        events = []
        valid = []
        for candidate in batch:
            events.append(Event(candidate=candidate, stage="generated"))
            if canonical_linker(candidate.smiles):
                events.append(Event(candidate=candidate, stage="valid"))
                valid.append(WorkItem(candidate=candidate))
            else:
                events.append(
                    Event(candidate=candidate, stage="invalid", reason="RDKit rejects it")
                )
        if valid:
            depth = await retry(self.assembler.submit, valid)
            while depth > self.max_assembler_queue:  # backpressure from the Assembler
                self.waits += 1
                await asyncio.sleep(0.2)
                depth = (await retry(self.assembler.status)).queued
        await retry(self.database.record, events)
        await retry(self.agent_handle.delivered, [c.id for c in batch])

    @loop
    async def generate(self, shutdown: asyncio.Event) -> None:
        """Generates until the budget is spent, delivering each batch before the next."""
        while not shutdown.is_set():
            if self.outbox:
                await self._deliver()
                continue
            if self.issued >= self.budget:
                await retry(self.agent_handle.delivered, [])
                return
            count = min(self.batch, self.budget - self.issued)
            if self.max_pending:  # stay close to the results, so that retrains shape what follows
                while (await retry(self.database.funnel))["pending"] + count > self.max_pending:
                    if shutdown.is_set():
                        return
                    self.waits += 1
                    await asyncio.sleep(0.2)
            self._loop = asyncio.get_running_loop()
            candidates = await self.agent_run_sync(self._propose, count, self.issued)
            await retry(self.agent_handle.commit, candidates)
