"""CO2 uptake by Widom test-particle insertion in a rigid framework (Lennard-Jones, numpy).

The Henry coefficient is ``K_H = <exp(-U/kT)> / (R T rho_f)``; at low pressure the uptake is
``n = K_H p`` (the Henry regime, a fair estimate at 0.1 bar). CO2 is one LJ site (sigma 3.941 Å,
epsilon/k 195.2 K: Bird, Stewart & Lightfoot, Transport Phenomena, table E.1); framework atoms use UFF
LJ parameters (Rappé et al. 1992); pairs are mixed by Lorentz-Berthelot and cut at 12 Å.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from examples.mof.framework import Structure

K_B = 1.380649e-23  # J/K
N_A = 6.02214076e23
KCAL_PER_MOL_TO_K = 503.22  # 1 kcal/mol / k_B in K

CO2_SIGMA = 3.941  # Å
CO2_EPSILON_K = 195.2  # K

# UFF: x_i (Å, the LJ minimum distance) and D_i (kcal/mol); sigma = x_i / 2^(1/6)
UFF_LJ: dict[str, tuple[float, float]] = {
    "H": (2.886, 0.044),
    "C": (3.851, 0.105),
    "N": (3.660, 0.069),
    "O": (3.500, 0.060),
    "F": (3.364, 0.050),
    "S": (4.035, 0.274),
    "Cl": (3.947, 0.227),
    "Br": (4.189, 0.251),
    "Zn": (2.763, 0.124),
}


class Uptake(BaseModel):
    """Result of a Widom insertion run.

    Attributes:
        uptake_mol_kg: CO2 uptake at the given pressure (mol/kg = mmol/g).
        henry_mol_kg_pa: Henry coefficient (mol kg^-1 Pa^-1).
        heat_kj_mol: Isosteric heat of adsorption at infinite dilution (kJ/mol).
        insertions: Test insertions made.
        stderr_mol_kg: Standard error of the uptake over 8 blocks of insertions.
    """

    uptake_mol_kg: float
    henry_mol_kg_pa: float
    heat_kj_mol: float
    insertions: int
    stderr_mol_kg: float


def _energies(structure: Structure, points: np.ndarray, cutoff: float) -> np.ndarray:
    """LJ energy (in K) of a CO2 at each point, summed over every framework image within ``cutoff``."""
    cell = np.asarray(structure.cell)
    frac = np.asarray(structure.positions) @ np.linalg.inv(cell)
    frac -= np.floor(frac)
    base = frac @ cell
    widths = np.abs(np.diag(cell))  # cubic or orthorhombic cells
    reach = np.ceil(cutoff / widths).astype(int)
    shifts = np.array(
        [
            (i, j, k)
            for i in range(-reach[0], reach[0] + 1)
            for j in range(-reach[1], reach[1] + 1)
            for k in range(-reach[2], reach[2] + 1)
        ],
        dtype=float,
    )
    images = (base[None, :, :] + (shifts @ cell)[:, None, :]).reshape(-1, 3)
    params = np.array([UFF_LJ[s] for s in structure.symbols])
    sigma_f = np.tile(params[:, 0] / 2 ** (1 / 6), len(shifts))
    eps_f = np.tile(params[:, 1] * KCAL_PER_MOL_TO_K, len(shifts))
    sigma = 0.5 * (sigma_f + CO2_SIGMA)
    eps = np.sqrt(eps_f * CO2_EPSILON_K)
    energies = np.empty(len(points))
    for start in range(0, len(points), 256):
        chunk = points[start : start + 256]
        d2 = ((chunk[:, None, :] - images[None, :, :]) ** 2).sum(axis=-1)
        inside = d2 < cutoff**2
        sr6 = np.where(inside, (sigma[None, :] ** 2 / np.maximum(d2, 1e-6)) ** 3, 0.0)
        energies[start : start + 256] = (4 * eps[None, :] * (sr6 * sr6 - sr6)).sum(axis=1)
    return energies


def widom_uptake(
    structure: Structure,
    insertions: int = 2000,
    temperature: float = 298.0,
    pressure_pa: float = 1.0e4,
    cutoff: float = 12.0,
    seed: int = 0,
) -> Uptake:
    """CO2 uptake of a rigid framework by Widom insertion at ``temperature`` and ``pressure_pa``.

    Raises:
        KeyError: The framework holds an element without UFF LJ parameters here.
    """
    from ase.data import atomic_masses, atomic_numbers

    rng = np.random.default_rng(seed)
    cell = np.asarray(structure.cell)
    points = rng.random((insertions, 3)) @ cell
    energy_k = _energies(structure, points, cutoff)
    boltzmann = np.exp(-np.clip(energy_k / temperature, -700, 700))
    mass_kg = sum(atomic_masses[atomic_numbers[s]] for s in structure.symbols) * 1e-3 / N_A
    volume_m3 = structure.volume * 1e-30
    per_cell = volume_m3 / (K_B * temperature) / (mass_kg * N_A)  # mol kg^-1 Pa^-1 per unit <W>
    mean_w = float(boltzmann.mean())
    henry = mean_w * per_cell
    blocks = np.array_split(boltzmann, 8)
    block_uptake = np.array([b.mean() * per_cell * pressure_pa for b in blocks])
    # <U e^-bU>/<e^-bU> - kT  ->  q_st = kT - that (in kJ/mol)
    weighted_u = float((energy_k * boltzmann).sum() / max(boltzmann.sum(), 1e-300))
    heat = (temperature - weighted_u) * K_B * N_A / 1000.0
    return Uptake(
        uptake_mol_kg=henry * pressure_pa,
        henry_mol_kg_pa=henry,
        heat_kj_mol=heat,
        insertions=insertions,
        stderr_mol_kg=float(block_uptake.std(ddof=1) / np.sqrt(len(blocks))),
    )
