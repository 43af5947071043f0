"""Every column qecat writes, once: name, Arrow type and meaning (energies in eV, lengths in Å).

The tables a screen writes (``results/``) and the shard files between its stages are defined here;
everything else is derived: :func:`arrow_schema` for Parquet writers, :func:`duckdb_empty` for the
views over files that do not exist yet, and the column lists the stages select. A new column (say
a per-prediction uncertainty ``e_ads_std``) is added to its table here and nowhere else.

>>> [f.name for f in arrow_schema(SHARD_OUTPUT)]
['sid', 'e_ads_pred', 'mode', 'model_id']
>>> duckdb_empty({"sid": STRING, "e_ads_pred": FLOAT})
'NULL::VARCHAR AS sid, NULL::DOUBLE AS e_ads_pred'
"""

from __future__ import annotations

import pyarrow as pa

STRING, FLOAT, INT, BOOL = pa.string(), pa.float64(), pa.int64(), pa.bool_()
TIMESTAMP = pa.timestamp("us", tz="UTC")

#: What a candidate is (one row per enumerated adsorbate-slab structure), in enumeration order.
CANDIDATE_META: dict[str, pa.DataType] = {
    "system_id": STRING,      # slab termination + adsorbate: placements of one system share it
    "slab_id": STRING,        # bulk + facet termination
    "bulk": STRING,           # catalog label, e.g. Cu3Pt-L1_2
    "bulk_formula": STRING,   # as in OC20 strings, e.g. Cu3Pt
    "prototype": STRING,      # fcc, L1_2, L1_0, random
    "metal_a": STRING,
    "metal_b": STRING,
    "fraction_b": FLOAT,
    "lattice_constant": FLOAT,  # Å
    "miller": STRING,         # "1 1 1"
    "shift": FLOAT,           # termination shift (pymatgen), Å
    "top": BOOL,              # the top (True) or flipped bottom termination
    "adsorbate": STRING,      # OC20 SMILES, e.g. *OH
    "placement": STRING,
    "site_type": STRING,      # ontop, bridge, fcc, hcp, hollow ...
    "binding_element": STRING,
    "binding_atoms": STRING,  # surface atoms the binding atom touches
    "n_atoms": INT,
    "catalog_hash": STRING,
}

#: ``candidates.parquet`` of an enumeration: sid, the metadata, the configuration text, and where the
#: structure lives (``shard`` file name, ``shard_row`` 0-based row in it).
CANDIDATES: dict[str, pa.DataType] = {
    "sid": STRING,
    **{k: v for k, v in CANDIDATE_META.items() if k != "catalog_hash"},
    "text": STRING,           # CatBERTa-style configuration string
    "catalog_hash": STRING,
}
CANDIDATE_LOCATION: dict[str, pa.DataType] = {"shard": STRING, "shard_row": INT}

#: What one shard job writes: predictions of one model for the structures of one shard.
SHARD_OUTPUT: dict[str, pa.DataType] = {
    "sid": STRING,
    "e_ads_pred": FLOAT,      # eV, relaxed adsorption energy
    "mode": STRING,           # fused, graph or text
    "model_id": STRING,
}

#: ``results/predictions/screen=*/model=*/run_date=*/part-*.parquet``: shard outputs joined with the
#: candidate metadata and the run's provenance.
PREDICTIONS: dict[str, pa.DataType] = {
    "sid": STRING,
    **CANDIDATE_META,
    "e_ads_pred": FLOAT,
    "mode": STRING,
    "model_id": STRING,
    "checkpoint_hash": STRING,
    "code_version": STRING,
    "run_id": STRING,
    "timestamp": TIMESTAMP,
}

#: The columns of a prediction that a ranking keeps (one row per placement, before the minimum).
RANK_INPUT = ("sid", "system_id", "bulk", "bulk_formula", "prototype", "metal_a", "metal_b", "miller", "shift",
              "top", "adsorbate", "site_type", "e_ads_pred", "run_id")

#: A ranking (``results/rankings/screen=*/ranking-*.parquet`` and the ``ranking`` view): one row per
#: system, its best placement (AdsorbML: minimum over placements) and its rank per adsorbate.
RANKING: dict[str, pa.DataType] = {
    "model_id": STRING, "mode": STRING, "system_id": STRING, "bulk": STRING, "bulk_formula": STRING,
    "prototype": STRING, "metal_a": STRING, "metal_b": STRING, "miller": STRING, "shift": FLOAT, "top": BOOL,
    "adsorbate": STRING, "site_type": STRING, "sid": STRING, "e_ads_pred": FLOAT, "n_placements": INT,
    "rank": INT, "run_id": STRING,
}

#: ``results/verification/``: the top systems relaxed with the labeller next to the prediction.
VERIFICATION: dict[str, pa.DataType] = {
    "sid": STRING, "system_id": STRING, "bulk": STRING, "miller": STRING, "adsorbate": STRING,
    "site_type": STRING, "rank": INT, "e_ads_pred": FLOAT,
    "e_ads_physics": FLOAT,   # eV, the labeller's relaxed adsorption energy
    "anomaly": BOOL, "converged": BOOL, "calculator": STRING,
    "error": FLOAT,           # e_ads_pred - e_ads_physics, eV
    "abs_error": FLOAT,
    "model_id": STRING, "mode": STRING, "run_id": STRING, "timestamp": TIMESTAMP,
}

#: ``results/runs/``: one row per screening run (the JSON summary beside it has everything).
RUNS: dict[str, pa.DataType] = {
    "run_id": STRING, "status": STRING, "started_at": STRING, "finished_at": STRING, "seconds": FLOAT,
    "catalog": STRING, "catalog_hash": STRING, "model_id": STRING, "checkpoint_hash": STRING, "mode": STRING,
    "executor": STRING, "code_version": STRING, "candidates": INT, "skipped": INT, "new": INT,
    "failed_candidates": INT, "shards_total": INT, "shards_skipped": INT, "shards_cached": INT, "shards_run": INT,
    "shards_failed": INT, "shards_jobs": INT, "failed_shards": STRING, "verified": INT, "verify_mae": FLOAT,
    "summary": STRING,
}

#: ``qecat label`` output: relaxed adsorption energies and anomaly flags (metadata columns follow).
LABELS: dict[str, pa.DataType] = {
    "sid": STRING,
    "e_ads": FLOAT,           # eV, OC20-referenced adsorption energy
    "e_total": FLOAT, "e_slab": FLOAT, "e_ref": FLOAT,  # eV
    "converged": BOOL, "n_steps": INT, "n_steps_slab": INT,
    "fmax_final": FLOAT,      # eV/Å
    "desorbed": BOOL, "dissociated": BOOL, "surface_changed": BOOL, "not_converged": BOOL, "anomaly": BOOL,
    "calculator": STRING, "calculator_version": STRING, "adsorbate_formula": STRING, "n_atoms": INT,
}

#: Hive partition columns of the result folders (``screen=``, ``model=``, ``run_date=``).
HIVE: dict[str, pa.DataType] = {"screen": STRING, "model": STRING, "run_date": pa.date32()}

_DUCKDB_TYPES = {STRING: "VARCHAR", FLOAT: "DOUBLE", INT: "BIGINT", BOOL: "BOOLEAN", TIMESTAMP: "TIMESTAMPTZ",
                 pa.date32(): "DATE"}


def arrow_schema(table: dict[str, pa.DataType]) -> pa.Schema:
    return pa.schema(list(table.items()))


def duckdb_type(t: pa.DataType) -> str:
    return _DUCKDB_TYPES[t]


def duckdb_empty(table: dict[str, pa.DataType]) -> str:
    """A ``SELECT`` list of typed NULLs with the table's columns (for a view with no files yet)."""
    return ", ".join(f"NULL::{duckdb_type(t)} AS {name}" for name, t in table.items())
