"""Adsorption sites on a slab template (pymatgen's AdsorbateSiteFinder), as in-plane positions.

Sites are stored as fractional in-plane coordinates of the template cell, so they carry over to
every alloy the template is scaled to. The site *type* (top / bridge / hollow-fcc / hollow-hcp /
hollow-4fold) is decided after placement from the atoms the binding atom touches
(:func:`qecat_core.enumerate.placement.classify_site`), because 4-fold hollows come back from pymatgen
labelled 'bridge' and alloy radii differ.

Which sites are equivalent is decided here, not by pymatgen's ``symm_reduce``: that one gives 2 or 3
hollows on Cu(111) when the atoms move by 1e-9 Å (``benchmarks/site_noise.py``), so the site set,
and the sids built on it, could differ between machines. :func:`environment_fingerprint` describes
a site by the smoothed radial distribution of each placeholder element around a probe above it;
two sites are equivalent when their fingerprints agree to :data:`EQUIVALENCE_TOL`, a tolerance far
above floating-point noise and far below the difference between distinct sites.

Square nets (bcc and B2 (100), with the second layer in reach) put four surface atoms on a circle,
so the Delaunay triangulation behind AdsorbateSiteFinder has two equally good answers and the noise
picks one (a different set of hollow positions). For the templates of native bulks (hcp, bcc, files)
the site finder sees the atoms moved in-plane by a fixed pattern of at most :data:`JITTER` Å
(:func:`_jitter`), which decides such ties the same way on every machine; the fingerprints are taken
on the template itself. fcc templates are found as before (their sids do not move).
"""

from __future__ import annotations

import numpy as np

from qecat_core.enumerate.slabs import SlabTemplate

SURFACE_HEIGHT = 1.6  # Å below the topmost atom that still counts as surface (at a = 3.8 Å)


_SITES: dict[tuple[int, bool], tuple[SlabTemplate, np.ndarray]] = {}


def template_sites(template: SlabTemplate, symm_reduce: bool) -> np.ndarray:
    """In-plane fractional coordinates (n, 2) of the adsorption sites of ``template``.

    ``symm_reduce=True`` keeps one site per environment (:func:`equivalent` fingerprints; ordered
    alloys, pure metals); ``False`` keeps all of them (random alloys, whose substitution breaks the
    symmetry).
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
    positions = atoms.positions + _jitter(len(atoms)) if template.native else atoms.positions
    struct = Structure(lattice, atoms.get_chemical_symbols(), positions, coords_are_cartesian=True)
    slab = Slab(struct.lattice, struct.species, struct.frac_coords, miller_index=template.miller,
                oriented_unit_cell=struct, shift=template.shift, scale_factor=np.eye(3, dtype=int))
    # height 1.6 Å at a = 3.8 Å: the top layer of flat facets, plus the trough atoms of (110) and
    # the step, terrace and corner rows of (211)
    finder = AdsorbateSiteFinder(slab, height=SURFACE_HEIGHT)
    found = finder.find_adsorption_sites(distance=0.0, symm_reduce=0, near_reduce=0, no_obtuse_hollow=True)
    xyz = np.array(found["all"])
    cell2 = np.array(atoms.cell)[:2, :2]
    # rounded before wrapping, so that -1e-12 and 1 - 1e-12 both become 0
    frac = np.round(xyz[:, :2] @ np.linalg.inv(cell2), 6) % 1.0
    # stable order: by fractional (y, x) rounded, so the same template always lists sites alike
    order = np.lexsort((np.round(frac[:, 0], 4), np.round(frac[:, 1], 4)))
    frac, xyz = frac[order], xyz[order]
    # pymatgen lists periodic images of the same site (near_reduce would merge real sites too):
    # keep one per position, judged by minimum-image distance in Å
    kept: list[int] = []
    for i, f in enumerate(frac):
        if all(np.linalg.norm(((f - frac[k] + 0.5) % 1.0 - 0.5) @ cell2) > 0.2 for k in kept):
            kept.append(i)
    if symm_reduce:  # one site per environment: the first in the order above
        fps = [environment_fingerprint(atoms, xyz[i]) for i in kept]
        unique: list[int] = []
        for j in range(len(kept)):
            if all(not equivalent(fps[j], fps[u]) for u in unique):
                unique.append(j)
        kept = [kept[j] for j in unique]
    return frac[kept]


#: Å, the largest in-plane move of :func:`_jitter` (sites found move by about as much)
JITTER = 1e-5


def _jitter(n: int) -> np.ndarray:
    """A fixed in-plane displacement (n, 3) per atom index, each component in [-JITTER/2, JITTER/2)
    (golden-ratio sequences: no two atoms alike, the same on every machine)."""
    k = np.arange(1, n + 1, dtype=float)
    u = (k * 0.6180339887498949) % 1.0 - 0.5
    v = (k * 0.7548776662466927) % 1.0 - 0.5
    return JITTER * np.stack([u, v, np.zeros(n)], axis=1)


#: Å: fingerprint probe height above the site, cutoff, and smoothing width
PROBE_HEIGHT, FP_CUTOFF, FP_SIGMA = 1.5, 6.0, 0.1
#: largest difference between two equivalent sites' fingerprints (they are in units of neighbour counts)
EQUIVALENCE_TOL = 1e-3
_FP_GRID = np.arange(0.0, FP_CUTOFF + 3 * FP_SIGMA, FP_SIGMA / 2)


def environment_fingerprint(atoms, site: np.ndarray) -> np.ndarray:
    """Smoothed radial and height-weighted distributions of each element around a probe above ``site``.

    ``site`` is a Cartesian position on the surface (Å); the probe sits :data:`PROBE_HEIGHT` above
    it. Rows: per element (sorted symbols), the Gaussian-smoothed count of atoms at distance r, then
    the same weighted by the atoms' depth below the probe. Continuous in the positions, so moving
    atoms by 1e-9 Å moves it by about as little; a smooth cosine cutoff at :data:`FP_CUTOFF`.

    >>> from ase.build import fcc111
    >>> s = fcc111("Cu", (2, 2, 3), a=3.6, periodic=True)
    >>> top = s.positions[-1]
    >>> shifted = top + s.cell[0] / 2                      # the next atom along a
    >>> bool(equivalent(environment_fingerprint(s, top), environment_fingerprint(s, shifted)))
    True
    >>> bridge = top + s.cell[0] / 4
    >>> bool(equivalent(environment_fingerprint(s, top), environment_fingerprint(s, bridge)))
    False
    """
    probe = np.asarray(site, float) + [0.0, 0.0, PROBE_HEIGHT]
    cell = np.array(atoms.cell)
    symbols = np.array(atoms.get_chemical_symbols())
    # images needed along each in-plane vector: the cutoff over the cell's height across it
    area = np.linalg.norm(np.cross(cell[0], cell[1]))
    n_img = [int(np.ceil(FP_CUTOFF * np.linalg.norm(cell[1 - i]) / area)) + 1 for i in (0, 1)]
    shifts = np.array([i * cell[0] + j * cell[1] for i in range(-n_img[0], n_img[0] + 1)
                       for j in range(-n_img[1], n_img[1] + 1)])
    rows = []
    for el in sorted(set(symbols)):
        pos = (atoms.positions[symbols == el][None, :, :] + shifts[:, None, :]).reshape(-1, 3)
        d = pos - probe
        r = np.linalg.norm(d, axis=1)
        m = r < FP_CUTOFF
        r, depth = r[m], -d[m, 2]
        w = 0.5 * (np.cos(np.pi * np.clip((r - (FP_CUTOFF - 1.0)), 0.0, 1.0)) + 1.0)
        g = np.exp(-0.5 * ((_FP_GRID[:, None] - r[None, :]) / FP_SIGMA) ** 2) * w[None, :]
        rows += [g.sum(axis=1), (g * depth[None, :]).sum(axis=1)]
    return np.array(rows)


def equivalent(fp_a: np.ndarray, fp_b: np.ndarray) -> bool:
    """Whether two :func:`environment_fingerprint` arrays describe the same environment."""
    return fp_a.shape == fp_b.shape and float(np.abs(fp_a - fp_b).max()) < EQUIVALENCE_TOL


def install_templates(kind: str, miller: tuple[int, int, int], targs: tuple, result: list) -> None:
    """Put templates and sites computed in another process into this process's caches."""
    from qecat_core.enumerate.slabs import _TEMPLATES

    _TEMPLATES[(kind, miller, *targs)] = tuple(t for t, _, _ in result)
    for t, reduced, full in result:
        _SITES[(id(t), True)] = (t, reduced)
        if full is not None:
            _SITES[(id(t), False)] = (t, full)
