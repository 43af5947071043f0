"""Reading structures from anything ASE reads, and writing fairchem ``.aselmdb`` shards atomically.

``.aselmdb`` is the LMDB backend of ``ase.db`` provided by ``ase-db-backends``, the format
``fairchem.core.datasets.AseDBDataset`` reads. Per-row metadata goes into ``row.data`` (which
AseDBDataset copies into ``atoms.info``); the system id is ``data['sid']``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from ase import Atoms

from qecat_core.common.atomic import atomic_path
from qecat_core.common.errors import InputError

DB_SUFFIXES = (".aselmdb", ".db", ".json")
STRUCTURE_SUFFIXES = DB_SUFFIXES + (".extxyz", ".xyz", ".traj", ".cif", ".vasp", ".poscar", ".xsf")


def _plain(value):
    """numpy scalars/arrays -> JSON-friendly values for ase.db key_value_pairs/data."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def write_aselmdb(path: str | Path, structures: Iterable[Atoms], data_keys: Iterable[str] | None = None) -> int:
    """Write ``structures`` to ``path`` atomically (temporary file, then rename); return the count.

    Everything in ``atoms.info`` (or only ``data_keys``) is stored in ``row.data``. An existing
    file at ``path`` is replaced only once the new one is complete.
    """
    import ase.db

    path = Path(path)
    n = 0
    with atomic_path(path, suffix=".tmp.aselmdb") as tmp:
        db = ase.db.connect(str(tmp), type="aselmdb")
        with db:
            for atoms in structures:
                info = atoms.info if data_keys is None else {k: atoms.info[k] for k in data_keys if k in atoms.info}
                data = {k: _plain(v) for k, v in info.items()}
                clean = atoms.copy()
                clean.info = {}
                db.write(clean, data=data)
                n += 1
        del db
    lock = Path(str(path) + "-lock")
    if lock.exists():
        lock.unlink()
    return n


def _read_db(path: Path) -> Iterator[Atoms]:
    import ase.db

    db = ase.db.connect(str(path), type="aselmdb" if path.suffix == ".aselmdb" else "extract_from_name")
    for row in db.select():
        atoms = row.toatoms()
        atoms.info.update(row.key_value_pairs)
        atoms.info.update(row.get("data", {}) or {})
        yield atoms
    lock = Path(str(path) + "-lock")
    if lock.exists() and path.suffix == ".aselmdb":
        try:
            lock.unlink()
        except OSError:
            pass


def structure_files(path: str | Path) -> list[Path]:
    """The structure files behind ``path`` (a file, or a directory searched recursively)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in STRUCTURE_SUFFIXES
                       and not p.name.startswith("."))
        if not files:
            raise InputError(f"{path}: directory holds no structure files ({', '.join(STRUCTURE_SUFFIXES)})")
        return files
    return [path]


def iter_structures(path: str | Path) -> Iterator[Atoms]:
    """Yield every structure in ``path``: extxyz, traj, ASE db, ``.aselmdb``, or a directory of them.

    ``atoms.info['source']`` is set to ``file:index``. Raises :class:`InputError` naming the file
    when it cannot be read or holds no structures.
    """
    for f in structure_files(path):
        if f.stat().st_size == 0:
            raise InputError(f"{f}: file is empty")
        n = 0
        try:
            if f.suffix.lower() in DB_SUFFIXES:
                it = _read_db(f)
            else:
                import ase.io

                it = ase.io.iread(str(f), index=":")
            for atoms in it:
                atoms.info.setdefault("source", f"{f}:{n}")
                n += 1
                yield atoms
        except InputError:
            raise
        except Exception as exc:  # ASE raises many types for unreadable files
            raise InputError(f"{f}: cannot read structures ({type(exc).__name__}: {exc})") from None
        if n == 0:
            raise InputError(f"{f}: holds no structures")
