"""The placement controller end to end on a real 4-node Ray cluster, with a plain-actor launcher."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time

import pytest
import ray
import ray.cloudpickle

from placement import (
    Decision,
    Demand,
    InfeasibleDemandError,
    PlacementClient,
    PlacementTimeoutError,
)
from tests.harness import restart_placement_controller

# Launchers travel to the controller by value (the test module is not importable on the workers).
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@ray.remote(max_restarts=0)
class Plain:
    """A trivial actor that says where it runs and which launch generation made it."""

    def __init__(self, generation: int, state: str) -> None:
        self.generation = generation
        self.state = state

    def where(self) -> tuple[str, int, str]:
        return ray.get_runtime_context().get_node_id(), self.generation, self.state


class PlainLauncher:
    """Idempotent launcher: kills any earlier actor of the decision's name, then creates it anew."""

    def __init__(self, namespace: str, state: str = "", delay_s: float = 0.0) -> None:
        self.namespace = namespace
        self.state = state
        self.delay_s = delay_s  # between removing the old copy and creating the new one

    async def __call__(self, decision: Decision) -> None:
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(decision.name, namespace=self.namespace))
        await asyncio.sleep(self.delay_s)
        deadline = time.monotonic() + 30
        while True:
            try:
                Plain.options(
                    name=decision.name,
                    namespace=self.namespace,
                    lifetime="detached",
                    **decision.actor_options(),
                ).remote(decision.generation, self.state)
                return
            except ValueError:  # the killed actor's name is not freed yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)


def _where(name: str, namespace: str) -> tuple[str, int, str]:
    return ray.get(ray.get_actor(name, namespace=namespace).where.remote(), timeout=60)


def _wait_generation(
    client: PlacementClient, name: str, generation: int, timeout: float = 60.0
) -> Decision:
    """Waits until ``name``'s decision reaches ``generation`` (i.e. it was placed again)."""
    deadline = time.monotonic() + timeout
    while True:
        now = client.explain_sync(name)
        if now is not None and now.generation == generation:
            return now
        assert time.monotonic() < deadline, f"not re-placed: {now}, {client.failures_sync()}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def client(sim_cluster):
    c = PlacementClient("placement-test", poll_s=0.3)
    yield c
    c.shutdown()


async def _cleanup(client: PlacementClient, *names: str) -> None:
    for name in names:
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(name, namespace=client.namespace))
        await client.release(name)


async def test_data_cached_on_b_places_actor_on_b(sim_cluster, client) -> None:
    b = sim_cluster.nodes["cpu-b"]
    await client.report(b, "s3://data/shard-7", 3_000_000_000, "data")
    launcher = PlainLauncher(client.namespace)
    d = await client.place(
        Demand(name="reader", cpus=1, data_uris=("s3://data/shard-7",)), launcher
    )
    assert d.node_id == b
    assert _where("reader", client.namespace)[0] == b
    explained = await client.explain("reader")
    assert explained is not None and explained.node_id == b
    assert "3000000000 of 3000000000 bytes" in explained.explain()
    await _cleanup(client, "reader")
    assert await client.explain("reader") is None


async def test_gpu_demand_runs_only_on_gpu_node(sim_cluster, client) -> None:
    d = await client.place(
        Demand(name="gpu-job", cpus=1, gpus=1, gpu_type="T4"), PlainLauncher(client.namespace)
    )
    assert d.node_id == sim_cluster.nodes["gpu"]
    assert _where("gpu-job", client.namespace)[0] == sim_cluster.nodes["gpu"]
    await _cleanup(client, "gpu-job")


async def test_impossible_demand_errors_fast(sim_cluster, client) -> None:
    with pytest.raises(InfeasibleDemandError, match="GPUs of type A100"):
        await client.place(
            Demand(name="nope", gpus=1, gpu_type="A100"), PlainLauncher(client.namespace)
        )
    assert await client.pending() == []
    assert await client.explain("nope") is None
    assert await client.release("nope") is False


def test_full_cluster_queues_then_places(sim_cluster, client) -> None:
    launcher = PlainLauncher(client.namespace)
    first = client.place_sync(Demand(name="ssd-1", cpus=0.5, resources={"ssd": 2}), launcher)
    assert first.node_id == sim_cluster.nodes["cpu-b"]
    # The only 'ssd' capacity is taken: the second demand waits, visibly.
    ref = client.actor.place.remote(
        Demand(name="ssd-2", cpus=0.5, resources={"ssd": 2}), launcher, None
    )
    deadline = time.monotonic() + 30
    while [d.name for d in client.pending_sync()] != ["ssd-2"]:
        assert time.monotonic() < deadline, "ssd-2 never showed as pending"
        time.sleep(0.1)
    with pytest.raises(PlacementTimeoutError):
        client.place_sync(
            Demand(name="ssd-3", cpus=0.5, resources={"ssd": 2}), launcher, timeout=0.5
        )
    assert [d.name for d in client.pending_sync()] == ["ssd-2"]
    ray.kill(ray.get_actor("ssd-1", namespace=client.namespace))
    assert client.release_sync("ssd-1")
    second = ray.get(ref, timeout=60)
    assert second.node_id == sim_cluster.nodes["cpu-b"]
    assert client.pending_sync() == []
    assert _where("ssd-2", client.namespace)[0] == sim_cluster.nodes["cpu-b"]
    ray.kill(ray.get_actor("ssd-2", namespace=client.namespace))
    client.release_sync("ssd-2")


def test_node_loss_replaces_actor_on_live_node(sim_cluster, client) -> None:
    doomed = sim_cluster.add("doomed-2", num_cpus=2, resources={"x": 1})
    client.report_sync(doomed, "checkpoint:survivor", 50_000_000, "checkpoint")
    launcher = PlainLauncher(client.namespace, state="restored-from-checkpoint")
    d = client.place_sync(
        Demand(name="survivor", cpus=1, checkpoint_key="checkpoint:survivor"), launcher
    )
    assert d.node_id == doomed and d.generation == 1
    assert _where("survivor", client.namespace) == (doomed, 1, "restored-from-checkpoint")
    # Only the doomed node has resource 'x': after the loss this one fits nowhere, so it waits.
    stuck = client.place_sync(
        Demand(name="needs-x", cpus=0.5, resources={"x": 1}), PlainLauncher(client.namespace)
    )
    assert stuck.node_id == doomed

    sim_cluster.kill("doomed-2")
    now = _wait_generation(client, "survivor", 2)
    assert now.cause == f"node {doomed} lost"
    assert now.node_id != doomed and now.node_id in sim_cluster.nodes.values()
    node, generation, state = _where("survivor", client.namespace)
    assert (node, generation, state) == (now.node_id, 2, "restored-from-checkpoint")
    causes = [h.cause for h in client.history_sync() if h.name == "survivor"]
    assert causes == ["placed", f"node {doomed} lost"]
    deadline = time.monotonic() + 30
    while [p.name for p in client.pending_sync()] != ["needs-x"]:
        assert time.monotonic() < deadline, client.failures_sync()
        time.sleep(0.2)
    assert "custom resource 'x'" in client.failures_sync()["needs-x"]
    assert client.explain_sync("needs-x") is None
    assert client.release_sync("needs-x") and client.pending_sync() == []
    ray.kill(ray.get_actor("survivor", namespace=client.namespace))
    client.release_sync("survivor")


class LabelLauncher:
    """Launcher for unreserved demands: the actor claims its resources on the chosen node itself."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def __call__(self, decision: Decision) -> None:
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(decision.name, namespace=self.namespace))
        Plain.options(
            name=decision.name,
            namespace=self.namespace,
            lifetime="detached",
            num_cpus=decision.demand.cpus,
            resources=dict(decision.demand.resources),
            label_selector=decision.label_selector(),
        ).remote(decision.generation, "unreserved")


def test_unreserved_demand_is_chosen_booked_and_recorded_without_a_group(
    sim_cluster, client
) -> None:
    from ray.util.placement_group import placement_group_table

    groups_before = len(placement_group_table())
    b = sim_cluster.nodes["cpu-b"]
    client.report_sync(b, "model:weights", 400_000_000, "model")
    launcher = LabelLauncher(client.namespace)
    d = client.place_sync(
        Demand(
            name="replica-0",
            cpus=0.5,
            resources={"ssd": 2},
            model_ids=("model:weights",),
            reserve=False,
        ),
        launcher,
    )
    assert d.node_id == b and d.placement_group_id is None
    assert any("not reserved" in r for r in d.reasons)
    assert len(placement_group_table()) == groups_before
    assert _where("replica-0", client.namespace)[:2] == (b, 1)
    # The ledger books the choice: the node's only 'ssd' is taken, so a second one waits.
    with pytest.raises(PlacementTimeoutError):
        client.place_sync(
            Demand(name="replica-1", cpus=0.5, resources={"ssd": 2}, reserve=False),
            launcher,
            timeout=1.0,
        )
    ray.kill(ray.get_actor("replica-0", namespace=client.namespace))
    assert client.release_sync("replica-0")
    assert client.explain_sync("replica-0") is None


def test_controller_restart_keeps_actors_and_still_repairs_node_loss(sim_cluster, client) -> None:
    from ray.experimental import internal_kv
    from ray.util.placement_group import placement_group, placement_group_table

    from placement.journal import KV_NAMESPACE, Journal

    doomed = sim_cluster.add("doomed-r", num_cpus=2)
    client.report_sync(doomed, "checkpoint:durable", 50_000_000, "checkpoint")
    launcher = PlainLauncher(client.namespace, state="from-checkpoint")
    d = client.place_sync(
        Demand(name="durable", cpus=1, checkpoint_key="checkpoint:durable"), launcher
    )
    assert d.node_id == doomed and d.placement_group_id is not None
    # Injected faults: a group an earlier incarnation made but never recorded (it died between
    # the two), and a journal entry that no longer unpickles.
    journal = Journal(f"{client.namespace}/{client.name}")
    orphan = placement_group(
        [{"CPU": 0.1}], name=f"placement[{journal.key}]-lost-1", lifetime="detached"
    )
    ray.get(orphan.ready(), timeout=30)
    internal_kv._internal_kv_put(
        f"{journal.key.encode().hex()}.d.broken", b"not a pickle", namespace=KV_NAMESPACE
    )

    info = restart_placement_controller(client)
    assert info["restored"] == 1 and info["watching"]
    # Locality survives the restart: the inventory reports were kept.
    held = {(i["key"], i["nbytes"]) for i in ray.get(client.actor.inventory.remote(doomed))}
    assert ("checkpoint:durable", 50_000_000) in held

    # The actor lived through it, in its group, and the decision was adopted as it was.
    assert _where("durable", client.namespace) == (doomed, 1, "from-checkpoint")
    adopted = client.explain_sync("durable")
    assert adopted is not None
    assert (adopted.node_id, adopted.generation, adopted.placement_group_id) == (
        doomed,
        1,
        d.placement_group_id,
    )
    groups = placement_group_table()
    assert groups[d.placement_group_id]["state"] == "CREATED"
    assert groups[orphan.id.hex()]["state"] == "REMOVED"
    assert client.failures_sync()["broken"].startswith("journal entry unreadable")
    journal.delete("broken")

    # Node loss is still repaired, with no call to the controller but queries (its watcher started
    # on its own after the restart).
    sim_cluster.kill("doomed-r")
    now = _wait_generation(client, "durable", 2)
    assert now.cause == f"node {doomed} lost" and now.node_id != doomed
    assert all(item.node_id != doomed for item in journal.load_items())
    assert _where("durable", client.namespace) == (now.node_id, 2, "from-checkpoint")
    ray.kill(ray.get_actor("durable", namespace=client.namespace))
    assert client.release_sync("durable")
    assert [e.demand.name for e in journal.load()[0]] == []


async def test_lookup_waits_while_the_agent_is_placed_again(sim_cluster, client) -> None:
    from academy_ray import AgentNotFoundError
    from academy_ray.handle import lookup_actor_waiting_async

    doomed = sim_cluster.add("doomed-l", num_cpus=2)
    await client.report(doomed, "checkpoint:slowpoke", 50_000_000, "checkpoint")
    # A launcher that leaves the name free for 2 s while it re-creates the actor (injected delay): forty
    # times the 0.05 s the gap is looked for at.
    launcher = PlainLauncher(client.namespace, state="slow", delay_s=2.0)
    first = await client.place(
        Demand(name="slowpoke", cpus=1, checkpoint_key="checkpoint:slowpoke"), launcher
    )
    assert first.node_id == doomed
    # place() returned after the launcher (its delay included); the first copy runs on the doomed node
    assert _where("slowpoke", client.namespace) == (doomed, 1, "slow")
    assert not await client.actor.replacing.remote("slowpoke")
    sim_cluster.kill("doomed-l")
    deadline = time.monotonic() + 60
    while True:  # until the old copy is gone and the new one not there yet
        try:
            ray.get_actor("slowpoke", namespace=client.namespace)
        except ValueError:
            if await client.actor.replacing.remote("slowpoke"):
                break
        assert time.monotonic() < deadline, "never saw the re-placement's gap"
        await asyncio.sleep(0.05)
    actor = await lookup_actor_waiting_async("slowpoke", client.namespace)
    node, generation, state = await actor.where.remote()
    assert (generation, state) == (2, "slow") and node != doomed
    # Names nobody places again are not waited for.
    started = time.monotonic()
    with pytest.raises(AgentNotFoundError):
        await lookup_actor_waiting_async("never-launched", client.namespace)
    assert time.monotonic() - started < 5
    ray.kill(actor)
    assert await client.release("slowpoke")
