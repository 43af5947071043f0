"""Predictions on bare structures: no metadata, everything read off the geometry.

    python benchmarks/bare_structures.py --checkpoint models/qecat-emt-v1 --data-dir data/emt-v1 --split val-id

Every flag-free structure of the split is predicted twice by fused, graph and text modes: as the
dataset stores it (adsorbate, bulk formula, Miller index and configuration string in ``atoms.info``)
and *bare* (``atoms.info`` reduced to the sid and the label, as from an ``.extxyz`` written by any
other tool; with ``--no-tags`` the tags go too). The bare structure's adsorbate, bulk formula and
Miller index then come from :mod:`qecat_core.enumerate.infer`. Prints how often the inferred values agree with
the dataset's (the Miller index in the cubic cell: the dataset's pure and random fcc slabs carry the
index of the primitive cell they were cut from) and MAE (eV) / within 0.1 eV / per-system ρ for both.
"""

from __future__ import annotations

import argparse
import time

import qecat_core  # noqa: F401

PRIMITIVE_TO_CUBIC = {(1, 1, 1): (1, 1, 1), (1, 0, 0): (1, 1, 1), (1, 1, 0): (1, 0, 0), (2, 1, 1): (1, 1, 0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="models/qecat-emt-v1")
    ap.add_argument("--data-dir", default="data/emt-v1")
    ap.add_argument("--split", default="val-id")
    ap.add_argument("--no-tags", action="store_true", help="also drop the tags (inferred as for any input)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from qecat_core.common.structures import iter_structures
    from qecat_core.common.tags import ensure_tags
    from qecat_core.enumerate.infer import complete_metadata, parse_miller
    from qecat_core.model.checkpoint import load_model
    from qecat_core.model.data import StructureDataset
    from qecat_core.model.evaluate import predict_dataset, regression_metrics

    torch.set_num_threads(args.threads)
    full = [a for a in iter_structures(f"{args.data_dir}/{args.split}.aselmdb") if not a.info.get("anomaly")]
    bare = []
    agree = {"adsorbate": 0, "bulk_formula": 0, "miller": 0}
    t0 = time.perf_counter()
    for a in full:
        b = a.copy()
        b.info = {"sid": a.info["sid"], "e_ads": a.info["e_ads"]}
        if args.no_tags:
            b.set_tags(0)
            b.set_constraint()
        bare.append(b)
        c = ensure_tags(b.copy(), a.info["sid"])
        complete_metadata(c)
        m = parse_miller(a.info["miller"])
        cubic = m if str(a.info.get("prototype", "")).startswith("L1") else PRIMITIVE_TO_CUBIC.get(m)
        agree["adsorbate"] += c.info.get("adsorbate") == a.info["adsorbate"]
        agree["bulk_formula"] += c.info.get("bulk_formula") == a.info["bulk_formula"]
        agree["miller"] += c.info.get("miller") == cubic
    n = len(full)
    print(f"{n} structures ({args.split}); inference {1e3 * (time.perf_counter() - t0) / n:.1f} ms each; agreement: "
          + ", ".join(f"{k} {v / n:.1%}" for k, v in agree.items()))
    model, tok = load_model(args.checkpoint)
    sys_of = {a.info["sid"]: a.info.get("system_id") for a in full}
    for name, structs in (("dataset metadata", full), ("bare" + (", no tags" if args.no_tags else ""), bare)):
        ds = StructureDataset(structs)
        for mode in ("fused", "graph", "text"):
            df = predict_dataset(model, ds, tok, mode)
            r = regression_metrics(df.e_ads_true, df.e_ads_pred, [sys_of[s] for s in df.sid])
            print(f"{name:>24} {mode:>5}: MAE {r['mae']:.4f} eV, within 0.1 eV {r['within_0.1']:.2%}, "
                  f"rho {r['spearman']:.3f} ({r['n_systems']} systems)")


if __name__ == "__main__":
    main()
