"""FastEMT against ASE's EMT: energy + forces per second on alloy slabs with an adsorbate.

    python benchmarks/emt_speed.py            # slabs of ~36, ~72 and ~108 atoms, 1 thread

Prints one markdown row per slab size: atoms, ASE EMT calls/s, FastEMT calls/s, speed-up. Each call
is a fresh energy + forces evaluation after the atoms moved (as in a relaxation step).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from ase.build import add_adsorbate, fcc111  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402

from qecat_core.calculators.emt import FastEMT  # noqa: E402


def slab(n_side: int, layers: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    s = fcc111("Cu", (n_side, n_side, layers), a=3.8, vacuum=7.0)
    s.set_chemical_symbols(list(rng.choice(["Cu", "Pt", "Pd", "Ag"], len(s))))
    add_adsorbate(s, "O", 1.2, "fcc")
    return s


def rate(atoms, calc, seconds: float = 3.0) -> float:
    atoms = atoms.copy()
    atoms.calc = calc
    rng = np.random.default_rng(1)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        atoms.positions += rng.normal(0, 0.002, atoms.positions.shape)
        atoms.get_forces()
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> int:
    print("| atoms | ASE EMT (calls/s) | FastEMT (calls/s) | speed-up |")
    print("|---|---|---|---|")
    for n_side, layers in ((3, 4), (3, 8), (6, 3)):
        s = slab(n_side, layers)
        a, b = rate(s, EMT()), rate(s, FastEMT())
        print(f"| {len(s)} | {a:.1f} | {b:.1f} | {b / a:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
