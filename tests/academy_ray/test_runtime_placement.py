"""Runtime.launch places agents through `placement` on a simulated multi-node cluster: data locality, GPU
fit, impossible demands, and re-placement with state intact when a node dies."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from academy_ray import AgentResources, AgentStartupError, AgentUnavailableError, Runtime
from placement import InfeasibleDemandError
from tests.academy_ray.agents import Counter, Journal
from tests.harness import SimCluster


@pytest.fixture
def namespace(module_namespace: str) -> str:
    return module_namespace  # one for the module: its tests name their agents apart


@pytest.fixture
def rt(sim_cluster: SimCluster, make_runtime: Callable[..., Runtime], tmp_path: Path) -> Runtime:
    return make_runtime(checkpoint=f"file://{tmp_path}/ckpt")


async def test_data_already_on_a_node_brings_the_agent_there(
    rt: Runtime, sim_cluster: SimCluster
) -> None:
    node_b = sim_cluster.nodes["cpu-b"]
    await rt.placement.report(node_b, "s3://lab/raw/run-42.h5", 20 * 2**30, "data")
    agent = await rt.launch(Counter, name="reader", data=["s3://lab/raw/run-42.h5"])
    assert (await agent.info()).node_id == node_b
    decision = await rt.explain("reader")
    assert decision is not None and decision.node_id == node_b
    assert "run-42" in decision.explain() or any("local" in reason for reason in decision.reasons)


async def test_gpu_agent_lands_on_the_gpu_node_and_cpu_agents_stay_off_it(
    rt: Runtime, sim_cluster: SimCluster
) -> None:
    gpu_agent = await rt.launch(
        Counter, name="gpu-agent", resources=AgentResources(num_cpus=1, num_gpus=1)
    )
    assert (await gpu_agent.info()).node_id == sim_cluster.nodes["gpu"]
    cpu_agents = await asyncio.gather(*(rt.launch(Counter, name=f"cpu-{i}") for i in range(4)))
    for agent in cpu_agents:
        assert (await agent.info()).node_id != sim_cluster.nodes["gpu"]


async def test_impossible_demand_fails_fast(rt: Runtime) -> None:
    with pytest.raises(InfeasibleDemandError, match="GPU"):
        await asyncio.wait_for(rt.launch(Counter, name="greedy", resources={"num_gpus": 8}), 30)
    assert [info.name for info in await rt.list()] == []


async def test_node_loss_replaces_agent_with_state_intact(
    rt: Runtime, sim_cluster: SimCluster
) -> None:
    sim_cluster.add("spare", num_cpus=2, resources={"spare": 2})
    journal = await rt.launch(
        Journal, name="nomad", resources={"custom": {"spare": 0.5}, "num_cpus": 0.01}
    )
    for entry in range(20):
        await journal.append(entry)
    lost_node = sim_cluster.nodes["spare"]
    assert (await journal.info()).node_id == lost_node
    sim_cluster.add("spare-2", num_cpus=2, resources={"spare": 2})
    sim_cluster.kill("spare")
    deadline = asyncio.get_running_loop().time() + 90
    while True:
        try:
            info = await asyncio.wait_for(journal.info(), 10)
            if info.status == "running" and info.node_id != lost_node:
                break
        except (AgentUnavailableError, TimeoutError):
            pass
        assert asyncio.get_running_loop().time() < deadline, "the agent was not re-placed"
        await asyncio.sleep(0.5)
    assert info.node_id == sim_cluster.nodes["spare-2"]
    assert await journal.read() == list(range(20))
    decision = await rt.explain("nomad")
    assert decision is not None and "lost" in decision.cause and decision.generation >= 2


async def test_agents_outlive_a_placement_controller_crash(rt: Runtime) -> None:
    import ray

    agent = await rt.launch(Counter, name="steady")
    assert await agent.add(5) == 5
    before = await agent.info()
    controller = rt.placement.actor
    old_pid = (await controller.info.remote())["pid"]
    ray.kill(controller, no_restart=False)  # as an OOM kill of the controller's process would
    for _ in range(300):
        try:
            info = await asyncio.wait_for(asyncio.ensure_future(controller.info.remote()), 5)
            if info["pid"] != old_pid:
                break
        except (ray.exceptions.RayActorError, TimeoutError):
            pass
        await asyncio.sleep(0.2)
    else:
        pytest.fail("the placement controller did not come back")
    assert info["restored"] == 1
    # The same process, in memory and all: not restarted from a checkpoint.
    after = await agent.info()
    assert (after.pid, after.node_id, after.restarted) == (before.pid, before.node_id, False)
    assert await agent.add(1) == 6
    decision = await rt.explain("steady")
    assert decision is not None and decision.node_id == before.node_id


async def test_agent_placed_on_a_node_that_cannot_see_its_file_store_fails_clearly(
    rt: Runtime, sim_cluster: SimCluster, tmp_path: Path
) -> None:
    """A file:// folder is per node: the agent's next node (here: the GPU node) sees the same path, but
    not the first node's checkpoints; it must say so instead of starting empty."""
    first = await rt.launch(Journal, name="nodebound", resources={"custom": {"ssd": 1}})
    assert (await first.info()).node_id == sim_cluster.nodes["cpu-b"]
    await first.append(1)
    await rt.stop("nodebound")
    folder = tmp_path / "ckpt"
    shutil.move(folder, tmp_path / "on-cpu-b-only")  # what the GPU node's own disk holds: nothing
    folder.mkdir()
    with pytest.raises(AgentStartupError, match="not the storage"):
        await rt.launch(Journal, name="nodebound", resources=AgentResources(num_cpus=1, num_gpus=1))
    assert not list(folder.glob("*/nodebound/checkpoints/*"))  # nothing written over the evidence
