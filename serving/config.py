"""How the serving application is deployed: `ServingConfig` and the placement of its replicas."""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from serving.auth import KeyLimits
from serving.cache import CacheConfig

logger = logging.getLogger(__name__)


class ReplicaPlacement(BaseModel):
    """How a serving app's replicas are placed by ``placement``.

    Attributes:
        namespace: Ray namespace of the placement controller (the agents' namespace, so that
            agents and model replicas share one view of the cluster).
        spread: put each replica on a different node while enough nodes fit (then share nodes).
        timeout_s: longest wait for a replica slot to fit.
        spread_wait_s: how long a slot waits for a *different* node before it may share one.
    """

    namespace: str = Field(
        default_factory=lambda: os.environ.get("ACADEMY_RAY_NAMESPACE", "academy")
    )
    spread: bool = True
    timeout_s: float = Field(default=120.0, gt=0)
    spread_wait_s: float = Field(default=5.0, gt=0)


class UsersConfig(BaseModel):
    """Many users: API keys, per-key limits and fair queueing (see :mod:`serving.auth`).

    Attributes:
        keys_file: a key file (JSON, TOML or YAML) of hashed keys with their limits, re-read when it
            changes; it must be readable on the ingress's node. Default: ``$ACADEMY_SERVING_KEYS_FILE``.
            ``ServingConfig.api_key``, if set, stays valid beside it (key id ``default``).
        reload_interval_s: the key file is checked for changes at most this often.
        default_limits: limits of keys that set none (the shared ``api_key`` included).
        max_queued_per_key: requests one key may have waiting for the model replicas in each ingress
            replica; more get ``429`` with ``Retry-After`` at once.
        engine_slots: requests each ingress replica lets through to the model replicas at once;
            those beyond wait in per-key queues served round robin. Default: ``replicas`` (or
            ``max_replicas``) ``x max_ongoing_requests``.
        shared_limits: keep the token buckets in one actor per app, so that limits hold across
            several ingress replicas (one actor call per admitted request); otherwise each ingress
            replica holds its own (exact with one ingress replica, the default).
    """

    keys_file: str | None = Field(
        default_factory=lambda: os.environ.get("ACADEMY_SERVING_KEYS_FILE") or None
    )
    reload_interval_s: float = Field(default=1.0, gt=0)
    default_limits: KeyLimits = Field(default_factory=KeyLimits)
    max_queued_per_key: int = Field(default=32, ge=0)
    engine_slots: int | None = Field(default=None, ge=1)
    shared_limits: bool = False


LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""Hosts that only this machine reaches: listening there without an API key is not warned about."""


class ServingConfig(BaseModel):
    """How the serving application is deployed.

    Attributes:
        app_name: Serve application name.
        route_prefix: HTTP route prefix of the ingress.
        replicas: model replicas.
        max_models_per_replica: models each replica keeps loaded (LRU beyond).
        max_parked_engines: sleeping engines kept per replica (vLLM on CUDA).
        replica_cpus: logical CPUs each model replica reserves (fractions are fine).
        replica_gpus: GPUs each model replica reserves. Serving a model with
            ``tensor_parallel_size=N`` raises it to N, reserved as N one-GPU bundles on one node
            (:mod:`serving.tensor_parallel`); more than N is refused.
        ingress_cpus: logical CPUs the HTTP ingress reserves.
        max_ongoing_requests: requests each model replica runs at once (Serve's
            ``max_ongoing_requests``).
        max_queued_requests: requests the ingress queues for the model replicas beyond those
            (Serve's ``max_queued_requests``, per ingress replica); more get ``503`` with a
            ``Retry-After`` header.
        ingress_max_requests: requests inside each ingress replica (waiting for a model replica or
            streaming); more get an immediate ``503`` with ``Retry-After`` (``/health`` is not
            counted).
        ingress_max_queued_requests: requests Serve's HTTP proxies queue for the ingress when it is
            saturated; more get Serve's ``503`` with ``Retry-After``.
        retry_after_seconds: the ``Retry-After`` of overload answers.
        api_key: when set, requests need ``Authorization: Bearer <api_key>`` (every route but
            ``/health``, the API docs and ``/openapi.json`` included).
        max_body_bytes: largest request body accepted; larger ones get 413 before they are parsed.
        max_prompt_bytes: largest prompt in UTF-8 bytes (a chat's message contents together);
            larger ones get 413 before they are tokenised.
        switch_history: model switches each replica keeps in its stats (older ones are counted).
        users: API keys per user or project, their limits and fair queueing (:class:`UsersConfig`).
        runtime_env: Ray runtime env of the model replicas (e.g. the vLLM CPU venv's Python).
        cache: the node model cache settings.
        routing: ``"serve"``: Serve's multiplexing routes (one deployment, LRU per replica);
            ``"policy"``: :mod:`serving.policy` decides (one single-replica deployment per replica,
            tier-aware routing, copies per model by demand; see :mod:`serving.policy_router`).
        copy_concurrency: policy routing: requests one copy of a model runs before more copies
            are wanted.
        demand_window_s: policy routing: the window of "recent traffic".
        policy_tick_s: policy routing: how often the replica manager runs.
        policy_patience_s: policy routing: a request that waited this long for room may evict
            the last copy of another model with traffic (least recently used first).
        max_replicas: policy routing: the replica count follows the total load between
            ``replicas`` and this many (our controller adds single-replica deployments, placed
            by ``placement``, and drains them again; see :mod:`serving.replica_pool`);
            ``None``: fixed at ``replicas``.
        placement: how ``placement`` chooses each replica's node (where the node caches already
            hold the weights, with free GPUs) and re-places replicas of lost nodes; see
            :mod:`serving.placer`. ``None``: Serve spreads the replicas itself.
    """

    app_name: str = "academy-serving"
    route_prefix: str = "/"
    replicas: int = Field(default=1, ge=1)
    max_models_per_replica: int = Field(default=2, ge=1)
    max_parked_engines: int = Field(default=0, ge=0)
    replica_cpus: float = Field(default=0.5, ge=0)
    replica_gpus: float = Field(default=0.0, ge=0)
    ingress_cpus: float = Field(default=0.1, ge=0)
    max_ongoing_requests: int = Field(default=32, ge=1)
    max_queued_requests: int = Field(default=64, ge=1)
    ingress_max_requests: int = Field(default=256, ge=1)
    ingress_max_queued_requests: int = Field(default=128, ge=1)
    retry_after_seconds: int = Field(default=1, ge=1)
    api_key: str | None = Field(default=None, repr=False)
    max_body_bytes: int = Field(default=4 << 20, ge=1)
    max_prompt_bytes: int = Field(default=1 << 20, ge=1)
    switch_history: int = Field(default=256, ge=1)
    users: UsersConfig = Field(default_factory=UsersConfig)
    runtime_env: dict[str, Any] | None = None
    cache: CacheConfig = Field(default_factory=CacheConfig)
    routing: Literal["serve", "policy"] = "serve"
    copy_concurrency: float = Field(default=8.0, gt=0)
    demand_window_s: float = Field(default=60.0, gt=0)
    policy_tick_s: float = Field(default=1.0, gt=0)
    policy_patience_s: float = Field(default=10.0, ge=0)
    max_replicas: int | None = Field(default=None, ge=1)
    placement: ReplicaPlacement | None = Field(default_factory=ReplicaPlacement)

    @model_validator(mode="after")
    def _replica_bounds(self) -> ServingConfig:
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be >= replicas ({self.replicas})"
            )
        return self


def warn_if_exposed(host: str, api_key: str | None) -> bool:
    """Logs a warning when the API listens beyond localhost without an API key.

    Returns:
        Whether it warned.
    """
    if api_key or host in LOCAL_HOSTS:
        return False
    logger.warning(
        "the serving API listens on %s without an API key: anyone who reaches this address can "
        "use every model; set ServingConfig.api_key or listen on 127.0.0.1",
        host,
    )
    return True
