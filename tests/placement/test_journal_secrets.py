"""The placement journal keeps no secret in the GCS, and each namespace's controller adopts only its own.

A journaled launcher carries launch arguments with credentials (an agent's checkpoint
``storage_options``, a serving app's API key). The journal writes it sealed: the values stay in
the namespace's in-memory secrets holder, and an adopted launcher fetches them when it relaunches.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
import uuid
from typing import Any

import pytest
import ray
import ray.cloudpickle
from pydantic import BaseModel, SecretStr

from placement import CONTROLLER_NAME, Decision, Demand, PlacementClient, PlacementController
from tests.harness import restart_placement_controller

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _journal_kv() -> dict[bytes, bytes]:
    """Every key and value of the journal's GCS key-value namespace."""
    from ray.experimental import internal_kv

    from placement.journal import KV_NAMESPACE

    found = {}
    for key in internal_kv._internal_kv_list("", namespace=KV_NAMESPACE):
        value = internal_kv._internal_kv_get(key, namespace=KV_NAMESPACE)
        if value is not None:
            found[key] = value
    return found


def _assert_no_secret(secrets: list[str]) -> int:
    """Scans the journal's GCS namespace for ``secrets``; returns how many entries it held."""
    kv = _journal_kv()
    for key, value in kv.items():
        for secret in secrets:
            assert secret.encode() not in key, f"secret in journal key {key!r}"
            assert secret.encode() not in value, f"secret {secret!r} in journal entry {key!r}"
    return len(kv)


# ---------------------------------------------------------------------------- sealing, no cluster


class _Config(BaseModel):
    api_key: str | None = None
    token: SecretStr | None = None
    max_tokens: int = 16
    tokenizer: str = "gpt2"


class _Launcher:
    def __init__(self, policy: Any, config: _Config, kwargs: dict[str, Any]) -> None:
        self.policy = policy
        self.config = config
        self.kwargs = kwargs
        self.again = policy  # the same object twice


def test_seal_keeps_every_secret_out_and_unseal_puts_them_back() -> None:
    from academy_ray.checkpoint import CheckpointPolicy
    from placement.errors import SecretsUnavailableError
    from placement.secrets import seal, unseal

    tag = uuid.uuid4().hex
    s = {
        n: f"{n}-{tag}" for n in ("key", "secret", "session", "api", "token", "okey", "osec", "pw")
    }
    policy = CheckpointPolicy(
        uri="s3://bucket/ckpt",
        storage_options={
            "key": s["key"],
            "secret": s["secret"],
            "client_kwargs": {
                "endpoint_url": "http://s3.local:8333",
                "aws_session_token": s["session"],
            },
        },
    )
    launcher = _Launcher(
        policy,
        _Config(api_key=s["api"], token=SecretStr(s["token"])),
        {"opts": {"key": s["okey"], "secret": s["osec"]}, "password": s["pw"], "k": "ckpt:a1"},
    )
    blob, values = seal(launcher)
    for secret in s.values():
        assert secret.encode() not in blob
    assert sorted(values.values()) == sorted(s.values())
    for kept in (b"http://s3.local:8333", b"gpt2", b"ckpt:a1", b"s3://bucket/ckpt"):
        assert kept in blob  # only secrets are taken out
    back = unseal(blob, values)
    assert back.policy == policy and back.again == policy
    assert back.config.api_key == s["api"] and back.config.token.get_secret_value() == s["token"]
    assert back.kwargs == launcher.kwargs
    with pytest.raises(SecretsUnavailableError):
        unseal(blob, {})


# ---------------------------------------------------------------------------- on a cluster


@ray.remote(max_restarts=0)
class _Holder:
    def __init__(self, storage_options: dict[str, Any]) -> None:
        self.storage_options = storage_options

    def where(self) -> str:
        return ray.get_runtime_context().get_node_id()


class _SecretLauncher:
    """Idempotent launcher whose launch arguments hold credentials."""

    def __init__(self, namespace: str, storage_options: dict[str, Any]) -> None:
        self.namespace = namespace
        self.storage_options = storage_options

    async def __call__(self, decision: Decision) -> None:
        with contextlib.suppress(ValueError):
            ray.kill(ray.get_actor(decision.name, namespace=self.namespace))
        deadline = time.monotonic() + 30
        while True:
            try:
                _Holder.options(
                    name=decision.name,
                    namespace=self.namespace,
                    lifetime="detached",
                    **decision.actor_options(),
                ).remote(self.storage_options)
                return
            except ValueError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)


async def test_journal_holds_no_secret_and_an_adopted_agent_relaunches_with_its_credentials(
    sim_cluster, s3_server, namespace
) -> None:
    from academy_ray import AgentUnavailableError, Runtime
    from academy_ray.checkpoint import CheckpointPolicy
    from placement.journal import Journal
    from tests.academy_ray.agents import Counter

    tag = uuid.uuid4().hex
    key, secret = f"AKIA-{tag}", f"s3-secret-{tag}"
    bucket = s3_server.new_bucket()
    options = {
        "key": key,
        "secret": secret,
        "client_kwargs": {"endpoint_url": s3_server.endpoint_url, "region_name": "us-east-1"},
        "skip_instance_cache": True,
    }
    policy = CheckpointPolicy(uri=f"s3://{bucket}/ckpt", storage_options=options)
    rt = Runtime(namespace=namespace, checkpoint=policy)
    sim_cluster.add("vault-a", num_cpus=2, resources={"vaulted": 2})
    try:
        agent = await rt.launch(
            Counter, name="vaulted", resources={"custom": {"vaulted": 0.5}, "num_cpus": 0.01}
        )
        assert await agent.add(5) == 5  # checkpointed to S3 with the credentials
        lost = (await agent.info()).node_id
        assert lost == sim_cluster.nodes["vault-a"]
        assert _assert_no_secret([key, secret]) > 0

        info = restart_placement_controller(rt.placement)
        assert info["restored"] == 1
        # The adopted launcher resolves its credentials from the namespace's holder.
        journal = Journal(f"{namespace}/{CONTROLLER_NAME}")
        (entry,) = journal.load()[0]
        adopted = await entry.launcher.resolve()
        assert adopted.specs[0].checkpoint.storage_options == options

        # Node loss: the restarted controller relaunches the agent with them; it restores from S3.
        sim_cluster.add("vault-b", num_cpus=2, resources={"vaulted": 2})
        sim_cluster.kill("vault-a")
        deadline = asyncio.get_running_loop().time() + 120
        while True:
            try:
                now = await asyncio.wait_for(agent.info(), 10)
                if now.status == "running" and now.node_id != lost:
                    break
            except (AgentUnavailableError, TimeoutError):
                pass
            failures = await rt.placement.failures()
            assert asyncio.get_running_loop().time() < deadline, failures
            await asyncio.sleep(0.5)
        assert now.node_id == sim_cluster.nodes["vault-b"]
        assert await agent.get() == 5
        assert "vaulted" not in await rt.placement.failures()
        decision = await rt.explain("vaulted")
        assert decision is not None and decision.generation == 2
        _assert_no_secret([key, secret])  # the rewritten entry is sealed too
        holder = ray.get_actor(f"{CONTROLLER_NAME}.secrets", namespace=namespace)
        assert await holder.names.remote() == ["vaulted"]
        await rt.stop("vaulted", timeout=10)
        deadline = asyncio.get_running_loop().time() + 30
        while await holder.names.remote():  # released: the holder forgets its values
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.2)
    finally:
        for agent_info in await rt.list():
            await rt.stop(agent_info.name, timeout=5)
        rt.stop_placement()


def test_relaunch_without_its_secrets_fails_with_a_typed_error(sim_cluster, namespace) -> None:
    client = PlacementClient(namespace, poll_s=0.3)
    tag = uuid.uuid4().hex
    options = {"key": f"AKIA-{tag}", "secret": f"secret-{tag}"}
    doomed = sim_cluster.add("vault-doomed", num_cpus=2, resources={"doomed": 1})
    try:
        decision = client.place_sync(
            Demand(name="orphaned", cpus=0.5, resources={"doomed": 1}),
            _SecretLauncher(namespace, options),
        )
        assert decision.node_id == doomed
        _assert_no_secret(list(options.values()))
        # The holder dies with the controller (as a head-node restart would take both).
        ray.kill(ray.get_actor(f"{CONTROLLER_NAME}.secrets", namespace=namespace))
        assert restart_placement_controller(client)["restored"] == 1
        sim_cluster.add("vault-doomed-2", num_cpus=2, resources={"doomed": 1})
        sim_cluster.kill("vault-doomed")
        deadline = time.monotonic() + 60
        while "orphaned" not in (failures := client.failures_sync()):
            assert time.monotonic() < deadline, "the relaunch did not fail"
            time.sleep(0.3)
        assert "SecretsUnavailableError" in failures["orphaned"]
        assert "gone" in failures["orphaned"]
        with pytest.raises(ValueError):
            ray.get_actor("orphaned", namespace=namespace)  # nothing ran without credentials
    finally:
        client.shutdown()


class _Noop:
    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __call__(self, decision: Decision) -> None:
        return None


def test_each_namespace_adopts_only_its_own_journal(sim_cluster) -> None:
    a_ns, b_ns = f"ns-a-{uuid.uuid4().hex[:6]}", f"ns-b-{uuid.uuid4().hex[:6]}"
    a, b = PlacementClient(a_ns, poll_s=0.3), PlacementClient(b_ns, poll_s=0.3)
    try:
        for client, own in ((a, "only-a"), (b, "only-b")):
            for name in ("shared", own):
                client.place_sync(
                    Demand(name=name, cpus=0.01, reserve=False), _Noop(client.namespace)
                )
        info = restart_placement_controller(a)
        assert info["restored"] == 2
        assert sorted(d.name for d in a.decisions_sync()) == ["only-a", "shared"]
        assert sorted(d.name for d in b.decisions_sync()) == ["only-b", "shared"]
        a_prefix = f"{a_ns}/{CONTROLLER_NAME}".encode().hex().encode() + b"."
        a_keys = [k for k in _journal_kv() if k.startswith(a_prefix)]
        assert sorted(k[len(a_prefix) :] for k in a_keys) == [b"d.only-a", b"d.shared"]

        # A controller of namespace A handed B's journal key refuses it (never adopts B's entries).
        actor_cls: Any = ray.remote(PlacementController)
        intruder = actor_cls.options(
            name="intruder", namespace=a_ns, num_cpus=0, max_restarts=0
        ).remote(journal=f"{b_ns}/{CONTROLLER_NAME}")
        with pytest.raises(
            ray.exceptions.RayActorError, match="not of this controller's namespace"
        ):
            ray.get(intruder.info.remote(), timeout=60)
        assert sorted(d.name for d in b.decisions_sync()) == ["only-b", "shared"]
        assert _journal_kv()  # B's entries are still there
        b_prefix = f"{b_ns}/{CONTROLLER_NAME}".encode().hex().encode() + b"."
        assert len([k for k in _journal_kv() if k.startswith(b_prefix)]) == 2
    finally:
        a.shutdown()
        b.shutdown()
