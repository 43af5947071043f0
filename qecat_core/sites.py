"""Adsorption sites on a slab template (pymatgen's AdsorbateSiteFinder), as in-plane positions.

Sites are stored as fractional in-plane coordinates of the template cell, so they carry over to
every alloy the template is scaled to. The site *type* (top / bridge / hollow-fcc / hollow-hcp /
hollow-4fold) is decided after placement from the atoms the binding atom touches
(:func:`qecat_core.placement.classify_site`), because 4-fold hollows come back from pymatgen
labelled 'bridge' and alloy radii differ.
"""

from __future__ import annotations

import numpy as np

from qecat_core.slabs import SlabTemplate

SURFACE_HEIGHT = 1.6  # Å below the topmost atom that still counts as surface (at a = 3.8 Å)


_SITES: dict[tuple[int, bool], tuple[SlabTemplate, np.ndarray]] = {}


def template_sites(template: SlabTemplate, symm_reduce: bool) -> np.ndarray:
    """In-plane fractional coordinates (n, 2) of the adsorption sites of ``template``.

    ``symm_reduce=True`` keeps one site per symmetry-equivalent set (ordered alloys, pure metals);
    ``False`` keeps all of them (random alloys, whose substitution breaks the symmetry).
    """
    key = (id(template), symm_reduce)
    if key not in _SITES:  # keep the template referenced so its id is never reused
        _SITES[key] = (template, _find_sites(template, symm_reduce))
    return _SITES[key][1]


def _find_sites(template: SlabTemplate, symm_reduce: bool) -> np.ndarray:
    from pymatgen.analysis.adsorption import AdsorbateSiteFinder
    from pymatgen.core import Lattice, Structure
    from pymatgen.core.surface import Slab

    atoms = template.atoms
    lattice = Lattice(np.array(atoms.cell) + np.diag([0, 0, 15.0]))  # room above for pymatgen
    struct = Structure(lattice, atoms.get_chemical_symbols(), atoms.positions, coords_are_cartesian=True)
    slab = Slab(struct.lattice, struct.species, struct.frac_coords, miller_index=template.miller,
                oriented_unit_cell=struct, shift=template.shift, scale_factor=np.eye(3, dtype=int))
    # height 1.6 Å at a = 3.8 Å: the top layer of flat facets, plus the trough atoms of (110) and
    # the step, terrace and corner rows of (211)
    finder = AdsorbateSiteFinder(slab, height=SURFACE_HEIGHT)
    found = finder.find_adsorption_sites(distance=0.0, symm_reduce=1e-2 if symm_reduce else 0,
                                         near_reduce=0, no_obtuse_hollow=True)
    cart = np.array(found["all"])[:, :2]
    cell2 = np.array(atoms.cell)[:2, :2]
    frac = (cart @ np.linalg.inv(cell2)) % 1.0
    # pymatgen lists periodic images of the same site (near_reduce would merge real sites too):
    # keep one per position, judged by minimum-image distance in Å
    kept: list[np.ndarray] = []
    for f in frac:
        if all(np.linalg.norm(((f - k + 0.5) % 1.0 - 0.5) @ cell2) > 0.2 for k in kept):
            kept.append(f)
    frac = np.array(kept)
    # stable order: by fractional (y, x) rounded, so the same template always lists sites alike
    order = np.lexsort((np.round(frac[:, 0], 4), np.round(frac[:, 1], 4)))
    return frac[order]


def install_templates(kind: str, miller: tuple[int, int, int], targs: tuple, result: list) -> None:
    """Put templates and sites computed in another process into this process's caches."""
    from qecat_core.slabs import _TEMPLATES

    _TEMPLATES[(kind, miller, *targs)] = tuple(t for t, _, _ in result)
    for t, reduced, full in result:
        _SITES[(id(t), True)] = (t, reduced)
        if full is not None:
            _SITES[(id(t), False)] = (t, full)
