"""Training the codon LM and serving it through `serving` (Ray Serve, OpenAI-compatible API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from examples.common.llm import free_port, publish, serve_model, unserve
from examples.genslm.codon import train_codon_lm

MODEL_ID = "codon-lm"

__all__ = ["MODEL_ID", "free_port", "serve_codon_lm", "train_and_publish", "unserve"]


def train_and_publish(out: Path, steps: int = 300) -> tuple[str, dict[str, float]]:
    """Trains the model into ``out/model`` and publishes it (with its manifest) to ``out/weights``.

    Returns:
        The weights URI and the training figures.
    """
    figures = train_codon_lm(out / "model", steps=steps)
    return publish(out / "model", out / "weights"), figures


def serve_codon_lm(
    weights_uri: str, app_name: str, cache_root: Path, port: int, namespace: str | None = None
) -> tuple[str, Any]:
    """Deploys the served codon LM (placed by ``namespace``'s placement controller); returns its
    OpenAI base URL and the serving config."""
    return serve_model(MODEL_ID, weights_uri, app_name, cache_root, port, namespace)
