"""The Generator's optional served model: a tiny SMILES-token Llama trained here in seconds.

Tokens are the SMILES tokens of `examples.mof.linkers.VOCAB` (atoms, bonds, ring digits, branches, ``*``)
plus ``<unk>``, ``<s>``, ``</s>``, ``<pad>``; the tokenizer (WordLevel, regex pre-tokenizer, fused decoder
so completions come back without spaces) is built locally with `tokenizers`. Training texts are the seed
linkers and valid RDKit mutations of them (canonical SMILES). The model is saved as
safetensors, published with `serving.publish_model` and served by `serving.app.serve_models`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from rdkit import Chem

from examples.mof.linkers import _TOKEN, SEED_LINKERS, VOCAB, canonical_linker, mutate

MODEL_ID = "smiles-lm"
BOS = "<s>"
SPECIAL = ("<unk>", BOS, "</s>", "<pad>")
TOKENS: tuple[str, ...] = tuple(t for t in VOCAB if t not in ("^", "$", "?"))


class LlmConfig(BaseModel):
    """How the Generator samples linkers from a served model.

    Attributes:
        base_url: The serving app's OpenAI API root (``http://host:port/<app>/v1``).
        model: Model id in the serving app.
        ratio: Share of the Generator's generative-model draws that go to the served model (the rest
            stay with its trigram model): 1.0 replaces the trigram model, 0.5 mixes them half and half.
        temperature: Sampling temperature.
        max_tokens: Tokens to sample at most per linker.
        prompt_tokens: The prompt is BOS plus the first 0..prompt_tokens tokens of a linker from the
            Generator's current training set (the best half after a retrain).
        timeout_s: Seconds per request before the draw falls back to the trigram model.
        retry_after_s: After a failed request, draws go to the trigram model for this many seconds.
        weights_uri: The served model's versioned weights URI: each retrain fine-tunes the current
            version on the Database's best linkers and publishes the next there (``None``: the model is
            never fine-tuned, e.g. one served elsewhere).
        fine_tune_steps: Optimiser steps of each fine-tune (0: no fine-tuning).
        fine_tune_cpus: CPUs of the fine-tuning Ray actor (a logical share: it trains on one thread).
        fine_tune_timeout_s: A fine-tune not done by then is cancelled (the served version stays).
        replay: Training texts of the original set mixed into each fine-tune (against forgetting).
        fine_tuner: Name of a `FineTuner` actor in the agents' namespace that the driver started (and
            warmed) before the pipeline; the Generator starts its own if it is gone (None: always).
    """

    base_url: str
    model: str = MODEL_ID
    ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    temperature: float = Field(default=1.0, gt=0.0)
    max_tokens: int = Field(default=48, ge=1)
    prompt_tokens: int = Field(default=2, ge=0)
    timeout_s: float = Field(default=10.0, gt=0.0)
    retry_after_s: float = Field(default=5.0, ge=0.0)
    weights_uri: str | None = None
    fine_tune_steps: int = Field(default=60, ge=0)
    fine_tune_cpus: float = Field(default=0.25, gt=0.0)
    fine_tune_timeout_s: float = Field(default=120.0, gt=0.0)
    replay: int = Field(default=24, ge=0)
    fine_tuner: str | None = None


def make_tokenizer(path: Path) -> Any:
    """A SMILES-token tokenizer (WordLevel over `TOKENS`), saved in ``path``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*SPECIAL, *TOKENS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(_TOKEN.pattern), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token=BOS,
        eos_token="</s>",
        pad_token="<pad>",
        clean_up_tokenization_spaces=False,
    )
    fast.model_max_length = 128
    fast.save_pretrained(path)
    return fast


def training_texts(seed: int = 0, random_per_seed: int = 0, mutants: int = 150) -> list[str]:
    """The seed linkers, valid RDKit mutants of them (canonical), optionally random SMILES of each seed.

    Random (non-canonical) SMILES make a harder distribution: on 400 steps the model then writes fewer
    valid linkers (measured here: 8 of 40 samples valid with 2 per seed, 23 of 40 with none).
    """
    rng = np.random.default_rng(seed)
    texts = list(SEED_LINKERS)
    for smiles in SEED_LINKERS:
        mol = Chem.MolFromSmiles(smiles)
        for i in range(random_per_seed):
            Chem.rdBase.SeedRandomNumberGenerator(seed * 1000 + i)  # type: ignore[attr-defined]
            texts.append(str(Chem.MolToSmiles(mol, doRandom=True, canonical=False)))
    for _ in range(mutants * 3):
        if len(texts) >= len(SEED_LINKERS) * (1 + random_per_seed) + mutants:
            break
        child = canonical_linker(mutate(str(rng.choice(SEED_LINKERS)), rng))
        if child is not None:
            texts.append(child)
    return list(dict.fromkeys(texts))


@functools.cache
def _original_texts() -> tuple[str, ...]:
    return tuple(training_texts(0))


def fine_tune_texts(best: list[str], replay: int, seed: int = 0) -> list[str]:
    """A fine-tune's texts: the best linkers three times each, plus ``replay`` original texts."""
    rng = np.random.default_rng(seed)
    original = _original_texts()
    kept = [original[int(i)] for i in rng.choice(len(original), size=min(replay, len(original)))]
    return [*best, *best, *best, *kept]


def train_smiles_lm(path: str | Path, steps: int = 400, seed: int = 0) -> dict[str, float]:
    """Trains the SMILES LM on `training_texts` and saves it (safetensors + tokenizer) in ``path``.

    Returns:
        Training figures (see `examples.common.llm.train_tiny_llama`).
    """
    from examples.common.llm import train_tiny_llama

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(out)
    return train_tiny_llama(
        out,
        tokenizer,
        training_texts(seed),
        steps=steps,
        seed=seed,
        lr=3e-3,
        add_bos=True,
        max_context=128,
    )


def train_and_publish(out: Path, steps: int = 400) -> tuple[str, dict[str, float]]:
    """Trains the SMILES LM into ``out/smiles-lm`` and publishes it to ``out/smiles-lm-weights``.

    Returns:
        The weights URI and the training figures.
    """
    from examples.common.llm import publish

    figures = train_smiles_lm(out / "smiles-lm", steps=steps)
    return publish(out / "smiles-lm", out / "smiles-lm-weights"), figures
