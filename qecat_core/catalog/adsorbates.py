"""Adsorbates: the OC20 set from fairchem-data-oc's ``adsorbates.pkl``, and any molecule by SMILES or file.

* OC20: geometry and binding atom indices as fairchem-data-oc ships them (:func:`get_adsorbate`).
* SMILES (:func:`adsorbate_from_smiles`): hydrogens added, 3D from RDKit's ETKDG (v3) with a fixed
  seed (:data:`ETKDG_SEED`), then relaxed with MMFF94 (UFF where MMFF has no parameters); atoms in
  SMILES order, heavy atoms first, then the hydrogens. Binding atoms are heavy atoms by SMILES index.
* A molecule from a file (:func:`adsorbate_from_atoms`): the file's geometry and atom order; its
  SMILES is perceived from the geometry (RDKit's ``DetermineBonds``, neutral).

Every adsorbate is named OC20-style, by its SMILES with ``*`` before each binding atom, written from
the first binding atom (:func:`starred_smiles`: ethanol bound through O is ``*OCC``).
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib.resources import files

import numpy as np
from ase import Atoms

#: RDKit ETKDG seed of the SMILES adsorbates' 3D geometry (changing it changes their sids)
ETKDG_SEED = 20261127


@dataclass(frozen=True)
class Adsorbate:
    smiles: str  # OC20 SMILES, '*' marks the binding atom(s), e.g. '*OH'
    atoms: Atoms  # gas-phase geometry, Å
    binding_indices: tuple[int, ...]
    #: SMILES and file adsorbates: orient so that all binding atoms face the surface and the other
    #: atoms keep clear above them (:func:`_binding_frame`); OC20 ones keep the centroid rule
    upright: bool = False

    @property
    def text_name(self) -> str:
        """The adsorbate as written in CatBERTa strings: SMILES without '*' ('*OH' -> 'OH')."""
        return self.smiles.replace("*", "")

    def oriented(self) -> Atoms:
        """Copy with the binding atom at the origin and the rest of the molecule pointing to +z.

        OC20 adsorbates: "pointing to +z" is the direction to the centroid of the other atoms.
        ``upright`` ones (SMILES, files) use :func:`_binding_frame`: several binding atoms all lie in
        the z = 0 plane, and the others are kept above the binding atoms as far as the shape allows.
        """
        atoms = self.atoms.copy()
        b = self.binding_indices[0]
        if self.upright:
            atoms.positions = _binding_frame(atoms.positions, self.binding_indices)
            atoms.info.clear()
            return atoms
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


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _soft_up(V: np.ndarray, k: float = 8.0, lam: float = 1.0) -> np.ndarray:
    """The w minimising ``sum_i exp(-k v_i . w) + lam / 2 |w|^2`` (Newton, to machine precision).

    Strictly convex, so w is unique and moves continuously with the v_i (noise cannot switch it):
    a mean of the v_i weighted towards those with the lowest projection, i.e. the direction that keeps
    the lowest of them highest. Zero when the v_i balance out (a planar molecule seen edge-on).
    """
    w = np.zeros(V.shape[1])
    f = lambda x: float(np.exp(-k * V @ x).sum() + 0.5 * lam * x @ x)  # noqa: E731
    for _ in range(200):
        e = np.exp(-k * V @ w)
        g = -k * (V * e[:, None]).sum(axis=0) + lam * w
        H = k * k * (V.T * e) @ V + lam * np.eye(V.shape[1])
        step = np.linalg.solve(H, g)
        t, f0 = 1.0, f(w)
        while t > 1e-10 and f(w - t * step) > f0:
            t /= 2
        w = w - t * step
        if np.linalg.norm(t * step) < 1e-14 * (1 + np.linalg.norm(w)):
            break
    return w


def _plane_normal(P: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Unit normal of the best plane through the points P, signed along ``ref`` (fixed by atom order)."""
    _, _, vt = np.linalg.svd(P - P.mean(axis=0))
    n = vt[2]
    return n * (np.sign(n @ ref) or 1.0)


def _binding_frame(positions: np.ndarray, binding: tuple[int, ...]) -> np.ndarray:
    """Positions in a frame with the first binding atom at the origin, the binding atoms facing -z and
    the other atoms above them as far as the molecule's shape allows.

    One binding atom: "up" is :func:`_soft_up` of the unit vectors to the other atoms (so an alcohol's
    H does not hang below its O). Two: the binding atoms along x, "up" the same in the plane across
    that axis; a planar molecule seen edge-on (ethylene) lies flat. Three or more: their best plane
    is z = 0, its normal signed like (B1 - B0) x (B2 - B0) and turned towards the other atoms when
    they lie clearly (> 0.05 Å) on one side. Every choice is continuous in the positions or decided
    by atom order, never by the arithmetic's last bits.
    """
    P = np.asarray(positions, float)
    B = P[list(binding)]
    others = [i for i in range(len(P)) if i not in binding]
    origin = P[binding[0]]
    if len(binding) == 1:
        if not others:
            return P - origin
        V = P[others] - origin
        V = V / np.linalg.norm(V, axis=1, keepdims=True)
        w = _soft_up(V)
        up = _unit(w) if np.linalg.norm(w) > 1e-6 else _unit(V.mean(axis=0) + np.array([0.0, 0.0, 1e-3]))
        x = np.array([1.0, 0.0, 0.0]) if abs(up[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    else:
        x = _unit(B[1] - B[0])
        if len(binding) == 2:
            V = P[others] - origin if others else np.zeros((0, 3))
            V = V - np.outer(V @ x, x)  # across the binding axis
            norms = np.linalg.norm(V, axis=1)
            V = V[norms > 1e-6] / norms[norms > 1e-6, None]
            w = _soft_up(V) if len(V) else np.zeros(3)
            w = w - (w @ x) * x
            if np.linalg.norm(w) > 1e-6:
                up = _unit(w)
            else:  # planar (or linear) around the axis: lie flat, the normal signed by atom order
                ref = np.cross(x, P[others[0]] - origin) if others else np.array([0.0, 0.0, 1.0])
                up = _plane_normal(P, ref) if len(P) >= 3 and np.linalg.norm(ref) > 1e-6 else _perpendicular(x)
                up = _unit(up - (up @ x) * x)
        else:
            up = _plane_normal(B, np.cross(B[1] - B[0], B[2] - B[0]))
            v = P[others].mean(axis=0) - B.mean(axis=0) if others else np.zeros(3)
            if up @ v < -0.05:
                up = -up
    x = _unit(x - (x @ up) * up)
    y = np.cross(up, x)
    return (P - origin) @ np.array([x, y, up]).T


def _perpendicular(e: np.ndarray) -> np.ndarray:
    """A unit vector perpendicular to ``e``, chosen without reference to noise."""
    trial = np.array([0.0, 0.0, 1.0]) if abs(e[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    return _unit(trial - (trial @ e) * e)


# --------------------------------------------------------------------------------------------
# molecules by SMILES or from a geometry (RDKit)
_ATOM_TOKEN = re.compile(r"\[[^\]]*\]|Br|Cl|[BCNOPSFI]|[bcnops]|\*")


def _quiet():
    from rdkit import rdBase

    return rdBase.BlockLogs()


def parse_smiles(smiles: str):
    """RDKit molecule of ``smiles`` (hydrogens implicit); ValueError when RDKit cannot read it."""
    from rdkit import Chem

    if not isinstance(smiles, str) or not smiles.strip():
        raise ValueError(f"cannot parse SMILES {smiles!r}")
    if "*" in smiles:
        raise ValueError(f"SMILES {smiles!r}: give the molecule without '*' and its binding atoms with binding:")
    _block = _quiet()  # noqa: F841 - RDKit logs parse errors to stderr otherwise
    mol = Chem.MolFromSmiles(smiles.strip())
    if mol is None or mol.GetNumAtoms() == 0:
        raise ValueError(f"cannot parse SMILES {smiles!r}")
    return mol


def resolve_binding(symbols: list[str], binding, what: str, unit: str = "atoms") -> tuple[int, ...]:
    """Binding atom indices from ``binding``: indices into ``symbols``, or element symbols (the first
    atom of that element not already chosen). ``what`` names the molecule in errors.

    >>> resolve_binding(["C", "C", "O"], ["O"], "CCO"), resolve_binding(["C", "C", "O"], [0, "C"], "CCO")
    ((2,), (0, 1))
    """
    items = binding if isinstance(binding, (list, tuple)) else [binding]
    if not items:
        raise ValueError("binding is empty; give atom indices or elements, e.g. [0] or O")
    n = len(symbols)
    out: list[int] = []
    for b in items:
        if isinstance(b, bool) or not isinstance(b, (int, str)):
            raise ValueError(f"binding {b!r} is neither an atom index nor an element")
        if isinstance(b, int):
            if not 0 <= b < n:
                raise ValueError(f"binding index {b} is out of range: {what} has {n} {unit} (0..{n - 1})")
            idx = b
        else:
            el = b.strip()
            el = el[:1].upper() + el[1:].lower()
            free = [i for i, s in enumerate(symbols) if s == el and i not in out]
            if not free:
                have = "no" if el not in symbols else "no further"
                raise ValueError(f"binding {b!r}: {what} has {have} {el} atom")
            idx = free[0]
        if idx in out:
            raise ValueError(f"binding atom {idx} is given twice")
        if symbols[idx] == "H" and n > 1:
            raise ValueError(f"binding atom {idx} is a hydrogen; bind through a heavy atom")
        out.append(idx)
    return tuple(out)


def starred_smiles(mol, binding: tuple[int, ...]) -> str:
    """SMILES written from the first binding atom, ``*`` before each binding atom (``*OCC``).

    >>> starred_smiles(parse_smiles("CCO"), (2,)), starred_smiles(parse_smiles("OC=O"), (0, 2))
    ('*OCC', '*OC=*O')
    """
    from rdkit import Chem

    m = Chem.Mol(mol)
    smi = Chem.MolToSmiles(m, rootedAtAtom=int(binding[0]))
    order = [int(x) for x in re.findall(r"\d+", m.GetProp("_smilesAtomOutputOrder"))]
    tokens = list(_ATOM_TOKEN.finditer(smi))
    if len(tokens) != len(order):  # not expected: fall back to a star in front
        return "*" + smi
    marks = {tok.start() for tok, atom in zip(tokens, order) if atom in binding}
    return "".join(("*" if i in marks else "") + ch for i, ch in enumerate(smi))


@lru_cache(maxsize=None)
def embed_smiles(smiles: str) -> Atoms:
    """3D geometry (Å) of ``smiles`` with hydrogens: ETKDGv3 (seed :data:`ETKDG_SEED`), then MMFF94
    (UFF where MMFF lacks parameters). Heavy atoms in SMILES order, then the hydrogens."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(parse_smiles(smiles))
    params = AllChem.ETKDGv3()
    params.randomSeed = ETKDG_SEED
    _block = _quiet()  # noqa: F841
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise ValueError(f"RDKit cannot embed SMILES {smiles!r} in 3D")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    elif AllChem.UFFHasAllMoleculeParams(mol):
        AllChem.UFFOptimizeMolecule(mol, maxIters=2000)
    pos = mol.GetConformer().GetPositions()
    atoms = Atoms([a.GetSymbol() for a in mol.GetAtoms()], positions=pos)
    atoms.positions -= atoms.positions.mean(axis=0)
    return atoms


def smiles_elements(smiles: str) -> list[str]:
    """Elements of ``smiles`` with its implicit hydrogens."""
    from rdkit import Chem

    return sorted({a.GetSymbol() for a in Chem.AddHs(parse_smiles(smiles)).GetAtoms()})


def perceive_smiles(symbols: list[str], positions: np.ndarray, binding: tuple[int, ...], what: str) -> str:
    """The starred SMILES of a molecule given by its geometry (bonds perceived by RDKit, neutral)."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    xyz = f"{len(symbols)}\n\n" + "\n".join(f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(symbols, positions))
    _block = _quiet()  # noqa: F841
    raw = Chem.MolFromXYZBlock(xyz)
    if raw is None:
        raise ValueError(f"{what}: RDKit cannot read the geometry")
    try:
        rdDetermineBonds.DetermineBonds(raw, charge=0)
    except Exception as exc:  # noqa: BLE001 - RDKit raises plain ValueError/RuntimeError here
        raise ValueError(f"{what}: cannot perceive the bonds of a neutral molecule from the geometry "
                         f"({' '.join(str(exc).split())[:80]})") from None
    heavy = [i for i, s in enumerate(symbols) if s != "H"]
    mol = Chem.RemoveHs(raw)
    if mol.GetNumAtoms() == len(heavy) and all(i in heavy for i in binding):
        return starred_smiles(mol, tuple(heavy.index(i) for i in binding))
    return starred_smiles(raw, binding)


def adsorbate_from_smiles(name: str, smiles: str, binding: tuple[int, ...]) -> Adsorbate:
    """The adsorbate ``name`` (starred SMILES) with the ETKDG geometry of ``smiles``."""
    return Adsorbate(name, embed_smiles(smiles).copy(), tuple(binding), upright=True)


def adsorbate_from_atoms(name: str, atoms: Atoms, binding: tuple[int, ...]) -> Adsorbate:
    """The adsorbate ``name`` with a given geometry (a molecule file) and binding atom indices."""
    atoms = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions - atoms.positions.mean(axis=0))
    return Adsorbate(name, atoms, tuple(binding), upright=True)
