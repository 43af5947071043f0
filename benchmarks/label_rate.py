"""EMT labelling rate on candidates of the default catalog.

    python benchmarks/label_rate.py --candidates data/emt-v1/candidates --n 400 [--workers 2]

Takes the first N candidates (sid-hash order) of an enumeration folder, labels them into a
temporary folder (slab + adsorbate and the clean slabs, BFGS fmax 0.05 eV/Å) and prints
systems/s, steps per relaxation and the share of anomalies.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import qecat_core  # noqa: F401


def main() -> None:
    import pandas as pd

    from qecat_core.enumerate.candidates import sample_candidates
    from qecat_core.label.dataset import write_subset
    from qecat_core.label.relax import label

    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", default="data/emt-v1/candidates")
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    cands = pd.read_parquet(Path(args.candidates) / "candidates.parquet")
    chosen = sample_candidates(cands, args.n)
    with tempfile.TemporaryDirectory() as tmp:
        write_subset(Path(args.candidates), set(chosen["sid"]), Path(tmp) / "in")
        t0 = time.perf_counter()
        df = label(Path(tmp) / "in", Path(tmp) / "labels.parquet", workers=args.workers, progress=False)
        wall = time.perf_counter() - t0
    print(json.dumps({"systems": len(df), "workers": args.workers, "wall_s": round(wall, 1),
                      "systems_per_s": round(len(df) / wall, 2),
                      "median_steps": float(df["n_steps"].median()),
                      "mean_atoms": round(float(df["n_atoms"].mean()), 1),
                      "anomaly_fraction": round(float(df["anomaly"].mean()), 3)}, indent=1))


if __name__ == "__main__":
    main()
