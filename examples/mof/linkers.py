"""Linker molecules: seeds, validity, and the Generator's online-trained SMILES n-gram model.

A linker is a SMILES string with exactly two attachment points written ``*`` (dummy atoms), e.g.
``*c1ccc(*)cc1`` (the benzene-1,4-diyl core of terephthalate, MOF-5's linker).
"""

from __future__ import annotations

import re

import numpy as np
from rdkit import Chem, RDLogger

RDLogger.DisableLog("rdApp.*")  # type: ignore[attr-defined]

SEED_LINKERS: tuple[str, ...] = (
    "*c1ccc(*)cc1",  # BDC core (MOF-5)
    "*c1ccc(-c2ccc(*)cc2)cc1",  # BPDC core (IRMOF-10)
    "*c1ccc2cc(*)ccc2c1",  # 2,6-NDC core (IRMOF-8)
    "*c1ccc(*)c(N)c1",  # NH2-BDC core (IRMOF-3)
    "*c1ccc(*)c(Br)c1",  # Br-BDC core (IRMOF-2)
    "*c1cc(C)c(*)cc1C",  # dimethyl-BDC core
    "*c1ccc(*)nc1",  # pyridine-2,5-diyl
    "*c1nnc(*)nn1",  # tetrazine
    "*C#Cc1ccc(C#C*)cc1",  # diethynylbenzene
    "*c1ccc(C=Cc2ccc(*)cc2)cc1",  # stilbene
    "*c1cccc(*)c1",  # meta (bent: should fail the strain test)
    "*c1ccc(*)s1",  # thiophene-2,5-diyl (bent)
)

_TOKEN = re.compile(r"(\[[^\]]+\]|Br|Cl|@@|%\d{2}|[A-Za-z]|\d|[=#\-\+\(\)/\\\.\*@~])")

VOCAB: tuple[str, ...] = (
    "^", "$", "?",  # start, end, unknown
    "*", "c", "n", "o", "s", "C", "N", "O", "S", "F", "Cl", "Br",
    "[nH]", "(", ")", "=", "#", "-", "1", "2", "3", "4", "/", "\\",
)  # fmt: skip
_INDEX = {token: i for i, token in enumerate(VOCAB)}
MAX_TOKENS = 64
MAX_HEAVY_ATOMS = 40


def tokenize(smiles: str) -> list[str]:
    """Splits a SMILES string into atoms, bonds, rings and branches.

    Raises:
        ValueError: If characters are left over that no SMILES token matches.
    """
    tokens = _TOKEN.findall(smiles)
    if "".join(tokens) != smiles:
        raise ValueError(f"not a SMILES string: {smiles!r}")
    return tokens


def canonical_linker(smiles: str) -> str | None:
    """The canonical SMILES of a valid linker, or None.

    Valid: RDKit parses and sanitises it, it has exactly two ``*`` attachment points, each bonded to
    one atom, not to each other, at most `MAX_HEAVY_ATOMS` heavy atoms, no formal charges, one fragment.
    """
    try:
        mol = Chem.MolFromSmiles(smiles)
    except Exception:  # noqa: BLE001 - RDKit raises several types on garbage
        return None
    if mol is None:
        return None
    dummies = [atom for atom in mol.GetAtoms() if atom.GetAtomicNum() == 0]
    if len(dummies) != 2 or any(atom.GetDegree() != 1 for atom in dummies):
        return None
    if dummies[0].GetNeighbors()[0].GetIdx() == dummies[1].GetIdx():
        return None
    if any(atom.GetFormalCharge() for atom in mol.GetAtoms()):
        return None
    if len(Chem.GetMolFrags(mol)) != 1:
        return None
    if mol.GetNumHeavyAtoms() - 2 > MAX_HEAVY_ATOMS or mol.GetNumHeavyAtoms() - 2 < 2:
        return None
    return str(Chem.MolToSmiles(mol))


class NgramModel:
    """A character-level trigram model of linker SMILES, its counts kept as one numpy array.

    ``weights[a, b, c]`` counts token ``c`` after the context ``(a, b)``; sampling adds ``alpha`` to every
    count. The array is the Generator's checkpointed model state.
    """

    def __init__(self, weights: np.ndarray | None = None, alpha: float = 0.02) -> None:
        size = len(VOCAB)
        self.weights = (
            weights if weights is not None else np.zeros((size, size, size), dtype=np.float32)
        )
        self.alpha = alpha

    @classmethod
    def fit(cls, smiles: list[str], alpha: float = 0.02) -> NgramModel:
        """Counts the trigrams of ``smiles`` (start- and end-padded)."""
        model = cls(alpha=alpha)
        for text in smiles:
            try:
                tokens = ["^", "^", *tokenize(text), "$"]
            except ValueError:
                continue
            ids = [_INDEX.get(token, _INDEX["?"]) for token in tokens]
            for a, b, c in zip(ids, ids[1:], ids[2:], strict=False):
                model.weights[a, b, c] += 1.0
        return model

    def sample(self, rng: np.random.Generator, temperature: float = 1.0) -> str:
        """Draws one SMILES string (not necessarily valid)."""
        a = b = _INDEX["^"]
        out: list[str] = []
        unknown = _INDEX["?"]
        for _ in range(MAX_TOKENS):
            row = self.weights[a, b].astype(np.float64) + self.alpha
            row[unknown] = 0.0
            row[_INDEX["^"]] = 0.0
            probs = row ** (1.0 / temperature)
            probs /= probs.sum()
            c = int(rng.choice(len(VOCAB), p=probs))
            if c == _INDEX["$"]:
                break
            out.append(VOCAB[c])
            a, b = b, c
        return "".join(out)


_SUBSTITUENTS = ("F", "Cl", "Br", "C", "N", "O", "C#N", "C(F)(F)F", "OC")


def mutate(smiles: str, rng: np.random.Generator) -> str:
    """One random edit of a linker with RDKit: substitute an aromatic CH, swap ring C for N, or extend.

    Returns the edited SMILES (it may be invalid; the caller checks with `canonical_linker`).
    """
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return smiles
    choice = rng.integers(3)
    rw = Chem.RWMol(mol)
    aromatic_ch = [
        atom.GetIdx()
        for atom in mol.GetAtoms()
        if atom.GetIsAromatic() and atom.GetSymbol() == "C" and atom.GetTotalNumHs() == 1
    ]
    if choice == 0 and aromatic_ch:  # add a substituent on an aromatic CH
        target = int(rng.choice(aromatic_ch))
        group = str(rng.choice(_SUBSTITUENTS))
        combined = Chem.CombineMols(rw, Chem.MolFromSmiles(group))
        rw = Chem.RWMol(combined)
        rw.AddBond(target, mol.GetNumAtoms(), Chem.BondType.SINGLE)
        rw.GetAtomWithIdx(target).SetNumExplicitHs(0)
    elif choice == 1 and aromatic_ch:  # aza-substitution: ring CH -> N
        target = int(rng.choice(aromatic_ch))
        atom = rw.GetAtomWithIdx(target)
        atom.SetAtomicNum(7)
        atom.SetNumExplicitHs(0)
    else:  # extend: insert a para-phenylene, ethynylene or vinylene after the first attachment point
        spacer = str(rng.choice(("c1ccc(cc1)", "C#C", "C=C")))
        canonical = str(Chem.MolToSmiles(mol))
        cut = canonical.index("*") + 1
        return canonical[:cut] + spacer + canonical[cut:]
    try:
        return str(Chem.MolToSmiles(rw.GetMol()))
    except Exception:  # noqa: BLE001
        return smiles


def crossover(first: str, second: str, rng: np.random.Generator) -> str:
    """Joins the left half of ``first`` (up to one attachment point) with the right part of ``second``.

    Both are cut at a random token; the result is often invalid SMILES (the validity check decides).
    """
    a, b = tokenize(first), tokenize(second)
    i = int(rng.integers(1, len(a)))
    j = int(rng.integers(1, len(b)))
    return "".join(a[:i] + b[j:])
