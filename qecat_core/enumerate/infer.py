"""Metadata of a bare adsorbate + slab structure: which adsorbate, which bulk formula, which facet.

The configuration string (:mod:`qecat_core.text`) and the per-adsorbate energy offsets of the model
need the adsorbate's OC20 SMILES, the bulk formula and the Miller index. Structures written by
``qecat enumerate`` carry them in ``atoms.info``; a structure from anywhere else (an ``.extxyz``,
a POSCAR, an ``ase.build`` slab) usually does not. :func:`complete_metadata` fills in what is
missing from the geometry alone (tags as in OC20: 2 adsorbate, 0/1 slab):

* ``adsorbate``: the OC20 adsorbate (fairchem-data-oc's set) with the same atoms and the same
  hydrogens on each heavy atom, so that ``*CHO`` and ``*COH`` are told apart; among those, one whose
  binding element is the heavy atom nearest the slab. Adsorbates of the default catalog win ties.
* ``bulk_formula``: the slab's reduced composition (``Cu27Pt9`` -> ``Cu3Pt``), elements in the
  order of the default catalog's metals (as its formulas are written), then alphabetically.
* ``miller``: for fcc-based slabs (fcc metals, L1_2, L1_0 and random fcc alloys, the geometries of the
  catalog): the surface normal expressed in the cubic axes found from the slab's nearest-neighbour
  bonds (fcc bonds run along <110>), as the smallest integers, largest first (``(2 1 1)``). Other
  lattices give ``None``.

>>> from ase.build import fcc211, add_adsorbate
>>> slab = fcc211("Pt", (3, 3, 4), vacuum=8.0)
>>> add_adsorbate(slab, "O", 1.2, position=(0.0, 0.0)); slab.set_tags([1] * 36 + [2])
>>> infer_miller(slab), identify_adsorbate(slab), slab_formula(slab[:36])
((2, 1, 1), '*O', 'Pt')
"""

from __future__ import annotations

from collections import Counter
from functools import cache

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from ase.geometry import get_distances

from qecat_core.common.tags import TAG_ADSORBATE
from qecat_core.enumerate.placement import BOND_SCALE

# The adsorbates of catalogs/bimetallics.yaml (the ones the shipped model was trained on) win ties.
PREFERRED = ("*H", "*O", "*OH", "*C", "*CH", "*CH2", "*CH3", "*N", "*NH", "*NH2", "*CO", "*COH", "*CHO",
             "*OCH3", "*N2")


# Element order of bulk formulas: the default catalog's metals first (its pairs are written A-B in this
# order: 'CuPd3', 'AgPt'), then any other element alphabetically.
METAL_ORDER = ("Cu", "Ag", "Au", "Ni", "Pd", "Pt")


def slab_formula(slab: Atoms, order: str = "catalog") -> str:
    """Reduced composition, e.g. Pt9Cu27 -> 'Cu3Pt'; elements in :data:`METAL_ORDER` (``order="catalog"``)
    or in order of appearance (``"appearance"``, the rule enumeration writes random alloys with).

    >>> slab_formula(Atoms("Pt3CuPt3Cu")), slab_formula(Atoms("Pt3CuPt3Cu"), order="appearance")
    ('CuPt3', 'Pt3Cu')
    """
    syms = slab.get_chemical_symbols()
    if order == "appearance":
        elements = list(dict.fromkeys(syms))
    else:
        elements = sorted(set(syms), key=lambda s: (METAL_ORDER.index(s) if s in METAL_ORDER else len(METAL_ORDER), s))
    counts = [syms.count(s) for s in elements]
    g = int(np.gcd.reduce(counts)) if counts else 1
    return "".join(f"{s}{c // g if c // g > 1 else ''}" for s, c in zip(elements, counts))


def _signature(symbols: list[str], bonds: list[tuple[int, int]], binding: int) -> tuple:
    """(binding element, sorted (heavy element, number of bonded H) over heavy atoms, formula)."""
    n_h = Counter()
    for i, j in bonds:
        if symbols[j] == "H" and symbols[i] != "H":
            n_h[i] += 1
        if symbols[i] == "H" and symbols[j] != "H":
            n_h[j] += 1
    heavy = sorted((s, n_h[k]) for k, s in enumerate(symbols) if s != "H")
    return symbols[binding], tuple(heavy), tuple(sorted(Counter(symbols).items()))


def _bonds(atoms: Atoms) -> list[tuple[int, int]]:
    """Bonded pairs (i < j) of a small molecule, minimum image where periodic."""
    pbc = atoms.pbc if atoms.cell.rank == 3 else False
    _, d = get_distances(atoms.positions, cell=atoms.cell, pbc=pbc)
    r = covalent_radii[atoms.numbers]
    i, j = np.nonzero(np.triu(d < BOND_SCALE * (r[:, None] + r[None, :]), k=1))
    return list(zip(i.tolist(), j.tolist()))


@cache
def _library() -> dict[tuple, list[str]]:
    from qecat_core.catalog.adsorbates import load_adsorbates

    out: dict[tuple, list[str]] = {}
    for smiles, ads in load_adsorbates().items():
        a = ads.atoms.copy()
        a.pbc = False
        sig = _signature(a.get_chemical_symbols(), _bonds(a), ads.binding_indices[0])
        out.setdefault(sig, []).append(smiles)
    for names in out.values():
        names.sort(key=lambda s: (s not in PREFERRED, s))
    return out


def identify_adsorbate(atoms: Atoms) -> str | None:
    """OC20 SMILES of the tag-2 atoms (see the module docstring), or None when no OC20 adsorbate matches."""
    tags = atoms.get_tags()
    ads_idx = np.nonzero(tags == TAG_ADSORBATE)[0]
    slab_idx = np.nonzero(tags != TAG_ADSORBATE)[0]
    if not len(ads_idx):
        return None
    ads = atoms[ads_idx]
    binding = 0
    if len(slab_idx) and len(ads_idx) > 1:  # the heavy adsorbate atom nearest any slab atom (minimum image)
        heavy = [k for k, a in enumerate(ads_idx) if atoms.numbers[a] != 1] or list(range(len(ads_idx)))
        dmin = [atoms.get_distances(int(ads_idx[k]), slab_idx, mic=bool(atoms.pbc.any())).min() for k in heavy]
        binding = heavy[int(np.argmin(dmin))]
    sig = _signature(ads.get_chemical_symbols(), _bonds(ads), binding)
    names = _library().get(sig)
    if names:
        return names[0]
    # a tilted placement can bring another heavy atom nearer the slab: same atoms and hydrogens suffice
    same = [n for key, ns in _library().items() if key[1:] == sig[1:] for n in ns]
    same.sort(key=lambda s: (s not in PREFERRED, s))
    return same[0] if same else None


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def infer_miller(atoms: Atoms, tol: float = 0.12) -> tuple[int, int, int] | None:
    """Miller index of an fcc-based slab's surface (largest index first), or None if not fcc-like.

    The slab atoms (tags 0 and 1) are the crystal; the surface normal is ``cell[0] x cell[1]``.
    """
    slab = atoms[atoms.get_tags() != TAG_ADSORBATE]
    if len(slab) < 4 or slab.cell.rank < 2:
        return None
    # bonds of the atoms nearest the slab's middle height (they have all their neighbours), in-plane periodic
    z = slab.positions @ _unit(np.cross(slab.cell[0], slab.cell[1]))
    centre = np.argsort(np.abs(z - 0.5 * (z.min() + z.max())), kind="stable")[:8]
    shifts = np.array([(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)]) @ slab.cell[:2]  # in-plane images
    images = (slab.positions[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    vec = (images[None, :, :] - slab.positions[centre][:, None, :]).reshape(-1, 3)
    d = np.linalg.norm(vec, axis=1)
    vec, d = vec[d > 1e-6], d[d > 1e-6]
    if not len(d):
        return None
    vec = vec[d < 1.2 * d.min()]  # nearest-neighbour bonds (fcc's second neighbours are 1.41x further)
    dirs = _unit(vec)
    dirs = np.where((dirs @ np.array([0.577, 0.613, 0.539]))[:, None] < 0, -dirs, dirs)  # fold +-v together
    uniq: list[np.ndarray] = []
    while len(dirs) and len(uniq) <= 6:  # group parallel bonds, one direction at a time
        uniq.append(dirs[0])
        dirs = dirs[np.abs(dirs @ dirs[0]) <= 0.98]
    if len(uniq) != 6 or len(dirs):  # fcc: six bond directions up to sign
        return None
    U = np.array(uniq)
    # cube axes: sum and difference of orthogonal bond directions ((1,1,0) +- (1,-1,0) ~ (1,0,0), (0,1,0))
    axes: list[np.ndarray] = []
    for a in range(6):
        for b in range(a + 1, 6):
            if abs(float(U[a] @ U[b])) < 0.1:
                for e in (_unit(U[a] + U[b]), _unit(U[a] - U[b])):
                    if not any(abs(float(e @ x)) > 0.98 for x in axes):
                        axes.append(e)
    if len(axes) != 3 or max(abs(float(axes[p] @ axes[q])) for p, q in ((0, 1), (0, 2), (1, 2))) > 0.1:
        return None
    normal = _unit(np.cross(slab.cell[0], slab.cell[1]))
    h = np.abs(np.array(axes) @ normal)
    nz = h[h > 0.1]
    for scale in (1, 2, 3):  # smallest integers: try multiples of the smallest component
        m = h / nz.min() * scale
        r = np.round(m)
        if np.all(np.abs(m - r) < tol * scale) and r.max() <= 6:
            g = int(np.gcd.reduce(r.astype(int)))
            return tuple(int(x) for x in sorted((r / g).astype(int), reverse=True))  # type: ignore[return-value]
    return None


def complete_metadata(atoms: Atoms) -> list[str]:
    """Fill ``adsorbate``, ``bulk_formula`` and ``miller`` into ``atoms.info`` where absent and inferable.

    Needs tags (see :func:`qecat_core.common.tags.ensure_tags`). Returns the keys it filled in (also stored
    as ``atoms.info['inferred']``, comma-separated).
    """
    info = atoms.info
    filled = []
    if not info.get("adsorbate"):
        ads = identify_adsorbate(atoms)
        if ads:
            info["adsorbate"] = ads
            filled.append("adsorbate")
    if not (info.get("bulk_formula") or info.get("bulk")):
        slab = atoms[atoms.get_tags() != TAG_ADSORBATE]
        if len(slab):
            info["bulk_formula"] = slab_formula(slab)
            filled.append("bulk_formula")
    if info.get("miller") is None:
        m = infer_miller(atoms)
        if m is not None:
            info["miller"] = m
            filled.append("miller")
    if filled:
        info["inferred"] = ",".join(filled)
    return filled
