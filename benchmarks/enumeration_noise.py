"""Does the enumeration survive floating-point noise? Enumerate a catalog as cut, then with every
cut slab template and every realized slab moved by a seeded Gaussian of ``sigma`` Å per coordinate.

    python benchmarks/enumeration_noise.py [--catalog catalogs/bimetallics.yaml] [--sigma 1e-12] [--seed 1]
    python benchmarks/enumeration_noise.py --native      # hcp Ru, bcc Fe and the CuZn B2 CIF (NATIVE)

Machines differ in the last bits of what pymatgen and numpy compute (about 1e-15 Å at these
sizes), so a candidate set or a sid that changes under a 1e-12 Å move can also change between
machines. Prints the candidate count of both runs and how many sids of the first run the second
one lacks. Runs the two enumerations side by side (one process each) and takes about as long as
one enumeration with one worker (~70 s for the default catalog on this machine).

``--native`` enumerates :data:`NATIVE` instead: one hcp metal (Ru: (0001) and both (10-10)
terminations), one bcc metal (Fe (110), (100)) and one bulk from a CIF (``catalogs/bulks/CuZn-B2.cif``,
B2 (110), (100)), with OC20 and SMILES adsorbates; there the RDKit geometries of the SMILES
adsorbates are moved by the same noise as well.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: a small catalog of native bulks (hcp, bcc, CIF); the CIF path is filled in by :func:`native_catalog`
NATIVE = {
    "name": "noise-native",
    "bulks": [
        {"element": "Ru", "facets": ["0001", "10-10"]},
        {"element": "Fe", "facets": ["110", "100"]},
        {"file": "CIF", "name": "CuZn-B2", "facets": ["110", "100"]},
    ],
    "slab": {"min_layers": 4, "fixed_layers": 2, "min_lateral": 6.0},
    "adsorbates": ["*O", "*OH", "*CO", {"smiles": "CCO", "binding": "O"}, {"smiles": "c1ccsc1", "binding": "S"},
                   {"smiles": "CC(N)=O", "binding": [1, 3]}],
    "placement": {"max_per_system": 6},
}


def native_catalog(folder: str | Path) -> Path:
    """:data:`NATIVE` written to ``folder/native.yaml`` (the CIF by absolute path)."""
    import copy

    import yaml

    data = copy.deepcopy(NATIVE)
    data["bulks"][2]["file"] = str(REPO / "catalogs" / "bulks" / "CuZn-B2.cif")
    path = Path(folder) / "native.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _enumerate(args: tuple[str, float, int]) -> list[tuple[str, str]]:
    """(sid, bulk) of every candidate of the catalog, enumerated as cut or moved by ``sigma`` Å."""
    catalog_path, sigma, seed = args
    warnings.filterwarnings("ignore")
    import numpy as np

    import qecat_core.catalog.adsorbates as adsorbates
    import qecat_core.enumerate.candidates as en
    import qecat_core.enumerate.slabs as slabs
    from qecat_core.catalog.schema import load_catalog

    if sigma > 0:
        rng = np.random.default_rng(seed)

        def noisy(atoms):
            atoms = atoms.copy()
            atoms.positions += rng.normal(0.0, sigma, atoms.positions.shape)
            return atoms

        cut, realize, embed = slabs._cut_templates, en.realize_slab, adsorbates.embed_smiles
        slabs._cut_templates = lambda *a: tuple(dataclasses.replace(t, atoms=noisy(t.atoms)) for t in cut(*a))
        en.realize_slab = lambda *a, **k: noisy(realize(*a, **k))
        adsorbates.embed_smiles = lambda smiles: noisy(embed(smiles))
    cat = load_catalog(catalog_path)
    return [(c.meta["sid"], c.meta["bulk"]) for c in en.iter_candidates(cat, workers=1, progress=False)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--catalog", default="catalogs/bimetallics.yaml")
    ap.add_argument("--sigma", type=float, default=1e-12, help="Å per coordinate")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--native", action="store_true", help="enumerate NATIVE (hcp, bcc, CIF bulks) instead")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        catalog = str(native_catalog(tmp)) if args.native else args.catalog
        with mp.get_context("fork").Pool(2) as pool:
            clean, moved = pool.map(_enumerate, [(catalog, 0.0, 0), (catalog, args.sigma, args.seed)])
    moved_sids = {sid for sid, _ in moved}
    lost = [bulk for sid, bulk in clean if sid not in moved_sids]
    name = "NATIVE (Ru hcp, Fe bcc, CuZn-B2 CIF)" if args.native else args.catalog
    print(f"{name}: as cut {len(clean)} candidates; moved by {args.sigma:g} Å (seed {args.seed}) "
          f"{len(moved)} candidates; sids of the first run missing from the second: {len(lost)} "
          f"({time.perf_counter() - t0:.0f} s)")
    if args.native:
        counts = Counter(bulk for _, bulk in clean)
        print("per bulk (candidates / missing): " + ", ".join(f"{b} {n} / {lost.count(b)}" for b, n in counts.items()))


if __name__ == "__main__":
    main()
