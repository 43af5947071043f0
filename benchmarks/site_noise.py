"""How sensitive pymatgen's adsorption-site finding is to floating-point noise in the positions.

    python benchmarks/site_noise.py [--sigma 1e-9] [--runs 6]

Cuts 2x2 Cu slabs (a = 3.8 Å; (100), (111), (110)) with pymatgen and runs
``AdsorbateSiteFinder.find_adsorption_sites`` with the settings of ``qecat_core.enumerate.sites`` (symmetry
reduction 1e-2, no near-reduction, no obtuse hollows), once on the slab as cut and then on copies
whose atoms are moved by a seeded Gaussian of ``sigma`` Å per coordinate. Prints the number of
top / bridge / hollow sites per run: a count that changes under a 1e-9 Å move can also change
between machines, whose floating-point code paths differ at that level (docs/data.md).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sigma", type=float, default=1e-9, help="Å per coordinate")
    ap.add_argument("--runs", type=int, default=6, help="runs per facet (the first unmoved)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from pymatgen.analysis.adsorption import AdsorbateSiteFinder
    from pymatgen.core import Lattice, Structure
    from pymatgen.core.surface import SlabGenerator

    from qecat_core.enumerate.sites import SURFACE_HEIGHT

    bulk = Structure.from_spacegroup("Fm-3m", Lattice.cubic(3.8), ["Cu"], [[0, 0, 0]])
    for miller in [(1, 0, 0), (1, 1, 1), (1, 1, 0)]:
        slab = SlabGenerator(bulk, miller, 6, 10, center_slab=False).get_slab()
        slab.make_supercell([2, 2, 1])
        counts = []
        for seed in range(args.runs):
            s = slab.copy()
            if seed:
                rng = np.random.default_rng(seed)
                for i in range(len(s)):
                    s.translate_sites([i], rng.normal(0, args.sigma, 3), frac_coords=False, to_unit_cell=False)
            sites = AdsorbateSiteFinder(s, height=SURFACE_HEIGHT).find_adsorption_sites(
                distance=0.0, symm_reduce=1e-2, near_reduce=0, no_obtuse_hollow=True)
            counts.append("/".join(str(len(sites[k])) for k in ("ontop", "bridge", "hollow")))
        print(f"Cu{miller}: top/bridge/hollow per run: {', '.join(counts)}")


if __name__ == "__main__":
    main()
