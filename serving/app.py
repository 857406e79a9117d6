"""Serving's entry points: deploy the application on Ray Serve (`serve_models`) and remove it.

The parts live in modules of their own: `serving.config` (settings), `serving.ingress` (the HTTP
API), `serving.builder` (the Serve application) and `serving.placer` (replica placement).
"""

from __future__ import annotations

import os

import ray
from ray import serve

from placement.errors import PlacementError
from placement.failure_detection import with_failure_detection
from serving.auth import load_key_file
from serving.builder import build_app
from serving.config import LOCAL_HOSTS, ReplicaPlacement, ServingConfig, warn_if_exposed
from serving.ingress import OpenAIIngress
from serving.placer import remove_placer, replica_placer
from serving.replica_pool import remove_extra_replicas
from serving.spec import ModelSpec
from serving.tensor_parallel import refuse_if_no_node_fits, replica_shape
from serving.usage import remove_usage_keeper

__all__ = [
    "LOCAL_HOSTS",
    "OpenAIIngress",
    "ReplicaPlacement",
    "ServingConfig",
    "build_app",
    "ensure_ray",
    "serve_models",
    "stop_models",
    "warn_if_exposed",
]


def ensure_ray(address: str | None = None) -> None:
    """Joins the given cluster, or starts an embedded local Ray, as `academy_ray.Runtime` does.

    Never guesses: without an address (and no ``RAY_ADDRESS``) a local Ray is started, rather than
    joining whatever cluster record ``ray start`` left on this machine (a stale one made Serve wait
    for minutes). A given cluster that does not answer fails at once with Ray's error.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=address, **with_failure_detection({}, address))


def serve_models(
    specs: list[ModelSpec],
    config: ServingConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    proxy_location: str = "EveryNode",
    address: str | None = None,
) -> str:
    """Deploys (or updates) the application and returns its OpenAI base URL (``.../v1``).

    ``proxy_location`` is Serve's (``"EveryNode"``, ``"HeadOnly"``; simulated clusters of several
    nodes on one machine need ``"HeadOnly"``: their proxies would share one port). Ray is joined or
    started explicitly (`ensure_ray`: ``address``, else ``RAY_ADDRESS``, else an embedded local Ray)
    unless this process is connected already.

    Raises:
        KeyFileError: ``config.users.keys_file`` exists here and is invalid (checked before
            deploying; the ingress loads it again on its own node).
    """
    config = config or ServingConfig()
    warn_if_exposed(host, config.api_key or config.users.keys_file)
    if config.users.keys_file and os.path.exists(config.users.keys_file):
        load_key_file(config.users.keys_file)  # a bad key file fails here, before deploying
    ensure_ray(address)
    serve.start(proxy_location=proxy_location, http_options={"host": host, "port": port})
    if config.placement is not None:
        placer = replica_placer(config.app_name, config.placement)
        try:
            ray.get(placer.deploy.remote(list(specs), config))
        except ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, PlacementError):  # e.g. no node can ever hold a replica
                raise error.cause from None
            raise
    else:
        shape = replica_shape(specs, config.replica_cpus, config.replica_gpus)
        refuse_if_no_node_fits(f"serve:{config.app_name}", shape, config.replica_cpus)
        serve.run(build_app(specs, config), name=config.app_name, route_prefix=config.route_prefix)
    prefix = config.route_prefix.rstrip("/")
    return f"http://{host}:{port}{prefix}/v1"


def stop_models(config: ServingConfig) -> None:
    """Deletes the application (with the replicas its router added) and, when ``placement``
    placed it, releases its replica slots."""
    serve.delete(config.app_name)
    remove_extra_replicas(config)
    remove_usage_keeper(config.app_name)
    if config.placement is not None:
        remove_placer(config.app_name, config.placement)
