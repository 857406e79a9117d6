"""Tiny, locally made Llama models for tests, benchmarks and laptop demos (no hub download)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.spec import ModelSpec

_CORPUS = [
    "Metal organic frameworks adsorb carbon dioxide at low pressure.",
    "The agent asked the model to rank candidate linkers by stability.",
    "Proteins fold into structures that decide their function in the cell.",
    "A language model predicts the next token from the tokens before it.",
    "Ray schedules tasks and actors across the nodes of a cluster.",
    "Scientists run many simulations and learn from every result they get.",
    "user: hello there. assistant: hello, how can I help you today?",
    "The quick brown fox jumps over the lazy dog 0123456789 times.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def make_tiny_llama(
    path: str | os.PathLike[str],
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 2,
    vocab_size: int = 512,
    max_context: int = 256,
) -> Path:
    """Builds a random tiny Llama with a locally trained byte-level BPE tokenizer, as safetensors.

    Args:
        path: output folder (created).
        seed: weight seed; different seeds give different models of identical shape.
        hidden_size: hidden width.
        layers: decoder layers.
        heads: attention heads (head dim = hidden_size / heads).
        vocab_size: tokenizer vocabulary size.
        max_context: ``max_position_embeddings``.

    Returns:
        The folder, holding ``model.safetensors``, ``config.json``, ``generation_config.json`` and
        the tokenizer files.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = max_context
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_context,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out, safe_serialization=True)
    return out


def publish_tiny_models(
    work: str | os.PathLike[str],
    base_uri: str,
    count: int,
    storage_options: dict[str, Any] | None = None,
    id_prefix: str = "m",
    keep_folders: bool = True,
    **shape: Any,
) -> tuple[list[ModelSpec], int]:
    """Makes ``count`` tiny Llamas (seeds 0..count-1) and publishes each to ``<base_uri>/m<i>``.

    Args:
        work: local folder for the model folders (``work/m<i>``).
        base_uri: object-storage folder the models are published under.
        count: how many models.
        storage_options: fsspec options of the store.
        id_prefix: model ids are ``<id_prefix><i>``.
        keep_folders: False deletes each local folder once it is published.
        **shape: passed to :func:`make_tiny_llama` (``hidden_size``, ``layers``, ``heads``, ...).

    Returns:
        The specs and the size in bytes of one model (all have the same shape).
    """
    import shutil

    from serving.spec import ModelSpec
    from serving.storage import publish_model

    specs, model_bytes = [], 0
    for i in range(count):
        folder = make_tiny_llama(Path(work) / f"m{i}", seed=i, **shape)
        uri = f"{base_uri.rstrip('/')}/m{i}"
        model_bytes = publish_model(folder, uri, storage_options).total_bytes
        specs.append(
            ModelSpec(id=f"{id_prefix}{i}", weights_uri=uri, storage_options=storage_options or {})
        )
        if not keep_folders:
            shutil.rmtree(folder, ignore_errors=True)
    return specs, model_bytes
