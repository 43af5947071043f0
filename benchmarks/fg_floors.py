"""Floors on the FG-dataset (fg-dft): what a model must beat, under seeded 5-fold CV by system.

    python benchmarks/fg_floors.py [--folds 5] [--seed 0]

Rows of ``../shared/data/fg-dft/fg_train.extxyz`` are systems (molecule × metal × configuration);
folds split them at random (seeded). Per fold, fitted on the other four (E_ads in eV):

* ``mean``: the training mean;
* ``molecule + metal``: an additive model E = a(molecule) + b(metal) (ridge 1e-3; an unseen molecule or
  metal contributes 0 beyond the mean);
* ``gradient boosting``: scikit-learn's ``HistGradientBoostingRegressor`` on the molecule's composition
  (counts of C, H, O, N, S), the metal (one-hot) and the facet (one-hot).

Prints MAE, share within 0.1 eV and the mean per-molecule Spearman rank correlation across metals
(molecules on >= 3 metals in a test fold) per floor, as a markdown table.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

FG = Path(__file__).resolve().parents[2] / "shared" / "data" / "fg-dft" / "fg_train.extxyz"
ELEMENTS = ("C", "H", "O", "N", "S")


def table(path: Path) -> pd.DataFrame:
    import ase.io

    rows = []
    for a in ase.io.iread(str(path), index=":"):
        formula = a.info["molecule"].split(":", 1)[1]
        counts = {el: 0 for el in ELEMENTS}
        for el, n in re.findall(r"([A-Z][a-z]?)(\d*)", formula):
            counts[el] = counts.get(el, 0) + (int(n) if n else 1)
        rows.append({"sid": a.info["sid"], "y": float(a.info["e_ads_dft"]), "molecule": a.info["molecule_uid"],
                     "metal": a.info["metal"], "facet": a.info["facet"], **counts})
    return pd.DataFrame(rows)


def additive(train: pd.DataFrame, test: pd.DataFrame) -> np.ndarray:
    mols, metals = sorted(train["molecule"].unique()), sorted(train["metal"].unique())
    im, ie = {m: i for i, m in enumerate(mols)}, {m: len(mols) + i for i, m in enumerate(metals)}

    def design(df):
        x = np.zeros((len(df), len(mols) + len(metals)))
        for r, (m, e) in enumerate(zip(df["molecule"], df["metal"])):
            if m in im:
                x[r, im[m]] = 1
            if e in ie:
                x[r, ie[e]] = 1
        return x

    mu = train["y"].mean()
    x = design(train)
    w = np.linalg.solve(x.T @ x + 1e-3 * np.eye(x.shape[1]), x.T @ (train["y"].to_numpy() - mu))
    return mu + design(test) @ w


def boosting(train: pd.DataFrame, test: pd.DataFrame, seed: int) -> np.ndarray:
    from sklearn.ensemble import HistGradientBoostingRegressor

    cats = pd.get_dummies(pd.concat([train, test])[["metal", "facet"]]).astype(float)
    x = pd.concat([pd.concat([train, test])[list(ELEMENTS)].astype(float), cats], axis=1).to_numpy()
    model = HistGradientBoostingRegressor(random_state=seed).fit(x[:len(train)], train["y"].to_numpy())
    return model.predict(x[len(train):])


def per_molecule_rho(df: pd.DataFrame, pred: np.ndarray) -> float:
    from scipy.stats import spearmanr

    rhos = []
    for _, g in df.assign(p=pred).groupby("molecule"):
        if g["metal"].nunique() >= 3 and g["y"].nunique() > 1 and g["p"].nunique() > 1:
            rhos.append(spearmanr(g["y"], g["p"]).statistic)
    return float(np.mean(rhos)) if rhos else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(FG))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    df = table(Path(args.data))
    fold = np.random.default_rng(args.seed).permutation(len(df)) % args.folds
    preds = {name: np.zeros(len(df)) for name in ("mean", "molecule + metal", "gradient boosting")}
    for k in range(args.folds):
        tr, te = df[fold != k], df[fold == k]
        preds["mean"][fold == k] = tr["y"].mean()
        preds["molecule + metal"][fold == k] = additive(tr, te)
        preds["gradient boosting"][fold == k] = boosting(tr, te, args.seed)
    print(f"{len(df)} systems, {df['molecule'].nunique()} molecules, {df['metal'].nunique()} metals; "
          f"{args.folds}-fold CV by system, seed {args.seed}")
    print("| floor | CV MAE (eV) | within 0.1 eV | per-molecule ρ across metals |\n|---|---|---|---|")
    for name, p in preds.items():
        err = np.abs(p - df["y"].to_numpy())
        rho = per_molecule_rho(df, p) if name != "mean" else float("nan")
        print(f"| {name} | {err.mean():.3f} | {(err < 0.1).mean():.1%} | {'–' if np.isnan(rho) else f'{rho:.3f}'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
