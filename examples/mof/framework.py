"""MOF structures: a linker's 3D geometry (RDKit), a cubic pcu framework around a metal node (ASE),
and the linker's strain when the framework forces it straight (RDKit UFF).

The framework is deliberately simple: a Zn node at the cube corner with six O along the axes (an
octahedral ZnO6 site), and one copy of the linker on each cube edge, bonded to the node O through the
atoms that carried its attachment points. One linker geometry fixes the lattice constant, so the
question the Validator asks is whether the linker tolerates being straight: its UFF strain energy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from rdkit import Chem
from rdkit.Chem import AllChem as _AllChem

AllChem: Any = _AllChem  # RDKit's stubs miss most of AllChem

ZN_O = 1.95  # Zn-O distance of the node (Å)
O_C = 1.30  # node O to linker anchor atom (carboxylate-like C-O, Å)
CAP_H = 1.09  # capping H distance used for the free linker (Å)
CLASH_DISTANCE = 1.2  # closest allowed approach of non-bonded atoms (Å)


class Structure(BaseModel):
    """A periodic structure in plain lists (what agents pass to each other and checkpoint).

    Attributes:
        symbols: Chemical symbols.
        positions: Cartesian positions (Å), one [x, y, z] per atom.
        cell: Lattice vectors (Å), 3 x 3.
    """

    symbols: list[str]
    positions: list[list[float]]
    cell: list[list[float]]

    def to_atoms(self) -> Any:
        """The structure as `ase.Atoms` (periodic)."""
        from ase import Atoms

        return Atoms(symbols=self.symbols, positions=self.positions, cell=self.cell, pbc=True)

    @property
    def volume(self) -> float:
        """Cell volume (Å^3)."""
        return float(abs(np.linalg.det(np.asarray(self.cell))))


class Linker3D(BaseModel):
    """A linker capped with H at its attachment points, embedded and UFF-relaxed.

    Attributes:
        smiles: The linker (``*`` attachment points).
        symbols: Element of every atom (the two caps included).
        positions: Relaxed positions (Å).
        caps: Indices of the two capping H (former attachment points).
        anchors: Indices of the atoms bonded to the caps.
        energy: UFF energy of the relaxed, free linker (kcal/mol).
    """

    smiles: str
    symbols: list[str]
    positions: list[list[float]]
    caps: tuple[int, int]
    anchors: tuple[int, int]
    energy: float = Field(description="kcal/mol")


class AssemblyError(ValueError):
    """The linker cannot be embedded or the framework built from it has clashing atoms."""


def _capped_molecule(smiles: str) -> tuple[Chem.Mol, tuple[int, int], tuple[int, int]]:
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise AssemblyError(f"RDKit cannot parse {smiles!r}")
    caps = [atom.GetIdx() for atom in mol.GetAtoms() if atom.GetAtomicNum() == 0]
    if len(caps) != 2:
        raise AssemblyError(f"{smiles!r} has {len(caps)} attachment points, not 2")
    rw = Chem.RWMol(mol)
    for idx in caps:
        rw.GetAtomWithIdx(idx).SetAtomicNum(1)
    capped = Chem.AddHs(rw.GetMol())
    anchors = tuple(capped.GetAtomWithIdx(i).GetNeighbors()[0].GetIdx() for i in caps)
    return capped, (caps[0], caps[1]), (anchors[0], anchors[1])


def embed_linker(smiles: str, seed: int = 7) -> Linker3D:
    """Embeds the H-capped linker in 3D (ETKDG) and relaxes it with UFF.

    Raises:
        AssemblyError: RDKit cannot embed it or UFF has no parameters for it.
    """
    mol, caps, anchors = _capped_molecule(smiles)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise AssemblyError(f"RDKit could not embed {smiles!r} in 3D")
    if not AllChem.UFFHasAllMoleculeParams(mol):
        raise AssemblyError(f"UFF has no parameters for an atom of {smiles!r}")
    ff = AllChem.UFFGetMoleculeForceField(mol)
    ff.Minimize(maxIts=2000)
    positions = mol.GetConformer().GetPositions()
    return Linker3D(
        smiles=smiles,
        symbols=[atom.GetSymbol() for atom in mol.GetAtoms()],
        positions=positions.tolist(),
        caps=caps,
        anchors=anchors,
        energy=float(ff.CalcEnergy()),
    )


def _rotation_onto_x(vector: np.ndarray) -> np.ndarray:
    """A rotation matrix taking ``vector``'s direction onto +x."""
    a = vector / np.linalg.norm(vector)
    x = np.array([1.0, 0.0, 0.0])
    v = np.cross(a, x)
    c = float(np.dot(a, x))
    if np.linalg.norm(v) < 1e-9:
        return np.eye(3) if c > 0 else np.diag([-1.0, -1.0, 1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx * (1.0 / (1.0 + c))


def align(positions: np.ndarray, anchors: tuple[int, int]) -> np.ndarray:
    """Places anchor 0 at the origin and anchor 1 on +x, the linker's plane spread along y."""
    p = positions - positions[anchors[0]]
    p = p @ _rotation_onto_x(p[anchors[1]]).T
    perp = p[:, 1:]
    # Rotate about x so the largest spread of the linker lies along y (its plane becomes xy).
    _, _, vt = np.linalg.svd(perp - perp.mean(axis=0), full_matrices=False)
    angle = np.arctan2(vt[0, 1], vt[0, 0])
    c, s = np.cos(-angle), np.sin(-angle)
    p[:, 1:] = perp @ np.array([[c, -s], [s, c]]).T
    return p


def build_framework(linker: Linker3D) -> tuple[Structure, dict[str, float]]:
    """A cubic pcu framework: Zn node at the origin, six node O, one linker on each cube edge.

    Returns:
        The structure and its descriptors: lattice constant ``a`` (Å), ``atoms``, ``density``
        (g/cm^3), ``min_distance`` (closest non-bonded approach, Å).

    Raises:
        AssemblyError: Atoms of different linkers or periodic images clash.
    """
    from ase.data import atomic_masses, atomic_numbers

    p = align(np.asarray(linker.positions), linker.anchors)
    length = float(p[linker.anchors[1], 0])
    a = length + 2 * (ZN_O + O_C)
    keep = [i for i in range(len(p)) if i not in linker.caps]
    body = p[keep] + np.array([ZN_O + O_C, 0.0, 0.0])
    body_symbols = [linker.symbols[i] for i in keep]
    symbols = ["Zn"] + ["O"] * 6
    node = [[0.0, 0.0, 0.0]]
    for axis in range(3):
        for sign in (1.0, -1.0):
            site = [0.0, 0.0, 0.0]
            site[axis] = sign * ZN_O
            node.append(site)
    positions = [np.asarray(node)]
    groups = [0] * 7
    for copy, perm in enumerate(((0, 1, 2), (2, 0, 1), (1, 2, 0))):
        # cyclic permutations put the x-linker on x (plane xy), then on y (plane yz), on z (plane zx)
        placed = np.zeros_like(body)
        for source, target in enumerate(perm):
            placed[:, target] = body[:, source]
        positions.append(placed)
        symbols.extend(body_symbols)
        groups.extend([copy + 1] * len(body))
    structure = Structure(
        symbols=symbols,
        positions=np.vstack(positions).tolist(),
        cell=(np.eye(3) * a).tolist(),
    )
    atoms = structure.to_atoms()
    direct = atoms.get_all_distances(
        mic=False
    )  # before wrapping: bonded pairs are direct neighbours
    distances = atoms.get_all_distances(mic=True)
    group = np.asarray(groups)
    cross = group[:, None] != group[None, :]
    # The node O bonded to each linker end is not a clash.
    anchors_in_body = [keep.index(linker.anchors[0]), keep.index(linker.anchors[1])]
    offset = 7
    for copy, perm in enumerate(((0, 1, 2), (2, 0, 1), (1, 2, 0))):
        base = offset + copy * len(body)
        axis = perm[0]
        for end, o_index in zip(anchors_in_body, (1 + 2 * axis, 2 + 2 * axis), strict=True):
            cross[base + end, o_index] = cross[o_index, base + end] = False
    np.fill_diagonal(distances, np.inf)
    np.fill_diagonal(direct, np.inf)
    closest = float(distances[cross].min())
    # a linker against its own periodic image (a long substituent reaching into the next cell)
    wrapped_self = (group[:, None] == group[None, :]) & (distances < direct - 1e-6)
    if wrapped_self.any():
        closest = min(closest, float(distances[wrapped_self].min()))
    if closest < CLASH_DISTANCE:
        raise AssemblyError(f"atoms clash: closest non-bonded approach {closest:.2f} Å")
    mass = float(sum(atomic_masses[atomic_numbers[s]] for s in symbols))
    density = mass / 6.02214076e23 / (a**3 * 1e-24)
    return structure, {
        "a": a,
        "atoms": float(len(symbols)),
        "density": density,
        "min_distance": closest,
    }


def straightened_strain(linker: Linker3D) -> tuple[Linker3D, float]:
    """The linker's UFF strain when the framework holds it straight, and its relaxed geometry there.

    Both caps are put on the anchor-anchor axis (where the node O sit), the caps and anchors are
    fixed, and UFF relaxes everything else. Strain = E(constrained) - E(free), kcal/mol.
    """
    mol, caps, anchors = _capped_molecule(linker.smiles)
    p = align(np.asarray(linker.positions), linker.anchors)
    length = p[anchors[1], 0]
    p[caps[0]] = [-CAP_H, 0.0, 0.0]
    p[caps[1]] = [length + CAP_H, 0.0, 0.0]
    conf = Chem.Conformer(mol.GetNumAtoms())
    for i, xyz in enumerate(p):
        conf.SetAtomPosition(i, xyz.tolist())
    mol.AddConformer(conf, assignId=True)
    ff = AllChem.UFFGetMoleculeForceField(mol)
    for idx in (*caps, *anchors):
        ff.AddFixedPoint(idx)
    ff.Minimize(maxIts=2000)
    energy = float(ff.CalcEnergy())
    relaxed = linker.model_copy(
        update={"positions": mol.GetConformer().GetPositions().tolist(), "energy": energy}
    )
    return relaxed, energy - linker.energy
