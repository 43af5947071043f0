"""Evaluation: MAE (eV), fraction within 0.1 eV, configuration discrimination, parity plots.

Configuration discrimination: for every system (same slab + adsorbate, grouped by ``system_id``)
with at least 2 placements and distinct true energies, the Spearman rank correlation between
predicted and true adsorption energies of its placements; reported as the mean over systems
(``spearman``) with the number of systems used (``n_systems``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qecat_core.common.errors import QecatError

WITHIN = 0.1  # eV
# Relaxed energies closer than this are one minimum for discrimination (placements that relaxed to the
# same site differ by the relaxation's tolerance, and their order carries no physics).
TIE_TOL = 0.01  # eV


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float],
                       groups: Sequence[str | None] | None = None) -> dict[str, Any]:
    """``{'n', 'mae', 'rmse', 'within_0.1', 'spearman', 'n_systems', 'spearman_distinct', 'n_systems_distinct'}``.

    Energies in eV. ``spearman`` ranks the raw true energies; ``spearman_distinct`` first merges true
    energies of a system closer than :data:`TIE_TOL` into ties (systems whose placements all tie drop out).
    """
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.shape != p.shape:
        raise QecatError(f"y_true and y_pred differ in length ({t.size} vs {p.size})")
    out: dict[str, Any] = {"n": int(t.size)}
    if t.size == 0:
        return {**out, "mae": math.nan, "rmse": math.nan, f"within_{WITHIN}": math.nan, "spearman": math.nan,
                "n_systems": 0, "spearman_distinct": math.nan, "n_systems_distinct": 0}
    err = np.abs(p - t)
    out["mae"] = float(err.mean())
    out["rmse"] = float(np.sqrt(((p - t) ** 2).mean()))
    out[f"within_{WITHIN}"] = float((err <= WITHIN).mean())
    out["spearman"], out["n_systems"] = discrimination(t, p, groups)
    out["spearman_distinct"], out["n_systems_distinct"] = discrimination(t, p, groups, tie_tol=TIE_TOL)
    return out


def merge_ties(values: np.ndarray, tol: float) -> np.ndarray:
    """Values with chains of neighbours closer than ``tol`` replaced by their cluster's first value.

    >>> merge_ties(np.array([0.0, 0.004, 0.3, 0.305, 1.0]), 0.01).tolist()
    [0.0, 0.0, 0.3, 0.3, 1.0]
    """
    order = np.argsort(values, kind="stable")
    out = values.astype(np.float64).copy()
    for prev, cur in zip(order[:-1], order[1:]):
        if values[cur] - values[prev] < tol:
            out[cur] = out[prev]
    return out


def discrimination(y_true: np.ndarray, y_pred: np.ndarray, groups: Sequence[str | None] | None,
                   tie_tol: float = 0.0) -> tuple[float, int]:
    """Mean Spearman rho over groups with >= 2 members and non-constant true values (a constant
    prediction counts as rho 0); with ``tie_tol`` > 0 true values are merged by :func:`merge_ties` first."""
    if groups is None:
        return math.nan, 0
    from scipy.stats import spearmanr

    g = np.asarray([str(x) if x is not None else "" for x in groups])
    rhos = []
    for key in np.unique(g):
        if not key:
            continue
        idx = np.nonzero(g == key)[0]
        yt = merge_ties(y_true[idx], tie_tol) if tie_tol > 0 else y_true[idx]
        if len(idx) < 2 or np.ptp(yt) == 0:
            continue
        if np.ptp(y_pred[idx]) == 0:
            rhos.append(0.0)  # a constant prediction does not rank the placements
            continue
        rhos.append(float(spearmanr(yt, y_pred[idx]).statistic))
    return (float(np.mean(rhos)) if rhos else math.nan), len(rhos)


@torch.inference_mode()
def predict_dataset(model, dataset, tokenizer, mode: str = "fused", batch_size: int = 64, progress: bool = False):
    """Predictions for every example of a dataset: DataFrame with sid, system_id, adsorbate,
    e_ads_true (eV or NaN), e_ads_pred (eV), mode."""
    import pandas as pd
    from torch.utils.data import DataLoader

    from qecat_core.model.data import Collator

    fc = model.config["fusion"]
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=Collator(tokenizer, fc["max_length"], use_graph=mode != "text",
                                            use_text=mode != "graph"))
    was_training = model.training
    model.eval()
    rows: list[dict] = []
    it = loader
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(loader, desc=f"predict[{mode}]", unit="batch")
    for batch in it:
        out = model(batch, mode)
        t = batch.targets.numpy() if batch.targets is not None else [math.nan] * len(batch)
        for i in range(len(batch)):
            rows.append({"sid": batch.sids[i], "system_id": batch.system_ids[i], "adsorbate": batch.adsorbates[i],
                         "e_ads_true": float(t[i]), "e_ads_pred": float(out.energy[i]), "mode": mode})
    model.train(was_training)
    return pd.DataFrame(rows)


def evaluate(model, dataset, tokenizer, modes: Sequence[str] = ("fused", "graph", "text"), batch_size: int = 64,
             plot_dir: str | Path | None = None) -> tuple[dict[str, dict], Any]:
    """Metrics per mode (and parity plots ``parity_<mode>.png`` in ``plot_dir``); returns (metrics, predictions).

    Modes needing structures are skipped for a text-only dataset.
    """
    import pandas as pd

    text_only = all(getattr(e, "data", None) is None for e in dataset.examples[:1])
    metrics: dict[str, dict] = {}
    frames = []
    for mode in modes:
        if text_only and mode != "text":
            continue
        df = predict_dataset(model, dataset, tokenizer, mode, batch_size)
        frames.append(df)
        ok = df["e_ads_true"].notna()
        metrics[mode] = regression_metrics(df.loc[ok, "e_ads_true"], df.loc[ok, "e_ads_pred"],
                                           df.loc[ok, "system_id"].tolist())
        if plot_dir is not None and ok.any():
            parity_plot(df[ok], Path(plot_dir) / f"parity_{mode}.png", title=f"{mode}", metrics=metrics[mode])
    return metrics, (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame())


def parity_plot(df, path: str | Path, title: str = "", metrics: dict | None = None) -> Path:
    """Predicted vs true adsorption energy (eV) scatter with the y = x line; PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    t, p = df["e_ads_true"].to_numpy(float), df["e_ads_pred"].to_numpy(float)
    fig, ax = plt.subplots(figsize=(4.2, 4.2), dpi=120)
    ax.scatter(t, p, s=6, alpha=0.6, lw=0)
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    pad = 0.05 * (hi - lo + 1e-9)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xlabel("true E_ads (eV)")
    ax.set_ylabel("predicted E_ads (eV)")
    if metrics:
        title = f"{title}  MAE {metrics['mae']:.3f} eV  n={metrics['n']}"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
