"""OC20 adsorbates from fairchem-data-oc's ``adsorbates.pkl`` (geometry + binding atom indices)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import numpy as np
from ase import Atoms


@dataclass(frozen=True)
class Adsorbate:
    smiles: str  # OC20 SMILES, '*' marks the binding atom(s), e.g. '*OH'
    atoms: Atoms  # gas-phase geometry, Å
    binding_indices: tuple[int, ...]

    @property
    def text_name(self) -> str:
        """The adsorbate as written in CatBERTa strings: SMILES without '*' ('*OH' -> 'OH')."""
        return self.smiles.replace("*", "")

    def oriented(self) -> Atoms:
        """Copy with the binding atom at the origin and the rest of the molecule pointing to +z."""
        atoms = self.atoms.copy()
        b = self.binding_indices[0]
        atoms.positions -= atoms.positions[b]
        others = [i for i in range(len(atoms)) if i != b]
        if others:
            v = atoms.positions[others].mean(axis=0)
            if np.linalg.norm(v) > 1e-6:
                atoms.rotate(v, (0, 0, 1))
        atoms.info.clear()
        return atoms


@cache
def load_adsorbates() -> dict[str, Adsorbate]:
    """All 86 adsorbates shipped with fairchem-data-oc, keyed by SMILES."""
    path = files("fairchem.data.oc") / "databases" / "pkls" / "adsorbates.pkl"
    with path.open("rb") as fh:
        raw = pickle.load(fh)
    out = {}
    for _id, (atoms, smiles, binding, *_rest) in sorted(raw.items()):
        out.setdefault(smiles, Adsorbate(smiles, atoms, tuple(int(i) for i in binding)))
    return out


def get_adsorbate(smiles: str) -> Adsorbate:
    try:
        return load_adsorbates()[smiles]
    except KeyError:
        raise KeyError(f"unknown adsorbate {smiles!r}") from None
