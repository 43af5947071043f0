"""CatBERTa-style configuration strings, generated from a structure.

Format (as the OC20 strings in CatBERTa's data)::

    ADSORBATE</s>BULK (h k l)</s>[X S1 S2 SITE [S1 n n ... a] [S2 n n ... a]][Y ...]

one bracket per adsorbate atom that binds the slab (in atom order): the atom X, the slab atoms it
binds (sorted by symbol), the site (atop / bridge / hollow by how many it binds), then for each of
those slab atoms: its symbol, its slab neighbours (sorted) and its adsorbate neighbours (sorted).
A bond is a distance below 1.1 x the sum of covalent radii (periodic images included).

>>> from ase.build import fcc111, add_adsorbate
>>> slab = fcc111("Cu", (2, 2, 3), vacuum=6.0); slab.set_tags([0] * 8 + [1] * 4)
>>> add_adsorbate(slab, "O", 1.2, "ontop"); slab.set_tags([0] * 8 + [1] * 4 + [2])
>>> configuration_text(slab, "O", "Cu", (1, 1, 1))
'O</s>Cu (1 1 1)</s>[O Cu atop [Cu Cu Cu Cu Cu Cu Cu Cu Cu Cu O]]'
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from ase.neighborlist import neighbor_list

from qecat_core.common.tags import TAG_ADSORBATE
from qecat_core.enumerate.infer import parse_miller, surface_bonds
from qecat_core.enumerate.placement import BOND_SCALE

SITE_WORDS = {1: "atop", 2: "bridge"}  # 3 or more: hollow


def miller_text(miller) -> str:
    """``'(h k l)'`` of a Miller index in any spelling :func:`qecat_core.enumerate.infer.parse_miller` reads
    (``'111'``, ``[1, 1, 1]``, hcp ``'0001'`` -> ``'(0 0 1)'``); ValueError for anything else."""
    return "(" + " ".join(str(i) for i in parse_miller(miller)) + ")"


def slab_neighbor_symbols(slab: Atoms) -> list[list[str]]:
    """Sorted symbols of each slab atom's bonded slab neighbours (periodic images included).

    Computed once per slab and passed to :func:`configuration_text` for every adsorbate placed on it.
    """
    cutoffs = BOND_SCALE * covalent_radii[slab.numbers]
    i_idx, j_idx = neighbor_list("ij", slab, cutoffs, self_interaction=False)
    syms = np.array(slab.get_chemical_symbols())
    out: list[list[str]] = [[] for _ in range(len(slab))]
    for i, j in zip(i_idx, j_idx):
        out[i].append(syms[j])
    return [sorted(n) for n in out]


def configuration_text(atoms: Atoms, adsorbate: str, bulk: str, miller,
                       slab_neighbors: list[list[str]] | None = None) -> str:
    """The configuration string of ``atoms`` (tags: 2 = adsorbate, anything else = slab).

    ``slab_neighbors``: the result of :func:`slab_neighbor_symbols` for the slab atoms, which must
    come first in ``atoms`` (as enumeration writes them); computed here when not given.
    """
    if not (atoms.get_tags() == TAG_ADSORBATE).any():
        raise ValueError("no adsorbate atoms (tag 2) in the structure")
    # adsorbate-slab bonds by minimum-image distance
    ads_idx, slab_idx, bonded = surface_bonds(atoms)
    syms = np.array(atoms.get_chemical_symbols())
    if slab_neighbors is None or len(slab_neighbors) != len(slab_idx) or slab_idx[-1] != len(slab_idx) - 1:
        slab_neighbors = slab_neighbor_symbols(atoms[slab_idx])
    parts = []
    for ka, a in enumerate(ads_idx):
        bound = np.nonzero(bonded[ka])[0]  # positions within slab_idx
        if not len(bound):
            continue
        bound = sorted(bound, key=lambda k: (syms[slab_idx[k]], k))
        site = SITE_WORDS.get(len(bound), "hollow")
        inner = []
        for k in bound:
            ads_n = sorted(syms[ads_idx[bonded[:, k]]])
            inner.append("[" + " ".join([syms[slab_idx[k]], *slab_neighbors[k], *ads_n]) + "]")
        parts.append("[" + " ".join([syms[a], *(syms[slab_idx[k]] for k in bound), site, *inner]) + "]")
    return f"{adsorbate}</s>{bulk} {miller_text(miller)}</s>" + "".join(parts)
