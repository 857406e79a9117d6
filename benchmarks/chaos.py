"""Chaos harness: the MOF pipeline on a simulated 3-node Ray cluster under seeded faults.

Usage::

    python -m benchmarks.chaos                                   # both scenarios, seed 7
    python -m benchmarks.chaos --scenario kill --seed 7 --budget 200 --kills 4 --node-losses 1
    python -m benchmarks.chaos --scenario kill --controller-kills 1    # + the placement controller
    python -m benchmarks.chaos --scenario storage --seed 7 --budget 200 --outage-s 30

Scenarios (each on its own fresh cluster: a head with 1 CPU and two 2-CPU workers, fast health checks):

* ``kill``: at seeded random points of the run (a fraction of the budget finished) it kill -9s the worker
  process of a seeded random agent (``(await h.info()).pid``) or removes the worker node that hosts the most
  agents (without draining) and then adds a fresh node so that capacity returns, or (``--controller-kills``)
  kill -9s the placement controller: no agent may be touched by that (same processes), the controller
  comes back with its decisions, and a later node loss is still repaired. Faults are injected one
  after the other, each once the previous one has recovered. Recovery time of an agent = from the fault to
  the first answer of the new copy (restored from its checkpoint, on a live node). Checkpoints go to a
  ``file://`` store that every (local) node reaches.
* ``storage``: checkpoints on S3 (a real SeaweedFS). At a seeded point the S3 server is stopped for
  ``--outage-s`` seconds, then started again on the same data directory and ports. During the outage the
  harness checks that every agent still answers read-only actions and that a state-changing call gets
  `StorageUnavailableError`; afterwards that every agent's ``checkpoint_pending`` goes False again, and at
  the end that every checkpoint in the store loads and its checksum verifies.

At the end of both: every candidate acknowledged by a stage is in the Database exactly once (ids
``L000000`` .. budget-1, one final stage each, the counts per funnel step equal what each stage accepted,
one uptake history entry per scored candidate) and every agent is running. Prints a table and, last, one
JSON line (``{"benchmark": "chaos", ...}``). Exit status 1 if any check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from examples.common.runtime import prepare_environment

prepare_environment()

from academy_ray import AgentError, Handle, Runtime
from academy_ray.checkpoint import CheckpointPolicy
from academy_ray.store import CheckpointNotWrittenError, StorageUnavailableError
from examples.common.runtime import retry
from examples.mof.pipeline import (
    AGENTS,
    Handles,
    MofConfig,
    Progress,
    launch,
    run_until_done,
    snapshot,
    stop_all,
)
from examples.mof.records import FINAL, FUNNEL
from tests.harness import S3Server, fast_cluster

REPO = Path(__file__).resolve().parents[1]


WORKER_CPUS = 2
PROBE_TIMEOUT_S = 5.0
"""Limit of one probe call (an agent that does not answer within it counts as not answering yet)."""

Scenario = Literal["kill", "storage"]

PROBE_ERRORS: Counter[str] = Counter()
"""What the recovery probes were told while an agent was away (error type -> count)."""


class ChaosConfig(BaseModel):
    """Settings of one chaos run.

    Attributes:
        scenario: ``kill`` (process kills and node loss) or ``storage`` (object storage outage).
        seed: Seeds the fault points, the fault targets and the Generator.
        budget: Candidates the Generator proposes.
        kills: kill -9s of agent processes (``kill``).
        node_losses: Worker nodes removed (and replaced by a fresh one) (``kill``).
        controller_kills: kill -9s of the placement controller's process (``kill``).
        outage_s: How long the S3 server is down (``storage``).
        insertions: Widom insertions per framework (smaller runs faster).
        first: Earliest fault point, as a fraction of the budget at a final stage.
        last: Latest fault point.
        timeout_s: Limit of the whole pipeline run and of each recovery.
    """

    scenario: Scenario = "kill"
    seed: int = 7
    budget: int = Field(default=200, ge=8)
    kills: int = Field(default=4, ge=0)
    node_losses: int = Field(default=1, ge=0)
    controller_kills: int = Field(default=0, ge=0)
    outage_s: float = Field(default=30.0, gt=0)
    insertions: int = Field(default=300, ge=10)
    first: float = Field(default=0.1, ge=0, lt=1)
    last: float = Field(default=0.6, gt=0, lt=1)
    timeout_s: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _first_before_last(self) -> ChaosConfig:
        if self.first > self.last:
            raise ValueError(f"first ({self.first}) must not be after last ({self.last})")
        return self


class Fault(BaseModel):
    """One injected fault and what it cost.

    Attributes:
        kind: ``kill`` (SIGKILL an agent's process), ``node`` (remove a worker node), ``controller``
            (SIGKILL the placement controller), ``storage``.
        at: Candidates at a final stage when it was injected.
        mid_run: Whether the run was still under way then.
        target: The agent killed, or the node removed.
        agents: Recovery time in seconds of each agent the fault hit (fault -> the agent answers again).
        back_s: ``controller``: seconds until the restarted controller answered.
        restored: ``controller``: decisions the restarted controller adopted from its journal.
        collateral: ``controller``: agents whose process changed meanwhile (must be none).
    """

    kind: str
    at: int
    target: str
    mid_run: bool = True
    agents: dict[str, float] = Field(default_factory=dict)
    back_s: float | None = None
    restored: int | None = None
    collateral: list[str] = Field(default_factory=list)


# ---- cluster ------------------------------------------------------------------------------------------


def start_cluster() -> Any:
    """Head (1 CPU) + two workers (2 CPUs each), fast health checks; Ray connected to it."""
    # Workers import `examples.mof`: they inherit this environment from the node processes.
    paths = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    cluster = fast_cluster()
    for _ in range(2):
        cluster.add_node(num_cpus=WORKER_CPUS)
    cluster.wait_for_nodes()
    return cluster


def done_count(funnel: dict[str, int]) -> int:
    """Candidates at a final stage."""
    return funnel.get("generated", 0) - funnel.get("pending", 0)


async def wait_done(
    handles: Handles, count: int, started: float, timeout: float
) -> tuple[int, bool]:
    """Waits until ``count`` candidates are at a final stage; returns how many are, and whether the run
    is still under way (candidates in flight or still to generate)."""
    while True:
        progress = await snapshot(handles, started)
        done = done_count(progress.funnel)
        if done >= count:
            return done, not progress.done
        if progress.done:
            raise RuntimeError(
                f"the pipeline finished ({done} final) before the fault point {count}: raise --budget"
            )
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{count} candidates not final after {timeout} s: {progress}")
        await asyncio.sleep(0.1)


async def wait_back(
    name: str,
    namespace: str,
    t0: float,
    timeout: float,
    old_pid: int | None = None,
    lost_node: str | None = None,
) -> float:
    """Seconds from ``t0`` until a new copy of agent ``name`` answers (another pid, a live node)."""
    handle: Handle[Any] = Handle(name, namespace, timeout=PROBE_TIMEOUT_S)
    while True:
        try:
            info = await handle.info()
            if info.status == "running" and info.pid != old_pid and info.node_id != lost_node:
                return time.monotonic() - t0
        except (AgentError, StorageUnavailableError) as error:
            PROBE_ERRORS[type(error).__name__] += 1
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"agent {name!r} did not come back within {timeout} s")
        await asyncio.sleep(0.05)


async def agent_nodes(handles: Handles) -> dict[str, str]:
    """Agent name -> node id."""
    out = {}
    for name in AGENTS:
        info = await retry(getattr(handles, name).info)
        out[name] = str(info.node_id)
    return out


# ---- scenario: process kills and node loss --------------------------------------------------------------


def plan_faults(config: ChaosConfig, rng: random.Random) -> list[tuple[str, int]]:
    """The faults in order: (kind, final-candidate count that triggers it), from the seed."""
    kinds = ["kill"] * config.kills + ["node"] * config.node_losses
    kinds += ["controller"] * config.controller_kills  # (none: the same plan as before for a seed)
    rng.shuffle(kinds)
    points = sorted(int(config.budget * rng.uniform(config.first, config.last)) for _ in kinds)
    return list(zip(kinds, points, strict=True))


async def inject_kill(
    handles: Handles, namespace: str, rng: random.Random, at: int, timeout: float
) -> Fault:
    target = rng.choice(AGENTS)
    info = await retry(getattr(handles, target).info)
    t0 = time.monotonic()
    os.kill(int(info.pid or 0), signal.SIGKILL)
    seconds = await wait_back(target, namespace, t0, timeout, old_pid=info.pid)
    return Fault(kind="kill", at=at, target=target, agents={target: seconds})


async def inject_controller_kill(rt: Runtime, handles: Handles, at: int, timeout: float) -> Fault:
    """SIGKILLs the placement controller (it runs on the head node, on this machine here)."""
    pids = {name: (await retry(getattr(handles, name).info)).pid for name in AGENTS}
    controller = rt.placement.actor
    before = await controller.info.remote()
    t0 = time.monotonic()
    os.kill(int(before["pid"]), signal.SIGKILL)
    while True:
        try:
            info = await asyncio.wait_for(
                asyncio.ensure_future(controller.info.remote()), PROBE_TIMEOUT_S
            )
            if info["pid"] != before["pid"]:
                break
        except Exception as exc:  # noqa: BLE001 - restarting: counted, then asked again
            PROBE_ERRORS[f"controller: {type(exc).__name__}"] += 1
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"placement controller not back in {timeout} s")
        await asyncio.sleep(0.1)
    back_s = time.monotonic() - t0
    after = {name: (await retry(getattr(handles, name).info)).pid for name in AGENTS}
    return Fault(
        kind="controller",
        at=at,
        target=f"placement controller (pid {before['pid']})",
        back_s=back_s,
        restored=int(info["restored"]),
        collateral=[name for name in AGENTS if after[name] != pids[name]],
    )


async def inject_node_loss(
    cluster: Any, handles: Handles, namespace: str, rng: random.Random, at: int, timeout: float
) -> Fault:
    nodes = await agent_nodes(handles)
    workers = sorted(cluster.worker_nodes, key=lambda n: str(n.node_id))
    hosted = {
        str(n.node_id): [a for a, node in nodes.items() if node == str(n.node_id)] for n in workers
    }
    most = max(len(v) for v in hosted.values())
    victim = rng.choice([n for n in workers if len(hosted[str(n.node_id)]) == most])
    lost = str(victim.node_id)
    t0 = time.monotonic()
    probes = [
        asyncio.ensure_future(wait_back(name, namespace, t0, timeout, lost_node=lost))
        for name in hosted[lost]
    ]
    await asyncio.to_thread(cluster.remove_node, victim, False)
    seconds = await asyncio.gather(*probes)
    # Capacity returns once the agents are back (Ray's `add_node` must run in the main thread, and it
    # would stall the probes' event loop meanwhile).
    cluster.add_node(num_cpus=WORKER_CPUS)
    return Fault(
        kind="node",
        at=at,
        target=f"{lost[:12]} ({len(hosted[lost])} agents)",
        agents=dict(zip(hosted[lost], seconds, strict=True)),
    )


async def run_kill(config: ChaosConfig, work: Path) -> dict[str, Any]:
    cluster = start_cluster()
    rng = random.Random(config.seed)
    namespace = f"chaos-kill-{config.seed}-{uuid.uuid4().hex[:6]}"
    store = (work / "checkpoints").resolve()
    store.mkdir(parents=True, exist_ok=True)
    rt = Runtime(
        cluster.address,
        namespace=namespace,
        checkpoint=store.as_uri(),
        init_kwargs={"log_to_driver": False},
    )
    try:
        handles = await launch(rt, mof_config(config))
        started = time.monotonic()
        faults: list[Fault] = []
        for kind, point in plan_faults(config, rng):
            at, mid_run = await wait_done(handles, point, started, config.timeout_s)
            if kind == "kill":
                fault = await inject_kill(handles, namespace, rng, at, config.timeout_s)
            elif kind == "controller":
                fault = await inject_controller_kill(rt, handles, at, config.timeout_s)
            else:
                fault = await inject_node_loss(
                    cluster, handles, namespace, rng, at, config.timeout_s
                )
            fault.mid_run = mid_run
            faults.append(fault)
            print(
                f"[chaos] {fault.kind} {fault.target} at {fault.at}: "
                f"{fault.agents or {'back_s': fault.back_s, 'restored': fault.restored}}",
                flush=True,
            )
        result = await finish(rt, handles, config, started)
        result["faults"] = [f.model_dump() for f in faults]
        result["recovery_s"] = summarize([s for f in faults for s in f.agents.values()])
        result["probe_errors"] = dict(PROBE_ERRORS)
        result["checks"]["every_fault_recovered"] = (
            len(faults) == config.kills + config.node_losses + config.controller_kills
        )
        controller_faults = [f for f in faults if f.kind == "controller"]
        if controller_faults:
            result["checks"]["controller_kill_spared_agents"] = all(
                not f.collateral for f in controller_faults
            )
            result["checks"]["controller_restored_decisions"] = all(
                (f.restored or 0) >= len(AGENTS) for f in controller_faults
            )
        result["checks"]["faults_mid_run"] = all(f.mid_run for f in faults)
        await stop_all(rt)
        return result
    finally:
        rt.close()
        cluster.shutdown()


# ---- scenario: object storage outage ------------------------------------------------------------------


async def run_storage(config: ChaosConfig, work: Path) -> dict[str, Any]:

    server_dir = work / "s3"
    server_dir.mkdir(parents=True, exist_ok=True)
    server = S3Server(server_dir)
    server.start()
    cluster = None
    rt = None
    try:
        bucket = server.new_bucket()
        policy = CheckpointPolicy(
            uri=f"s3://{bucket}/checkpoints",
            storage_options=server.storage_options,
            retry_initial_s=0.5,
            retry_max_s=2.0,
        )
        cluster = start_cluster()
        rng = random.Random(config.seed)
        namespace = f"chaos-s3-{config.seed}-{uuid.uuid4().hex[:6]}"
        rt = Runtime(
            cluster.address,
            namespace=namespace,
            checkpoint=policy,
            init_kwargs={"log_to_driver": False},
        )
        handles = await launch(rt, mof_config(config))
        started = time.monotonic()
        point = int(config.budget * rng.uniform(config.first, config.last))
        at, mid_run = await wait_done(handles, point, started, config.timeout_s)
        before = (await snapshot(handles, started)).funnel

        server.stop()
        t_down = time.monotonic()
        outage = await observe_outage(handles, config.outage_s, t_down)
        t_restart = time.monotonic()
        outage["down_s"] = t_restart - t_down
        server.start()  # returns once it serves S3 requests again
        outage["server_restart_s"] = time.monotonic() - t_restart
        resumed = await wait_checkpoints_resume(handles, t_restart, config.timeout_s)
        print(
            f"[chaos] storage down at {at} for {outage['down_s']:.1f} s; resumed {resumed}",
            flush=True,
        )

        result = await finish(rt, handles, config, started)
        await stop_all(rt)  # final checkpoints are written at shutdown
        corrupt, verified = verify_store(policy, namespace)
        result["outage"] = {**outage, "at": at, "funnel_before": before}
        result["checkpoint_resume_s"] = resumed
        result["checkpoints_verified"] = verified
        result["corrupt"] = corrupt
        checks = result["checks"]
        checks["outage_mid_run"] = mid_run and result["outage"]["funnel_before"]["pending"] > 0
        checks["agents_answered_during_outage"] = (
            outage["read_failures"] == 0 and outage["reads"] > 0
        )
        checks["state_change_refused_with_storage_error"] = outage["storage_errors"] > 0
        checks["checkpoints_pending_during_outage"] = bool(outage["pending_agents"])
        checks["checkpoints_resumed"] = set(resumed) == set(AGENTS)
        checks["no_corrupt_checkpoint"] = not corrupt and verified > 0
        return result
    finally:
        if rt is not None:
            rt.close()
        if cluster is not None:
            cluster.shutdown()
        server.stop()


async def observe_outage(handles: Handles, outage_s: float, t_down: float) -> dict[str, Any]:
    """While the storage is down: read-only calls must answer, a state-changing call must be refused."""
    reads = read_failures = storage_errors = other_errors = 0
    pending: set[str] = set()
    while time.monotonic() - t_down < outage_s:
        for name in AGENTS:
            handle = getattr(handles, name).with_timeout(PROBE_TIMEOUT_S)
            try:
                info = await handle.info()
                await (handle.funnel() if name == "database" else handle.status())
                reads += 1
                if info.checkpoint_pending:
                    pending.add(name)
            except Exception:  # noqa: BLE001 - counted: an agent must answer reads during the outage
                read_failures += 1
        try:  # a state-changing call (recording nothing) needs a checkpoint
            await handles.database.with_timeout(PROBE_TIMEOUT_S * 4).record([])
        except StorageUnavailableError:
            storage_errors += 1
        except Exception:  # noqa: BLE001 - counted
            other_errors += 1
        await asyncio.sleep(0.5)
    return {
        "reads": reads,
        "read_failures": read_failures,
        "storage_errors": storage_errors,
        "other_errors": other_errors,
        "pending_agents": sorted(pending),
    }


async def wait_checkpoints_resume(
    handles: Handles, t_up: float, timeout: float
) -> dict[str, float]:
    """Seconds after ``t_up`` (the storage's restart) until each agent's ``checkpoint_pending`` is False."""
    resumed: dict[str, float] = {}
    shown = 0.0
    while len(resumed) < len(AGENTS) and time.monotonic() - t_up < timeout:
        if time.monotonic() - t_up - shown >= 10.0:  # where a slow resume stands
            shown = time.monotonic() - t_up
            print(f"[chaos] {shown:.0f} s after restart, resumed: {sorted(resumed)}", flush=True)
        for name in AGENTS:
            if name in resumed:
                continue
            try:
                info = await getattr(handles, name).with_timeout(PROBE_TIMEOUT_S).info()
            except Exception as error:  # noqa: BLE001 - not back yet: asked again
                print(f"[chaos] {name} not answering yet: {error!r}", flush=True)
            else:
                if not info.checkpoint_pending:
                    resumed[name] = time.monotonic() - t_up
        await asyncio.sleep(0.1)
    return resumed


def verify_store(policy: CheckpointPolicy, namespace: str) -> tuple[list[str], int]:
    """Loads every checkpoint of the namespace (each load verifies the checksum); returns (corrupt, ok)."""
    store = policy.store()
    corrupt: list[str] = []
    verified = 0
    for ns, name in store.list_agents():
        if ns != namespace:
            continue
        checkpoints = store.for_agent(ns, name)
        for seq in checkpoints._seqs():  # every object present, also any a listing would skip
            try:
                checkpoints.load(seq)
                verified += 1
            except CheckpointNotWrittenError:
                continue  # a name reserved ahead by a writer, never acknowledged
            except Exception as error:  # noqa: BLE001 - reported
                corrupt.append(f"{name}#{seq}: {type(error).__name__}: {error}")
    return corrupt, verified


# ---- common ----------------------------------------------------------------------------------------------


def mof_config(config: ChaosConfig) -> MofConfig:
    return MofConfig(
        budget=config.budget,
        insertions=config.insertions,
        retrain_every=5,
        high_water=4,
        low_water=1,
        seed=config.seed,
    )


async def finish(
    rt: Runtime, handles: Handles, config: ChaosConfig, started: float
) -> dict[str, Any]:
    """Runs the pipeline to the end and checks that nothing acknowledged was lost or counted twice."""
    last_line = [0.0]

    def show(progress: Progress) -> None:  # a line every 10 s: where a stalled run stands
        if progress.elapsed_s - last_line[0] >= 10.0:
            last_line[0] = progress.elapsed_s
            print(f"[chaos] {progress.funnel} queues {progress.queues}", flush=True)

    final = await run_until_done(handles, timeout=config.timeout_s, on_progress=show)
    infos = {name: await retry(getattr(handles, name).info) for name in AGENTS}
    accepted = {
        name: (await retry(getattr(handles, name).status)).accepted
        for name in ("assembler", "validator", "estimator")
    }
    generator = await retry(handles.generator.status)
    export = await retry(handles.database.export)
    records = export["records"]
    ids = [r["id"] for r in records]
    funnel = final.funnel
    finals = {r["id"]: FINAL.intersection(r["stages"]) for r in records}
    checks = {
        "all_agents_running": all(i.status == "running" for i in infos.values()),
        "nothing_pending": funnel["pending"] == 0,
        "every_id_once": sorted(ids) == [f"L{i:06d}" for i in range(config.budget)],
        "issued_equals_budget": generator["issued"] == config.budget == funnel["generated"],
        "one_final_stage_each": all(len(f) == 1 for f in finals.values()),
        "assembler_acks_recorded": funnel["valid"] == accepted["assembler"],
        "validator_acks_recorded": funnel["assembled"] == accepted["validator"],
        "estimator_acks_recorded": funnel["stable"] == accepted["estimator"],
        "every_stable_scored_once": funnel["scored"] == funnel["stable"] == len(export["history"]),
    }
    return {
        "scenario": config.scenario,
        "config": config.model_dump(),
        "elapsed_s": time.monotonic() - started,
        "funnel": {k: funnel[k] for k in (*FUNNEL, "pending", "retrains")},
        "accepted": accepted,
        "records": len(records),
        "agents": {
            n: {
                "status": i.status,
                "pid": i.pid,
                "node": (i.node_id or "")[:12],
                "restarted": i.restarted,
            }
            for n, i in infos.items()
        },
        "checks": checks,
    }


def summarize(samples: list[float]) -> dict[str, float | int | None]:
    if not samples:
        return {"n": 0, "p50": None, "max": None}
    return {"n": len(samples), "p50": statistics.median(samples), "max": max(samples)}


def print_table(result: dict[str, Any]) -> None:
    print(f"\n== chaos: {result['scenario']} (seed {result['config']['seed']}) ==")
    for fault in result.get("faults", []):
        if fault["kind"] == "controller":
            print(
                f"  {'ctrl':<5} at {fault['at']:>3}  controller back in {fault['back_s']:6.2f} s, "
                f"{fault['restored']} decisions adopted, agents touched: {fault['collateral'] or 'none'}"
            )
        for agent, seconds in fault["agents"].items():
            print(f"  {fault['kind']:<5} at {fault['at']:>3}  {agent:<10} back in {seconds:6.2f} s")
    if "recovery_s" in result:
        rec = result["recovery_s"]
        if rec["n"]:
            print(f"  recovery: n={rec['n']}  p50={rec['p50']:.2f} s  max={rec['max']:.2f} s")
        print(f"  probes were told meanwhile: {result['probe_errors']}")
    if "outage" in result:
        out = result["outage"]
        print(
            f"  storage down {out['down_s']:.1f} s at {out['at']}: reads {out['reads']} "
            f"(failed {out['read_failures']}), state changes refused {out['storage_errors']} "
            f"(other errors {out['other_errors']}), pending {out['pending_agents']}"
        )
        print(
            "  checkpoints resumed after: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in result["checkpoint_resume_s"].items())
        )
        print(
            f"  S3 restart took {out['server_restart_s']:.2f} s (resume times count from its start)"
        )
        print(
            f"  checkpoints verified: {result['checkpoints_verified']}, corrupt: {result['corrupt']}"
        )
    print(f"  funnel: {result['funnel']}  accepted: {result['accepted']}")
    print(f"  elapsed {result['elapsed_s']:.1f} s")
    for check, ok in result["checks"].items():
        print(f"  [{'ok' if ok else 'FAIL'}] {check}")


async def run(config: ChaosConfig) -> dict[str, Any]:
    """Runs one scenario on a fresh cluster in a scratch directory."""
    work = Path(tempfile.mkdtemp(prefix=f"chaos-{config.scenario}-"))
    try:
        if config.scenario == "kill":
            return await run_kill(config, work)
        return await run_storage(config, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=["kill", "storage", "all"], default="all")
    defaults = ChaosConfig()
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--budget", type=int, default=defaults.budget)
    parser.add_argument("--kills", type=int, default=defaults.kills)
    parser.add_argument("--node-losses", type=int, default=defaults.node_losses)
    parser.add_argument("--controller-kills", type=int, default=defaults.controller_kills)
    parser.add_argument("--outage-s", type=float, default=defaults.outage_s)
    parser.add_argument("--insertions", type=int, default=defaults.insertions)
    parser.add_argument("--timeout-s", type=float, default=defaults.timeout_s)
    parser.add_argument(
        "--first", type=float, default=defaults.first, help="earliest fault, fraction of budget"
    )
    parser.add_argument(
        "--last", type=float, default=defaults.last, help="latest fault, fraction of budget"
    )
    args = parser.parse_args(argv)
    scenarios: list[Scenario] = ["kill", "storage"] if args.scenario == "all" else [args.scenario]
    results = []
    for scenario in scenarios:
        config = ChaosConfig(
            scenario=scenario,
            seed=args.seed,
            budget=args.budget,
            kills=args.kills,
            node_losses=args.node_losses,
            controller_kills=args.controller_kills,
            outage_s=args.outage_s,
            insertions=args.insertions,
            first=args.first,
            last=args.last,
            timeout_s=args.timeout_s,
        )
        result = asyncio.run(run(config))
        print_table(result)
        results.append(result)
    ok = all(all(r["checks"].values()) for r in results)
    print(json.dumps({"benchmark": "chaos", "ok": ok, "results": results}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
