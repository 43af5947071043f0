"""Target normalisation for adsorption energies (eV), stored in the checkpoint's ``config.json``.

    y = (E_ads - mean - offset(adsorbate)) / std

``offset`` (eV, relative to ``mean``) is, for an adsorbate seen in training, its mean residual there
(when fitted with ``per_adsorbate=True``); otherwise a linear model in the adsorbate's composition,
sum_e n_e * element_refs[e], fitted (ridge) on the training set. So an adsorbate never seen in
training (e.g. a held-out ``*NH2``) still gets a composition-based reference, and an unknown element
contributes 0. Adsorbates are keyed by their text name, i.e. the OC20 SMILES without ``*``
(``*OH`` and ``OH`` are the same key), which is also the first field of a configuration string, so
text-only inputs are normalised the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch

from qecat_core.common.errors import InputError

_ELEMENT_COUNT = re.compile(r"([A-Z][a-z]?)(\d*)")
#: characters only a SMILES has: bonds, branches, brackets, stereo, ring closures after atoms, aromatic atoms
_SMILES_ONLY = re.compile(r"[=#()\[\]@/\\%]|(?<![A-Z])[bcnops]")


def adsorbate_key(name: str | None) -> str:
    return (name or "").replace("*", "").strip()


def adsorbate_from_text(text: str) -> str:
    """The adsorbate field of a configuration string (``'OH</s>Cu (1 1 1)</s>...'`` -> ``'OH'``)."""
    return text.split("</s>", 1)[0].strip() if "</s>" in text else ""


@lru_cache(maxsize=1)
def _oc20_keys() -> frozenset[str]:
    from qecat_core.catalog.adsorbates import load_adsorbates

    return frozenset(adsorbate_key(s) for s in load_adsorbates())


def _smiles_composition(key: str) -> dict[str, int] | None:
    """Element counts of a real SMILES (implicit hydrogens counted), or None if RDKit cannot read it."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(key)
    if mol is None:
        return None
    out: dict[str, int] = {}
    for atom in Chem.AddHs(mol).GetAtoms():
        out[atom.GetSymbol()] = out.get(atom.GetSymbol(), 0) + 1
    return out


@lru_cache(maxsize=4096)
def composition(name: str) -> dict[str, int]:
    """Element counts of an adsorbate name.

    OC20 names, atoms and names that write their hydrogens are formulas (``'*CH2OH'`` -> C 1, H 3,
    O 1; ``'S'`` and ``'SH'`` are the atom and the radical). Other names are SMILES with implicit
    hydrogens, as a molecule perceived from a geometry is written: those with bonds, branches, rings
    or aromatic atoms (``'O=CN'`` -> C 1, H 3, N 1, O 1; ``'c1ccccc1'`` -> C 6, H 6), and chains of
    heavy atoms without any H (``'SC'``, methanethiol -> C 1, H 4, S 1).

    >>> composition("*CH2OH") == {"C": 1, "H": 3, "O": 1}, composition("O=CN") == {"O": 1, "C": 1, "N": 1, "H": 3}
    (True, True)
    >>> composition("*S"), composition("SC") == {"S": 1, "C": 1, "H": 4}
    ({'S': 1}, True)
    """
    key = adsorbate_key(name)
    out: dict[str, int] = {}
    for el, n in _ELEMENT_COUNT.findall(key):
        out[el] = out.get(el, 0) + (int(n) if n else 1)
    smiles_like = bool(_SMILES_ONLY.search(key)) or ("H" not in out and sum(out.values()) > 1)
    if key and smiles_like and key not in _oc20_keys() and (counts := _smiles_composition(key)) is not None:
        return counts
    return out


@dataclass
class Normalizer:
    mean: float = 0.0  # eV
    std: float = 1.0  # eV
    offsets: dict[str, float] = field(default_factory=dict)  # eV, per seen adsorbate key
    element_refs: dict[str, float] = field(default_factory=dict)  # eV per atom of each adsorbate element

    @classmethod
    def fit(cls, energies: Sequence[float], adsorbates: Sequence[str | None] | None = None,
            per_adsorbate: bool = True, ridge: float = 1e-3) -> Normalizer:
        e = np.asarray(energies, dtype=np.float64)
        if e.size == 0 or not np.isfinite(e).all():
            raise InputError("normalizer: need at least one finite training energy")
        mean = float(e.mean())
        resid = e - mean
        offsets: dict[str, float] = {}
        refs: dict[str, float] = {}
        if adsorbates is not None:
            keys = [adsorbate_key(a) for a in adsorbates]
            elements = sorted({el for k in set(keys) for el in composition(k)})
            if elements:
                X = np.array([[composition(k).get(el, 0) for el in elements] for k in keys], dtype=np.float64)
                w = np.linalg.solve(X.T @ X + ridge * len(e) * np.eye(len(elements)), X.T @ resid)
                refs = {el: float(c) for el, c in zip(elements, w)}
            if per_adsorbate:
                karr = np.array(keys)
                for k in sorted(set(keys)):
                    if k:
                        offsets[str(k)] = float(resid[karr == k].mean())
        n = cls(mean=mean, std=1.0, offsets=offsets, element_refs=refs)
        resid = resid - n.offset_tensor(adsorbates, len(e)).numpy()
        std = float(resid.std()) if e.size > 1 else 1.0
        n.std = max(std, 1e-3)
        return n

    def offset(self, adsorbate: str | None) -> float:
        k = adsorbate_key(adsorbate)
        if k in self.offsets:
            return self.offsets[k]
        return float(sum(n * self.element_refs.get(el, 0.0) for el, n in composition(k).items()))

    def offset_tensor(self, adsorbates: Sequence[str | None] | None, n: int) -> torch.Tensor:
        if adsorbates is None:
            return torch.zeros(n, dtype=torch.float64)
        return torch.tensor([self.offset(a) for a in adsorbates], dtype=torch.float64)

    def normalize(self, energies: torch.Tensor, adsorbates: Sequence[str | None] | None) -> torch.Tensor:
        off = self.offset_tensor(adsorbates, len(energies))
        return ((energies.double() - self.mean - off) / self.std).to(torch.float32)

    def denormalize(self, y: torch.Tensor, adsorbates: Sequence[str | None] | None) -> torch.Tensor:
        """eV (float64) from normalised predictions."""
        off = self.offset_tensor(adsorbates, len(y)).to(y.device)
        return y.double() * self.std + self.mean + off

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "offsets": dict(self.offsets),
                "element_refs": dict(self.element_refs), "units": "eV"}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(mean=float(d["mean"]), std=float(d["std"]),
                   offsets={k: float(v) for k, v in d.get("offsets", {}).items()},
                   element_refs={k: float(v) for k, v in d.get("element_refs", {}).items()})
