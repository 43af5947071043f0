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
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from ase.data import atomic_numbers, reference_states
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from qecat_core.common.config import load_yaml_model
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
    """One bulk to cut slabs from: a pure fcc metal or an A-B prototype."""

    a: str
    b: str | None = None
    prototype: Prototype | None = None
    lattice_constant: float  # Å, of the conventional cubic fcc cell
    seed: int = 0  # random alloys only

    @property
    def label(self) -> str:
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
    if len(idx) != 3 or all(i == 0 for i in idx) or any(abs(i) > 3 for i in idx):
        raise ValueError(f"facet {value!r}: need three integers in -3..3, not all zero")
    return idx


class Catalog(_Strict):
    """The screening space. See ``catalogs/bimetallics.yaml`` for a commented example."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    seed: int = 0
    metals: Annotated[list[str], Field(min_length=1)]
    pairs: list[str] | Literal["all"] = "all"
    include_pure: bool = True
    prototypes: list[Prototype] = [
        Prototype(kind="L1_2", formula="A3B"),
        Prototype(kind="L1_2", formula="AB3"),
        Prototype(kind="L1_0"),
    ]
    lattice: Literal["vegard", "relaxed"] = "vegard"
    lattice_calculator: str = "emt"  # for lattice: relaxed; emt | chgnet | MODULE:FACTORY
    lattice_constants: dict[str, Annotated[float, Field(gt=1.5, lt=7.0)]] = {}
    facets: Annotated[list[tuple[int, int, int]], Field(min_length=1)] = [(1, 1, 1), (1, 0, 0), (1, 1, 0), (2, 1, 1)]
    slab: SlabGeometry = SlabGeometry()
    adsorbates: Annotated[list[str], Field(min_length=1)]
    placement: Placement = Placement()

    @field_validator("metals")
    @classmethod
    def _metals(cls, v: list[str]) -> list[str]:
        allowed = fcc_metals()
        for m in v:
            if m not in allowed:
                raise ValueError(
                    f"unknown or non-fcc element {m!r}; allowed: {', '.join(sorted(allowed))}"
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

    @field_validator("adsorbates")
    @classmethod
    def _adsorbates(cls, v: list[str]) -> list[str]:
        known = oc20_adsorbate_smiles()
        for s in v:
            if s not in known:
                raise ValueError(
                    f"unknown adsorbate SMILES {s!r}; allowed: the OC20 set of fairchem-data-oc, "
                    f"e.g. {', '.join(known[:8])} (see `qecat adsorbates`)"
                )
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate adsorbates in {v}")
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
        for m in self.lattice_constants:
            if m not in self.metals:
                raise ValueError(f"lattice_constants: {m!r} is not in metals {self.metals}")
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
        from qecat_core.catalog.adsorbates import get_adsorbate

        used = set(self.metals) if self.include_pure else set()
        used |= {m for pair in self.pair_list() for m in pair}
        ads = {el for a in self.adsorbates for el in get_adsorbate(a).atoms.get_chemical_symbols()}
        return {"metals": sorted(used), "adsorbates": sorted(ads)}

    def lattice_constant(self, metal: str) -> float:
        return self.lattice_constants.get(metal, fcc_metals()[metal])

    def content_hash(self) -> str:
        """A stable hash of the validated catalog (not of its YAML formatting)."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate a catalog YAML; raise :class:`CatalogError` with a one-line message."""
    return load_yaml_model(path, Catalog, "catalog file", CatalogError)
