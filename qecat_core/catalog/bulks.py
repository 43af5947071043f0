"""Bulk cells of the catalog's bulks and their lattice constants.

fcc prototypes (fcc, L1_2, L1_0, random fcc alloys) share slab templates cut at :data:`A_REF` and
scaled; pure hcp and bcc metals and crystals from files are *native* bulks (:func:`is_native`): their
slabs are cut from :func:`template_bulk`, the bulk itself (hcp: ASE's 2-atom hexagonal cell; bcc: the
2-atom cubic cell; files: the file's cell, as given).

Lattice constants in Å; :func:`relaxed_lattice_constant` minimises the bulk energy with a
calculator of :mod:`qecat_core.calculators`; :func:`bulk_specs` gives a catalog's bulks with the
lattice constants it asks for (Vegard's law, or relaxed with ``lattice_calculator``; hcp and bcc
metals: ASE's reference a and c/a unless given, relaxed where the calculator supports the element;
files: as given).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
from ase import Atoms

from qecat_core.calculators.registry import get_calculator, supported_elements
from qecat_core.catalog.schema import BulkEntry, BulkSpec, Catalog

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


def is_native(spec: BulkSpec) -> bool:
    """Whether the bulk's slabs are cut from the bulk itself (hcp, bcc, files), not from a shared
    fcc template at :data:`A_REF`."""
    return spec.lattice != "fcc"


def geometry_kind(spec: BulkSpec) -> str:
    """Which template geometry a bulk uses (random alloys are substituted fcc slabs); native bulks
    have one of their own, ``'hcp:Ru-hcp'``, ``'file:CuZn-B2'``."""
    if is_native(spec):
        return f"{spec.lattice}:{spec.label}"
    if spec.prototype is None or spec.prototype.kind == "random":
        return "fcc"
    return spec.prototype.kind


def template_bulk(spec: BulkSpec) -> Atoms:
    """The cell a native bulk's slabs are cut from (Å, real species); Miller indices refer to it."""
    from ase.build import bulk

    if spec.lattice == "hcp":
        return bulk(spec.a, "hcp", a=spec.lattice_constant, c=spec.c)
    if spec.lattice == "bcc":
        return bulk(spec.a, "bcc", a=spec.lattice_constant, cubic=True)
    if spec.lattice == "file":
        symbols, frac, cell = spec.structure
        return Atoms(list(symbols), scaled_positions=np.array(frac), cell=np.array(cell), pbc=True)
    raise ValueError(f"{spec.label}: fcc bulks are cut from the shared templates (bulk_atoms)")


def reduced_formula(symbols) -> str:
    """Reduced composition, elements alphabetically (whatever order the file lists them in):
    ['Zn', 'Cu', 'Cu', 'Cu'] -> 'Cu3Zn'."""
    symbols = list(symbols)
    elements = sorted(set(symbols))
    counts = [symbols.count(e) for e in elements]
    g = int(np.gcd.reduce(counts))
    return "".join(f"{e}{c // g if c // g > 1 else ''}" for e, c in zip(elements, counts))


def bulk_formula(spec: BulkSpec) -> str:
    """Formula of the bulk cell as in OC20/CatBERTa strings, e.g. 'Cu3Pt', 'CuPt', 'Pt'."""
    if spec.lattice == "file":
        return reduced_formula(spec.structure[0])
    if spec.b is None:
        return spec.a
    p = spec.prototype
    if p.kind == "L1_2":
        return f"{spec.a}3{spec.b}" if p.formula == "A3B" else f"{spec.a}{spec.b}3"
    if p.kind == "L1_0":
        return f"{spec.a}{spec.b}"
    return ""  # random: taken from the slab's own composition


def _supports(calculator: str, elements) -> bool:
    allowed = supported_elements(calculator)
    return allowed is None or set(elements) <= allowed


def _energy(atoms: Atoms, calc) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    return float(atoms.get_potential_energy())


@lru_cache(maxsize=None)
def relaxed_native(spec: BulkSpec, calculator: str = "emt") -> tuple[float, float | None]:
    """(a, c) in Å of a pure bcc or hcp metal minimising the bulk energy with ``calculator``.

    bcc: the cubic cell scaled uniformly (±4%, 9 points, parabola); hcp: a and c each scaled by
    ±3% on a 5 x 5 grid and a quadratic surface fitted. The reference values are kept when the fit
    has no minimum.
    """
    calc = get_calculator(calculator)
    cell = template_bulk(spec)
    a0 = spec.lattice_constant
    if spec.lattice == "bcc":
        scales = np.linspace(0.96, 1.04, 9)
        e = [_energy(_scaled(cell, s, s), calc) for s in scales]
        c2, c1, _ = np.polyfit(scales * a0, e, 2)
        return (float(-c1 / (2 * c2)) if c2 > 0 else a0), None
    c0 = spec.c
    grid = np.linspace(0.97, 1.03, 5)
    rows, e = [], []
    for sa in grid:
        for sc in grid:
            x, y = sa * a0, sc * c0
            rows.append([1, x, y, x * x, x * y, y * y])
            e.append(_energy(_scaled(cell, sa, sc), calc))
    p = np.linalg.lstsq(np.array(rows), np.array(e), rcond=None)[0]
    H = np.array([[2 * p[3], p[4]], [p[4], 2 * p[5]]])
    if np.linalg.eigvalsh(H).min() <= 0:
        return a0, c0
    a, c = np.linalg.solve(H, -p[1:3])
    return float(a), float(c)


def _scaled(cell: Atoms, sa: float, sc: float) -> Atoms:
    """``cell`` with its first two vectors scaled by ``sa`` and the third by ``sc`` (atoms follow)."""
    out = cell.copy()
    out.set_cell(np.array(cell.cell) * np.array([[sa], [sa], [sc]]), scale_atoms=True)
    return out


def entry_spec(entry: BulkEntry, catalog: Catalog) -> BulkSpec:
    """The :class:`BulkSpec` of one ``bulks:`` entry (reference lattice constants)."""
    facets = tuple(tuple(f) for f in entry.facets) if entry.facets is not None else None
    if entry.file is not None:
        st = entry.structure
        first, *others = sorted(set(st.symbols))  # alphabetically, as the formula
        return BulkSpec(a=first, b="-".join(others) or None, lattice="file", name=entry.label,
                        lattice_constant=float(np.linalg.norm(st.cell[0])), structure=(st.symbols, st.frac, st.cell),
                        facets=facets or tuple(tuple(f) for f in catalog.facets))
    if entry.lattice == "fcc":
        a = entry.a if entry.a is not None else catalog.lattice_constant(entry.element)
        return BulkSpec(a=entry.element, lattice_constant=a, name=entry.name, facets=facets)
    a, c = entry.lattice_constants()
    default = catalog.lattice_facets.hcp if entry.lattice == "hcp" else catalog.lattice_facets.bcc
    return BulkSpec(a=entry.element, lattice=entry.lattice, lattice_constant=a, c=c, name=entry.name,
                    facets=facets or tuple(tuple(f) for f in default))


def bulk_specs(catalog: Catalog) -> list[BulkSpec]:
    """All bulks, pure metals first, with lattice constants (Å) by Vegard's law, or relaxed
    with ``lattice_calculator`` when ``lattice: relaxed``; then the ``bulks:`` entries as listed
    (hcp and bcc relaxed where the calculator supports the element; files as given)."""
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
    for entry in catalog.bulks:
        spec = entry_spec(entry, catalog)
        if catalog.lattice == "relaxed" and spec.lattice != "file" and _supports(catalog.lattice_calculator, [spec.a]):
            if spec.lattice == "fcc":
                spec = spec.model_copy(update={"lattice_constant": relaxed_lattice_constant(spec, catalog.lattice_calculator)})
            else:
                a, c = relaxed_native(spec, catalog.lattice_calculator)
                spec = spec.model_copy(update={"lattice_constant": a, "c": c})
        specs.append(spec)
    return specs
