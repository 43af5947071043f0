"""OC20 tags (0 subsurface/fixed, 1 surface, 2 adsorbate): the constants, and tags for structures that come without them.

Rule used when every tag is 0 (ASE's default) -- documented in docs/structures.md:

1. adsorbate (2): atoms of H, C, N, O, S (:data:`ADSORBATE_ELEMENTS`) lying above the highest atom of any
   other element;
2. fixed subsurface (0): atoms fixed by a ``FixAtoms`` constraint, if there is one; otherwise the
   lower half of the slab (by height);
3. surface (1): the remaining slab atoms.

ASE's ``fcc111``-style layer tags (1 = top layer, 2, 3, ... downwards) are not OC20 tags; a
structure with tags other than {0, 1, 2} is re-tagged with the rule above. Slabs made only of
H/C/N/O/S (or with such atoms on top of the slab itself: oxides, sulfides) need tags given by the user.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from qecat_core.common.errors import InputError

#: OC20 tags: fixed subsurface, surface (free), adsorbate.
TAG_SUBSURFACE, TAG_SURFACE, TAG_ADSORBATE = 0, 1, 2

#: Elements of adsorbates (OC20's H, C, N, O and the thiols', thioethers' S), for untagged structures.
ADSORBATE_ELEMENTS = frozenset({"H", "C", "N", "O", "S"})


def has_oc20_tags(atoms: Atoms) -> bool:
    tags = atoms.get_tags()
    return bool(len(tags)) and set(np.unique(tags)) <= {0, 1, 2} and (tags == TAG_ADSORBATE).any() and (
        tags != TAG_ADSORBATE).any()


def infer_tags(atoms: Atoms, name: str = "structure") -> np.ndarray:
    """OC20 tags for ``atoms`` by the rule in this module's docstring; raises InputError if impossible."""
    syms = np.array(atoms.get_chemical_symbols())
    light = np.isin(syms, list(ADSORBATE_ELEMENTS))
    if light.all():
        raise InputError(f"{name}: no slab atoms (only H/C/N/O/S): give OC20 tags (0/1 slab, 2 adsorbate)")
    if not light.any():
        raise InputError(f"{name}: no adsorbate atoms (H/C/N/O/S) and no tags: cannot tell the adsorbate apart")
    z = atoms.positions[:, 2]
    top_heavy = z[~light].max()
    ads = light & (z > top_heavy + 0.1)
    if not ads.any():
        raise InputError(
            f"{name}: missing tags and no H/C/N/O/S atoms above the slab; give OC20 tags (2 = adsorbate)")
    tags = np.full(len(atoms), TAG_SURFACE)
    tags[ads] = TAG_ADSORBATE
    fixed = np.zeros(len(atoms), bool)
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            fixed[c.get_indices()] = True
    slab = ~ads
    if fixed[slab].any():
        tags[slab & fixed] = TAG_SUBSURFACE
    else:
        zs = z[slab]
        mid = 0.5 * (zs.min() + zs.max())
        tags[slab & (z < mid)] = TAG_SUBSURFACE
    return tags


def ensure_tags(atoms: Atoms, name: str = "structure") -> Atoms:
    """Return ``atoms`` with OC20 tags, inferring them when absent; add FixAtoms on tag 0 if none."""
    if not has_oc20_tags(atoms):
        atoms.set_tags(infer_tags(atoms, name))
    if not any(isinstance(c, FixAtoms) for c in atoms.constraints):
        atoms.set_constraint(FixAtoms(mask=atoms.get_tags() == TAG_SUBSURFACE))
    return atoms
