"""The screening catalog: which alloys, facets, adsorbates and placements to enumerate.

A catalog is a YAML file validated by :class:`Catalog`. Errors name the file, the field and
what is allowed, on one line::

    >>> cat = Catalog.model_validate({"name": "tiny", "metals": ["Cu", "Pt"], "pairs": "all",
    ...                               "facets": ["111"], "adsorbates": ["*O"]})
    >>> cat.pair_list(), cat.facets
    ([('Cu', 'Pt')], [(1, 1, 1)])

Its bulks, with lattice constants, are :func:`qecat_core.catalog.bulks.bulk_specs`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from ase.data import atomic_numbers, reference_states
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from qecat_core.common.config import read_yaml, validation_message
from qecat_core.common.errors import CatalogError

# fcc lattice constants (Å) fitted with ASE's EMT (../shared/notes/data.md; `lattice: relaxed` reproduces
# Cu and Pt within 0.01 Å, tests/test_catalog.py); the EMT elements.
EMT_LATTICE_CONSTANTS = {
    "Al": 3.995, "Cu": 3.593, "Ag": 4.068, "Au": 4.062, "Ni": 3.489, "Pd": 3.884, "Pt": 3.927,
}


@cache
def fcc_metals() -> dict[str, float]:
    """Elements whose ASE reference state is fcc, with a lattice constant in Å.

    EMT-fitted constants are used for the EMT metals, ASE's experimental ones otherwise.
    """
    out = {}
    for sym, z in atomic_numbers.items():
        ref = reference_states[z] if z < len(reference_states) else None
        if ref and ref.get("symmetry") == "fcc" and sym not in ("X",):
            out[sym] = EMT_LATTICE_CONSTANTS.get(sym, float(ref["a"]))
    return out


@cache
def oc20_adsorbate_smiles() -> tuple[str, ...]:
    """SMILES of the adsorbates in fairchem-data-oc's ``adsorbates.pkl`` (OC20's set)."""
    from qecat_core.catalog.adsorbates import load_adsorbates

    return tuple(load_adsorbates())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prototype(_Strict):
    """A bulk prototype built on the fcc lattice of a metal pair A-B.

    ``L1_2`` with ``formula`` A3B or AB3 (Cu3Au type), ``L1_0`` (CuAu type, AB), or ``random``: a
    substitutional alloy with B at ``fraction_b`` placed at random (seeded) on the slab sites.
    """

    kind: Literal["L1_2", "L1_0", "random"]
    formula: Literal["A3B", "AB3"] | None = None
    fraction_b: Annotated[float, Field(gt=0.0, lt=1.0)] | None = None

    @model_validator(mode="after")
    def _check(self) -> Prototype:
        if self.kind == "L1_2" and self.formula is None:
            raise ValueError("L1_2 needs formula: A3B or AB3")
        if self.kind != "L1_2" and self.formula is not None:
            raise ValueError(f"formula is only allowed for L1_2, not {self.kind}")
        if self.kind == "random" and self.fraction_b is None:
            raise ValueError("random needs fraction_b, a number strictly between 0 and 1")
        if self.kind != "random" and self.fraction_b is not None:
            raise ValueError(f"fraction_b is only allowed for random, not {self.kind}")
        return self

    @property
    def label(self) -> str:
        if self.kind == "L1_2":
            return f"L1_2-{self.formula}"
        if self.kind == "random":
            return f"random-{self.fraction_b:g}"
        return "L1_0"


class SlabGeometry(_Strict):
    """Slab geometry. Lengths in Å."""

    min_thickness: Annotated[float, Field(gt=0, le=30)] = 6.0
    min_layers: Annotated[int, Field(ge=2, le=20)] = 3
    min_lateral: Annotated[float, Field(gt=0, le=30)] = 5.0
    vacuum: Annotated[float, Field(ge=6, le=40)] = 12.0
    fixed_layers: Annotated[int, Field(ge=0, le=10)] = 2
    layer_tolerance: Annotated[float, Field(gt=0, le=1.0)] = 0.3

    @model_validator(mode="after")
    def _check(self) -> SlabGeometry:
        if self.fixed_layers >= self.min_layers:
            raise ValueError(
                f"fixed_layers ({self.fixed_layers}) must be smaller than min_layers ({self.min_layers})"
            )
        return self


class Placement(_Strict):
    """Adsorbate placement, as fairchem-data-oc's modes.

    ``heuristic``: every symmetry-distinct top / bridge / hollow site (fcc and hcp distinguished);
    ``random``: ``n_random`` random (seeded) positions and rotations over the surface.
    At most ``max_per_system`` placements are kept per (bulk, facet termination, adsorbate).
    """

    modes: list[Literal["heuristic", "random"]] = ["heuristic"]
    n_random: Annotated[int, Field(ge=0, le=100)] = 0
    max_per_system: Annotated[int, Field(ge=1, le=200)] = 8

    @model_validator(mode="after")
    def _check(self) -> Placement:
        if not self.modes:
            raise ValueError("modes is empty; allowed: heuristic, random")
        if "random" in self.modes and self.n_random == 0:
            raise ValueError("mode random needs n_random >= 1")
        return self


class BulkSpec(_Strict):
    """One bulk to cut slabs from: a pure fcc metal or an A-B prototype (``lattice: fcc``), a pure hcp
    or bcc metal, or a crystal read from a file (``lattice: file``, its cell in ``structure``)."""

    a: str  # the metal; of a file bulk, its first element alphabetically
    b: str | None = None  # the second metal; of a file bulk, its other elements (alphabetically) joined by "-"
    prototype: Prototype | None = None
    lattice_constant: float  # Å: of the conventional cubic fcc cell; hcp and bcc: a; file: |a| of its cell
    seed: int = 0  # random alloys only
    lattice: Literal["fcc", "hcp", "bcc", "file"] = "fcc"
    c: float | None = None  # Å, hcp only
    name: str | None = None  # label of a bulks: entry that gives one (file bulks: the file's stem)
    #: file bulks: (symbols, fractional coordinates, cell rows in Å)
    structure: tuple[tuple[str, ...], tuple[tuple[float, float, float], ...],
                     tuple[tuple[float, float, float], ...]] | None = None
    facets: tuple[tuple[int, int, int], ...] | None = None  # None: the catalog's facets

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.lattice in ("hcp", "bcc"):
            return f"{self.a}-{self.lattice}"
        if self.b is None:
            return self.a
        p = self.prototype
        if p.kind == "L1_2":
            return (f"{self.a}3{self.b}" if p.formula == "A3B" else f"{self.a}{self.b}3") + "-L1_2"
        if p.kind == "L1_0":
            return f"{self.a}{self.b}-L1_0"
        return f"{self.a}{1 - p.fraction_b:g}{self.b}{p.fraction_b:g}-random"

    @property
    def prototype_label(self) -> str:
        if self.lattice != "fcc":
            return self.lattice
        return "fcc" if self.prototype is None else self.prototype.label


def _facet(value) -> tuple[int, int, int]:
    if isinstance(value, str):
        s = value.replace("(", "").replace(")", "").replace(",", " ").strip()
        parts = s.split() if " " in s else list(s) if s.lstrip("-").isdigit() else s.split()
        try:
            idx = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"facet {value!r} is not a Miller index like '111' or [2, 1, 1]") from None
    elif isinstance(value, (list, tuple)):
        try:
            idx = tuple(int(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"facet {value!r} is not a Miller index like '111' or [2, 1, 1]") from None
    else:
        raise ValueError(f"facet {value!r} is not a Miller index like '111' or [2, 1, 1]")
    if len(idx) == 4:
        raise ValueError(f"facet {value!r}: a 4-index (Miller-Bravais) facet is for hcp bulks (bulks: [{{element: Ru, "
                         f"facets: ['0001']}}]); facets: (fcc) need three integers in -3..3, not all zero")
    if len(idx) != 3 or all(i == 0 for i in idx) or any(abs(i) > 3 for i in idx):
        raise ValueError(f"facet {value!r}: need three integers in -3..3, not all zero")
    return idx


FACET_FORMS = "'111', '1 -1 0', [2, 1, 1]; hcp: Miller-Bravais '0001', '10-10', [1, 0, -1, 0]"


def lattice_facet(value, lattice: str) -> tuple[int, int, int]:
    """A facet of a ``bulks:`` entry as the 3-index ``(h, k, l)`` of the cell it is cut from.

    ``lattice``: ``fcc``, ``bcc``, ``hcp``, ``file`` or ``file-hexagonal`` (a file whose cell has
    a = b and gamma = 120 degrees), or ``any``. 4-index Miller-Bravais ``(h k i l)`` need a hexagonal
    lattice and ``i = -(h + k)``; they are stored as pymatgen's ``(h, k, l)`` (``'0001'`` -> (0, 0, 1),
    ``'10-10'`` -> (1, 0, 0)). An hcp facet given as a 3-index *string* (``'111'``) is refused as
    ambiguous (fcc (111) is hcp (0001)); pymatgen's hexagonal 3-index is accepted as a list.

    >>> lattice_facet("0001", "hcp"), lattice_facet("10-10", "hcp"), lattice_facet([1, 1, 0], "hcp")
    ((0, 0, 1), (1, 0, 0), (1, 1, 0))
    >>> lattice_facet("110", "bcc"), lattice_facet("1 -1 0", "file")
    ((1, 1, 0), (1, -1, 0))
    """
    bad = ValueError(f"facet {value!r} is not a Miller index like {FACET_FORMS}")
    if isinstance(value, bool):
        raise bad
    if isinstance(value, int):
        if 0 <= value < 100:
            raise ValueError(f"facet {value!r}: write facets as strings in YAML ('0001', '011'): a bare number "
                             "loses its leading zeros")
        value = str(value)
    is_str = isinstance(value, str)
    if is_str:
        text = value.strip().strip("()[]{}").strip()
        if re.fullmatch(r"(?:[+-]?\d)+", text):  # compact: one digit per index ('111', '10-10')
            tokens: list = re.findall(r"[+-]?\d", text)
        else:
            tokens = [t for t in re.split(r"[\s,;]+", text) if t]
    elif isinstance(value, (list, tuple)):
        tokens = list(value)
    else:
        raise bad
    if any(isinstance(t, bool) or (not isinstance(t, (int, str))) for t in tokens):
        raise bad
    try:
        idx = [int(t) for t in tokens]
    except ValueError:
        raise bad from None
    hexagonal = lattice in ("hcp", "file-hexagonal", "any")
    what = {"file": "this file's cell (not hexagonal)", "fcc": "an fcc lattice", "bcc": "a bcc lattice"}.get(lattice, lattice)
    if len(idx) == 4:
        if not hexagonal:
            raise ValueError(f"facet {value!r} is a 4-index (Miller-Bravais) facet; {what} has three indices (h k l), "
                             "only hcp (hexagonal) lattices take four")
        h, k, i, l = idx
        if i != -(h + k):
            raise ValueError(f"facet {value!r} is not a Miller-Bravais index: (h k i l) needs i = -(h + k) = {-(h + k)}")
        idx = [h, k, l]
    elif len(idx) == 3 and lattice == "hcp" and is_str:
        raise ValueError(f"facet {value!r}: hcp facets are written as Miller-Bravais (h k i l), e.g. '0001' (basal) "
                         "or '10-10' (prismatic); a 3-index string is ambiguous (fcc '111' is hcp '0001'): give "
                         "pymatgen's hexagonal 3-index as a list [h, k, l]")
    if len(idx) != 3:
        raise ValueError(f"facet {value!r}: need three integers (h k l)" + (" or four (h k i l)" if hexagonal else ""))
    if not any(idx) or any(abs(i) > 3 for i in idx):
        raise ValueError(f"facet {value!r}: indices must be in -3..3, not all zero")
    return tuple(idx)  # type: ignore[return-value]


def _facet_list(v, lattice: str) -> list[tuple[int, int, int]]:
    if not isinstance(v, list) or not v:
        raise ValueError("facets must be a non-empty list such as ['0001', '10-10'] or ['110']")
    out = [lattice_facet(f, lattice) for f in v]
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate facets in {v}")
    return out


def reference_symmetry(element: str) -> str | None:
    """The lattice of ``element``'s reference state in ASE (``fcc``, ``hcp``, ``bcc``, ``diamond``, ...)."""
    z = atomic_numbers.get(element)
    if not z or z >= len(reference_states) or not reference_states[z]:
        return None
    return reference_states[z].get("symmetry")


def _base_dir(info: ValidationInfo) -> Path | None:
    ctx = info.context or {}
    return Path(ctx["base_dir"]) if ctx.get("base_dir") is not None else None


class BulkEntry(_Strict):
    """One entry of ``bulks:``: a pure metal on a lattice, or an ordered crystal from a file.

    ``{element: Ru}`` (the lattice of ASE's reference state: Ru hcp, Fe bcc, Pt fcc; a and c/a from
    it unless ``a:`` / ``c:`` are given), ``{element: Cu, lattice: hcp, a: 2.55}`` (another lattice
    needs ``a``; hcp ``c`` defaults to the ideal sqrt(8/3) a), ``{file: bulks/CuZn-B2.cif, name:
    CuZn-B2}`` (CIF or POSCAR, path relative to the catalog file; used as given, Miller indices in
    its cell). ``facets``: this bulk's own; else the catalog's ``facets`` (fcc and files) or
    ``lattice_facets`` (hcp, bcc). A bare string ``Ru`` is ``{element: Ru}``.
    """

    element: str | None = None
    lattice: Literal["fcc", "hcp", "bcc"] | None = Field(None, validate_default=True)
    a: Annotated[float, Field(gt=1.5, lt=10.0)] | None = None  # Å
    c: Annotated[float, Field(gt=1.5, lt=20.0)] | None = None  # Å, hcp only
    file: str | None = None
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.+-]+$")] | None = None
    facets: list[tuple[int, int, int]] | None = None
    _structure: Any = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, v):
        if isinstance(v, str):
            return {"element": v}
        if not isinstance(v, dict):
            raise ValueError("a bulk is {element: Ru} (with optional lattice, a, c, facets) or "
                             "{file: bulks/CuZn-B2.cif, name: CuZn-B2}")
        unknown = [k for k in v if k not in cls.model_fields]
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}; allowed: {', '.join(cls.model_fields)}")
        return v

    @field_validator("element")
    @classmethod
    def _element(cls, v):
        if v is not None and (v not in atomic_numbers or v == "X"):
            raise ValueError(f"unknown element {v!r}")
        return v

    @field_validator("lattice")
    @classmethod
    def _lattice(cls, v, info: ValidationInfo):
        el = info.data.get("element")
        if v is not None or el is None:
            return v
        ref = reference_symmetry(el)
        if ref in ("fcc", "hcp", "bcc"):
            return ref
        raise ValueError(f"{el}'s reference state in ASE is {ref or 'unknown'}, not fcc, hcp or bcc: give "
                         "lattice: (fcc, hcp or bcc) and a: (Å)")

    @field_validator("file")
    @classmethod
    def _file(cls, v, info: ValidationInfo):
        if v is not None:
            from qecat_core.catalog.files import read_bulk_file, resolve_path

            read_bulk_file(resolve_path(v, _base_dir(info)))
        return v

    @field_validator("facets", mode="before")
    @classmethod
    def _facets(cls, v, info: ValidationInfo):
        if v is None:
            return v
        lattice = info.data.get("lattice") or "any"
        if info.data.get("file"):
            from qecat_core.catalog.files import read_bulk_file, resolve_path

            hexagonal = read_bulk_file(resolve_path(info.data["file"], _base_dir(info))).hexagonal
            lattice = "file-hexagonal" if hexagonal else "file"
        return _facet_list(v, lattice)

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> BulkEntry:
        if (self.element is None) == (self.file is None):
            raise ValueError("a bulk needs either element: (a pure metal, e.g. Ru) or file: (a CIF or POSCAR)"
                             + (", not both" if self.element else ""))
        if self.file is not None:
            for f in ("lattice", "a", "c"):
                if getattr(self, f) is not None:
                    raise ValueError(f"{f}: is read from the file; it is only for element: bulks")
            from qecat_core.catalog.files import read_bulk_file, resolve_path

            self._structure = read_bulk_file(resolve_path(self.file, _base_dir(info)))
            return self
        ref = reference_symmetry(self.element)
        if self.c is not None and self.lattice != "hcp":
            raise ValueError(f"c: is only for hcp, not {self.lattice}")
        if self.lattice != ref and self.a is None:
            raise ValueError(f"{self.element} is {ref or 'of unknown structure'} in ASE's reference states; "
                             f"lattice: {self.lattice} needs a: (Å)")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.file is not None:
            return Path(self.file).stem
        return self.element if self.lattice == "fcc" else f"{self.element}-{self.lattice}"

    @property
    def structure(self):
        """The file's crystal (:class:`qecat_core.catalog.files.BulkStructure`); None for element bulks."""
        return self._structure

    def elements(self) -> list[str]:
        return [self.element] if self.element else self._structure.elements

    def lattice_constants(self) -> tuple[float, float | None]:
        """(a, c) in Å of an hcp or bcc element bulk: as given, else ASE's reference state."""
        ref = reference_states[atomic_numbers[self.element]]
        same = ref.get("symmetry") == self.lattice
        a = self.a if self.a is not None else float(ref["a"])
        if self.lattice != "hcp":
            return a, None
        if self.c is not None:
            return a, self.c
        ratio = float(ref["c/a"]) if same and "c/a" in ref else (8 / 3) ** 0.5
        return a, a * ratio


class LatticeFacets(_Strict):
    """Facets of the hcp and bcc bulks that give none of their own: their natural facets by default,
    hcp (0001) and (10-10), bcc (110) and (100)."""

    hcp: list[tuple[int, int, int]] = [(0, 0, 1), (1, 0, 0)]
    bcc: list[tuple[int, int, int]] = [(1, 1, 0), (1, 0, 0)]

    @field_validator("hcp", mode="before")
    @classmethod
    def _hcp(cls, v):
        return _facet_list(v, "hcp")

    @field_validator("bcc", mode="before")
    @classmethod
    def _bcc(cls, v):
        return _facet_list(v, "bcc")


ADSORBATE_FORMS = "an OC20 SMILES such as '*OH', {smiles: CCO, binding: O} or {file: mol.xyz, binding: [0]}"


class AdsorbateEntry(_Strict):
    """One entry of ``adsorbates:``: an OC20 SMILES (a plain string, ``'*OH'``), a molecule by SMILES
    (``{smiles: CCO, binding: O}``) or from a file (``{file: mol.xyz, binding: [2]}``).

    ``binding``: atom indices or elements (the first atom of that element not already chosen), one or
    a list; default ``[0]``. SMILES indices count the heavy atoms in SMILES order (the atoms RDKit
    reads, hydrogens implicit); file indices count the file's atoms. :attr:`name` is the OC20-style
    SMILES with ``*`` before each binding atom (``*OCC``): the ``adsorbate`` of the candidates.
    """

    oc20: str | None = None  # what a plain string in the YAML becomes
    smiles: str | None = None
    file: str | None = None
    binding: list[int | str] | None = None
    _name: str = PrivateAttr(default="")
    _binding: tuple[int, ...] = PrivateAttr(default=())
    _molecule: Any = PrivateAttr(default=None)  # file molecules: Atoms
    _digest: str | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, v):
        if isinstance(v, str):
            known = oc20_adsorbate_smiles()
            if v not in known:
                raise ValueError(
                    f"unknown adsorbate SMILES {v!r}; allowed: the OC20 set of fairchem-data-oc, "
                    f"e.g. {', '.join(known[:8])} (see `qecat adsorbates`), or any molecule as "
                    "{smiles: CCO, binding: O}")
            return {"oc20": v}
        if not isinstance(v, dict):
            raise ValueError(f"an adsorbate is {ADSORBATE_FORMS}")
        unknown = [k for k in v if k not in cls.model_fields]
        if unknown:
            raise ValueError(f"unknown field {unknown[0]!r}; allowed: smiles, file, binding")
        return v

    @field_validator("oc20")
    @classmethod
    def _oc20(cls, v):
        if v is not None and v not in oc20_adsorbate_smiles():
            raise ValueError(f"unknown OC20 adsorbate {v!r} (see `qecat adsorbates`)")
        return v

    @field_validator("smiles")
    @classmethod
    def _smiles(cls, v):
        if v is not None:
            from qecat_core.catalog.adsorbates import parse_smiles

            parse_smiles(v)
        return v

    @field_validator("file")
    @classmethod
    def _file(cls, v, info: ValidationInfo):
        if v is not None:
            from qecat_core.catalog.files import read_molecule_file, resolve_path

            read_molecule_file(resolve_path(v, _base_dir(info)))
        return v

    @field_validator("binding", mode="before")
    @classmethod
    def _binding_list(cls, v, info: ValidationInfo):
        if v is None:
            return v
        items = v if isinstance(v, list) else [v]
        symbols, what, unit = cls._atoms_of(info.data, _base_dir(info))
        if symbols is not None:
            from qecat_core.catalog.adsorbates import resolve_binding

            resolve_binding(symbols, items, what, unit)
        return items

    @staticmethod
    def _atoms_of(data: dict, base_dir) -> tuple[list[str] | None, str, str]:
        """(symbols the binding indices count, how to name the molecule, what they are)."""
        if data.get("smiles"):
            from qecat_core.catalog.adsorbates import parse_smiles

            mol = parse_smiles(data["smiles"])
            return [a.GetSymbol() for a in mol.GetAtoms()], f"SMILES {data['smiles']!r}", "heavy atoms"
        if data.get("file"):
            from qecat_core.catalog.files import read_molecule_file, resolve_path

            atoms = read_molecule_file(resolve_path(data["file"], base_dir))
            return atoms.get_chemical_symbols(), f"{data['file']}", "atoms"
        return None, "", ""

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> AdsorbateEntry:
        given = [k for k in ("oc20", "smiles", "file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"an adsorbate is {ADSORBATE_FORMS}" + (f"; got both {given[0]} and {given[1]}"
                                                                     if len(given) > 1 else ""))
        from qecat_core.catalog import adsorbates as ads

        if self.oc20 is not None:
            if self.binding is not None:
                raise ValueError("binding: is only for smiles: and file: adsorbates (OC20 ones bring theirs)")
            self._name = self.oc20
            self._binding = ads.get_adsorbate(self.oc20).binding_indices
            return self
        symbols, what, unit = self._atoms_of({"smiles": self.smiles, "file": self.file}, _base_dir(info))
        self._binding = ads.resolve_binding(symbols, self.binding if self.binding is not None else [0], what, unit)
        if self.smiles is not None:
            self._name = ads.starred_smiles(ads.parse_smiles(self.smiles), self._binding)
        else:
            from qecat_core.catalog.files import file_digest, read_molecule_file, resolve_path

            path = resolve_path(self.file, _base_dir(info))
            self._molecule = read_molecule_file(path)
            self._digest = file_digest(path)
            self._name = ads.perceive_smiles(symbols, self._molecule.positions, self._binding, what)
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        if self.oc20 is not None:  # as written: the default catalog's hash does not move
            return self.oc20
        return {k: v for k, v in handler(self).items() if v is not None}

    @property
    def name(self) -> str:
        """OC20-style SMILES, ``*`` before each binding atom (``*OH``, ``*OCC``)."""
        return self._name

    @property
    def binding_indices(self) -> tuple[int, ...]:
        return self._binding

    def adsorbate(self):
        """The :class:`qecat_core.catalog.adsorbates.Adsorbate` (geometry, binding atoms) to place."""
        from qecat_core.catalog import adsorbates as ads

        if self.oc20 is not None:
            return ads.get_adsorbate(self.oc20)
        if self.smiles is not None:
            return ads.adsorbate_from_smiles(self._name, self.smiles, self._binding)
        return ads.adsorbate_from_atoms(self._name, self._molecule, self._binding)

    def elements(self) -> list[str]:
        from qecat_core.catalog import adsorbates as ads

        if self.oc20 is not None:
            return sorted(set(ads.get_adsorbate(self.oc20).atoms.get_chemical_symbols()))
        if self.smiles is not None:
            return ads.smiles_elements(self.smiles)
        return sorted(set(self._molecule.get_chemical_symbols()))


class Catalog(_Strict):
    """The screening space. See ``catalogs/bimetallics.yaml`` (fcc alloys) and
    ``catalogs/organics-on-metals.yaml`` (``bulks:`` and SMILES adsorbates) for commented examples.

    ``metals``/``pairs``/``prototypes`` span fcc alloys; ``bulks`` adds pure fcc, hcp and bcc metals
    and crystals from files (:class:`BulkEntry`). At least one of ``metals`` and ``bulks`` is needed.
    """

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    seed: int = 0
    metals: list[str] = []
    pairs: list[str] | Literal["all"] = "all"
    include_pure: bool = True
    bulks: list[BulkEntry] = []
    prototypes: list[Prototype] = [
        Prototype(kind="L1_2", formula="A3B"),
        Prototype(kind="L1_2", formula="AB3"),
        Prototype(kind="L1_0"),
    ]
    lattice: Literal["vegard", "relaxed"] = "vegard"
    lattice_calculator: str = "emt"  # for lattice: relaxed; emt | chgnet | MODULE:FACTORY
    lattice_constants: dict[str, Annotated[float, Field(gt=1.5, lt=7.0)]] = {}
    facets: Annotated[list[tuple[int, int, int]], Field(min_length=1)] = [(1, 1, 1), (1, 0, 0), (1, 1, 0), (2, 1, 1)]
    lattice_facets: LatticeFacets = LatticeFacets()
    slab: SlabGeometry = SlabGeometry()
    adsorbates: Annotated[list[AdsorbateEntry], Field(min_length=1)]
    placement: Placement = Placement()

    @field_validator("metals")
    @classmethod
    def _metals(cls, v: list[str]) -> list[str]:
        allowed = fcc_metals()
        for m in v:
            if m not in allowed:
                raise ValueError(
                    f"unknown or non-fcc element {m!r}; allowed: {', '.join(sorted(allowed))}; hcp and bcc "
                    f"metals go under bulks: (e.g. bulks: [{{element: Ru}}, {{element: Fe}}])"
                )
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate metals in {v}")
        return v

    @field_validator("facets", mode="before")
    @classmethod
    def _facets(cls, v):
        if not isinstance(v, list):
            raise ValueError("facets must be a list such as ['111', '100', [2, 1, 1]]")
        out = [_facet(f) for f in v]
        if len(set(out)) != len(out):
            raise ValueError(f"duplicate facets in {v}")
        return out

    @field_validator("bulks")
    @classmethod
    def _bulks(cls, v: list[BulkEntry], info: ValidationInfo) -> list[BulkEntry]:
        pure = list(info.data.get("metals", [])) if info.data.get("include_pure", True) else []
        seen = set(pure)
        for entry in v:
            if entry.label in seen:
                where = "metals: (include_pure) and bulks:" if entry.label in pure else "bulks:"
                raise ValueError(f"bulk {entry.label!r} is listed twice ({where}); give one of them a name:")
            seen.add(entry.label)
        return v

    @field_validator("adsorbates")
    @classmethod
    def _adsorbates(cls, v: list[AdsorbateEntry]) -> list[AdsorbateEntry]:
        names = [a.name for a in v]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            raise ValueError(f"duplicate adsorbates in {names}: {dup!r} twice")
        return v

    @model_validator(mode="after")
    def _pairs(self) -> Catalog:
        if isinstance(self.pairs, list):
            if not self.pairs:
                raise ValueError("pairs is empty; give 'all' or a list such as ['Cu-Pt', 'Ag-Pd']")
            for p in self.pairs:
                parts = p.split("-")
                if len(parts) != 2 or parts[0] == parts[1]:
                    raise ValueError(f"pairs: {p!r} is not two different metals joined by '-', e.g. 'Cu-Pt'")
                for m in parts:
                    if m not in self.metals:
                        raise ValueError(f"pairs: {p!r} uses {m!r}, which is not in metals {self.metals}")
        if not self.metals and not self.bulks:
            raise ValueError("nothing to enumerate: give metals: (fcc alloys) or bulks: (e.g. [{element: Ru}])")
        fcc_entries = [b.element for b in self.bulks if b.element and b.lattice == "fcc"]
        for m in self.lattice_constants:
            if m not in self.metals and m not in fcc_entries:
                raise ValueError(f"lattice_constants: {m!r} is not in metals {self.metals} (nor an fcc bulks: entry)")
        if self.pair_list() and not self.prototypes:
            raise ValueError("prototypes is empty but pairs are given")
        return self

    # ----------------------------------------------------------------------------------------
    def pair_list(self) -> list[tuple[str, str]]:
        if self.pairs == "all":
            return list(itertools.combinations(self.metals, 2))
        return [tuple(p.split("-")) for p in self.pairs]

    def elements(self) -> dict[str, list[str]]:
        """The chemical elements the candidates will contain: ``{"metals": [...], "adsorbates": [...]}``
        (metals of the pure bulks and pairs; elements of the adsorbates), each sorted."""
        used = set(self.metals) if self.include_pure else set()
        used |= {m for pair in self.pair_list() for m in pair}
        used |= {el for b in self.bulks for el in b.elements()}
        ads = {el for a in self.adsorbates for el in a.elements()}
        return {"metals": sorted(used), "adsorbates": sorted(ads)}

    def adsorbate_names(self) -> list[str]:
        """The adsorbates' OC20-style SMILES (``*`` before the binding atoms), as the candidates name them."""
        return [a.name for a in self.adsorbates]

    def lattice_constant(self, metal: str) -> float:
        return self.lattice_constants.get(metal, fcc_metals()[metal])

    def content_hash(self) -> str:
        """A stable hash of the validated catalog (not of its YAML formatting), and of the bytes of the
        files it names. Fields added after the first catalogs (``bulks``, ``lattice_facets``) count
        only when they differ from their defaults, so those catalogs keep their hashes."""
        data = self.model_dump(mode="json")
        for key, default in _LATER_FIELDS.items():
            if data.get(key) == default:
                data.pop(key, None)
        files = [b.structure.digest for b in self.bulks if b.file is not None]
        files += [a._digest for a in self.adsorbates if a.file is not None]
        if files:
            data["file_digests"] = files
        blob = json.dumps(data, sort_keys=True)
        return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


#: fields added to the catalog later, with their defaults as dumped (left out of the hash when default)
_LATER_FIELDS = {"bulks": [], "lattice_facets": LatticeFacets().model_dump(mode="json")}


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a catalog YAML; raise :class:`CatalogError` with a one-line message.

    Paths in it (``bulks: [{file: ...}]``, ``adsorbates: [{file: ...}]``) are relative to its folder.
    """
    path = Path(path)
    data = read_yaml(path, "catalog file", CatalogError)
    try:
        return Catalog.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as err:
        raise CatalogError(validation_message(str(path), err, Catalog)) from None
