"""Tiny language models of the examples: train a small Llama in seconds, publish it, serve it.

Shared by the pipelines that sample from a model served by `serving` (the MOF Generator's SMILES model;
the same steps as the GenSLM codon LM). Torch, transformers and Ray Serve are imported lazily.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def train_tiny_llama(
    out: Path,
    tokenizer: Any,
    texts: list[str],
    steps: int = 300,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    batch: int = 8,
    lr: float = 1e-2,
    add_bos: bool = False,
    max_context: int = 512,
) -> dict[str, float]:
    """Trains a tiny Llama on ``texts`` (each followed by EOS) and saves it as safetensors in ``out``.

    Texts of different lengths are right-padded with the tokenizer's pad token, which the loss ignores.

    Args:
        out: Folder that already holds the tokenizer (`save_pretrained`); the model is written beside it.
        tokenizer: A transformers fast tokenizer with ``eos_token_id`` and ``pad_token_id``.
        texts: Training texts.
        steps: Optimiser steps (AdamW), one random batch each.
        seed: Torch seed (weights and batches).
        hidden: Hidden width (two attention heads, MLP twice as wide).
        layers: Decoder layers.
        batch: Texts per step.
        lr: Learning rate.
        add_bos: Start each text with the BOS token (then prompts start with it too).
        max_context: ``max_position_embeddings``.

    Returns:
        Training figures: ``seconds``, ``first_loss``, ``final_loss``, ``parameters``, ``texts``.

    Raises:
        ValueError: No texts, or a text longer than ``max_context`` tokens.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if not texts:
        raise ValueError("no training texts")
    started = time.perf_counter()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    head = [tokenizer.bos_token_id] if add_bos else []
    ids = [head + tokenizer(t)["input_ids"] + [eos] for t in texts]
    width = max(len(i) for i in ids)
    if width > max_context:
        raise ValueError(f"a training text has {width} tokens > max_context {max_context}")
    data = torch.tensor([i + [pad] * (width - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=max_context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=pad,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        pick = torch.randint(len(data), (batch,))
        inputs, attention = data[pick], mask[pick]
        labels = inputs.masked_fill(attention == 0, -100)
        loss = model(input_ids=inputs, attention_mask=attention, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tail = losses[-10:]
    return {
        "seconds": time.perf_counter() - started,
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "parameters": float(sum(p.numel() for p in model.parameters())),
        "texts": float(len(texts)),
    }


def publish(folder: Path, out: Path) -> str:
    """Publishes a model folder (with its checksum manifest) to ``out`` with `serving.publish_model`.

    Returns:
        The weights URI (``file://...``).
    """
    from serving import publish_model

    uri = out.resolve().as_uri()
    publish_model(folder, uri)
    return uri


def serve_model(
    model_id: str,
    weights_uri: str,
    app_name: str,
    cache_root: Path,
    port: int,
    namespace: str | None = None,
) -> tuple[str, Any]:
    """Deploys one transformers-engine model with `serving.app.serve_models` (Ray must be initialised).

    ``namespace`` is the agents' namespace: the replica is then placed by the same placement
    controller as the agents (``academy-ray explain serve:<app_name>:0`` there says why).

    Returns:
        The OpenAI base URL (``http://127.0.0.1:port/<app_name>/v1``) and the `ServingConfig`.
    """
    from serving import CacheConfig, ModelSpec
    from serving.app import ServingConfig, serve_models
    from serving.placer import ReplicaPlacement

    placement = ReplicaPlacement(namespace=namespace) if namespace else ReplicaPlacement()
    config = ServingConfig(
        app_name=app_name,
        route_prefix=f"/{app_name}",
        replicas=1,
        max_models_per_replica=1,
        replica_cpus=0.5,
        ingress_cpus=0.05,
        cache=CacheConfig(root=str(cache_root), namespace=f"{app_name}-cache"),
        placement=placement,
    )
    spec = ModelSpec(id=model_id, weights_uri=weights_uri, engine="transformers")
    return serve_models([spec], config, port=port), config


def unserve(config: Any) -> None:
    """Deletes the serving app and its node caches (quietly if they are gone already)."""
    from serving.app import stop_models

    try:
        stop_models(config)
    except Exception as error:  # noqa: BLE001 - already gone
        logger.debug("cleanup: %s", error)
    try:
        from serving.cache import kill_node_caches

        kill_node_caches(config.cache)
    except Exception as error:  # noqa: BLE001
        logger.debug("cleanup: %s", error)
