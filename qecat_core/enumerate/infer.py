"""Metadata of a bare adsorbate + slab structure: which adsorbate, which bulk formula, which facet.

The configuration string (:mod:`qecat_core.enumerate.text`) and the per-adsorbate energy offsets of the model
need the adsorbate's SMILES, the bulk formula and the Miller index. Structures written by
``qecat enumerate`` carry them in ``atoms.info``; a structure from anywhere else (an ``.extxyz``,
a POSCAR, an ``ase.build`` slab) usually does not. :func:`complete_metadata` fills in what is
missing from the geometry alone (tags as in OC20: 2 adsorbate, 0/1 slab):

* ``adsorbate``: the OC20 adsorbate (fairchem-data-oc's set) with the same atoms and the same
  hydrogens on each heavy atom, so that ``*CHO`` and ``*COH`` are told apart; among those, one whose
  binding element is the heavy atom nearest the slab. Adsorbates of the default catalog win ties.
  Any other molecule: its canonical SMILES perceived from the coordinates with RDKit, ``*`` before
  each atom bonded to the slab (:mod:`qecat_core.enumerate.molecules`; :func:`adsorbate_molecule`).
* ``bulk_formula``: the slab's reduced composition (``Cu27Pt9`` -> ``Cu3Pt``), elements in the
  order of the default catalog's metals (as its formulas are written), then alphabetically.
* ``miller`` (and ``lattice``): the bulk lattice the slab's stacking shows (fcc, hcp, bcc, ...; an
  alloy's is that of its sites) and the surface normal in that lattice's conventional cell, as the
  smallest integers, the largest of the equivalent indices (``(2 1 1)``, hcp (0001) ``(0 0 1)``):
  :mod:`qecat_core.enumerate.surface`. None for a slab thinner than two stacking periods.

Values given in ``atoms.info`` win over the geometry (``prefer_geometry=True``, ``qecat predict
--infer-metadata``, reverses that); they are read with :func:`parse_miller`, :func:`parse_adsorbate` and
:func:`parse_facet` (``facet``, e.g. ``fcc(111)``, gives ``lattice`` and ``miller`` where those keys are
absent), which accept the spellings people write, and one that cannot be read is an :class:`InputError`
naming the structure, the key, the value and the accepted forms.

>>> from ase.build import fcc211, add_adsorbate
>>> slab = fcc211("Pt", (3, 3, 4), vacuum=8.0)
>>> add_adsorbate(slab, "O", 1.2, position=(0.0, 0.0)); slab.set_tags([1] * 36 + [2])
>>> infer_miller(slab), identify_adsorbate(slab), slab_formula(slab[:36])
((2, 1, 1), '*O', 'Pt')
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from numbers import Integral, Real

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from ase.geometry import get_distances

from qecat_core.common.errors import InputError
from qecat_core.common.tags import TAG_ADSORBATE
from qecat_core.enumerate.molecules import (
    Molecule,
    contiguous_positions,
    molecule_smiles,
)
from qecat_core.enumerate.placement import BOND_SCALE, inplane_displacements
from qecat_core.enumerate.surface import Surface, describe_surface

# The adsorbates of catalogs/bimetallics.yaml (the ones the shipped model was trained on) win ties.
PREFERRED = ("*H", "*O", "*OH", "*C", "*CH", "*CH2", "*CH3", "*N", "*NH", "*NH2", "*CO", "*COH", "*CHO",
             "*OCH3", "*N2")


MILLER_FORMS = '111, "1 1 1", "(1, 1, 1)", [1, 1, 1], hcp "0001"'
ADSORBATE_FORMS = ("an OC20 adsorbate SMILES, with or without '*', any case: '*OH', 'OH' (the list: qecat "
                   "adsorbates); or any SMILES RDKit reads, '*' before binding atoms: '*OCC'")
FACET_FORMS = 'a lattice and a Miller index: "fcc(111)", "hcp(0001)", "bcc 110"'


def _index(token) -> int:
    """One integer Miller index from an int, an integral float or a string of either."""
    if isinstance(token, (bool, np.bool_)):
        raise TypeError(token)
    if isinstance(token, str):
        token = token.strip()
        try:
            return int(token)
        except ValueError:
            token = float(token)
    if isinstance(token, Integral):
        return int(token)
    if isinstance(token, Real) and float(token).is_integer():
        return int(token)
    raise ValueError(token)


def parse_miller(value) -> tuple[int, int, int]:
    """A Miller index as written anywhere -> ``(h, k, l)`` (the 3-index form of the OC20 strings).

    Three-digit strings and integers are three single-digit indices (a minus sign belongs to the digit
    after it); separated indices (spaces or commas, in optional brackets) may have several digits;
    hcp 4-index ``(h k i l)`` with ``i = -(h + k)`` gives ``(h k l)``. An integer of fewer than three
    digits lost its leading zeros (extxyz reads ``miller=0001`` as 1): ``1`` is ``(0 0 1)``.
    Raises ValueError (its message says why) for anything else.

    >>> [parse_miller(v) for v in (111, "111", "1 1 1", "(1, 1, 1)", "(1 1 1)", [1, 1, 1], (1, 1, 1),
    ...                            np.array([1, 1, 1]), "[1. 1. 1.]")]  # doctest: +NORMALIZE_WHITESPACE
    [(1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1)]
    >>> parse_miller("1 -1 0"), parse_miller("1-10"), parse_miller("211"), parse_miller("(10, 1, 1)")
    ((1, -1, 0), (1, -1, 0), (2, 1, 1), (10, 1, 1))
    >>> parse_miller("0001"), parse_miller("(0 0 0 1)"), parse_miller([0, 0, 0, 1]), parse_miller(1)
    ((0, 0, 1), (0, 0, 1), (0, 0, 1), (0, 0, 1))
    >>> parse_miller("10-10"), parse_miller("(1 1 -2 0)")
    ((1, 0, 0), (1, 1, 0))
    >>> parse_miller("abc")
    Traceback (most recent call last):
    ValueError: is not a Miller index
    """
    bad = ValueError("is not a Miller index")
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or value is None:
        raise bad
    if isinstance(value, Real) and not isinstance(value, Integral):
        if not float(value).is_integer():
            raise bad
        value = int(value)
    if isinstance(value, Integral):
        value = f"{int(value):03d}" if 0 <= int(value) < 100 else str(int(value))
    if isinstance(value, str):
        s = value.strip().strip("()[]{}").strip()
        if re.fullmatch(r"(?:[+-]?\d)+", s):  # compact: one digit per index ('111', '1-10', '0001')
            tokens: list = re.findall(r"[+-]?\d", s)
        else:
            tokens = [t for t in re.split(r"[\s,;]+", s) if t]
    else:
        try:
            tokens = list(np.asarray(value, dtype=object).reshape(-1)) if not isinstance(value, dict) else []
        except (TypeError, ValueError):
            raise bad from None
    try:
        idx = [_index(t) for t in tokens]
    except (TypeError, ValueError, OverflowError):
        raise bad from None
    if len(idx) == 4:
        h, k, i, l = idx
        if i != -(h + k):
            raise ValueError("is not a Miller-Bravais index (h k i l needs i = -(h + k))")
        idx = [h, k, l]
    if len(idx) != 3:
        raise bad
    if not any(idx):
        raise ValueError("is not a plane (all indices zero)")
    return tuple(idx)  # type: ignore[return-value]


@cache
def _adsorbate_names() -> dict[str, str]:
    """Upper-case SMILES without '*' -> OC20 SMILES (unique over the OC20 set)."""
    from qecat_core.catalog.adsorbates import load_adsorbates

    return {s.replace("*", "").upper(): s for s in load_adsorbates()}


def parse_adsorbate(value) -> str:
    """An adsorbate as written anywhere -> its OC20 SMILES (``'*OH'``), as the OC20 set writes it; any
    other SMILES RDKit reads (``'*OCC'``, ``'CC(N)=O'``) as given.

    OC20 names first: with or without ``*`` (anywhere: ``'OH*'`` too), any case (so ``'CCO'`` is OC20's
    ``*CCO``, not ethanol: write ``'OCC'``). Raises ValueError when the value is neither one of the OC20
    set (``qecat adsorbates`` lists them) nor a SMILES.

    >>> [parse_adsorbate(v) for v in ("*OH", "OH", " oh ", "OH*", "CH2CO", "*CH2*CO", "NH2N(CH3)2")]
    ['*OH', '*OH', '*OH', '*OH', 'CH2*CO', 'CH2*CO', '*NH2N(CH3)2']
    >>> parse_adsorbate(" *SC "), parse_adsorbate("c1ccccc1")
    ('*SC', 'c1ccccc1')
    >>> parse_adsorbate("OH-")
    Traceback (most recent call last):
    ValueError: is not an OC20 adsorbate
    """
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if not isinstance(value, str):
        raise ValueError("is not an OC20 adsorbate")  # noqa: TRY004 (the parsers' contract: ValueError)
    smiles = _adsorbate_names().get(value.strip().replace("*", "").upper())
    if smiles is None and _is_smiles(value.strip()):
        smiles = value.strip()
    if smiles is None:
        raise ValueError("is not an OC20 adsorbate")
    return smiles


def _is_smiles(text: str) -> bool:
    """Whether RDKit reads ``text`` without its binding marks (``*O=CN``: a ``*`` there is no atom)."""
    text = text.replace("*", "")
    if not text or any(c.isspace() for c in text):
        return False
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(text)
    return mol is not None and mol.GetNumAtoms() > 0


def parse_facet(value) -> tuple[str | None, tuple[int, int, int]]:
    """A facet as written in datasets -> ``(lattice, (h, k, l))``; the lattice (lower case) may be absent.

    >>> parse_facet("fcc(111)"), parse_facet("hcp(0001)"), parse_facet("BCC 110"), parse_facet("(2 1 1)")
    (('fcc', (1, 1, 1)), ('hcp', (0, 0, 1)), ('bcc', (1, 1, 0)), (None, (2, 1, 1)))
    """
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if not isinstance(value, str):
        return None, parse_miller(value)
    m = re.fullmatch(r"\s*([A-Za-z][A-Za-z0-9_-]*?)?[\s_-]*([(\[]?[-+\d\s,.]+[)\]]?)\s*", value)
    if m is None:
        raise ValueError("is not a facet")
    lattice = m.group(1).lower() if m.group(1) else None
    return lattice, parse_miller(m.group(2))


def _show(value) -> str:
    """A one-line repr of a metadata value."""
    if isinstance(value, np.ndarray):
        text = f"array({value.tolist()!r})"
    elif isinstance(value, np.generic):
        text = repr(value.item())
    else:
        text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def _absent(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, float):
        return bool(np.isnan(value))
    return False


def _geometry(atoms: Atoms, key: str, cache: dict | None = None):
    """The value of ``key`` read off the geometry (None when it cannot be); ``cache`` keeps the surface
    for the next key of the same structure."""
    if key == "adsorbate":
        return infer_adsorbate(atoms)
    if key in ("miller", "lattice"):
        cache = {} if cache is None else cache
        if "surface" not in cache:
            cache["surface"] = infer_surface(atoms)
        return cache["surface"].miller if key == "miller" else cache["surface"].lattice
    slab = atoms[atoms.get_tags() != TAG_ADSORBATE]
    return slab_formula(slab) if len(slab) else None


def _name(atoms: Atoms, name: str | None) -> str:
    return name or str(atoms.info.get("source") or atoms.info.get("sid") or "structure")


def given_key(atoms: Atoms, key: str) -> str | None:
    """The ``atoms.info`` key that gives ``key`` (``adsorbate``, ``miller``, ``lattice``): the key itself,
    else ``facet`` for ``miller`` and ``lattice`` (``fcc(111)``: both); None when neither is there."""
    if not _absent(atoms.info.get(key)):
        return key
    if key in ("miller", "lattice") and not _absent(atoms.info.get("facet")):
        return "facet"
    return None


def read_metadata(atoms: Atoms, key: str, name: str | None = None, geometry=None):
    """The given ``atoms.info[key]`` (``adsorbate``, ``miller`` or ``lattice``; the latter two also from
    ``facet``: :func:`parse_facet`) read with its parser; None when absent.

    A value that cannot be read raises :class:`InputError` naming ``name`` (default: the structure's
    ``source``), the key, the value and the accepted forms, and saying what the geometry gives
    (``geometry``: that value when already known; inferred here otherwise).
    """
    source = given_key(atoms, key)
    if source is None:
        return None
    value = atoms.info[source]
    try:
        if source == "facet":
            lattice, miller = parse_facet(value)
            return miller if key == "miller" else lattice
        if key == "lattice":
            return str(value).strip().lower()
        return parse_miller(value) if key == "miller" else parse_adsorbate(value)
    except ValueError as exc:
        reason = str(exc)
    forms = {"miller": MILLER_FORMS, "facet": FACET_FORMS}.get(source, ADSORBATE_FORMS)
    if geometry is None:
        geometry = _geometry(atoms, key)
    if geometry is None:
        what = ("Miller indices: slabs two stacking periods thick" if key != "adsorbate" else
                "adsorbates: tag-2 atoms whose bonds RDKit can read")
        hint = f"the geometry does not give one either ({what}): fix atoms.info[{source!r}]"
    else:
        shown = "(" + " ".join(map(str, geometry)) + ")" if key == "miller" else geometry
        hint = f"the geometry gives {shown}: rerun with --infer-metadata to use it"
    raise InputError(f"{_name(atoms, name)}: {source} = {_show(value)} {reason} (accepted: {forms}); {hint}")


# Element order of bulk formulas: the default catalog's metals first (its pairs are written A-B in this
# order: 'CuPd3', 'AgPt'), then any other element alphabetically.
METAL_ORDER = ("Cu", "Ag", "Au", "Ni", "Pd", "Pt")


def slab_formula(slab: Atoms, order: str = "catalog") -> str:
    """Reduced composition, e.g. Pt9Cu27 -> 'Cu3Pt'; elements in :data:`METAL_ORDER` (``order="catalog"``)
    or in order of appearance (``"appearance"``, the rule enumeration writes random alloys with).

    >>> slab_formula(Atoms("Pt3CuPt3Cu")), slab_formula(Atoms("Pt3CuPt3Cu"), order="appearance")
    ('CuPt3', 'Pt3Cu')
    """
    syms = slab.get_chemical_symbols()
    if order == "appearance":
        elements = list(dict.fromkeys(syms))
    else:
        elements = sorted(set(syms), key=lambda s: (METAL_ORDER.index(s) if s in METAL_ORDER else len(METAL_ORDER), s))
    counts = [syms.count(s) for s in elements]
    g = int(np.gcd.reduce(counts)) if counts else 1
    return "".join(f"{s}{c // g if c // g > 1 else ''}" for s, c in zip(elements, counts))


def _signature(symbols: list[str], bonds: list[tuple[int, int]], binding: int) -> tuple:
    """(binding element, sorted (heavy element, number of bonded H) over heavy atoms, formula)."""
    n_h = Counter()
    for i, j in bonds:
        if symbols[j] == "H" and symbols[i] != "H":
            n_h[i] += 1
        if symbols[i] == "H" and symbols[j] != "H":
            n_h[j] += 1
    heavy = sorted((s, n_h[k]) for k, s in enumerate(symbols) if s != "H")
    return symbols[binding], tuple(heavy), tuple(sorted(Counter(symbols).items()))


def _bonds(atoms: Atoms) -> list[tuple[int, int]]:
    """Bonded pairs (i < j) of a small molecule, minimum image where periodic."""
    pbc = atoms.pbc if atoms.cell.rank == 3 else False
    _, d = get_distances(atoms.positions, cell=atoms.cell, pbc=pbc)
    r = covalent_radii[atoms.numbers]
    i, j = np.nonzero(np.triu(d < BOND_SCALE * (r[:, None] + r[None, :]), k=1))
    return list(zip(i.tolist(), j.tolist()))


@cache
def _library() -> dict[tuple, list[str]]:
    from qecat_core.catalog.adsorbates import load_adsorbates

    out: dict[tuple, list[str]] = {}
    for smiles, ads in load_adsorbates().items():
        a = ads.atoms.copy()
        a.pbc = False
        sig = _signature(a.get_chemical_symbols(), _bonds(a), ads.binding_indices[0])
        out.setdefault(sig, []).append(smiles)
    for names in out.values():
        names.sort(key=lambda s: (s not in PREFERRED, s))
    return out


def oc20_name(molecule: Atoms, binding: int) -> str | None:
    """The OC20 SMILES of a molecule (gas geometry) binding through atom ``binding``, if it is one.

    A catalog's ``{smiles: CO, binding: O}`` is OC20's ``*OHCH3``: named so, an enumerated candidate
    has the name :func:`identify_adsorbate` reads back from its structure.
    """
    a = molecule.copy()
    a.pbc = False
    sig = _signature(a.get_chemical_symbols(), _bonds(a), binding)
    names = _library().get(sig)
    if names:
        return names[0]
    # as identify_adsorbate: the same atoms and hydrogens bound through another atom (formaldehyde
    # bound by O is OC20's *CH2*O)
    same = sorted((n for key, ns in _library().items() if key[1:] == sig[1:] for n in ns),
                  key=lambda s: (s not in PREFERRED, s))
    return same[0] if same else None


def identify_adsorbate(atoms: Atoms) -> str | None:
    """OC20 SMILES of the tag-2 atoms (see the module docstring), or None when no OC20 adsorbate matches."""
    tags = atoms.get_tags()
    ads_idx = np.nonzero(tags == TAG_ADSORBATE)[0]
    slab_idx = np.nonzero(tags != TAG_ADSORBATE)[0]
    if not len(ads_idx):
        return None
    ads = atoms[ads_idx]
    binding = 0
    if len(slab_idx) and len(ads_idx) > 1:  # the heavy adsorbate atom nearest any slab atom (minimum image)
        heavy = [k for k, a in enumerate(ads_idx) if atoms.numbers[a] != 1] or list(range(len(ads_idx)))
        dmin = [atoms.get_distances(int(ads_idx[k]), slab_idx, mic=bool(atoms.pbc.any())).min() for k in heavy]
        binding = heavy[int(np.argmin(dmin))]
    sig = _signature(ads.get_chemical_symbols(), _bonds(ads), binding)
    names = _library().get(sig)
    if names:
        return names[0]
    # a tilted placement can bring another heavy atom nearer the slab: same atoms and hydrogens suffice
    same = [n for key, ns in _library().items() if key[1:] == sig[1:] for n in ns]
    same.sort(key=lambda s: (s not in PREFERRED, s))
    return same[0] if same else None


def surface_bonds(atoms: Atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(adsorbate indices, slab indices, bonded [n_ads, n_slab]): adsorbate-slab bonds, a distance below
    ``BOND_SCALE`` x the sum of ASE's covalent radii, minimum image in the plane (the configuration
    text's rule: :mod:`qecat_core.enumerate.text`)."""
    is_ads = atoms.get_tags() == TAG_ADSORBATE
    ads_idx, slab_idx = np.nonzero(is_ads)[0], np.nonzero(~is_ads)[0]
    slab_pos = atoms.positions[slab_idx]
    dist = np.empty((len(ads_idx), len(slab_idx)))
    for k, a in enumerate(ads_idx):
        dxy = inplane_displacements(slab_pos, atoms.positions[a, :2], atoms.cell)
        dist[k] = np.sqrt((dxy ** 2).sum(1) + (slab_pos[:, 2] - atoms.positions[a, 2]) ** 2)
    radii = covalent_radii[atoms.numbers]
    bonded = dist < BOND_SCALE * (radii[ads_idx][:, None] + radii[slab_idx][None, :])
    return ads_idx, slab_idx, bonded


def binding_atoms(atoms: Atoms) -> list[int]:
    """Indices (into ``atoms``) of the adsorbate atoms bonded to the slab (:func:`surface_bonds`)."""
    ads_idx, _, bonded = surface_bonds(atoms)
    return [int(a) for a, row in zip(ads_idx, bonded) if row.any()]


def adsorbate_molecule(atoms: Atoms) -> Molecule | None:
    """The tag-2 atoms as a molecule perceived from their coordinates (made whole across the cell), its
    binding atoms those bonded to the slab (:func:`qecat_core.enumerate.molecules.molecule_smiles`);
    None without adsorbate atoms. ``binding`` indexes ``atoms``."""
    ads_idx, _, bonded = surface_bonds(atoms)
    if not len(ads_idx):
        return None
    ads = atoms[ads_idx]
    pos = contiguous_positions(ads.positions, ads.numbers, ads.cell, ads.pbc if ads.cell.rank == 3 else False)
    binding = [k for k in range(len(ads_idx)) if bonded[k].any()]
    mol = molecule_smiles(ads.get_chemical_symbols(), pos, binding)
    return Molecule(mol.smiles, mol.formula, mol.bond_orders, tuple(int(ads_idx[k]) for k in mol.binding))


def infer_adsorbate(atoms: Atoms) -> str | None:
    """The adsorbate's name from the geometry: its OC20 SMILES where one matches (:func:`identify_adsorbate`),
    else the canonical SMILES of :func:`adsorbate_molecule` (``'*OCC'``); None without adsorbate atoms."""
    oc20 = identify_adsorbate(atoms)
    if oc20 is not None:
        return oc20
    mol = adsorbate_molecule(atoms)
    return mol.smiles if mol is not None else None


def infer_surface(atoms: Atoms) -> Surface:
    """Bulk lattice and Miller index of the slab atoms (tags 0 and 1) of ``atoms``
    (:func:`qecat_core.enumerate.surface.describe_surface`)."""
    slab = atoms[atoms.get_tags() != TAG_ADSORBATE]
    if len(slab) < 2 or slab.cell.rank < 2:
        return Surface(None, None)
    return describe_surface(slab)


def infer_miller(atoms: Atoms) -> tuple[int, int, int] | None:
    """Miller index of the slab's surface (the 3-index form of the OC20 strings), or None if the geometry
    does not give one (see :func:`infer_surface`). The slab atoms (tags 0 and 1) are the crystal; the
    surface normal is ``cell[0] x cell[1]``."""
    return infer_surface(atoms).miller


METADATA_KEYS = ("adsorbate", "bulk_formula", "miller")


def complete_metadata(atoms: Atoms, name: str | None = None, prefer_geometry: bool = False,
                      keys: tuple[str, ...] = METADATA_KEYS) -> list[str]:
    """Read ``adsorbate`` and ``miller`` of ``atoms.info`` (:func:`read_metadata`: stored back as the OC20
    SMILES and an ``(h, k, l)`` tuple; ``miller`` also from ``facet``) and fill in those of ``keys`` that
    are absent and inferable (``keys`` may also name ``lattice``).

    ``prefer_geometry``: the geometry's value wins for every key it gives (the given one, read as above,
    where it gives none; an unreadable given value is then only an error when the geometry gives none).
    ``name`` names the structure in errors (default: ``atoms.info['source']``). Needs tags (see
    :func:`qecat_core.common.tags.ensure_tags`). Returns the keys it took from the geometry (also stored
    as ``atoms.info['inferred']``, comma-separated).
    """
    info = atoms.info
    filled = []
    cache: dict = {}
    for key in keys:
        if key == "bulk_formula":
            given = None if _absent(info.get("bulk_formula")) and _absent(info.get("bulk")) else True
        elif prefer_geometry:
            given = None
        else:
            given = read_metadata(atoms, key, name)
        if given is not None and not prefer_geometry:
            if key != "bulk_formula":
                info[key] = given
            continue
        inferred = _geometry(atoms, key, cache)
        if inferred is not None:
            info[key] = inferred
            filled.append(key)
        elif key != "bulk_formula":
            given = read_metadata(atoms, key, name)  # the given value as the fallback
            if given is not None:
                info[key] = given
    if filled:
        info["inferred"] = ",".join(filled)
    return filled
