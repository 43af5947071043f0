"""Structure files a catalog names: bulk crystals (CIF, POSCAR, ...) and molecules (XYZ, ...).

Paths are relative to the catalog file's folder (:func:`resolve_path`; the current folder for a
catalog validated from a dict). Reads are cached by path, size and modification time, so a catalog
validated twice reads each file once. :func:`file_digest` (of the bytes) enters the catalog's content
hash, so that an edited file is enumerated again.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from ase import Atoms

from qecat_core.common.hashing import short_hash


def resolve_path(path: str, base_dir: str | Path | None) -> Path:
    """``path`` as given when absolute, else under ``base_dir`` (default: the current folder)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or base_dir is None else Path(base_dir) / p


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


@lru_cache(maxsize=256)
def _digest(path: str, mtime_ns: int, size: int) -> str:
    return short_hash(Path(path).read_bytes(), size=8)


def _stat(path: Path) -> tuple[str, int, int]:
    if not path.is_file():
        raise ValueError(f"cannot read {path}: no such file")
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


def file_digest(path: Path) -> str:
    """blake2b (8 bytes) of the file's bytes."""
    return _digest(*_stat(path))


@dataclass(frozen=True)
class BulkStructure:
    """An ordered periodic crystal as read from a file (Å)."""

    symbols: tuple[str, ...]
    frac: tuple[tuple[float, float, float], ...]  # fractional coordinates in the file's cell
    cell: tuple[tuple[float, float, float], ...]  # rows: a, b, c
    digest: str  # of the file's bytes

    @property
    def hexagonal(self) -> bool:
        """a = b, gamma = 120 degrees (where Miller-Bravais (h k i l) indices apply)."""
        a, b = np.array(self.cell[0]), np.array(self.cell[1])
        la, lb = np.linalg.norm(a), np.linalg.norm(b)
        gamma = np.degrees(np.arccos(np.clip(a @ b / (la * lb), -1, 1)))
        return abs(la - lb) < 1e-3 * la and (abs(gamma - 120) < 0.1 or abs(gamma - 60) < 0.1)

    @property
    def elements(self) -> list[str]:
        """Elements in order of first appearance."""
        return list(dict.fromkeys(self.symbols))

    def atoms(self) -> Atoms:
        return Atoms(list(self.symbols), scaled_positions=np.array(self.frac), cell=np.array(self.cell), pbc=True)


@lru_cache(maxsize=64)
def _read_bulk(path: str, mtime_ns: int, size: int) -> BulkStructure:
    digest = _digest(path, mtime_ns, size)
    errors = []
    struct = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from pymatgen.core import Structure

            struct = Structure.from_file(path)
        except Exception as exc:  # noqa: BLE001 - any parser failure is "cannot read"
            errors.append(_reason(exc))
        if struct is None:
            try:
                from ase.io import read

                atoms = read(path)
                if not isinstance(atoms, Atoms):
                    raise ValueError("not a single structure")
                if not atoms.pbc.all() or atoms.cell.rank < 3:
                    raise ValueError("not a periodic crystal (needs a 3D cell)")
                from pymatgen.io.ase import AseAtomsAdaptor

                struct = AseAtomsAdaptor.get_structure(atoms)
            except Exception as exc:  # noqa: BLE001
                errors.append(_reason(exc))
    if struct is None:
        raise ValueError(f"cannot read {path} as a crystal structure (CIF, POSCAR, ...): {errors[-1]}")
    if not struct.is_ordered:
        raise ValueError(f"{path} has partial occupancies; give an ordered structure")
    if len(struct) == 0:
        raise ValueError(f"{path} holds no atoms")
    if len(struct) > 200:
        raise ValueError(f"{path} has {len(struct)} atoms in its cell; at most 200 (give a primitive cell)")
    # rounded to 1e-10 (Å, fractions): the parsers' 1e-16 noise (cos 90 degrees, symmetry operations)
    # differs between machines; what a file states (<= 8 decimals) is kept exactly
    f = np.round(np.asarray(struct.frac_coords, dtype=float), 10)
    f = f - np.floor(f + 1e-9)  # into [-1e-9, 1 - 1e-9): 1 - 1e-16 and -1e-16 both become ~0
    frac = tuple(tuple(float(x) + 0.0 for x in row) for row in f)
    cell = tuple(tuple(float(x) + 0.0 for x in row) for row in np.round(struct.lattice.matrix, 10))
    symbols = tuple(site.specie.symbol for site in struct)
    return BulkStructure(symbols, frac, cell, digest)


def read_bulk_file(path: Path) -> BulkStructure:
    """An ordered crystal from a CIF, POSCAR/CONTCAR (pymatgen) or any periodic file ASE reads.

    Raises ValueError (one line) when the file is missing, unreadable, disordered or empty.
    """
    return _read_bulk(*_stat(path))


@lru_cache(maxsize=256)
def _read_molecule(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, ...], tuple[tuple[float, float, float], ...]]:
    try:
        from ase.io import read

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            atoms = read(path)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"cannot read {path} as a molecule (XYZ, ...): {_reason(exc)}") from None
    if not isinstance(atoms, Atoms) or len(atoms) == 0:
        raise ValueError(f"cannot read {path} as a molecule: no atoms")
    return tuple(atoms.get_chemical_symbols()), tuple(tuple(float(x) for x in p) for p in atoms.positions)


def read_molecule_file(path: Path) -> Atoms:
    """A molecule (positions in Å) from any file ASE reads (XYZ, extxyz, mol, ...)."""
    symbols, positions = _read_molecule(*_stat(path))
    return Atoms(list(symbols), positions=np.array(positions))
