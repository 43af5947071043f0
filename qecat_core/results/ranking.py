"""Rankings by the AdsorbML convention.

The adsorption energy of a *system* (bulk, facet termination, adsorbate) is the minimum over its
placements; systems are ranked by it (most strongly bound first).

>>> import pandas as pd
>>> df = pd.DataFrame({"system_id": ["s1", "s1", "s2"], "bulk": ["Cu", "Cu", "Pt"],
...                    "miller": ["(1 1 1)"] * 3, "adsorbate": ["*O"] * 3,
...                    "site_type": ["top", "hollow-fcc", "top"], "e_ads": [-0.2, -0.9, -0.5]})
>>> rank_systems(df, "e_ads")[["bulk", "e_ads", "site_type", "n_placements"]].values.tolist()
[['Cu', -0.9, 'hollow-fcc', 2], ['Pt', -0.5, 'top', 1]]
"""

from __future__ import annotations

import json

import pandas as pd

SYSTEM_KEYS = ["system_id", "bulk", "miller", "adsorbate"]
# Parquet schema-metadata key of a screen's ranking snapshot (``rankings/screen=S/ranking-<run>.parquet``):
# JSON ``{"model_id", "mode"}``, so that readers find the newest snapshot per model from the footer
RANKING_KEY = b"qecat_ranking"


def snapshot_table(ranking: pd.DataFrame, model_id: str, mode: str):
    """``ranking`` as an Arrow table whose schema metadata names its model and mode (see :func:`snapshot_key`)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(ranking, preserve_index=False)
    tag = json.dumps({"model_id": model_id, "mode": mode}).encode()
    return table.replace_schema_metadata({**(table.schema.metadata or {}), RANKING_KEY: tag})


def snapshot_key(schema_metadata: dict | None) -> tuple[str, str] | None:
    """``(model_id, mode)`` from a snapshot's Parquet schema metadata; None for an untagged file."""
    tag = (schema_metadata or {}).get(RANKING_KEY)
    if not tag:
        return None
    info = json.loads(tag)
    return str(info["model_id"]), str(info["mode"])


def rank_systems(df: pd.DataFrame, energy: str) -> pd.DataFrame:
    """One row per system: the placement of lowest ``energy`` (eV), sorted ascending."""
    keys = [k for k in SYSTEM_KEYS if k in df.columns]
    ok = df.dropna(subset=[energy])
    best = ok.loc[ok.groupby("system_id")[energy].idxmin()].copy()
    best["n_placements"] = ok.groupby("system_id").size().reindex(best["system_id"]).to_numpy()
    cols = keys + [c for c in best.columns if c not in keys]
    return best[cols].sort_values(energy, kind="stable").reset_index(drop=True)
