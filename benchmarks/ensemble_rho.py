"""Do averaged models rank a system's placements better? Every average of 2+ of the given models.

    python benchmarks/ensemble_rho.py models/qecat-emt-v1:fused runs/train/emt-v1/model:fused \\
        runs/train/emt-v1-l3/model:fused runs/train/emt-v1-disp/graph:graph runs/train/emt-v1-l3d/graph:graph

Each argument is CHECKPOINT:MODE (fused, graph or text). Prints each model's and each average's
MAE (eV), share within 0.1 eV and per-system Spearman ρ (``discrimination``) on the split's flag-free
structures.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

import qecat_core  # noqa: F401


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="CHECKPOINT:MODE")
    ap.add_argument("--data-dir", default="data/emt-v1")
    ap.add_argument("--split", default="val-id")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from qecat_core.model.checkpoint import load_model
    from qecat_core.model.data import StructureDataset
    from qecat_core.model.evaluate import discrimination, predict_dataset

    torch.set_num_threads(args.threads)
    ds = StructureDataset(f"{args.data_dir}/{args.split}.aselmdb")
    preds, y, groups = {}, None, None
    for spec in args.models:
        path, _, mode = spec.rpartition(":")
        if mode not in ("fused", "graph", "text") or not path:
            ap.error(f"{spec!r}: expected CHECKPOINT:MODE with MODE fused, graph or text")
        model, tok = load_model(path)
        p = predict_dataset(model, ds, tok, mode).sort_values("sid")
        preds[spec] = p["e_ads_pred"].to_numpy()
        y, groups = p["e_ads_true"].to_numpy(), p["system_id"].tolist()

    def score(yp: np.ndarray) -> str:
        rho, n = discrimination(y, yp, groups)
        return f"MAE {np.abs(yp - y).mean():.4f} eV, within 0.1 eV {(np.abs(yp - y) <= 0.1).mean():.2%}, rho {rho:.3f} ({n} systems)"

    for spec, yp in preds.items():
        print(f"{spec}: {score(yp)}")
    for r in range(2, len(preds) + 1):
        for combo in itertools.combinations(preds, r):
            print(f"mean of {' + '.join(combo)}: {score(np.mean([preds[k] for k in combo], axis=0))}")


if __name__ == "__main__":
    main()
