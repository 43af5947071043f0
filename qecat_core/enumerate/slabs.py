"""Slabs cut from the catalog's bulk prototypes, with OC20 tags and constraints.

Slab *templates* depend only on the prototype geometry and the Miller index, not on the metals:
they are cut once (pymatgen's SlabGenerator, OC20's convention of listing the flipped bottom as
its own termination with ``top=False``) at a reference lattice constant and then scaled to each
alloy's lattice constant (Vegard's law or relaxed), so enumeration is fast and every alloy of a
facet has the same layer count and supercell.

*Native* bulks (pure hcp and bcc metals, crystals from files; :func:`qecat_core.catalog.bulks.is_native`)
get templates of their own, cut from the bulk itself at its lattice constants and with its species
(``bulk`` of :func:`slab_templates`), realised without scaling. Their terminations are told apart
by geometry (hcp (10-10) has two of the same composition), the bottom termination is turned up by a
180 degree rotation about x (physical for non-centrosymmetric crystals too), and atoms are wrapped
into the cell with a margin so that a coordinate at 1 - 1e-16 and one at 1e-16 land alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms

from qecat_core.catalog.bulks import _PLACEHOLDER_A, A_REF, bulk_atoms
from qecat_core.catalog.schema import BulkSpec, SlabGeometry
from qecat_core.common.tags import TAG_SUBSURFACE, TAG_SURFACE


def atomic_layers(z: np.ndarray, tol: float) -> np.ndarray:
    """Layer index of each height (0 = bottom), joining heights closer than ``tol`` Å."""
    order = np.argsort(z)
    layer = np.empty(len(z), dtype=int)
    current, last = 0, None
    for i in order:
        if last is not None and z[i] - last > tol:
            current += 1
        layer[i] = current
        last = z[i]
    return layer


@dataclass(frozen=True, eq=False)  # hashed by identity: templates are cached singletons
class SlabTemplate:
    """A slab at the reference lattice constant with placeholder species."""

    kind: str
    miller: tuple[int, int, int]
    shift: float
    top: bool
    atoms: Atoms  # tiled, orthogonal c, slab starting at z = 0, no vacuum tags yet
    n_layers: int
    native: bool = False  # cut from the bulk itself (species and size as they are), not at A_REF


#: fractional coordinates within this of 1 wrap to ~0 (native templates), so noise cannot flip them
WRAP_MARGIN = 1e-8


def _wrap_robust(atoms: Atoms) -> Atoms:
    """Wrap the in-plane fractional coordinates into [-WRAP_MARGIN, 1 - WRAP_MARGIN)."""
    f = atoms.get_scaled_positions(wrap=False)
    f[:, :2] -= np.floor(f[:, :2] + WRAP_MARGIN)
    atoms.set_scaled_positions(f)
    return atoms


def _slab_to_atoms(slab, native: bool = False) -> Atoms:
    from pymatgen.io.ase import AseAtomsAdaptor

    m = AseAtomsAdaptor.get_atoms(slab.get_orthogonal_c_slab())
    atoms = Atoms(m.numbers, positions=m.positions, cell=m.cell, pbc=True)
    if native:
        return _wrap_robust(atoms)
    atoms.wrap()
    return atoms


def _turn_over(atoms: Atoms) -> Atoms:
    """The slab turned upside down by a 180 degree rotation about x (a proper rotation: the bottom
    termination as it is, for any crystal). In-plane vectors a, b become (ax, -ay), (bx, -by), listed
    as b, a to keep the cell right-handed."""
    out = atoms.copy()
    R = np.diag([1.0, -1.0, -1.0])
    cell = np.array(atoms.cell)
    new_cell = np.array([cell[1] @ R, cell[0] @ R, cell[2]])
    out.set_cell(new_cell, scale_atoms=False)
    out.positions = atoms.positions @ R
    out.positions[:, 2] -= out.positions[:, 2].min()
    return _wrap_robust(out)


def _flip(atoms: Atoms) -> Atoms:
    """Turn a slab upside down (its bottom termination becomes the top) by point inversion.

    The cell is kept (a lattice is inversion symmetric); fcc-based bulks are centrosymmetric, so
    this is the physical bottom termination seen from above.
    """
    out = atoms.copy()
    out.positions = -out.positions
    out.positions[:, 2] -= out.positions[:, 2].min()
    out.wrap()
    return out


_TEMPLATES: dict[tuple, tuple[SlabTemplate, ...]] = {}


def slab_templates(kind: str, miller: tuple[int, int, int], min_thickness: float, min_layers: int,
                   min_lateral: float, layer_tol: float, bulk: Atoms | None = None) -> tuple[SlabTemplate, ...]:
    """All distinct terminations of ``kind`` cut along ``miller``, at :data:`A_REF`.

    Thickness and lateral size are in Å at the reference lattice constant; callers pass the values
    scaled by ``A_REF / a_min`` so the smallest alloy still meets the catalog's minimum.
    ``bulk``: the cell of a native bulk (``kind`` names it, :func:`qecat_core.catalog.bulks.geometry_kind`),
    cut as it is, sizes in Å as given.
    """
    key = (kind, tuple(miller), min_thickness, min_layers, min_lateral, layer_tol)
    if key not in _TEMPLATES:
        _TEMPLATES[key] = _cut_templates(*key) if bulk is None else _cut_templates(*key, bulk)
    return _TEMPLATES[key]


def _cut_templates(kind, miller, min_thickness, min_layers, min_lateral, layer_tol,
                   bulk_cell: Atoms | None = None) -> tuple[SlabTemplate, ...]:
    from pymatgen.core.surface import SlabGenerator
    from pymatgen.io.ase import AseAtomsAdaptor

    native = bulk_cell is not None
    bulk = AseAtomsAdaptor.get_structure(bulk_cell if native else bulk_atoms(kind))
    size = min_thickness
    for _attempt in range(8):
        gen = SlabGenerator(bulk, miller, min_slab_size=size, min_vacuum_size=10.0, lll_reduce=True,
                            center_slab=True, primitive=True, max_normal_search=1)
        slabs = gen.get_slabs(symmetrize=False)
        if not slabs:
            raise ValueError(f"pymatgen found no slab for {kind} {miller}")
        z0 = _slab_to_atoms(slabs[0], native).positions[:, 2]
        if atomic_layers(z0, layer_tol).max() + 1 >= min_layers and np.ptp(z0) >= min_thickness:
            break
        size += 1.5
    out: list[SlabTemplate] = []
    seen: set[tuple] = set()
    for slab in slabs:
        flips = [(False, True)] if slab.is_symmetric() else [(False, True), (True, False)]
        base = _slab_to_atoms(slab, native)
        for do_flip, top in flips:
            atoms = (_turn_over(base) if native else _flip(base)) if do_flip else base
            atoms.positions[:, 2] -= atoms.positions[:, 2].min()
            atoms = _trim_bottom(atoms, min_thickness, min_layers, layer_tol)
            # tile laterally to at least min_lateral (Å) along both in-plane vectors
            reps = [max(1, int(np.ceil(min_lateral / np.linalg.norm(atoms.cell[i, :2])))) for i in (0, 1)]
            # for non-orthogonal cells use the in-plane heights instead of vector lengths
            area = abs(np.cross(atoms.cell[0, :2], atoms.cell[1, :2]))
            for i in (0, 1):
                h = area / np.linalg.norm(atoms.cell[1 - i, :2])
                reps[i] = max(reps[i], int(np.ceil(min_lateral / h)))
            atoms = atoms.repeat((reps[0], reps[1], 1))
            if native:
                if any(_same_termination(atoms, t.atoms, layer_tol) for t in out):
                    continue
            else:
                key = _termination_key(atoms, layer_tol)
                if key in seen:
                    continue
                seen.add(key)
            nl = int(atomic_layers(atoms.positions[:, 2], layer_tol).max() + 1)
            out.append(SlabTemplate(kind, miller, round(float(slab.shift), 4), top, atoms, nl, native))
    return tuple(out)


def _depth_profile(atoms: Atoms) -> list[tuple[str, np.ndarray]]:
    """Per element, the sorted depths (Å) of its atoms below the topmost atom."""
    z = atoms.positions[:, 2]
    d = z.max() - z
    syms = np.array(atoms.get_chemical_symbols())
    return [(el, np.sort(d[syms == el])) for el in sorted(set(syms))]


def _same_termination(a: Atoms, b: Atoms, tol: float) -> bool:
    """Whether two native templates are the same slab seen from the top: same atoms, same in-plane
    area, and the same depths of each element's atoms (within ``tol`` / 3, far above noise)."""
    if len(a) != len(b) or sorted(a.get_chemical_symbols()) != sorted(b.get_chemical_symbols()):
        return False
    area = lambda x: abs(np.linalg.det(np.array(x.cell)[:2, :2]))  # noqa: E731
    if abs(area(a) - area(b)) > 1e-3 * area(a):
        return False
    return all(ea == eb and np.abs(da - db).max() < tol / 3
               for (ea, da), (eb, db) in zip(_depth_profile(a), _depth_profile(b)))


def _trim_bottom(atoms: Atoms, min_thickness: float, min_layers: int, tol: float) -> Atoms:
    """Drop bottom layers beyond what ``min_layers`` and ``min_thickness`` (Å, between the top and
    bottom layer centres) need; pymatgen often cuts thicker slabs than asked for."""
    z = atoms.positions[:, 2]
    layer = atomic_layers(z, tol)
    n = layer.max() + 1
    centres = np.array([z[layer == k].mean() for k in range(n)])
    keep_from = 0
    for k in range(n):  # lowest layer we may start from
        if n - k >= min_layers and centres[-1] - centres[k] >= min_thickness:
            keep_from = k
    out = atoms[layer >= keep_from]
    out.positions[:, 2] -= out.positions[:, 2].min()
    return out


def _termination_key(atoms: Atoms, tol: float) -> tuple:
    """Composition of the top two layers: identical keys mean the same termination."""
    layer = atomic_layers(atoms.positions[:, 2], tol)
    top = layer.max()
    return tuple(tuple(sorted(np.array(atoms.get_chemical_symbols())[layer == top - k])) for k in (0, 1)) + (
        len(atoms),
    )


def realize_slab(template: SlabTemplate, spec: BulkSpec, geom: SlabGeometry, seed: int) -> Atoms:
    """The template with the bulk's metals, lattice constant, vacuum, OC20 tags and constraints.

    Random alloys substitute B for ``fraction_b`` of the sites (exact count, seeded by ``seed``).
    Tags: the bottom ``geom.fixed_layers`` layers are 0 (fixed with FixAtoms), the rest 1.
    """
    atoms = template.atoms.copy()
    scale = 1.0 if template.native else spec.lattice_constant / A_REF
    if not template.native:
        atoms.set_cell(atoms.cell * scale, scale_atoms=True)
    symbols = np.array(atoms.get_chemical_symbols(), dtype=object)
    if template.native:
        pass  # the bulk's own species
    elif spec.b is None:
        symbols[:] = spec.a
    elif spec.prototype.kind == "random":
        n_b = int(round(spec.prototype.fraction_b * len(atoms)))
        rng = np.random.default_rng(seed)
        symbols[:] = spec.a
        symbols[rng.choice(len(atoms), size=n_b, replace=False)] = spec.b
    else:
        a, b = (spec.a, spec.b) if spec.prototype.formula != "AB3" else (spec.b, spec.a)
        symbols = np.where(symbols == _PLACEHOLDER_A, a, b)
    atoms.set_chemical_symbols(list(symbols))
    # vacuum: slab from z = 0 to thickness, then `vacuum` Å of empty space above
    atoms.positions[:, 2] -= atoms.positions[:, 2].min()
    thickness = atoms.positions[:, 2].max()
    atoms.cell[2] = [0, 0, thickness + geom.vacuum]
    atoms.pbc = True
    layer = atomic_layers(atoms.positions[:, 2], geom.layer_tolerance * scale)
    tags = np.where(layer < geom.fixed_layers, TAG_SUBSURFACE, TAG_SURFACE)
    atoms.set_tags(tags)
    atoms.set_constraint(FixAtoms(mask=tags == TAG_SUBSURFACE))
    return atoms
