"""Content hashes: short hex digests of values, arrays and structures (blake2b).

Positions and cells are hashed through :func:`position_bins`, integer bins of 0.001 Å whose edges
sit off the round decimals, so that copies of a structure that differ by floating-point noise
(1e-12 Å: another machine's arithmetic, a round trip through a file) hash the same. Plain rounding
does not have that property: a coordinate such as 1.8075 Å lies on an edge of ``np.round(x, 3)``
and its last bit decides the hash.

>>> from ase.build import fcc111
>>> slab = fcc111("Cu", (2, 2, 3), vacuum=6.0)
>>> moved = slab.copy(); moved.positions += 1e-12
>>> structure_hash(slab) == structure_hash(moved)
True
>>> short_hash("Cu", (1, 1, 1), size=4) == short_hash("Cu", (1, 1, 1), size=4)
True
"""

from __future__ import annotations

import hashlib

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms


def short_hash(*parts, size: int = 8) -> str:
    """Hex blake2b of ``parts`` (bytes as they are, anything else by ``str``), ``size`` bytes."""
    h = hashlib.blake2b(digest_size=size)
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"|")
    return h.hexdigest()


def unit_hash(key: str) -> float:
    """A number in [0, 1) drawn from ``key`` (same key, same number): seeded splits and samples."""
    return int(hashlib.blake2b(key.encode(), digest_size=8).hexdigest(), 16) / 2**64


def array_digest(*arrays: np.ndarray, size: int = 16) -> str:
    """Hex blake2b over arrays' dtypes, shapes and bytes."""
    h = hashlib.blake2b(digest_size=size)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


#: Where the edges of the 0.001 Å bins of :func:`position_bins` sit, as a fraction of a bin (1/pi).
#: Not a round decimal, so a round-decimal coordinate (0.5 x a lattice constant given to 4
#: decimals, say) is never on an edge, where the 1e-15 Å differences between machines' arithmetic
#: would put it in either bin.
BIN_OFFSET = 0.3183098861837907


def position_bins(x: np.ndarray, step: float = 0.001) -> np.ndarray:
    """Integer bins of width ``step`` (Å) with edges off the round decimals (:data:`BIN_OFFSET`).

    >>> x = np.array([1.8075 - 1e-12, 1.8075, 1.8075 + 1e-12, -0.0, 0.0])
    >>> position_bins(x).tolist()
    [1807, 1807, 1807, 0, 0]
    >>> np.round(x, 3).tolist()[:3]                 # plain rounding: 1.8075 is on an edge
    [1.807, 1.808, 1.808]
    """
    return np.floor(np.asarray(x, dtype=np.float64) / step + BIN_OFFSET).astype(np.int64)


def structure_hash(atoms: Atoms, size: int = 8) -> str:
    """Hash of numbers, binned positions and cell (:func:`position_bins`) and tags: equal
    structures give equal hashes, and so do copies that differ by floating-point noise."""
    return short_hash(atoms.numbers.astype(np.int16).tobytes(), position_bins(atoms.positions).tobytes(),
                      position_bins(np.array(atoms.cell)).tobytes(), atoms.get_tags().astype(np.int8).tobytes(),
                      size=size)


def fixed_mask(atoms: Atoms) -> np.ndarray:
    """True for the atoms a ``FixAtoms`` constraint holds."""
    fixed = np.zeros(len(atoms), bool)
    for c in atoms.constraints:
        if isinstance(c, FixAtoms):
            fixed[c.get_indices()] = True
    return fixed


def content_hash(atoms: Atoms) -> str:
    """blake2b (16 bytes) of atomic numbers, binned positions and cell: ``h-`` sids of structures
    that come without a sid."""
    return array_digest(atoms.numbers.astype(np.int64), position_bins(atoms.positions),
                        position_bins(atoms.cell.array))


def structure_sid(atoms: Atoms) -> str:
    """``atoms.info['sid']`` as a string if present, else ``'h-'`` + :func:`content_hash`."""
    sid = atoms.info.get("sid")
    if sid is not None and str(sid) != "":
        return str(sid)
    return "h-" + content_hash(atoms)


def slab_hash(slab: Atoms) -> str:
    """Content hash of a clean slab, including pbc, tags and fixed atoms (they change a relaxation):
    the key of the clean-slab relaxation cache."""
    return array_digest(slab.numbers.astype(np.int64), position_bins(slab.positions), position_bins(slab.cell.array),
                        np.asarray(slab.pbc, np.uint8), slab.get_tags().astype(np.int64),
                        fixed_mask(slab).astype(np.uint8))
