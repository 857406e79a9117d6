"""The parent gene and a tiny codon-level language model (a Llama trained here in seconds).

Tokens are codons (64) plus ``<unk>``, ``<s>``, ``</s>`` and ``<pad>``; text is codons separated by
spaces (``ATG GCT ...``). The model learns a family of synonymous and near-synonymous variants of the
parent gene, is saved as safetensors with its tokenizer, and is served through `serving`.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
from Bio.Data import CodonTable

from examples.common.llm import train_tiny_llama

_TABLE: Any = CodonTable.standard_dna_table

PARENT_PROTEIN = (
    "MKVAVLGAAGGIGQALALLLKTQLPSGSELSLYDIAPVTPGVAVDLSHIPTAVKIKGFSGEDATPALEGADVVLISAGVARKPGMDRSDL"
    "FNVNAGIVKNLVQQVAKTCPKACIGIITNPVNTTVAIAAEVLKKAGVYDKNKLFGVTTLDIIRSNTFVAELKGKQPGEVEVPVIGGHSGV"
)
"""Parent protein: 180 N-terminal residues of E. coli malate dehydrogenase (UniProt P61889; GenSLM's
showcase enzyme family) as written from memory: not checked against UniProt (no network here). The
pipeline only needs a fixed, protein-like target."""

CODONS: tuple[str, ...] = tuple("".join(c) for c in itertools.product("TCAG", repeat=3))
STOP_CODONS: tuple[str, ...] = tuple(_TABLE.stop_codons)
SPECIAL = ("<unk>", "<s>", "</s>", "<pad>")

# Codons of each amino acid (standard table), E. coli's most used one first.
_PREFERRED = {
    "A": "GCG", "R": "CGT", "N": "AAC", "D": "GAT", "C": "TGC", "Q": "CAG", "E": "GAA", "G": "GGC",
    "H": "CAT", "I": "ATT", "L": "CTG", "K": "AAA", "M": "ATG", "F": "TTT", "P": "CCG", "S": "AGC",
    "T": "ACC", "W": "TGG", "Y": "TAT", "V": "GTG",
}  # fmt: skip
SYNONYMS: dict[str, list[str]] = {}
for _codon, _aa in _TABLE.forward_table.items():
    SYNONYMS.setdefault(_aa, []).append(_codon)
for _aa, _first in _PREFERRED.items():
    SYNONYMS[_aa].sort(key=_first.__ne__)  # the preferred codon first


def parent_gene() -> str:
    """The parent DNA: each residue's preferred E. coli codon, then a TAA stop."""
    return "".join(_PREFERRED[aa] for aa in PARENT_PROTEIN) + "TAA"


def codons_of(dna: str) -> list[str]:
    """Splits DNA into codons (a trailing partial codon is dropped)."""
    return [dna[i : i + 3] for i in range(0, len(dna) - len(dna) % 3, 3)]


def variant(rng: np.random.Generator, synonymous: float = 0.25, missense: float = 0.04) -> str:
    """A training variant of the parent: random synonymous codons and a few amino-acid changes."""
    out = []
    for aa in PARENT_PROTEIN:
        if rng.random() < missense:
            aa = str(rng.choice(list(_PREFERRED)))
        options = SYNONYMS[aa]
        out.append(
            options[int(rng.integers(len(options)))] if rng.random() < synonymous else options[0]
        )
    return "".join(out) + "TAA"


def make_tokenizer(path: Path) -> object:
    """A codon-level tokenizer (WordLevel over the 64 codons), saved in ``path``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate((*SPECIAL, *CODONS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    fast.model_max_length = 512
    fast.save_pretrained(path)
    return fast


def train_codon_lm(
    path: str | os.PathLike[str],
    steps: int = 300,
    variants: int = 64,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
) -> dict[str, float]:
    """Trains a tiny Llama on variants of the parent gene and saves it (safetensors) in ``path``.

    Returns:
        Training figures: ``seconds``, ``first_loss``, ``final_loss``, ``parameters``.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer(out)
    rng = np.random.default_rng(seed)
    texts = [" ".join(codons_of(variant(rng))) for _ in range(variants)]
    return train_tiny_llama(
        out, tokenizer, texts, steps=steps, seed=seed, hidden=hidden, layers=layers
    )
