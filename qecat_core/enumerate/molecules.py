"""A molecule from its atoms' coordinates -> canonical SMILES, with its binding atoms marked ``*`` (OC20 style).

The bonds come from the geometry with RDKit (``rdDetermineBonds``): ``DetermineConnectivity`` (a bond
is a distance below 1.3 x the sum of RDKit's covalent radii), then ``DetermineBondOrders`` with total
charge 0, for closed-shell molecules. A molecule with an odd number of electrons (a radical; also one
fragment of several with an odd number, such as an H atom apart), or one whose bond orders RDKit
cannot assign, is written from its connectivity alone: single bonds, every
hydrogen where it is, unpaired electrons as such (``C[C](N)[O]``), so its formula is still right.

``*`` goes right before each binding atom, as OC20 writes ``*OH``, ``*CH2*O``: the SMILES starts at a
binding atom. A hydrogen that binds is marked on the heavy atom it belongs to when no heavy atom binds
(OC20's ``*CH4``). Canonical: the binding atoms take part in RDKit's canonical ranking, the SMILES is
written in that order, so the same molecule bound the same way gives the same string whatever its
position, orientation or atom order. Stereochemistry is left out (an adsorbed geometry is a poor
guide to it).

>>> import numpy as np
>>> sym = ["C", "S", "H", "H", "H", "H"]          # methanethiol, bound through S
>>> xyz = np.array([[0, 0, 0], [1.82, 0, 0], [-0.36, 1.03, 0], [-0.36, -0.51, 0.89], [-0.36, -0.51, -0.89],
...                 [2.15, 1.3, 0]])
>>> m = molecule_smiles(sym, xyz, binding=[1])
>>> m.smiles, m.formula, m.bond_orders
('*SC', 'CH4S', True)
>>> molecule_smiles(sym[:-1], xyz[:-1], binding=[1]).smiles     # without the thiol H: a radical
'*[S]C'
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_ATOM_TOKEN = re.compile(r"\[[^\]]+\]|Br|Cl|[BCNOPSFI]|[bcnops]|\*")
_INDEX = "qecat_index"


@dataclass(frozen=True)
class Molecule:
    """What :func:`molecule_smiles` perceives."""

    smiles: str  # canonical SMILES, '*' before each binding atom
    formula: str  # Hill formula of the atoms ('C2H6O')
    bond_orders: bool  # False: written from the connectivity alone (radical, or bond orders failed)
    binding: tuple[int, ...]  # the atoms marked '*' (indices into the input)


def hill_formula(symbols: Sequence[str]) -> str:
    """Hill formula: C, then H, then the rest alphabetically (all alphabetically without carbon).

    >>> hill_formula(["O", "H", "C", "H", "H", "H"]), hill_formula(["O", "H", "H"])
    ('CH4O', 'H2O')
    """
    n = Counter(symbols)
    order = (["C", "H"] if "C" in n else []) + sorted(s for s in n if "C" not in n or s not in ("C", "H"))
    return "".join(f"{s}{n[s] if n[s] > 1 else ''}" for s in order)


def contiguous_positions(positions: np.ndarray, numbers: Sequence[int], cell=None, pbc=False,
                         scale: float = 1.3) -> np.ndarray:
    """Positions of a molecule made whole across periodic boundaries: every atom put at the image
    nearest an atom it is bonded to (distance below ``scale`` x the sum of ASE's covalent radii)."""
    from ase.data import covalent_radii
    from ase.geometry import get_distances

    pos = np.array(positions, float)
    if cell is None or not np.any(pbc) or len(pos) < 2:
        return pos
    vec, d = get_distances(pos, cell=cell, pbc=pbc)
    r = covalent_radii[np.asarray(numbers)]
    bonded = d < scale * (r[:, None] + r[None, :])
    out = pos.copy()
    placed = np.zeros(len(pos), bool)
    for start in range(len(pos)):  # breadth first, one fragment at a time
        if placed[start]:
            continue
        placed[start] = True
        queue = [start]
        while queue:
            i = queue.pop(0)
            for j in np.nonzero(bonded[i] & ~placed)[0]:
                out[j] = out[i] + vec[i, j]
                placed[j] = True
                queue.append(int(j))
    return out


def _rdkit_mol(symbols: Sequence[str], positions: np.ndarray):
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    rw = Chem.RWMol()
    for i, s in enumerate(symbols):
        atom = Chem.Atom(s)
        atom.SetNoImplicit(True)  # every hydrogen is in the structure
        atom.SetIntProp(_INDEX, i)
        rw.AddAtom(atom)
    conf = Chem.Conformer(len(symbols))
    for i, p in enumerate(np.asarray(positions, float)):
        conf.SetAtomPosition(i, Point3D(*map(float, p)))
    rw.AddConformer(conf, assignId=True)
    return rw.GetMol()


def _remove_hs(mol, sanitize: bool = True):
    """Hydrogens as counts on their heavy atoms, also those RDKit would keep for double-bond stereo
    (stereo is not written); an H bound to H only, or to nothing, stays."""
    from rdkit import Chem

    ps = Chem.RemoveHsParameters()
    ps.removeDefiningBondStereo = True
    ps.removeWithWedgedBond = True
    return Chem.RemoveHs(mol, ps, sanitize=sanitize)


def _perceive(symbols: Sequence[str], positions: np.ndarray, charge: int):
    """(heavy-atom RDKit molecule, whether bond orders were assigned, each atom's bonded atoms)."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdDetermineBonds

    with rdBase.BlockLogs():
        mol = _rdkit_mol(symbols, positions)
        rdDetermineBonds.DetermineConnectivity(mol)
        bonded = [[nb.GetIdx() for nb in a.GetNeighbors()] for a in mol.GetAtoms()]
        z = [a.GetAtomicNum() for a in mol.GetAtoms()]
        # closed shell: an even number of electrons in every fragment (a lone H apart is a radical, not H+)
        closed = (sum(z) - charge) % 2 == 0 and (charge != 0 or all(
            sum(z[i] for i in frag) % 2 == 0 for frag in Chem.GetMolFrags(mol)))
        if closed:
            ordered = Chem.Mol(mol)
            try:
                rdDetermineBonds.DetermineBondOrders(ordered, charge=charge)
                heavy = _remove_hs(ordered)
            except (ValueError, RuntimeError):  # no valid bond orders: the connectivity below
                heavy = None
            if heavy is not None and not any(a.GetNumRadicalElectrons() for a in heavy.GetAtoms()):
                return heavy, True, bonded
        try:
            return _remove_hs(mol), False, bonded  # sanitizes: unpaired electrons become radicals
        except (ValueError, RuntimeError):  # e.g. a hypervalent atom in a distorted geometry: as it is
            heavy = _remove_hs(mol, sanitize=False)
            heavy.UpdatePropertyCache(strict=False)
            return heavy, False, bonded


def molecule_smiles(symbols: Sequence[str], positions, binding: Sequence[int] = (), charge: int = 0) -> Molecule:
    """Canonical SMILES of a molecule from its coordinates (Å, contiguous: see :func:`contiguous_positions`),
    with ``*`` before each atom of ``binding`` (indices into ``symbols``; see the module docstring)."""
    from rdkit import Chem

    symbols = list(symbols)
    if not symbols:
        raise ValueError("no atoms")
    heavy, bond_orders, bonded = _perceive(symbols, np.asarray(positions, float), charge)
    index = {a.GetIntProp(_INDEX): a.GetIdx() for a in heavy.GetAtoms()}  # input -> heavy-atom molecule
    marked = {index[i] for i in binding if i in index}  # (an H is in `index` only where it stays an atom)
    if not marked:  # only hydrogens bind: the heavy atoms they belong to
        marked = {index[j] for i in binding for j in bonded[i] if j in index}
    labelled = Chem.Mol(heavy)
    for k in marked:
        labelled.GetAtomWithIdx(k).SetIsotope(1)  # binding atoms rank apart from their unbound twins
    ranks = list(Chem.CanonicalRankAtoms(labelled, breakTies=True, includeChirality=False))
    order = sorted(range(heavy.GetNumAtoms()), key=ranks.__getitem__)
    canon = Chem.RenumberAtoms(heavy, order)  # atom k of canon is atom order[k] of heavy
    new = {old: k for k, old in enumerate(order)}
    stars = {new[k] for k in marked}
    atoms_of: list = []
    frags = Chem.GetMolFrags(canon, asMols=True, sanitizeFrags=False, fragsMolAtomMapping=atoms_of)
    parts = [_write(f, [int(k) in stars for k in ks]) for f, ks in zip(frags, atoms_of)]
    parts.sort(key=lambda p: (not p[0], p[1]))  # bound fragments first, then by their SMILES
    bound = tuple(sorted(heavy.GetAtomWithIdx(k).GetIntProp(_INDEX) for k in marked))
    return Molecule(".".join(p[1] for p in parts), hill_formula(symbols), bond_orders, bound)


def _write(frag, star: list[bool]) -> tuple[bool, str]:
    """(whether it binds, SMILES with '*' marks) of one fragment (atoms in canonical order; ``star``: per
    atom), written from its first binding atom (else its first atom) in that order."""
    from rdkit import Chem

    root = star.index(True) if any(star) else 0
    smiles = Chem.MolToSmiles(frag, canonical=False, rootedAtAtom=root, isomericSmiles=False)
    written = [int(x) for x in frag.GetProp("_smilesAtomOutputOrder").strip("[]").split(",") if x.strip()]
    pieces, last = [], 0
    for n, tok in enumerate(_ATOM_TOKEN.finditer(smiles)):
        if star[written[n]]:
            pieces += [smiles[last:tok.start()], "*"]
            last = tok.start()
    pieces.append(smiles[last:])
    return star[root], "".join(pieces)
