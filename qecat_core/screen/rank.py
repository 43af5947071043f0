"""Screening step 5: the AdsorbML ranking of a run and its movers.

:func:`rank` — minimum over placements per bulk/facet/adsorbate system, over every prediction of
this model for the current candidates; a snapshot per run in
``RESULTS/rankings/screen=<screen>/ranking-<run_id>.parquet``; :func:`movers` — the biggest rank
changes against the previous run's snapshot.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from qecat_core.results.schema import (
    CANDIDATE_META,
    PREDICTIONS,
    RANK_INPUT,
    arrow_schema,
)
from qecat_core.screen.plan import Enumeration, ScreenPaths, ScreenPlan, load_candidates

META_COLUMNS = list(CANDIDATE_META)
PREDICTION_SCHEMA = arrow_schema(PREDICTIONS)
ROW_GROUP_ROWS = 250_000


# ---------------------------------------------------------------------------------------------
# 5. rank


RANK_COLUMNS = list(RANK_INPUT)


def read_predictions(paths: ScreenPaths, model_id: str, mode: str, columns: list[str] | None = None) -> pd.DataFrame:
    """Every prediction of this (screen, model, mode) in the results dataset."""
    files = sorted(paths.predictions(model_id).glob("run_date=*/part-*.parquet"))
    cols = columns or [f.name for f in PREDICTION_SCHEMA]
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=PREDICTION_SCHEMA.field(c).type.to_pandas_dtype()) for c in cols})
    frames = []
    for f in files:
        t = pq.read_table(f, columns=sorted(set(cols) | {"mode"}))
        t = t.filter(pc.equal(t["mode"], mode))
        frames.append(t.select(cols))
    return pa.concat_tables(frames).to_pandas()


def rank(plan: ScreenPlan) -> pd.DataFrame:
    """AdsorbML ranking of the current candidates by this model: one row per system, best first,
    with ``rank`` (1 = most strongly bound) within each adsorbate. Writes the run's snapshot."""
    from qecat_core.common.atomic import write_parquet_atomic
    from qecat_core.results.ranking import rank_systems, snapshot_table

    enum = Enumeration(plan.name, plan.catalog, plan.catalog_hash, plan.enumeration, plan.n_candidates, 0, 0.0)
    scope = set(load_candidates(enum, plan.cfg, columns=["sid"])["sid"])
    preds = read_predictions(plan.paths, plan.model_id, plan.mode, RANK_COLUMNS)
    preds = preds[preds["sid"].isin(scope)]
    if preds.empty:
        ranking = pd.DataFrame(columns=RANK_COLUMNS + ["n_placements", "rank"])
    else:
        ranking = rank_systems(preds, "e_ads_pred")
        ranking["rank"] = ranking.groupby("adsorbate").cumcount() + 1
    ranking = ranking.rename(columns={"run_id": "predicted_in_run"})
    ranking["model_id"] = plan.model_id
    ranking["mode"] = plan.mode
    ranking["run_id"] = plan.run_id
    write_parquet_atomic(snapshot_table(ranking, plan.model_id, plan.mode),  # read by query.latest_rankings
                         plan.paths.rankings() / f"ranking-{plan.run_id}.parquet")
    return ranking


def movers(plan: ScreenPlan, ranking: pd.DataFrame, top: int = 10) -> dict[str, Any]:
    """The systems whose best predicted E_ads changed most since the previous run's ranking."""
    earlier = sorted(p for p in plan.paths.rankings().glob("ranking-*.parquet")
                     if p.stem.removeprefix("ranking-") < plan.run_id)
    if not earlier:
        return {"previous_run": None, "n_new_systems": int(len(ranking)), "n_changed": 0, "top": []}
    prev = pd.read_parquet(earlier[-1], columns=["system_id", "e_ads_pred", "rank", "model_id"])
    prev_run = earlier[-1].stem.removeprefix("ranking-")
    cols = ["system_id", "bulk", "miller", "adsorbate", "e_ads_pred", "rank"]
    m = ranking[cols].merge(prev.rename(columns={"e_ads_pred": "e_ads_prev", "rank": "rank_prev",
                                                 "model_id": "model_prev"}), on="system_id", how="left")
    both = m.dropna(subset=["e_ads_prev"]).copy()
    both["delta"] = both["e_ads_pred"] - both["e_ads_prev"]
    changed = both[both["delta"].abs() > 1e-9]
    best = changed.reindex(changed["delta"].abs().sort_values(ascending=False).index).head(top)
    rows = [{"system_id": r.system_id, "bulk": r.bulk, "miller": r.miller, "adsorbate": r.adsorbate,
             "e_ads_prev": round(float(r.e_ads_prev), 4), "e_ads_pred": round(float(r.e_ads_pred), 4),
             "delta": round(float(r.delta), 4), "rank_prev": int(r.rank_prev), "rank": int(r.rank)}
            for r in best.itertuples()]
    return {"previous_run": prev_run, "previous_model": str(prev["model_id"].iloc[0]) if len(prev) else None,
            "n_new_systems": int(m["e_ads_prev"].isna().sum()),
            "n_removed_systems": int((~prev["system_id"].isin(ranking["system_id"])).sum()),
            "n_changed": int(len(changed)), "top": rows}


def rank_with_movers(plan: ScreenPlan) -> tuple[pd.DataFrame, dict[str, Any]]:
    """:func:`rank` and the :func:`movers` of that ranking."""
    ranking = rank(plan)
    return ranking, movers(plan, ranking)
