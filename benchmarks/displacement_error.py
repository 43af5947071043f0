"""Error of a model's relaxation-displacement head (the auxiliary IS2RS target) on a split.

    python benchmarks/displacement_error.py --checkpoint runs/train/emt-v1/graph --data-dir data/emt-v1

Mean per-atom |predicted - true| displacement (Å; true = relaxed - initial position, minimum image,
relaxed structures from ``labels.aselmdb``) for adsorbate (tag 2) and surface (tag 1) atoms, next to
the error of predicting no motion. Needs a checkpoint with ``model.graph.displacement_head``.
"""

from __future__ import annotations

import argparse

import numpy as np

import qecat_core  # noqa: F401


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data-dir", default="data/emt-v1")
    ap.add_argument("--split", default="val-id")
    args = ap.parse_args()

    import torch
    from torch.utils.data import DataLoader

    from qecat_core.model.checkpoint import load_model
    from qecat_core.model.data import Collator, StructureDataset

    torch.set_num_threads(1)
    model, tok = load_model(args.checkpoint)
    model.eval()
    ds = StructureDataset(f"{args.data_dir}/{args.split}.aselmdb", relaxed=f"{args.data_dir}/labels.aselmdb",
                          need_text=False)
    err: dict[int, list[float]] = {1: [], 2: []}
    zero: dict[int, list[float]] = {1: [], 2: []}
    with torch.inference_mode():
        for b in DataLoader(ds, batch_size=64, collate_fn=Collator(tok, 256, use_text=False)):
            d, _ = model.displacement(b)
            tags = b.graph["tags"]
            e, z = (d - b.disp).norm(dim=-1), b.disp.norm(dim=-1)
            for t in (1, 2):
                err[t] += e[tags == t].tolist()
                zero[t] += z[tags == t].tolist()
    for t, name in ((2, "adsorbate"), (1, "surface")):
        print(f"{name} atoms: mean |error| {np.mean(err[t]):.3f} Å (no motion: {np.mean(zero[t]):.3f} Å), "
              f"{len(err[t])} atoms")


if __name__ == "__main__":
    main()
