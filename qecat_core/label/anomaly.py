"""Flags for relaxations that did not give a meaningful adsorption energy (distances in Å).

Atoms are bonded when their minimum-image periodic distance (``ase.neighborlist``, over the
structure's pbc) is below a multiple of the sum of their covalent radii
(``ase.data.covalent_radii``):

* ``desorbed``: after relaxation no adsorbate atom lies within ``DESORPTION_SCALE`` (1.75) x the
  radii sum of any slab atom (H in the wide 4-fold hollows of Pt(100) sits at 1.51 x);
* ``dissociated``: the adsorbate's bond graph (``BOND_SCALE``, 1.5) differs between the initial
  and the relaxed structure (bonds broken *or* formed). 1.5, not 1.25: EMT stretches O-H on
  surfaces to 1.20-1.23 Å (1.27 x the radii sum) and its gas-phase H2 is already at 1.26 x;
* ``surface_changed``: the bonds (``SURFACE_SCALE``) between slab atoms that involve a surface atom
  (OC20 tag 1) differ between the initial and the relaxed clean slab, or between the relaxed
  clean slab and the slab part of the relaxed adsorbate+slab system. 1.25 lies between the first
  and second neighbour shells of every fcc metal EMT handles;
* ``not_converged``: the maximum force was still above fmax (eV/Å) after the allowed steps.

Tags follow OC20: 0 fixed subsurface, 1 surface, 2 adsorbate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from itertools import product

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from ase.neighborlist import neighbor_list

from qecat_core.common.tags import TAG_ADSORBATE, TAG_SURFACE

BOND_SCALE = 1.5  # adsorbate-adsorbate bonds (dissociation)
SURFACE_SCALE = 1.25  # slab-slab bonds (surface changes)
DESORPTION_SCALE = 1.75  # adsorbate-slab contact

Bonds = frozenset[tuple[int, int]]


@dataclass(frozen=True)
class AnomalyFlags:
    desorbed: bool
    dissociated: bool
    surface_changed: bool
    not_converged: bool

    @property
    def anomaly(self) -> bool:
        return self.desorbed or self.dissociated or self.surface_changed or self.not_converged

    def as_dict(self) -> dict[str, bool]:
        return {**asdict(self), "anomaly": self.anomaly}


def _close_pairs(atoms: Atoms, cutoffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i < j) whose minimum-image distance is below ``cutoffs[i] + cutoffs[j]``.

    Small cells are handled directly over the 27 neighbouring images (valid when every periodic
    cell height exceeds the largest cutoff); anything else goes to ``ase.neighborlist``.
    """
    n = len(atoms)
    if n < 2:
        return np.zeros(0, int), np.zeros(0, int)
    reach = 2.0 * float(cutoffs.max())
    pbc = np.asarray(atoms.pbc, bool)
    cell = atoms.cell.array
    direct = n <= 300
    if pbc.any():
        volume = abs(np.linalg.det(cell)) if atoms.cell.rank == 3 else 0.0
        heights = [volume / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])) if volume > 1e-9
                   else 0.0 for k in range(3)]
        direct = direct and all(h > reach for h, p in zip(heights, pbc) if p)
    if not direct:
        i, j = neighbor_list("ij", atoms, cutoffs, self_interaction=False)
        keep = i < j
        return i[keep], j[keep]
    pos = atoms.positions
    if pbc.any():
        frac = np.linalg.solve(cell.T, pos.T).T
        frac[:, pbc] %= 1.0
        pos = frac @ cell
        shifts = np.array(list(product(*[(-1, 0, 1) if p else (0,) for p in pbc]))) @ cell
    else:
        shifts = np.zeros((1, 3))
    diff = pos[None, :, None, :] - pos[:, None, None, :] + shifts[None, None, :, :]
    d2 = np.einsum("ijsk,ijsk->ijs", diff, diff).min(axis=2)
    cut = cutoffs[:, None] + cutoffs[None, :]
    i, j = np.nonzero(np.triu(d2 < cut * cut, k=1))
    return i, j


def bonds(atoms: Atoms, scale: float = BOND_SCALE) -> Bonds:
    """Pairs (i, j), i < j, closer (minimum image) than ``scale`` x the sum of covalent radii."""
    if len(atoms) < 2:
        return frozenset()
    i, j = _close_pairs(atoms, scale * covalent_radii[atoms.numbers])
    return frozenset(zip(i.tolist(), j.tolist()))


def _subset(atoms: Atoms, indices: np.ndarray) -> Atoms:
    """The atoms at ``indices`` with the same cell and pbc, without calculator or constraints."""
    return Atoms(numbers=atoms.numbers[indices], positions=atoms.positions[indices], cell=atoms.cell,
                 pbc=atoms.pbc)


def adsorbate_indices(atoms: Atoms) -> np.ndarray:
    return np.nonzero(atoms.get_tags() == TAG_ADSORBATE)[0]


def slab_indices(atoms: Atoms) -> np.ndarray:
    return np.nonzero(atoms.get_tags() != TAG_ADSORBATE)[0]


def is_desorbed(final: Atoms, scale: float = DESORPTION_SCALE) -> bool:
    """True if no adsorbate atom of ``final`` is within ``scale`` x radii sum of a slab atom."""
    ads = adsorbate_indices(final)
    if len(ads) == 0:
        return False
    i, j = _close_pairs(final, scale * covalent_radii[final.numbers])
    is_ads = final.get_tags() == TAG_ADSORBATE
    touching = is_ads[i] != is_ads[j]
    return not bool(touching.any())


def adsorbate_bonds(atoms: Atoms, scale: float = BOND_SCALE) -> Bonds:
    """Bond graph of the adsorbate atoms (indices relative to the adsorbate, in order)."""
    return bonds(_subset(atoms, adsorbate_indices(atoms)), scale)


def is_dissociated(initial: Atoms, final: Atoms, scale: float = BOND_SCALE) -> bool:
    """True if the adsorbate's bond graph differs between ``initial`` and ``final``."""
    return adsorbate_bonds(initial, scale) != adsorbate_bonds(final, scale)


def surface_bonds(slab: Atoms, scale: float = SURFACE_SCALE) -> Bonds:
    """Slab-slab bonds involving at least one surface atom (tag 1) of a clean ``slab``.

    ``slab`` may also be a full adsorbate+slab system: adsorbate atoms are dropped first, so the
    indices are those of the slab atoms in order, the same as in the clean slab.
    """
    idx = slab_indices(slab)
    sub = _subset(slab, idx)
    surface = slab.get_tags()[idx] == TAG_SURFACE
    return frozenset((a, b) for a, b in bonds(sub, scale) if surface[a] or surface[b])


def has_surface_changed(initial_slab: Atoms, relaxed_slab: Atoms, relaxed_system: Atoms | None = None,
                        scale: float = SURFACE_SCALE) -> bool:
    """True if surface bonds differ between the initial and relaxed clean slab, or between the
    relaxed clean slab and the slab part of ``relaxed_system`` (when given)."""
    relaxed = surface_bonds(relaxed_slab, scale)
    if surface_bonds(initial_slab, scale) != relaxed:
        return True
    return relaxed_system is not None and surface_bonds(relaxed_system, scale) != relaxed
