"""The bulk lattice of a slab (fcc, hcp, bcc, ...) and the Miller index of its surface, from the geometry.

A slab is a stack of lattice planes: some translation ``t`` out of the surface plane carries the
slab's atoms onto its atoms, modulo the in-plane cell (fcc and bcc: from one plane to the next; hcp:
two planes up, ABAB). :func:`describe_surface` finds the shortest such ``t`` from the slab's lowest
atom to another atom (every atom moved by ``+t`` or ``-t`` that stays inside the slab must land on an
atom, within :data:`MATCH_TOLS` of the nearest-neighbour distance), rebuilds the bulk crystal from the
in-plane cell, ``t`` and the atoms of one period, and lets spglib name its space group; elements are
ignored, so an alloy's lattice is that of its sites (L1_2 Cu3Pt is fcc). Looser tolerances are tried
in turn (:data:`SYMPRECS`, a fraction of the nearest-neighbour distance) until one of the named
lattices (:data:`LATTICES`) appears, so a strained or slightly relaxed slab keeps its lattice. The
geometry decides: ``fcc111("Sn", a=4.6)`` is fcc, whatever tin is in nature.

The Miller index is the surface normal in the reciprocal basis of spglib's conventional cell (cubic
axes for fcc and bcc, hexagonal a, b, c for hcp), as the smallest integers, and among the indices
the lattice's point group makes equivalent the largest in lexical order: ``(2 1 1)``, ``(1 1 0)``,
hcp (0001) ``(0 0 1)`` (the 3-index form of the OC20 strings and pymatgen).

>>> from ase.build import bcc110, fcc211, hcp0001
>>> [(s.lattice, s.miller) for s in map(describe_surface, (
...     fcc211("Pt", (3, 3, 4), vacuum=8.0), hcp0001("Ru", (3, 3, 4), vacuum=8.0),
...     bcc110("Fe", (3, 3, 4), vacuum=8.0)))]
[('fcc', (2, 1, 1)), ('hcp', (0, 0, 1)), ('bcc', (1, 1, 0))]
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from math import gcd

import numpy as np
from ase import Atoms

#: spglib space-group numbers -> lattice names (elements ignored: an alloy has its sites' lattice)
LATTICES = {225: "fcc", 229: "bcc", 194: "hcp", 221: "sc"}
#: a translated atom must land within this fraction of the nearest-neighbour distance of an atom (the
#: second for relaxed slabs, when the first finds nothing; hcp's wrong stacking lands 0.58 away)
MATCH_TOLS = (0.15, 0.3)
#: spglib tolerances tried in turn, as fractions of the nearest-neighbour distance
SYMPRECS = (0.01, 0.04, 0.08, 0.12, 0.2, 0.3)
#: the plane-normal components may deviate from integers by this much (after scaling)
MILLER_TOL = 0.08
_SHIFTS = np.array([(i, j) for i in (-1, 0, 1) for j in (-1, 0, 1)], dtype=float)


@dataclass(frozen=True)
class Surface:
    """What :func:`describe_surface` reads off a slab."""

    lattice: str | None  # 'fcc' | 'hcp' | 'bcc' | 'sc' | another space group's symbol ('R-3m'); None: not found
    miller: tuple[int, int, int] | None  # in the conventional cell of that lattice
    spacegroup: int | None = None  # spglib's number of the rebuilt bulk (elements ignored)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


class _Plane:
    """Minimum-image displacements in the slab's plane (the cell's first two vectors)."""

    def __init__(self, cell: np.ndarray) -> None:
        self.a = np.array(cell[:2], float)
        self.normal = _unit(np.cross(self.a[0], self.a[1]))
        # in-plane basis for fractional coordinates along a1, a2 (the normal component is kept)
        self.basis = np.array([self.a[0], self.a[1], self.normal])
        self.inv = np.linalg.inv(self.basis)

    def near_zero(self, d: np.ndarray) -> np.ndarray:
        """``d`` modulo in-plane lattice vectors, the shortest image where it is small (well under half
        the cell)."""
        f = d @ self.inv
        f[..., :2] -= np.round(f[..., :2])
        return f @ self.basis

    def reduce(self, d: np.ndarray) -> np.ndarray:
        """The shortest image of displacements ``d`` (..., 3) over in-plane lattice vectors."""
        f = d @ self.inv
        f[..., :2] -= np.round(f[..., :2])
        base = f @ self.basis
        cand = base[..., None, :] + (_SHIFTS @ self.a)  # (..., 9, 3)
        best = np.argmin((cand ** 2).sum(-1), axis=-1)
        return np.take_along_axis(cand, best[..., None, None], axis=-2)[..., 0, :]


def _nn_distance(pos: np.ndarray, plane: _Plane) -> float:
    d = np.linalg.norm(plane.reduce(pos[None, :, :] - pos[:, None, :]), axis=-1)
    d[np.arange(len(pos)), np.arange(len(pos))] = np.inf
    # in-plane periodic images of an atom itself (a cell narrower than twice the bond)
    own = min(np.linalg.norm(v) for v in (plane.a[0], plane.a[1], plane.a[0] + plane.a[1], plane.a[0] - plane.a[1]))
    return float(min(d.min(), own))


def _lands(pos: np.ndarray, moved: np.ndarray, plane: _Plane, tol: float) -> np.ndarray | None:
    """Mean offset from ``moved`` to the atoms they land on (within ``tol``); None if one lands on none."""
    if not len(moved):
        return np.zeros(3)
    d = plane.near_zero(pos[None, :, :] - moved[:, None, :])
    r = np.linalg.norm(d, axis=-1)
    j = np.argmin(r, axis=1)
    if not (r[np.arange(len(moved)), j] < tol).all():
        return None
    return d[np.arange(len(moved)), j].mean(axis=0)


def _stacking_vector(pos: np.ndarray, plane: _Plane, tol: float, dnn: float) -> np.ndarray | None:
    """The shortest out-of-plane translation that maps the slab onto itself (see the module docstring)."""
    h = pos @ plane.normal
    lo, hi = h.min(), h.max()
    i0 = int(np.argmin(h))
    cands = plane.reduce(pos - pos[i0])
    height = cands @ plane.normal
    order = np.lexsort((np.round(np.linalg.norm(cands, axis=1), 3), np.round(height, 3)))
    for k in order:
        t, th = cands[k], height[k]
        if th < 0.5 * tol:  # in plane
            continue
        up, down = h + th <= hi + tol, h - th >= lo - tol
        if 2 * up.sum() < len(pos):  # fewer than two periods in the slab: nothing to tell them by
            break
        fwd = _lands(pos, pos[up] + t, plane, tol)
        back = _lands(pos, pos[down] - t, plane, tol) if fwd is not None else None
        if back is not None:  # averaged over every pair it maps: noise in one atom does not skew it
            return t + (fwd * up.sum() - back * down.sum()) / (up.sum() + down.sum())
    return None


def _inplane_basis(pos: np.ndarray, plane: _Plane, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """The two shortest independent in-plane translations that map the slab onto itself (the primitive
    in-plane cell; the cell's own vectors where the slab has no shorter ones)."""
    h = pos @ plane.normal
    i0 = int(np.argmin(h))
    d = plane.reduce(pos - pos[i0])
    d = d[np.abs(d @ plane.normal) < tol]
    d = (d[:, None, :] + (_SHIFTS @ plane.a)[None, :, :]).reshape(-1, 3)  # every image nearby
    cands = [c for c in d if np.linalg.norm(c) > tol]
    cands.sort(key=lambda c: round(float(np.linalg.norm(c)), 3))
    found: list[np.ndarray] = []
    for c in cands:
        if found and np.linalg.norm(np.cross(found[0], c)) < 0.1 * np.linalg.norm(found[0]) * np.linalg.norm(c):
            continue  # collinear with the first
        shift = _lands(pos, pos + c, plane, tol)
        if shift is not None:
            found.append(c + shift)
            if len(found) == 2:
                break
    return found[0], found[1]


def _canonical_miller(h: np.ndarray, rotations: np.ndarray) -> tuple[int, int, int]:
    """The lexically largest of the indices equivalent to ``h`` under the (conventional-basis) rotations."""
    # a plane's indices transform as a covector: h' = h W^-1 (W integer, det +-1); -h is the same plane
    hw = np.rint(np.einsum("i,nij->nj", h, np.linalg.inv(np.asarray(rotations, float)))).astype(int)
    return max(tuple(int(x) for x in sign * v) for v in hw for sign in (1, -1))  # type: ignore[return-value]


def _miller(normal: np.ndarray, conv: np.ndarray) -> np.ndarray | None:
    """Smallest integers proportional to ``conv @ normal`` (the normal in the reciprocal basis)."""
    comp = conv @ normal
    nz = np.abs(comp)[np.abs(comp) > MILLER_TOL * np.abs(comp).max()]
    for scale in range(1, 7):
        m = comp / nz.min() * scale
        r = np.rint(m)
        if np.all(np.abs(m - r) < MILLER_TOL * scale) and np.abs(r).max() <= 12:
            ints = [int(x) for x in r]
            g = reduce(gcd, (abs(x) for x in ints))
            return np.array([x // g for x in ints])
    return None


def describe_surface(slab: Atoms) -> Surface:
    """Lattice and Miller index of a slab (only slab atoms: drop the adsorbate first).

    The surface normal is ``cell[0] x cell[1]``; the slab must be periodic along those two vectors and
    hold at least two periods of its stacking (fcc(111): two layers; hcp(0001): four).
    Gives ``Surface(None, None)`` when no stacking translation is found.
    """
    import spglib

    none = Surface(None, None)
    if len(slab) < 2 or slab.cell.rank < 2:
        return none
    plane = _Plane(np.array(slab.cell))
    pos = slab.positions
    dnn = _nn_distance(pos, plane)
    if not np.isfinite(dnn) or dnn < 0.5:
        return none
    for tol in MATCH_TOLS:
        t = _stacking_vector(pos, plane, tol * dnn, dnn)
        if t is not None:
            break
    else:
        return none
    h = pos @ plane.normal
    th = float(t @ plane.normal)
    start = h.min() - 0.5 * min(tol * dnn, th)
    period = (h >= start) & (h < start + th)
    # the bulk: the primitive in-plane cell (spglib is slow on supercells), t, the atoms of one period
    lattice = np.array([*_inplane_basis(pos, plane, tol * dnn), t])
    frac = np.linalg.solve(lattice.T, pos[period].T).T % 1.0
    kept: list[np.ndarray] = []
    for f in frac:  # one atom per site of the primitive cell
        if all(np.linalg.norm(((f - g + 0.5) % 1.0 - 0.5) @ lattice) > tol * dnn for g in kept):
            kept.append(f)
    cell = (lattice, np.array(kept), [1] * len(kept))
    found = None
    for prec in SYMPRECS:
        data = spglib.get_symmetry_dataset(cell, symprec=prec * dnn)
        if data is not None and (found is None or data.number in LATTICES):
            found = (data, prec)
            if data.number in LATTICES:
                break
    if found is None:
        return none
    data = found[0]
    name = LATTICES.get(data.number, data.international)
    # the conventional cell in the input's orientation, (a_s b_s c_s) = (a b c) P^-1 (spglib, column
    # vectors), and the point group in its basis (spglib's tables for the space group's setting)
    P = np.array(data.transformation_matrix, float)
    conv = np.linalg.inv(P).T @ lattice
    m = _miller(plane.normal, conv)
    if m is None:
        return Surface(name, None, int(data.number))
    rotations = spglib.get_symmetry_from_database(data.hall_number)["rotations"]  # conventional basis
    return Surface(name, _canonical_miller(m, rotations), int(data.number))
