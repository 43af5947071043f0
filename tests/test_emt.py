"""FastEMT gives ASE's EMT numbers: energies to 1e-10 eV, forces to 1e-8 eV/Å.

On random alloy slabs (the catalog's metals in random fcc(111) and fcc(100) slabs) with adsorbates
(H, C, N, O in the positions OC20 adsorbates take), also after the atoms moved (the neighbour-list
update path) and under periodic images of a small cell.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import add_adsorbate, fcc100, fcc111
from ase.calculators.emt import EMT

from qecat_core.calculators.emt import FastEMT

METALS = ["Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al"]


def random_alloy_slab(seed: int) -> Atoms:
    rng = np.random.default_rng(seed)
    build = fcc111 if seed % 2 == 0 else fcc100
    slab = build("Cu", (2 + seed % 2, 2, 3), a=3.8, vacuum=7.0)
    slab.set_chemical_symbols(list(rng.choice(METALS, len(slab))))
    site = "fcc" if build is fcc111 else "hollow"
    mol = [("O", None), ("H", None), ("OH", [("O", 0.0), ("H", 0.97)]), ("CO", [("C", 0.0), ("O", 1.15)]),
           ("NH", [("N", 0.0), ("H", 1.02)])][seed % 5]
    name, atoms = mol
    if atoms is None:
        add_adsorbate(slab, name, 1.2, site)
    else:
        add_adsorbate(slab, Atoms([s for s, _ in atoms], positions=[(0, 0, z) for _, z in atoms]), 1.3, site)
    slab.rattle(0.05, seed=seed)
    return slab


def _compare(atoms: Atoms) -> None:
    ref, fast = atoms.copy(), atoms.copy()
    ref.calc, fast.calc = EMT(), FastEMT()
    assert abs(fast.get_potential_energy() - ref.get_potential_energy()) < 1e-10
    assert np.abs(fast.get_forces() - ref.get_forces()).max() < 1e-8


@pytest.mark.parametrize("seed", range(10))
def test_energies_and_forces_equal_ase_emt(seed):
    _compare(random_alloy_slab(seed))


def test_equal_after_moves_and_in_a_small_periodic_cell():
    atoms = random_alloy_slab(3)
    ref, fast = atoms.copy(), atoms.copy()
    ref.calc, fast.calc = EMT(), FastEMT()
    rng = np.random.default_rng(0)
    for step in range(4):  # the same calculator objects on moved atoms (neighbour list updates)
        move = rng.normal(0, 0.15, (len(atoms), 3))
        ref.positions += move
        fast.positions += move
        assert abs(fast.get_potential_energy() - ref.get_potential_energy()) < 1e-10, step
        assert np.abs(fast.get_forces() - ref.get_forces()).max() < 1e-8, step
    bulk = Atoms("CuPt", scaled_positions=[[0, 0, 0], [0.5, 0.5, 0.5]], cell=[2.7] * 3, pbc=True)
    _compare(bulk)


def test_the_comparison_can_fail():
    """A perturbed reference is caught: the tolerances are not vacuous."""
    atoms = random_alloy_slab(0)
    moved = atoms.copy()
    moved.positions[0] += 1e-6
    a, b = atoms.copy(), moved
    a.calc, b.calc = FastEMT(), EMT()
    assert abs(a.get_potential_energy() - b.get_potential_energy()) > 1e-10 or \
        np.abs(a.get_forces() - b.get_forces()).max() > 1e-8
