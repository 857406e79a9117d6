"""Training the codon LM and serving it through `serving` (Ray Serve, OpenAI-compatible API)."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

from examples.genslm.codon import train_codon_lm

MODEL_ID = "codon-lm"

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train_and_publish(out: Path, steps: int = 300) -> tuple[str, dict[str, float]]:
    """Trains the model into ``out/model`` and publishes it (with its manifest) to ``out/weights``.

    Returns:
        The weights URI and the training figures.
    """
    from serving import publish_model

    figures = train_codon_lm(out / "model", steps=steps)
    uri = (out / "weights").resolve().as_uri()
    publish_model(out / "model", uri)
    return uri, figures


def serve_codon_lm(weights_uri: str, app_name: str, cache_root: Path, port: int) -> tuple[str, Any]:
    """Deploys the served codon LM; returns its OpenAI base URL and the serving config."""
    from serving import CacheConfig, ModelSpec
    from serving.app import ServingConfig, serve_models

    config = ServingConfig(
        app_name=app_name,
        route_prefix=f"/{app_name}",
        replicas=1,
        max_models_per_replica=1,
        replica_cpus=0.5,
        ingress_cpus=0.05,
        cache=CacheConfig(root=str(cache_root), namespace=f"{app_name}-cache"),
    )
    spec = ModelSpec(id=MODEL_ID, weights_uri=weights_uri, engine="transformers")
    return serve_models([spec], config, port=port), config


def unserve(config: Any) -> None:
    """Deletes the serving app and its node caches."""
    from ray import serve

    try:
        serve.delete(config.app_name)
    except Exception as error:  # noqa: BLE001 - already gone
        logger.debug("cleanup: %s", error)
    try:
        from serving.cache import kill_node_caches

        kill_node_caches(config.cache)
    except Exception as error:  # noqa: BLE001
        logger.debug("cleanup: %s", error)
