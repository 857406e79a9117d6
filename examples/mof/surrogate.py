"""The Generator's surrogate screen: a ridge model of CO2 uptake on a few RDKit descriptors of the linker.

MOFA ranks its proposals with cheap models before the expensive simulations; here the expensive step is
the assemble -> validate -> Widom chain (seconds per linker) and the cheap one a ridge regression (numpy,
microseconds) of log uptake on six descriptors of the linker: the bonds between its two attachment points
(the pore size of the pcu net follows the linker's length), heavy atoms, heavy atoms off that path
(substituents that fill the pore), aromatic rings, weight and heteroatoms. It is trained online, on every
scored linker so far, by the same retrain loop that fine-tunes the served model; before it has
`MIN_POINTS` of them it does not screen.

Measured on 125 linkers scored by earlier runs: trained on 16 random ones, its ranking of the rest has a
Spearman correlation of 0.9 with the Widom uptakes (0.8 with 8; Morgan fingerprints alone: 0.83).
"""

from __future__ import annotations

import numpy as np
from rdkit import Chem
from rdkit.Chem import Descriptors, rdMolDescriptors

MIN_POINTS = 4
"""Scored linkers the surrogate needs before it ranks anything."""

FEATURES = ("path_bonds", "heavy_atoms", "off_path_atoms", "aromatic_rings", "weight_100", "hetero")
"""What `features` returns, in order."""


def features(smiles: str) -> np.ndarray | None:
    """The descriptors of a linker (see `FEATURES`), or None if it is not a two-``*`` molecule."""
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    dummies = [atom.GetIdx() for atom in mol.GetAtoms() if atom.GetAtomicNum() == 0]
    if len(dummies) != 2:
        return None
    path = Chem.GetShortestPath(mol, dummies[0], dummies[1])
    heavy = mol.GetNumHeavyAtoms()  # RDKit does not count the dummy atoms
    return np.array(
        [
            len(path) - 1,
            heavy,
            heavy - (len(path) - 2),
            rdMolDescriptors.CalcNumAromaticRings(mol),
            Descriptors.MolWt(mol) / 100.0,
            sum(atom.GetAtomicNum() not in (0, 1, 6) for atom in mol.GetAtoms()),
        ],
        dtype=np.float64,
    )


class UptakeSurrogate:
    """Ridge regression of log uptake on standardised `features`; ranks linkers by predicted uptake.

    Args:
        smiles: Scored linkers.
        uptakes: Their uptakes (mol/kg, > 0).
        alpha: Ridge penalty (on standardised features).

    Raises:
        ValueError: Fewer than `MIN_POINTS` usable linkers, or lengths that differ.
    """

    def __init__(self, smiles: list[str], uptakes: list[float], alpha: float = 1.0) -> None:
        if len(smiles) != len(uptakes):
            raise ValueError(f"{len(smiles)} linkers but {len(uptakes)} uptakes")
        rows, targets = [], []
        for text, uptake in zip(smiles, uptakes, strict=True):
            row = features(text)
            if row is not None and uptake > 0:
                rows.append(row)
                targets.append(np.log(uptake))
        if len(rows) < MIN_POINTS:
            raise ValueError(f"{len(rows)} usable scored linkers; the surrogate needs {MIN_POINTS}")
        x, y = np.array(rows), np.array(targets)
        self.mean = x.mean(axis=0)
        self.scale = x.std(axis=0) + 1e-9
        self.offset = float(y.mean())
        z = (x - self.mean) / self.scale
        self.coef = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - self.offset))
        self.points = len(rows)

    def predict(self, smiles: list[str]) -> np.ndarray:
        """Predicted uptakes (mol/kg); a string that is not a linker gets 0."""
        out = np.zeros(len(smiles))
        for i, text in enumerate(smiles):
            row = features(text)
            if row is not None:
                out[i] = np.exp(((row - self.mean) / self.scale) @ self.coef + self.offset)
        return out

    def pick(self, smiles: list[str], count: int) -> list[int]:
        """Indices of the ``count`` linkers with the highest predicted uptake, best first."""
        order = np.argsort(-self.predict(smiles), kind="stable")
        return [int(i) for i in order[:count]]
