"""Read-only SQL over the screening results (DuckDB over the Parquet files under ``results/``).

Views (hive-partitioned paths become columns):

=================  ==========================================================================
``candidates``     the candidates in scope of each screen (``screen`` + candidates.parquet columns)
``predictions``    every prediction: candidate metadata, ``e_ads_pred`` (eV), ``mode``, ``model_id``,
                   ``checkpoint_hash``, ``catalog_hash``, ``code_version``, ``run_id``, ``timestamp``;
                   partitions ``screen``, ``model``, ``run_date``
``ranking``        AdsorbML: per (screen, model_id, mode, system) the placement of lowest
                   ``e_ads_pred``, over the current candidates; ``rank`` within each adsorbate.
                   Read from the newest ranking snapshot each run writes per (screen, model_id,
                   mode), so it costs a scan of one small file, not a group-by over every
                   prediction; computed from ``predictions`` when no snapshot exists yet.
                   ``run_id``: the run that wrote the snapshot
``ranking_history``  the ranking snapshot each run wrote (``run_id`` column)
``runs``           one row per run (counts, status, failed shards, verification MAE)
``verification``   ``e_ads_pred``, ``e_ads_physics`` (labeller relaxation) and ``error`` of verified systems
=================  ==========================================================================

Only queries that read (SELECT / WITH / VALUES / DESCRIBE / SHOW / EXPLAIN / SUMMARIZE) are
accepted; file access is limited to the results folder. Errors are one line
(:class:`~qecat_core.common.errors.QecatError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qecat_core.common.errors import QecatError
from qecat_core.results.schema import (
    CANDIDATE_LOCATION,
    CANDIDATES,
    HIVE,
    PREDICTIONS,
    RANKING,
    RUNS,
    VERIFICATION,
    duckdb_empty,
    duckdb_type,
)

READ_ONLY = {"SELECT", "EXPLAIN", "PRAGMA"}  # StatementType names (DESCRIBE/SHOW/SUMMARIZE parse as SELECT/PRAGMA)

# the hive partition columns of each view's folders, and its columns when it has no files yet (so
# that queries still bind); both from qecat_core.results.schema
_HIVE = {"candidates": ("screen",), "predictions": ("screen", "model", "run_date"), "ranking_history": ("screen",),
         "runs": ("screen",), "verification": ("screen", "model")}
_TABLES = {"candidates": {**CANDIDATES, **CANDIDATE_LOCATION}, "predictions": PREDICTIONS,
           "ranking_history": RANKING, "runs": RUNS, "verification": VERIFICATION}


def _hive_types(view: str) -> str:
    return "{" + ", ".join(f"'{k}': {duckdb_type(HIVE[k])}" for k in _HIVE[view]) + "}"


def _empty(view: str) -> str:
    return duckdb_empty({**{k: HIVE[k] for k in _HIVE[view]}, **_TABLES[view]})


# (view, glob relative to results/, hive partitioning)
_SOURCES = {
    "candidates": "candidates/*/candidates.parquet",
    "predictions": "predictions/*/*/*/part-*.parquet",
    "ranking_history": "rankings/*/ranking-*.parquet",
    "runs": "runs/*/run-*.parquet",
    "verification": "verification/*/*/part-*.parquet",
}

RANKING_COLUMNS = ", ".join(["screen", *(c for c in RANKING if c != "run_id")])

RANKING_SQL = """
CREATE VIEW ranking AS
WITH best AS (
  SELECT p.screen, p.model_id, p.mode, p.system_id,
         any_value(p.bulk) AS bulk, any_value(p.bulk_formula) AS bulk_formula, any_value(p.prototype) AS prototype,
         any_value(p.metal_a) AS metal_a, any_value(p.metal_b) AS metal_b, any_value(p.miller) AS miller,
         any_value(p.shift) AS shift, any_value(p.top) AS top, any_value(p.adsorbate) AS adsorbate,
         arg_min(p.site_type, p.e_ads_pred) AS site_type, arg_min(p.sid, p.e_ads_pred) AS sid,
         min(p.e_ads_pred) AS e_ads_pred, count(*) AS n_placements
  FROM predictions p SEMI JOIN candidates c ON p.screen = c.screen AND p.sid = c.sid
  GROUP BY p.screen, p.model_id, p.mode, p.system_id
)
SELECT *, row_number() OVER (PARTITION BY screen, model_id, mode, adsorbate
                             ORDER BY e_ads_pred, system_id) AS rank, NULL::VARCHAR AS run_id
FROM best
"""

VIEWS = ("candidates", "predictions", "ranking", "ranking_history", "runs", "verification")


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def connect(results: str | Path = "results"):
    """An in-memory DuckDB connection with the result views registered, locked to ``results``."""
    import duckdb

    root = Path(results).resolve()
    con = duckdb.connect(":memory:")
    for view, pattern in _SOURCES.items():
        files = sorted(root.glob(pattern))
        if files:
            hive = f"hive_partitioning = true, hive_types = {_hive_types(view)}, union_by_name = true"
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM read_parquet({_quote(str(root / pattern))}, {hive})")
        else:
            con.execute(f"CREATE VIEW {view} AS SELECT {_empty(view)} WHERE false")
    latest = latest_rankings(root)
    if latest:
        files = "[" + ", ".join(_quote(str(f)) for f in latest) + "]"
        con.execute(f"CREATE VIEW ranking AS SELECT {RANKING_COLUMNS}, run_id FROM read_parquet({files}, "
                    "hive_partitioning = true, hive_types = {'screen': VARCHAR}, union_by_name = true)")
    else:
        con.execute(RANKING_SQL)
    con.execute(f"SET allowed_directories = [{_quote(str(root) + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def latest_rankings(results: str | Path) -> list[Path]:
    """The newest ``rankings/screen=S/ranking-<run_id>.parquet`` of every (screen, model_id, mode).

    Run ids sort by time. ``model_id`` and ``mode`` come from the file's schema metadata (footer
    only; an empty snapshot counts too). Snapshots written before that metadata existed give them
    through their column statistics or, failing that, the two columns; empty ones are skipped.
    """
    import pyarrow.parquet as pq

    from qecat_core.results.ranking import snapshot_key

    newest: dict[tuple[str, str, str], tuple[str, Path]] = {}
    for f in Path(results).glob(_SOURCES["ranking_history"]):
        try:
            meta = pq.read_metadata(f)
        except Exception as exc:  # a truncated file cannot be a snapshot (writes are atomic)
            raise QecatError(f"{f}: not a readable Parquet ranking ({_first_line(exc)})") from None
        names = meta.schema.names
        key_vals = list(snapshot_key(meta.metadata) or [])
        if not key_vals and (meta.num_rows == 0 or meta.num_row_groups == 0
                             or "model_id" not in names or "mode" not in names):
            continue  # an untagged (older) snapshot needs its columns
        for col in ("model_id", "mode")[len(key_vals):]:
            st = meta.row_group(0).column(names.index(col)).statistics
            if st is not None and st.has_min_max and st.min == st.max:
                key_vals.append(st.min if isinstance(st.min, str) else st.min.decode())
            else:
                v = pq.read_table(f, columns=[col]).column(0).unique()
                if len(v) != 1:
                    raise QecatError(f"{f}: a ranking snapshot holds one {col}, found {len(v)}")
                key_vals.append(str(v[0]))
        key = (f.parent.name, *key_vals)
        run_id = f.stem.removeprefix("ranking-")
        if key not in newest or run_id > newest[key][0]:
            newest[key] = (run_id, f)
    return sorted(f for _, f in newest.values())


def _check_read_only(sql: str) -> None:
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QecatError(f"query: {_first_line(exc)}") from None
    if not statements:
        raise QecatError("query: empty SQL")
    for st in statements:
        kind = str(st.type).rsplit(".", 1)[-1]
        if kind not in READ_ONLY:
            raise QecatError(f"query: only read-only statements are allowed (SELECT, WITH, DESCRIBE, SHOW, "
                             f"SUMMARIZE, EXPLAIN); got {kind}")


def _first_line(exc: BaseException) -> str:
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    text = lines[0] if lines else type(exc).__name__
    near = next((l for l in lines[1:] if l.startswith("LINE ")), None)
    return f"{text} ({near})" if near else text


def query(sql: str, results: str | Path = "results") -> Any:
    """Run read-only ``sql`` over the results views; return a pandas DataFrame."""
    import duckdb

    _check_read_only(sql)
    con = connect(results)
    try:
        rel = con.sql(sql)
        return rel.df() if rel is not None else None
    except duckdb.Error as exc:
        raise QecatError(f"query: {_first_line(exc)}") from None
    finally:
        con.close()


def query_arrow(sql: str, results: str | Path = "results"):
    """Like :func:`query` but returns a pyarrow Table (for Parquet output)."""
    import duckdb

    _check_read_only(sql)
    con = connect(results)
    try:
        rel = con.sql(sql)
        return rel.to_arrow_table() if rel is not None else None
    except duckdb.Error as exc:
        raise QecatError(f"query: {_first_line(exc)}") from None
    finally:
        con.close()
