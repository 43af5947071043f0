"""What a screening run shows: the run summary table, the top of the ranking, and two PNG plots.

* :func:`print_report` — run summary (new / skipped / failed shards with their errors, movers vs the
  previous run, verification MAE) and the top-N systems by predicted E_ads (eV);
* :func:`plot_heatmap` — best predicted E_ads per alloy (bulk) × adsorbate (min over facets and
  placements);
* :func:`plot_summary` — E_ads distribution per adsorbate, and the parity of prediction vs the
  labeller's relaxation for verified systems (when there are any).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd


def print_report(summary: dict[str, Any], ranking: pd.DataFrame, top: int = 20, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    sh = summary["shards"]
    t = Table(title=f"screen {summary['screen']} — run {summary['run_id']} [{summary['status']}]", show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    t.add_row("model", f"{summary['model_id']} ({summary['mode']}) from {summary['checkpoint']}")
    t.add_row("catalog", f"{summary['catalog']} [{summary['catalog_hash']}]  {summary['candidates']} candidates")
    t.add_row("candidates", f"{summary['new']} new, {summary['skipped']} already predicted (skipped), "
                            f"{summary['failed_candidates']} failed"
                            + (f", {summary['duplicates_dropped']} duplicates dropped" if summary["duplicates_dropped"] else ""))
    t.add_row("shards", f"{sh['total']} total: {sh['run']} run, {sh['cached']} from cache, {sh['skipped']} skipped, "
                        f"{sh['failed']} failed  ({sh['jobs']} jobs, executor {summary['executor']})")
    for f in summary["failed"][:10]:
        t.add_row("[red]failed[/red]", f"{f['shard']}: {f['error']}")
    if len(summary["failed"]) > 10:
        t.add_row("", f"... {len(summary['failed']) - 10} more in {summary.get('summary_path')}")
    mv = summary.get("movers") or {}
    if mv.get("previous_run"):
        t.add_row("vs previous", f"run {mv['previous_run']}: {mv['n_changed']} systems changed, "
                                 f"{mv['n_new_systems']} new, {mv.get('n_removed_systems', 0)} gone")
        for m in mv["top"][:5]:
            t.add_row("", f"{m['bulk']} {m['miller']} {m['adsorbate']}: {m['e_ads_prev']:+.3f} -> "
                          f"{m['e_ads_pred']:+.3f} eV (rank {m['rank_prev']} -> {m['rank']})")
    v = summary.get("verification") or {}
    if v.get("k"):
        if v.get("error"):
            t.add_row("[red]verification[/red]", v["error"])
        else:
            t.add_row("verification", f"top {v['k']} per adsorbate: {v['n']} relaxed with {v.get('calculator')}, "
                                      f"MAE {v.get('mae')} eV ({v.get('n_anomaly', 0)} with anomalies)")
    t.add_row("time", f"{summary['seconds']} s; summary {summary.get('summary_path', '')}")
    console.print(t)
    if ranking is None or ranking.empty:
        return
    rt = Table(title=f"top {top} systems by predicted E_ads (eV; AdsorbML min over placements)")
    for col in ("bulk", "miller", "adsorbate", "site_type", "e_ads_pred", "n_placements"):
        rt.add_column(col, justify="right" if col in ("e_ads_pred", "n_placements") else "left", no_wrap=True)
    for r in ranking.head(top).itertuples():
        rt.add_row(str(r.bulk), str(r.miller), str(r.adsorbate), str(r.site_type), f"{r.e_ads_pred:.3f}",
                   str(r.n_placements))
    console.print(rt)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_heatmap(ranking: pd.DataFrame, path: str | Path, title: str = "") -> Path | None:
    """Best predicted E_ads (eV) per bulk × adsorbate."""
    if ranking is None or ranking.empty:
        return None
    import numpy as np

    plt = _plt()
    table = ranking.pivot_table(index="bulk", columns="adsorbate", values="e_ads_pred", aggfunc="min")
    table = table.loc[table.min(axis=1).sort_values().index]
    h = max(3.5, 0.22 * len(table) + 1.8)
    w = max(6.5, 0.45 * len(table.columns) + 3.0)
    fig, ax = plt.subplots(figsize=(w, h))
    data = table.to_numpy(dtype=float)
    im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", cmap="viridis_r")
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(table.index)), table.index, fontsize=7)
    ax.set_xlabel("adsorbate")
    ax.set_ylabel("alloy (bulk)")
    ax.set_title(title or "best predicted E_ads per alloy and adsorbate", fontsize=9)
    if data.size <= 600:  # small enough to print the values
        lo, hi = np.nanmin(data), np.nanmax(data)
        for (i, j), v in np.ndenumerate(data):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if (v - lo) < 0.5 * (hi - lo) else "white")
    fig.colorbar(im, ax=ax, label="E_ads (eV)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_summary(ranking: pd.DataFrame, path: str | Path, verification: pd.DataFrame | None = None,
                 title: str = "") -> Path | None:
    """E_ads distribution per adsorbate (systems' best placements) and parity vs verification."""
    if ranking is None or ranking.empty:
        return None
    plt = _plt()
    has_v = verification is not None and not verification.empty
    fig, axes = plt.subplots(1, 2 if has_v else 1, figsize=(11 if has_v else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    order = ranking.groupby("adsorbate")["e_ads_pred"].median().sort_values().index
    ax.boxplot([ranking.loc[ranking["adsorbate"] == a, "e_ads_pred"] for a in order], showfliers=False)
    ax.set_xticks(range(1, len(order) + 1), order, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("best predicted E_ads per system (eV)")
    ax.set_title(title or "distribution per adsorbate", fontsize=9)
    if has_v:
        ax = axes[0][1]
        ok = verification[~verification["anomaly"].astype(bool)]
        bad = verification[verification["anomaly"].astype(bool)]
        ax.scatter(ok["e_ads_physics"], ok["e_ads_pred"], s=14, label="relaxed")
        if len(bad):
            ax.scatter(bad["e_ads_physics"], bad["e_ads_pred"], s=14, marker="x", label="anomaly")
        lo = min(verification["e_ads_physics"].min(), verification["e_ads_pred"].min()) - 0.1
        hi = max(verification["e_ads_physics"].max(), verification["e_ads_pred"].max()) + 0.1
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        mae = verification["abs_error"].mean()
        ax.set_xlabel("E_ads, labeller relaxation (eV)")
        ax.set_ylabel("E_ads predicted (eV)")
        ax.set_title(f"verification: {len(verification)} systems, MAE {mae:.3f} eV", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(summary: dict[str, Any], ranking: pd.DataFrame, verification: pd.DataFrame | None = None,
                results: str | Path | None = None) -> dict[str, str]:
    """``heatmap.png`` and ``summary.png`` under ``RESULTS/plots/screen=<name>/``; returns their paths."""
    root = Path(results or summary["results"]) / "plots" / f"screen={summary['screen']}"
    label = f"{summary['screen']} — model {summary['model_id']} ({summary['mode']})"
    out = {}
    p = plot_heatmap(ranking, root / "heatmap.png", f"best predicted E_ads (eV) per alloy and adsorbate\n{label}")
    if p:
        out["heatmap"] = str(p)
    p = plot_summary(ranking, root / "summary.png", verification, f"best E_ads per system, by adsorbate\n{label}")
    if p:
        out["summary"] = str(p)
    return out
