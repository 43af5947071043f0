"""``qecat describe``: what the geometry of each structure says (adsorbate, surface, binding) and its text.

One row per structure (:data:`COLUMNS`): its ``sid`` (given, or ``h-`` + the content hash), the
adsorbate (OC20 SMILES where one matches, else the RDKit SMILES), the SMILES perceived from the
coordinates with ``*`` on the binding atoms, its formula, the binding atoms and their site words,
the bulk formula, lattice and Miller index, which of ``adsorbate``, ``bulk_formula``, ``lattice``,
``miller`` were given in ``atoms.info`` and which were inferred, and the configuration string. The
metadata come from :func:`qecat_core.enumerate.infer.complete_metadata`, as in ``qecat predict``.

A structure that cannot be described (no adsorbate atoms, a slab too thin for a Miller index, ...)
gets a row whose ``error`` says why, with what could be read; a file that cannot be read, one row
naming it; the rest go on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from ase import Atoms

from qecat_core.common.errors import QecatError
from qecat_core.common.hashing import structure_sid
from qecat_core.common.tags import ensure_tags
from qecat_core.enumerate.infer import (
    adsorbate_molecule,
    complete_metadata,
    given_key,
    surface_bonds,
)
from qecat_core.enumerate.text import SITE_WORDS, configuration_text, miller_text

#: The metadata keys a row reports as given or inferred.
KEYS = ("adsorbate", "bulk_formula", "lattice", "miller")
COLUMNS = ("sid", "source", "adsorbate", "smiles", "formula", "bond_orders", "binding_atoms", "binding_indices",
           "site_type", "bulk_formula", "lattice", "miller", "given", "inferred", "text", "error")


def _row(**values) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(values)
    return row


def describe_atoms(atoms: Atoms, name: str | None = None, prefer_geometry: bool = False) -> dict:
    """The row of one structure (see the module docstring); errors go into its ``error`` field."""
    sid = structure_sid(atoms)
    name = name or str(atoms.info.get("source", sid))
    row = _row(sid=sid, source=name)
    try:
        atoms = ensure_tags(atoms.copy(), name)
        given = [k for k in KEYS if (given_key(atoms, k) if k != "bulk_formula" else
                                     given_key(atoms, "bulk_formula") or given_key(atoms, "bulk"))]
        mol = adsorbate_molecule(atoms)
        if mol is not None:
            syms = atoms.get_chemical_symbols()
            ads_idx, _, bonded = surface_bonds(atoms)
            nbound = {int(a): int(r.sum()) for a, r in zip(ads_idx, bonded) if r.any()}
            row.update(smiles=mol.smiles, formula=mol.formula, bond_orders=mol.bond_orders,
                       binding_indices=sorted(nbound), binding_atoms=" ".join(syms[i] for i in sorted(nbound)),
                       site_type=" ".join(SITE_WORDS.get(n, "hollow") for _, n in sorted(nbound.items())) or "none")
        inferred = complete_metadata(atoms, name, prefer_geometry=prefer_geometry, keys=KEYS)
        info = atoms.info
        bulk = info.get("bulk_formula") or info.get("bulk")
        row.update(adsorbate=info.get("adsorbate"), bulk_formula=None if bulk is None else str(bulk),
                   lattice=info.get("lattice"), given=",".join(k for k in given if k not in inferred),
                   inferred=",".join(inferred))
        if info.get("miller") is not None:
            row["miller"] = miller_text(info["miller"])
        missing = [k for k in ("adsorbate", "bulk_formula", "miller") if not row[k]]
        if missing:
            raise QecatError(f"{name}: {', '.join(missing)} neither given nor inferable from the structure")
        text = info.get("text")
        row["text"] = text if isinstance(text, str) and text else configuration_text(
            atoms, str(row["adsorbate"]).replace("*", "").strip(), row["bulk_formula"], info["miller"])
    except QecatError as exc:
        row["error"] = str(exc)
    except Exception as exc:  # noqa: BLE001 (one bad structure must not stop the others)
        row["error"] = f"{name}: {type(exc).__name__}: {exc}"
    return row


def _structures(path: str | Path) -> Iterator[Atoms | dict]:
    """Every structure of ``path`` (file or folder); a file that cannot be read (further) as an error row."""
    from qecat_core.common.structures import iter_structures, structure_files

    for f in structure_files(path):
        n = 0
        try:
            for atoms in iter_structures(f):
                n += 1
                yield atoms
        except QecatError as exc:
            yield _row(source=f"{f}:{n}" if n else str(f), error=str(exc))


def describe_structures(source: str | Path | Iterable[Atoms], prefer_geometry: bool = False,
                        progress: bool = False):
    """A DataFrame, one row per structure of ``source`` (a file or folder ASE or .aselmdb reads, or atoms)."""
    import pandas as pd
    from tqdm.auto import tqdm

    items = _structures(source) if isinstance(source, (str, Path)) else iter(source)
    rows = []
    with tqdm(desc="describe", unit="structure", disable=not progress, delay=2.0, mininterval=1.0) as bar:
        for i, item in enumerate(items):
            if isinstance(item, dict):
                rows.append(item)
            else:
                rows.append(describe_atoms(item, str(item.info.get("source", f"structure-{i}")), prefer_geometry))
            bar.update()
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df["bond_orders"] = df["bond_orders"].astype("boolean")
    df["binding_indices"] = [v if isinstance(v, list) else [] for v in df["binding_indices"]]
    df["binding_indices"] = df["binding_indices"].map(lambda v: np.asarray(v, dtype=np.int64))
    return df


def write_description(source: str | Path, out: str | Path, prefer_geometry: bool = False,
                      progress: bool = True):
    """:func:`describe_structures` of ``source``, written to the Parquet file ``out`` atomically."""
    from qecat_core.common.atomic import write_parquet_atomic

    df = describe_structures(source, prefer_geometry=prefer_geometry, progress=progress)
    write_parquet_atomic(df, out)
    return df
