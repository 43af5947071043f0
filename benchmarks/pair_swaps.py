"""Which placement pairs a predictor ranks the wrong way round, by how far apart their labels are.

    python benchmarks/pair_swaps.py [--checkpoint models/qecat-emt-v1] [--mode fused] \
        [--data-dir data/emt-v1] [--split val-id] [--reruns RERUNS.parquet]

Configuration discrimination (``qecat evaluate``) is a per-system Spearman ρ. This looks at the
pairs behind it: every pair of flag-free placements of one (bulk, facet, adsorbate) system, binned
by the gap between their labelled E_ads (eV), and the share of pairs whose predicted order is the
reverse of the labels' (a *swap*). ``--reruns`` (the ``-o`` output of
``benchmarks/label_noise.py``: sid, seed, e_total) scores the labeller's own reruns from moved
starts the same way (E_ads = label + rerun total energy − label total energy), one column per seed
> 0, so the model's swaps can be set beside the labels' own reproducibility.

A second table gives, per adsorbate, the per-system ρ, the mean within-system error (each
placement's error minus its system's mean error, eV: what ρ is sensitive to) and the median spread
of the labels within a system.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

import qecat_core  # noqa: F401

ROOT = Path(__file__).resolve().parent.parent
BINS = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.3, np.inf)  # eV


def pair_table(y_true: np.ndarray, groups: list[str], preds: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per within-group pair: the label gap (eV) and, per predictor, whether it swaps the pair.

    >>> t = pair_table(np.array([0.0, 0.1, 0.3]), ["a", "a", "a"], {"p": np.array([0.0, 0.2, 0.1])})
    >>> t["gap"].round(3).tolist(), t["p"].tolist()
    ([0.1, 0.3, 0.2], [False, False, True])
    """
    g = np.asarray(groups)
    rows: dict[str, list] = {"gap": [], **{k: [] for k in preds}}
    for key in np.unique(g):
        idx = np.nonzero(g == key)[0]
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                i, j = idx[a], idx[b]
                d = y_true[i] - y_true[j]
                if d == 0:
                    continue
                rows["gap"].append(abs(float(d)))
                for k, p in preds.items():
                    rows[k].append(bool(np.sign(p[i] - p[j]) != np.sign(d)))
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "models" / "qecat-emt-v1"))
    ap.add_argument("--mode", default="fused", choices=("fused", "graph", "text"))
    ap.add_argument("--data-dir", default=str(ROOT / "data" / "emt-v1"))
    ap.add_argument("--split", default="val-id")
    ap.add_argument("--reruns", default=None, help="label_noise.py -o output: sid, seed, e_total")
    ap.add_argument("--adsorbate", default=None, help="only the pairs of this adsorbate's systems (e.g. '*H')")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from qecat_core.model.checkpoint import load_model
    from qecat_core.model.data import StructureDataset
    from qecat_core.model.evaluate import predict_dataset

    torch.set_num_threads(args.threads)
    ds = StructureDataset(f"{args.data_dir}/{args.split}.aselmdb", need_target=True)  # flag-free rows
    model, tok = load_model(args.checkpoint)
    df = predict_dataset(model, ds, tok, args.mode).set_index("sid")
    preds = {f"model ({args.mode})": df["e_ads_pred"].to_numpy()}
    if args.reruns:
        labels = pd.read_parquet(f"{args.data_dir}/labels.parquet", columns=["sid", "e_total"]).set_index("sid")
        runs = pd.read_parquet(args.reruns).pivot(index="sid", columns="seed", values="e_total")
        missing = df.index.difference(runs.index)
        if len(missing):
            raise SystemExit(f"{args.reruns}: no rerun for {len(missing)} of the {len(df)} structures "
                             f"(e.g. {missing[0]}); rerun label_noise.py on the same split")
        delta = runs.loc[df.index].sub(labels.loc[df.index, "e_total"], axis=0)
        for seed in [s for s in runs.columns if s != 0]:
            preds[f"rerun {seed}"] = df["e_ads_true"].to_numpy() + delta[seed].to_numpy()
    keep = np.ones(len(df), bool) if args.adsorbate is None else (df["adsorbate"] == args.adsorbate).to_numpy()
    if not keep.any():
        raise SystemExit(f"--adsorbate {args.adsorbate!r}: no {args.split} structures with that adsorbate")
    t = pair_table(df["e_ads_true"].to_numpy()[keep], df["system_id"].astype(str)[keep].tolist(),
                   {k: v[keep] for k, v in preds.items()})
    t["label gap (eV)"] = pd.cut(t["gap"], BINS)
    out = t.groupby("label gap (eV)", observed=True).agg(pairs=("gap", "size"), **{
        f"swapped, {k}": (k, "mean") for k in preds})
    total = pd.DataFrame({"pairs": [len(t)], **{f"swapped, {k}": [t[k].mean()] for k in preds}}, index=["all"])
    out = pd.concat([out, total])
    fmt = {c: "{:.1%}".format for c in out.columns if c.startswith("swapped")}
    print(f"{args.checkpoint} ({args.mode}) on {args.split}: {int(keep.sum())} flag-free structures"
          f"{'' if args.adsorbate is None else ' of ' + args.adsorbate}, {len(t)} within-system pairs with "
          f"distinct labels; median gap of the pairs the model swaps: "
          f"{t.loc[t[next(iter(preds))], 'gap'].median() * 1000:.1f} meV")
    print(out.to_string(formatters=fmt))

    from qecat_core.model.evaluate import discrimination

    df["err"] = df["e_ads_pred"] - df["e_ads_true"]
    df["within_err"] = df["err"] - df.groupby("system_id")["err"].transform("mean")
    rows = []
    for ads, d in df.groupby("adsorbate"):
        rho, n = discrimination(d["e_ads_true"].to_numpy(), d["e_ads_pred"].to_numpy(), d["system_id"].tolist())
        spread = d.groupby("system_id")["e_ads_true"].agg(lambda x: x.max() - x.min())
        rows.append({"adsorbate": ads, "structures": len(d), "systems (rho)": n, "rho": rho,
                     "MAE (eV)": d["err"].abs().mean(), "within-system error (eV)": d["within_err"].abs().mean(),
                     "median label spread (eV)": spread.median()})
    per = pd.DataFrame(rows).set_index("adsorbate")
    print(per.to_string(float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
