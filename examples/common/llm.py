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

from pydantic import BaseModel, Field

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

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
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
    return _train(model, out, tokenizer, texts, steps, seed, batch, lr, add_bos, max_context)


def _train(
    model: Any,
    out: Path,
    tokenizer: Any,
    texts: list[str],
    steps: int,
    seed: int,
    batch: int,
    lr: float,
    add_bos: bool,
    max_context: int,
) -> dict[str, float]:
    """Trains ``model`` on ``texts`` (AdamW, random batches) and saves it in ``out``."""
    import torch

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


class FineTune(BaseModel):
    """A fine-tuning job: the texts and how long to train on them.

    Attributes:
        texts: Training texts (each followed by EOS).
        steps: Optimiser steps (AdamW), one random batch each.
        seed: Torch seed of the batches.
        batch: Texts per step.
        lr: Learning rate.
        add_bos: Start each text with the BOS token (as the model was trained).
    """

    texts: list[str] = Field(min_length=1)
    steps: int = Field(default=60, ge=1)
    seed: int = 0
    batch: int = Field(default=8, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    add_bos: bool = False


def fine_tune_and_publish(
    weights_uri: str, job: FineTune, storage_options: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Fine-tunes the current version of a versioned model and publishes the result as the next one.

    The current version is fetched from object storage (`serving.fetch_model`, checksums verified),
    trained on ``job.texts`` and published with `serving.publish_version` (which makes it current:
    the serving app moves to it without dropping a request). Runs wherever it is called: the examples
    run it as a Ray task (`fine_tune_task`) with the CPU it needs.

    Returns:
        ``version`` (the new version's name), ``from_version`` and the training figures.

    Raises:
        serving.WeightsError: No version of the model is published yet.
    """
    import tempfile

    from transformers import AutoTokenizer, LlamaForCausalLM

    from serving import ModelSpec, fetch_model, publish_version, resolve_version

    spec = ModelSpec(
        id="fine-tune",
        weights_uri=weights_uri,
        storage_options=storage_options or {},
        versioned=True,
    )
    current = resolve_version(spec)
    with tempfile.TemporaryDirectory(prefix="fine-tune-") as work:
        base, out = Path(work) / "base", Path(work) / "out"
        fetch_model(current.weights_uri, base, storage_options)
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = LlamaForCausalLM.from_pretrained(base)
        out.mkdir()
        tokenizer.save_pretrained(out)
        figures = _train(
            model,
            out,
            tokenizer,
            job.texts,
            job.steps,
            job.seed,
            job.batch,
            job.lr,
            job.add_bos,
            int(model.config.max_position_embeddings),
        )
        published = publish_version(out, weights_uri, storage_options)
    return {"version": published.version, "from_version": current.version, **figures}


class FineTuner:
    """A Ray actor that runs `fine_tune_and_publish` jobs, one at a time.

    It imports torch, transformers and the Llama model code when it starts (seconds on a small machine:
    transformers loads its model modules lazily, 2 s more here), so a fine-tune asked for later starts
    at once, where a fresh Ray task would first start a worker and import them. Start it early
    (`start_fine_tuner`) and wait for `ready` before the first fine-tune is due.
    """

    def __init__(self) -> None:
        import torch  # noqa: F401
        from transformers import AutoTokenizer, LlamaForCausalLM  # noqa: F401

    def ready(self) -> bool:
        """True once the actor has started (and imported what a fine-tune needs)."""
        return True

    def fine_tune(
        self, weights_uri: str, job: FineTune, storage_options: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """See `fine_tune_and_publish`."""
        return fine_tune_and_publish(weights_uri, job, storage_options)


def start_fine_tuner(
    num_cpus: float = 1.0, name: str | None = None, namespace: str | None = None
) -> Any:
    """Starts a `FineTuner` actor asking for ``num_cpus`` CPUs (it ends with its owner).

    With ``name`` it is a named actor in ``namespace`` (or gets the running one of that name), so
    that a driver can start it before the agents that use it (`ray.get_actor`).
    """
    import ray

    actor = ray.remote(num_cpus=num_cpus, max_restarts=1, max_task_retries=1)(FineTuner)
    if name is not None:
        actor = actor.options(name=name, namespace=namespace, get_if_exists=True)
    return actor.remote()


def publish(folder: Path, out: Path) -> str:
    """Publishes a model folder as version 1 of a versioned model under ``out``.

    Uses `serving.publish_version` (checksum manifest, ``versions/1`` and the ``current.json``
    pointer); later versions (`fine_tune_and_publish`) go beside it and the app follows them.

    Returns:
        The versioned weights URI (``file://...``).
    """
    from serving import publish_version

    uri = out.resolve().as_uri()
    publish_version(folder, uri)
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
    spec = ModelSpec(
        id=model_id,
        weights_uri=weights_uri,
        engine="transformers",
        versioned=True,
        version_poll_seconds=0.5,
    )
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
