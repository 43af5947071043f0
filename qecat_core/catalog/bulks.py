"""Bulk cells of the catalog's prototypes (fcc, L1_2, L1_0, random fcc alloys) and their lattice constants.

Lattice constants in Å; :func:`relaxed_lattice_constant` minimises the bulk energy with a
calculator of :mod:`qecat_core.calculators`; :func:`bulk_specs` gives a catalog's bulks with the
lattice constants it asks for (Vegard's law, or relaxed with ``lattice_calculator``).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from ase import Atoms

from qecat_core.calculators.registry import get_calculator
from qecat_core.catalog.schema import BulkSpec, Catalog

A_REF = 3.8  # Å, reference lattice constant the templates are cut at
_PLACEHOLDER_A, _PLACEHOLDER_B = "Cu", "Au"  # stand-ins for A and B while cutting templates

def bulk_atoms(kind: str, a: float = A_REF, species: tuple[str, str] = (_PLACEHOLDER_A, _PLACEHOLDER_B)) -> Atoms:
    """The conventional/primitive cell of a prototype: 'fcc' (1 atom), 'L1_2' A3B, 'L1_0' AB."""
    A, B = species
    if kind == "fcc":
        return Atoms(A, scaled_positions=[[0, 0, 0]], cell=[[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]], pbc=True)
    frac = [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
    if kind == "L1_2":
        return Atoms([B, A, A, A], scaled_positions=frac, cell=[a] * 3, pbc=True)
    if kind == "L1_0":  # alternating A and B (001) planes
        return Atoms([A, A, B, B], scaled_positions=frac, cell=[a] * 3, pbc=True)
    raise ValueError(f"unknown prototype {kind!r}")


@lru_cache(maxsize=None)
def relaxed_lattice_constant(spec: BulkSpec, calculator: str = "emt") -> float:
    """Cubic lattice constant (Å) minimising the bulk energy with ``calculator``.

    The conventional cubic cell of the prototype (a 2x2x2 supercell with the seeded random
    occupancy for random alloys) is scaled uniformly around the Vegard value (±4%, 9 points) and
    a parabola fitted to E(a); c/a stays 1 (no tetragonal relaxation of L1_0).
    """
    a0 = spec.lattice_constant
    if spec.b is None:
        cell = bulk_atoms("L1_2", a0, (spec.a, spec.a))
    elif spec.prototype.kind == "random":
        cell = bulk_atoms("L1_2", a0, (spec.a, spec.a)).repeat(2)
        rng = np.random.default_rng(spec.seed)
        symbols = np.array([spec.a] * len(cell), dtype=object)
        symbols[rng.choice(len(cell), int(round(spec.prototype.fraction_b * len(cell))), replace=False)] = spec.b
        cell.set_chemical_symbols(list(symbols))
    elif spec.prototype.kind == "L1_2":
        cell = bulk_atoms("L1_2", a0, (spec.a, spec.b) if spec.prototype.formula == "A3B" else (spec.b, spec.a))
    else:
        cell = bulk_atoms("L1_0", a0, (spec.a, spec.b))
    calc = get_calculator(calculator)
    scales = np.linspace(0.96, 1.04, 9)
    energies = []
    for s in scales:
        trial = cell.copy()
        trial.set_cell(cell.cell * s, scale_atoms=True)
        trial.calc = calc
        energies.append(trial.get_potential_energy())
    c2, c1, _ = np.polyfit(scales * a0, energies, 2)
    return float(-c1 / (2 * c2)) if c2 > 0 else a0


def geometry_kind(spec: BulkSpec) -> str:
    """Which template geometry a bulk uses (random alloys are substituted fcc slabs)."""
    if spec.prototype is None or spec.prototype.kind == "random":
        return "fcc"
    return spec.prototype.kind


def bulk_formula(spec: BulkSpec) -> str:
    """Formula of the bulk cell as in OC20/CatBERTa strings, e.g. 'Cu3Pt', 'CuPt', 'Pt'."""
    if spec.b is None:
        return spec.a
    p = spec.prototype
    if p.kind == "L1_2":
        return f"{spec.a}3{spec.b}" if p.formula == "A3B" else f"{spec.a}{spec.b}3"
    if p.kind == "L1_0":
        return f"{spec.a}{spec.b}"
    return ""  # random: taken from the slab's own composition


def bulk_specs(catalog: Catalog) -> list[BulkSpec]:
    """All bulks, pure metals first, with lattice constants (Å) by Vegard's law, or relaxed
    with ``lattice_calculator`` when ``lattice: relaxed``."""
    specs = []
    if catalog.include_pure:
        for m in catalog.metals:
            specs.append(BulkSpec(a=m, lattice_constant=catalog.lattice_constant(m)))
    for a, b in catalog.pair_list():
        la, lb = catalog.lattice_constant(a), catalog.lattice_constant(b)
        for p in catalog.prototypes:
            xb = {"A3B": 0.25, "AB3": 0.75}.get(p.formula, 0.5) if p.kind != "random" else p.fraction_b
            seed = 0
            if p.kind == "random":  # a seed of its own, so editing other entries never moves it
                seed = int(hashlib.blake2b(f"{catalog.seed}|{a}|{b}|{p.fraction_b:g}".encode(), digest_size=4).hexdigest(), 16)
            specs.append(BulkSpec(a=a, b=b, prototype=p, lattice_constant=(1 - xb) * la + xb * lb, seed=seed))
    if catalog.lattice == "relaxed":
        specs = [s.model_copy(update={"lattice_constant": relaxed_lattice_constant(s, catalog.lattice_calculator)})
                 for s in specs]
    return specs
