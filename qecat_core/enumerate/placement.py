"""Place an adsorbate on a slab and name the site it sits on.

The binding atom is put above an in-plane point at the height where it first touches the surface:
for every slab atom j within reach, ``z_j + sqrt((r_X + r_j)^2 - rho_j^2)`` with covalent radii r
and in-plane distance rho (minimum image); the highest contact wins. The site type is then the
number of slab atoms within ``BOND_SCALE * (r_X + r_j)`` of the binding atom.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import covalent_radii

from qecat_core.common.tags import TAG_ADSORBATE

BOND_SCALE = 1.1  # a bond is a distance below 1.1 x the sum of covalent radii
#: non-binding atoms of SMILES and file adsorbates stay this many x contact away from the slab: clear
#: of BOND_SCALE by a margin, so that no atom sits on the bond threshold (where noise would decide)
CLEARANCE = BOND_SCALE + 0.02


_SHIFTS = np.array([[sx, sy] for sx in (-1, 0, 1) for sy in (-1, 0, 1)], dtype=float)


def inplane_displacements(positions: np.ndarray, xy: np.ndarray, cell) -> np.ndarray:
    """Minimum-image in-plane displacement (n, 2) of ``positions`` from the point ``xy``.

    Assumes the third cell vector is along z (slabs here always have an orthogonal c).
    """
    cell2 = np.array(cell)[:2, :2]
    d = positions[:, :2] - xy
    f = d @ np.linalg.inv(cell2)
    f -= np.round(f)
    cand = (f[None, :, :] + _SHIFTS[:, None, :]) @ cell2  # (9, n, 2)
    best = np.argmin((cand ** 2).sum(-1), axis=0)
    return cand[best, np.arange(len(d))]


def _inplane_images(atoms: Atoms, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return inplane_displacements(atoms.positions, xy, atoms.cell), atoms.positions[:, 2]


def contact_height(slab: Atoms, xy: np.ndarray, symbol_z: int, scale: float = 1.0) -> float:
    """Height (Å) at which an atom of number ``symbol_z`` above ``xy`` touches the slab (at ``scale``
    times the sum of covalent radii from every slab atom)."""
    d, z = _inplane_images(slab, xy)
    rho = np.linalg.norm(d, axis=1)
    r = scale * (covalent_radii[symbol_z] + covalent_radii[slab.numbers])
    reach = rho < r
    if not reach.any():
        return float(z.max() + 1.0)
    return float(np.max(z[reach] + np.sqrt(r[reach] ** 2 - rho[reach] ** 2)))


def place(slab: Atoms, adsorbate: Atoms, binding_index: int, xy: np.ndarray, angle: float = 0.0,
          binding: tuple[int, ...] = (), clearance: float | None = None) -> Atoms:
    """Slab + adsorbate with the binding atom touching the surface above ``xy``.

    ``adsorbate`` must be oriented (binding atom at the origin, molecule towards +z), see
    :meth:`qecat_core.catalog.adsorbates.Adsorbate.oriented`. Adsorbate atoms get tag 2.
    The molecule is lifted where another atom would come closer to the slab than its contact height
    less 0.3 Å (OC20 adsorbates). With ``clearance`` (SMILES and file adsorbates) it is lifted until
    no atom of ``binding`` is closer than contact (the sum of covalent radii) and no other atom closer
    than ``clearance`` x contact (:data:`CLEARANCE`: only binding atoms bind): lowered rigidly until
    the first atom touches.
    """
    ads = adsorbate.copy()
    if angle:
        ads.rotate(angle, "z")
    zb = contact_height(slab, xy, ads.numbers[binding_index])
    ads.positions += np.array([xy[0], xy[1], zb]) - ads.positions[binding_index]
    # lift the molecule if a non-binding atom would sit too close to the slab
    others = [i for i in range(len(ads)) if i != binding_index]
    if others:
        if clearance is None:
            floor = np.array([contact_height(slab, ads.positions[i, :2], ads.numbers[i]) for i in others]) - 0.3
        else:
            floor = np.array([contact_height(slab, ads.positions[i, :2], ads.numbers[i]) if i in binding
                              else contact_height(slab, ads.positions[i, :2], ads.numbers[i], clearance)
                              for i in others])
        lift = np.max(floor - ads.positions[others, 2])
        if lift > 0:
            ads.positions[:, 2] += lift
    ads.set_tags([TAG_ADSORBATE] * len(ads))
    out = slab.copy()
    out += ads
    out.set_constraint(slab.constraints[0].copy() if slab.constraints else [])
    return out


def classify_site(atoms: Atoms, binding_index: int) -> tuple[str, list[int]]:
    """Site type of the adsorbate atom ``binding_index`` and the slab atoms it binds to.

    Returns ('top' | 'bridge' | 'hollow-fcc' | 'hollow-hcp' | 'hollow-3fold' | 'hollow-4fold' |
    'hollow' | 'none', indices). fcc and hcp are told apart by whether a subsurface atom lies
    under the 3-fold site (hcp) or not (fcc).
    """
    slab_mask = atoms.get_tags() != TAG_ADSORBATE
    idx = np.nonzero(slab_mask)[0]
    slab = atoms[idx]
    xy = atoms.positions[binding_index, :2]
    d, z = _inplane_images(slab, xy)
    dz = atoms.positions[binding_index, 2] - z
    dist = np.sqrt((d ** 2).sum(1) + dz ** 2)
    r = covalent_radii[atoms.numbers[binding_index]] + covalent_radii[slab.numbers]
    bound = np.nonzero(dist < BOND_SCALE * r)[0]
    n = len(bound)
    kind = {0: "none", 1: "top", 2: "bridge", 4: "hollow-4fold"}.get(n, "hollow")
    if n == 3:
        kind = "hollow-3fold"
        below = (np.linalg.norm(d, axis=1) < 0.6) & (z < z[bound].min() - 0.5)
        if below.any():
            zb = z[below].max()
            # hcp: an atom of the layer right under the surface layer; fcc: none there
            layer_gap = z[bound].min() - zb
            kind = "hollow-hcp" if layer_gap < 3.0 else "hollow-fcc"
        else:
            kind = "hollow-fcc"
    return kind, [int(i) for i in idx[bound]]
