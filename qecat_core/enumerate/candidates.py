"""Enumerate adsorbate-slab candidates from a catalog and shard them into ``.aselmdb`` files.

``enumerate_catalog(catalog, out_dir)`` writes ``out_dir/shards/shard-NNNNN.aselmdb`` (fairchem's
AseDBDataset reads them) and ``out_dir/candidates.parquet`` (one row per candidate: sid and the
metadata, the shard and row it lives in). Candidate ids (``sid``) are content hashes of the
initial structure and adsorbate, so the same catalog always gives the same sids and editing one
catalog entry changes only the sids of what that entry produces.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from ase import Atoms

from qecat_core.catalog.adsorbates import Adsorbate
from qecat_core.catalog.bulks import (
    A_REF,
    bulk_formula,
    bulk_specs,
    geometry_kind,
    is_native,
    template_bulk,
)
from qecat_core.catalog.schema import BulkSpec, Catalog
from qecat_core.common.atomic import write_json_atomic
from qecat_core.common.errors import QecatError
from qecat_core.common.hashing import short_hash, structure_hash, unit_hash
from qecat_core.common.pools import Pool, WorkerDied, some
from qecat_core.enumerate.infer import oc20_name, slab_formula
from qecat_core.enumerate.placement import CLEARANCE, classify_site, place
from qecat_core.enumerate.sites import install_templates, template_sites
from qecat_core.enumerate.slabs import realize_slab, slab_templates
from qecat_core.enumerate.text import (
    configuration_text,
    miller_text,
    slab_neighbor_symbols,
)
from qecat_core.results.schema import CANDIDATES

#: Bump when the same catalog would enumerate differently (site naming, placement choice), so that
#: cached enumerations (``manifest.json``) are redone. 2: fcc/hcp hollows on every close-packed
#: surface, decided from the geometry rather than the catalog's Miller index. 3: sites judged
#: equivalent by their surroundings (``qecat_core.enumerate.sites``) and sids hashed from noise-proof position
#: bins (:func:`structure_hash`), so that every machine enumerates the same candidates.
ENUMERATION_VERSION = 3

CANDIDATE_COLUMNS = list(CANDIDATES)


@dataclass
class Candidate:
    atoms: Atoms
    meta: dict


def _template_args(catalog: Catalog, spec: BulkSpec | None = None) -> tuple[float, int, float, float]:
    """Template cutting sizes at A_REF such that the smallest fcc-based alloy still meets the minimum;
    for a native bulk (hcp, bcc, file: cut at its own size) the catalog's sizes as they are."""
    g = catalog.slab
    if spec is not None and is_native(spec):
        return g.min_thickness, g.min_layers, g.min_lateral, g.layer_tolerance
    a_min = min((b.lattice_constant for b in bulk_specs(catalog) if not is_native(b)), default=A_REF)
    s = A_REF / a_min
    return g.min_thickness * s, g.min_layers, g.min_lateral * s, g.layer_tolerance


def _templates(spec: BulkSpec, miller, targs):
    kind = geometry_kind(spec)
    if is_native(spec):
        return slab_templates(kind, tuple(miller), *targs, bulk=template_bulk(spec))
    return slab_templates(kind, tuple(miller), *targs)


#: a top layer is close-packed when every atom has 6 in-layer neighbours within this factor of the nearest
CLOSE_PACKED_TOL = 1.05


def close_packed_top(slab: Atoms, layer_tol: float) -> bool:
    """Whether the slab's top layer is a close-packed (triangular) net: every atom of it has exactly
    six in-layer neighbours (periodic images included) at the nearest in-layer distance, within 5%.
    fcc (111) and hcp (0001) are; bcc (110) (4 + 2 neighbours at two distances) and square nets are not.
    """
    from qecat_core.enumerate.slabs import atomic_layers

    layer = atomic_layers(slab.positions[:, 2], layer_tol)
    top = slab.positions[layer == layer.max()]
    if len(top) < 1:
        return False
    cell = np.array(slab.cell)
    # the in-plane lattice itself: images of each atom too (a 1-atom layer cell has only its images)
    shifts = np.array([i * cell[0, :2] + j * cell[1, :2] for i in (-2, -1, 0, 1, 2) for j in (-2, -1, 0, 1, 2)])
    pts = (top[None, :, :2] + shifts[:, None, :]).reshape(-1, 2)
    dists = []
    for p in top[:, :2]:
        d = np.linalg.norm(pts - p, axis=1)
        dists.append(d[d > 1e-6])
    nearest = min(d.min() for d in dists)
    return all(int((d < CLOSE_PACKED_TOL * nearest).sum()) == 6 for d in dists)


def _named(entry) -> tuple[str, Adsorbate]:
    """(name, adsorbate) of a catalog entry; a molecule given by SMILES or file that is an OC20 adsorbate
    binding through the same atom takes its OC20 name (``CO`` bound by O is ``*OHCH3``), so that the
    candidates' names and strings are what :mod:`qecat_core.enumerate.infer` reads from their structures."""
    ads = entry.adsorbate()
    if entry.oc20 is None:
        name = oc20_name(ads.atoms, ads.binding_indices[0])
        if name is not None:
            return name, dataclasses.replace(ads, smiles=name)
    return entry.name, ads


def candidates_for_bulk(catalog: Catalog, spec: BulkSpec, catalog_hash: str = "") -> list[Candidate]:
    """All candidates of one bulk: every facet and termination, adsorbate and placement."""
    targs = _template_args(catalog, spec)
    native = is_native(spec)
    is_random = spec.prototype is not None and spec.prototype.kind == "random"
    out: list[Candidate] = []
    adsorbates = [_named(entry) for entry in catalog.adsorbates]
    for miller in (spec.facets or catalog.facets):
        for t_index, template in enumerate(_templates(spec, miller, targs)):
            slab_seed = int(short_hash(spec.seed, miller, t_index, size=4), 16)
            slab = realize_slab(template, spec, catalog.slab, seed=slab_seed)
            slab_id = "slab-" + structure_hash(slab)
            formula = bulk_formula(spec) or slab_formula(slab, order="appearance")
            sites = template_sites(template, symm_reduce=not is_random)
            cell2 = np.array(slab.cell)[:2, :2]
            slab_nbrs = slab_neighbor_symbols(slab)
            # fcc/hcp hollows are a close-packed-surface notion: a triangular top layer, whatever the index
            # in the cell the slab was cut from (the cubic (111), so also the primitive (100) of a pure or
            # random fcc slab; hcp (0001); an L1_2 (111) from a file)
            close_packed = close_packed_top(slab, catalog.slab.layer_tolerance * (1.0 if native else
                                                                                  spec.lattice_constant / A_REF))
            for smiles, ads in adsorbates:
                oriented = ads.oriented()
                b = ads.binding_indices[0]
                system_id = "sys-" + short_hash(slab_id, smiles)
                placements: list[tuple[str, np.ndarray, float]] = []
                if "heuristic" in catalog.placement.modes:
                    site_ids = range(len(sites))
                    if len(sites) > 4 * catalog.placement.max_per_system:
                        # many sites (random alloys): place a hash-ranked subset only
                        site_ids = sorted(site_ids, key=lambda k: short_hash(system_id, "site", k))[
                            : 4 * catalog.placement.max_per_system]
                    for k in site_ids:
                        f = sites[k]
                        angle = (int(short_hash(system_id, "h", k, size=2), 16) % 360) if len(oriented) > 1 else 0.0
                        placements.append(("heuristic", f @ cell2, float(angle)))
                if "random" in catalog.placement.modes:
                    rng = np.random.default_rng(int(short_hash(system_id, "random", size=4), 16))
                    for _ in range(catalog.placement.n_random):
                        f = rng.random(2)
                        placements.append(("random", f @ cell2, float(rng.uniform(0, 360))))
                seen: set[tuple] = set()
                found: list[Candidate] = []
                clearance = CLEARANCE if ads.upright else None  # SMILES, files: only binding atoms bind
                for mode, xy, angle in placements:
                    atoms = place(slab, oriented, b, xy, angle, ads.binding_indices, clearance)
                    ib = len(slab) + b
                    site_type, bound = classify_site(atoms, ib)
                    if site_type == "none" and len(ads.binding_indices) > 1:  # a flat molecule touches
                        for other in ads.binding_indices[1:]:                 # first with another atom
                            kind_other, bound_other = classify_site(atoms, len(slab) + other)
                            if kind_other != "none":
                                ib, site_type, bound = len(slab) + other, kind_other, bound_other
                                break
                    key = (mode, site_type, tuple(sorted(bound)))
                    if mode == "heuristic" and key in seen:  # periodic duplicates of one site
                        continue
                    seen.add(key)
                    sid = "qc-" + short_hash(structure_hash(atoms), smiles)
                    syms = atoms.get_chemical_symbols()
                    meta = {
                        "sid": sid, "system_id": system_id, "slab_id": slab_id, "bulk": spec.label,
                        "bulk_formula": formula, "prototype": spec.prototype_label,
                        "metal_a": spec.a, "metal_b": spec.b or "",
                        "fraction_b": _fraction_b(spec, is_random),
                        "lattice_constant": round(spec.lattice_constant, 4),
                        "miller": miller_text(miller), "shift": template.shift, "top": template.top,
                        "adsorbate": smiles, "placement": mode, "site_type": site_type,
                        "binding_element": syms[ib],
                        "binding_atoms": " ".join(sorted(syms[i] for i in bound)),
                        "n_atoms": len(atoms), "catalog_hash": catalog_hash,
                    }
                    meta["text"] = configuration_text(atoms, ads.text_name, formula, miller, slab_nbrs)
                    found.append(Candidate(atoms, meta))
                found = [c for c in found if c.meta["site_type"] != "none"]  # lifted off: not bound
                if not close_packed:  # elsewhere a 3-fold hollow
                    for c in found:
                        if c.meta["site_type"] in ("hollow-fcc", "hollow-hcp"):
                            c.meta["site_type"] = "hollow-3fold"
                found = _stratified_cap(found, catalog.placement.max_per_system)
                out.extend(found)
    return out


def _fraction_b(spec: BulkSpec, is_random: bool) -> float:
    if spec.lattice == "file":
        symbols = spec.structure[0]
        return round(1.0 - symbols.count(spec.a) / len(symbols), 6)
    if is_random:
        return float(spec.prototype.fraction_b)
    if spec.b is None:
        return 0.0
    return {"A3B": 0.25, "AB3": 0.75}.get(spec.prototype.formula, 0.5)


def _stratified_cap(found: list[Candidate], cap: int) -> list[Candidate]:
    """At most ``cap`` placements, taken round-robin over site types, each type in sid order.

    Depends only on the placements of this (slab, adsorbate), so it is stable under other edits.
    """
    if len(found) <= cap:
        return found
    groups: dict[str, list[Candidate]] = {}
    for c in sorted(found, key=lambda c: c.meta["sid"]):
        groups.setdefault(c.meta["site_type"], []).append(c)
    order = [groups[k] for k in sorted(groups)]
    picked: list[Candidate] = []
    while len(picked) < cap:
        for g in order:
            if g and len(picked) < cap:
                picked.append(g.pop(0))
    return picked


# ---------------------------------------------------------------------------------------------
_WORKER_CATALOG: Catalog | None = None


def _reset_signals() -> None:
    """Forked workers must not inherit a parent's SIGTERM handler (Prefect installs one), or
    stopping the pool makes them print tracebacks on the way out."""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _init_worker(catalog: Catalog) -> None:
    global _WORKER_CATALOG
    _reset_signals()
    _WORKER_CATALOG = catalog


def _work(args: tuple[BulkSpec, str]) -> list[Candidate]:
    spec, chash = args
    return candidates_for_bulk(_WORKER_CATALOG, spec, chash)


def _prepare(job):
    kind, miller, targs, bulk = job
    result = []
    for t in slab_templates(kind, miller, *targs, bulk=bulk):
        result.append((t, template_sites(t, True), template_sites(t, False) if kind == "fcc" else None))
    return result


def _template_jobs(catalog: Catalog, specs: list[BulkSpec]) -> list[tuple]:
    """(kind, miller, sizes, native bulk cell or None) of every template the catalog's bulks use, once."""
    jobs: dict[tuple, tuple] = {}
    shared = _template_args(catalog)  # the fcc templates' sizes (from the smallest lattice constant)
    for spec in specs:
        kind = geometry_kind(spec)
        targs = _template_args(catalog, spec) if is_native(spec) else shared
        for m in (spec.facets or catalog.facets):
            key = (kind, tuple(m))
            if key not in jobs:
                jobs[key] = (kind, tuple(m), targs, template_bulk(spec) if is_native(spec) else None)
    return [jobs[k] for k in sorted(jobs)]


def iter_candidates(catalog: Catalog, workers: int | None = None, progress: bool = True) -> Iterator[Candidate]:
    """Candidates in a deterministic order (bulks as listed, then facets, terminations, ...)."""
    from tqdm.auto import tqdm

    chash = catalog.content_hash()
    specs = bulk_specs(catalog)
    workers = workers or min(len(specs), os.cpu_count() or 1)
    # cut the templates and find their sites once, before forking, so the workers share them (and
    # build the SMILES adsorbates' geometries)
    for entry in catalog.adsorbates:
        entry.adsorbate()
    jobs = _template_jobs(catalog, specs)
    if workers > 1:
        with Pool("templates", workers, mp.get_context("fork"), initializer=_reset_signals) as pool:
            try:
                for k, result in pool.map_unordered(_prepare, jobs, lambda ks: "cutting slab templates " + some(
                        [f"{jobs[k][0]} {miller_text(jobs[k][1])}" for k in ks])):
                    install_templates(*jobs[k][:3], result)
            except WorkerDied as exc:
                raise QecatError(f"enumeration: {exc}; rerun to continue") from None
    else:
        for job in jobs:
            _prepare(job)
    workers = workers or min(len(specs), os.cpu_count() or 1)
    bar = tqdm(total=len(specs), desc="enumerate", unit="bulk", disable=not progress)
    if workers <= 1:
        for spec in specs:
            yield from candidates_for_bulk(catalog, spec, chash)
            bar.update()
    else:
        # a dead worker's bulk is enumerated again in a new pool, once (qecat_core.common.pools); the
        # results come in any order and are yielded in the listed one
        done: dict[int, list[Candidate]] = {}
        following = 0
        with Pool("enumerate", workers, mp.get_context("fork"), initializer=_init_worker,
                  initargs=(catalog,)) as pool:
            try:
                for k, batch in pool.map_unordered(_work, [(s, chash) for s in specs], lambda ks: "enumerating bulk "
                                                   + some([specs[k].label for k in ks])):
                    done[k] = batch
                    bar.update()
                    while following in done:
                        yield from done.pop(following)
                        following += 1
            except WorkerDied as exc:
                raise QecatError(f"enumeration: {exc}; nothing was indexed; rerun to continue") from None
    bar.close()


def enumerate_catalog(catalog: Catalog, out_dir: str | Path, shard_size: int = 1000,
                      workers: int | None = None, progress: bool = True, force: bool = False) -> dict:
    """Write the candidate shards and index of ``catalog`` to ``out_dir``; return the manifest.

    If ``out_dir/manifest.json`` exists for the same catalog hash, shard size and
    :data:`ENUMERATION_VERSION`, nothing is redone.
    """
    import pandas as pd

    from qecat_core.common.atomic import write_parquet_atomic
    from qecat_core.common.structures import write_aselmdb

    out_dir = Path(out_dir)
    chash = catalog.content_hash()
    manifest_path = out_dir / "manifest.json"
    if manifest_path.exists() and not force:
        old = json.loads(manifest_path.read_text())
        if (old.get("catalog_hash") == chash and old.get("shard_size") == shard_size
                and old.get("enumeration_version", 1) == ENUMERATION_VERSION):
            return old
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    shard_dir = out_dir / "shards"
    shard_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows: list[dict] = []
    buffer: list[Atoms] = []
    shards: list[dict] = []

    def flush():
        name = f"shard-{len(shards):05d}.aselmdb"
        write_aselmdb(shard_dir / name, buffer)
        sids = [a.info["sid"] for a in buffer]
        shards.append({"shard": name, "n": len(buffer), "shard_hash": short_hash(*sids)})
        buffer.clear()

    for cand in iter_candidates(catalog, workers=workers, progress=progress):
        cand.meta["shard"] = f"shard-{len(shards):05d}.aselmdb"
        cand.meta["shard_row"] = len(buffer)
        cand.atoms.info = dict(cand.meta)
        rows.append(cand.meta)
        buffer.append(cand.atoms)
        if len(buffer) >= shard_size:
            flush()
    if buffer:
        flush()
    # drop shards of an earlier, larger enumeration in the same folder
    keep = {s["shard"] for s in shards}
    for old in shard_dir.glob("shard-*.aselmdb"):
        if old.name not in keep:
            old.unlink()
    df = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS + ["shard", "shard_row"])
    write_parquet_atomic(df, out_dir / "candidates.parquet")
    dup = int(df["sid"].duplicated().sum())
    if dup:
        raise RuntimeError(f"{dup} duplicate sids in enumeration of {catalog.name}: this is a bug")
    manifest = {
        "catalog": catalog.name, "catalog_hash": chash, "shard_size": shard_size,
        "enumeration_version": ENUMERATION_VERSION,
        "n_candidates": len(df), "n_systems": int(df["system_id"].nunique()),
        "n_bulks": len(bulk_specs(catalog)), "shards": shards,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json_atomic(manifest_path, manifest)
    return manifest


def sample_candidates(candidates: pd.DataFrame, max_systems: int) -> pd.DataFrame:
    """The ``max_systems`` candidates with the lowest sid hash (stable under catalog edits)."""
    if len(candidates) <= max_systems:
        return candidates
    order = candidates["sid"].map(unit_hash).sort_values(kind="stable").index[:max_systems]
    return candidates.loc[sorted(order)]
