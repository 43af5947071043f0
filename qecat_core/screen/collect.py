"""Screening step 4: publish the new predictions to the results dataset, exactly once.

:func:`collect` — under a lock on the results partition, the new predictions joined with the
candidate metadata and appended as one Parquet file per run, every sid at most once per
(model, mode) even across concurrent or killed runs::

    RESULTS/predictions/screen=<screen>/model=<model_id>/run_date=<YYYY-MM-DD>/part-<run_id>.parquet
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qecat_core.common.atomic import temporary_name
from qecat_core.common.errors import QecatError
from qecat_core.common.locks import file_lock
from qecat_core.results.schema import CANDIDATE_META, PREDICTIONS, arrow_schema
from qecat_core.screen.jobs import ShardOutcome
from qecat_core.screen.plan import (
    Enumeration,
    ScreenPlan,
    load_candidates,
    predicted_sids,
)

META_COLUMNS = list(CANDIDATE_META)
PREDICTION_SCHEMA = arrow_schema(PREDICTIONS)
ROW_GROUP_ROWS = 250_000


# ---------------------------------------------------------------------------------------------
# 4. collect


def _metadata(plan: ScreenPlan) -> pd.DataFrame:
    path = Path(plan.enumeration) / "candidates.parquet"
    return pd.read_parquet(path, columns=["sid", *META_COLUMNS]).set_index("sid")


def _remove_tmp(folder: Path) -> None:
    if folder.is_dir():
        for tmp in folder.rglob(".*.tmp"):
            try:
                tmp.unlink()
            except OSError:
                pass


def write_candidates_view(plan: ScreenPlan) -> Path:
    """The candidates in scope, for the ``candidates`` view (rewritten when the catalog changes)."""
    from qecat_core.common.atomic import write_parquet_atomic

    path = plan.paths.candidates()
    stamp = json.dumps({"catalog_hash": plan.catalog_hash, "limit": plan.config.get("limit"), "n": plan.n_candidates})
    if path.is_file():
        try:
            meta = pq.read_schema(path).metadata or {}
            if meta.get(b"qecat") == stamp.encode():
                return path
        except Exception:
            pass
    cfg = plan.cfg
    enum = Enumeration(plan.name, plan.catalog, plan.catalog_hash, plan.enumeration, plan.n_candidates, 0, 0.0)
    df = load_candidates(enum, cfg)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"qecat": stamp.encode()})
    with file_lock(plan.paths.lock("candidates"), note=plan.run_id):
        write_parquet_atomic(table, path)
    return path


@dataclass
class Collected:
    n_new: int  # rows published by this run
    n_duplicate: int  # predicted here but already published (e.g. by a concurrent run): dropped
    part: str | None
    seconds: float


def collect(plan: ScreenPlan, outcomes: Sequence[ShardOutcome]) -> Collected:
    """Publish the finished shards' predictions into the results dataset, each sid exactly once.

    Holds the results lock for this (screen, model) while it reads the sids already there and writes
    one new part file (temporary name, then ``os.replace``): a crash leaves the old state, a concurrent
    run's rows are never duplicated.
    """
    t0 = time.perf_counter()
    write_candidates_view(plan)
    ok = {o.key for o in outcomes if o.status in ("done", "cached")}
    tasks = [t for t in plan.tasks if t.key in ok]
    if not tasks:
        return Collected(0, 0, None, round(time.perf_counter() - t0, 2))
    paths = plan.paths
    part = paths.predictions(plan.model_id) / f"run_date={plan.run_date}" / f"part-{plan.run_id}.parquet"
    tmp = temporary_name(part)
    meta = _metadata(plan)
    stamp = pd.Timestamp(plan.started_at)
    consts = {"mode": plan.mode, "model_id": plan.model_id, "checkpoint_hash": plan.checkpoint_hash,
              "code_version": plan.code_version, "run_id": plan.run_id}
    n_new = n_dup = 0
    with file_lock(paths.lock(f"predictions-{plan.model_id}"), note=plan.run_id):
        _remove_tmp(paths.predictions(plan.model_id))
        done = predicted_sids(paths, plan.model_id, plan.mode)
        writer: pq.ParquetWriter | None = None
        buffer: list[pa.Table] = []
        buffered = 0

        def flush() -> None:
            nonlocal writer, buffer, buffered
            if not buffer:
                return
            if writer is None:
                tmp.parent.mkdir(parents=True, exist_ok=True)
                writer = pq.ParquetWriter(tmp, PREDICTION_SCHEMA, compression="zstd")
            writer.write_table(pa.concat_tables(buffer), row_group_size=ROW_GROUP_ROWS)
            buffer, buffered = [], 0

        try:
            for t in tasks:
                try:
                    df = pd.read_parquet(t.output, columns=["sid", "e_ads_pred", "model_id"])
                except Exception as exc:
                    raise QecatError(f"{t.output}: unreadable shard output ({type(exc).__name__}); "
                                     f"delete it and rerun") from None
                if (df["model_id"] != plan.model_id).any():
                    raise QecatError(f"{t.output}: holds predictions of another model; delete it and rerun")
                fresh = df[~df["sid"].isin(done)]
                n_dup += len(df) - len(fresh)
                if fresh.empty:
                    continue
                rows = meta.loc[fresh["sid"]].reset_index()
                rows["e_ads_pred"] = fresh["e_ads_pred"].to_numpy()
                for k, v in consts.items():
                    rows[k] = v
                rows["timestamp"] = stamp
                buffer.append(pa.Table.from_pandas(rows, schema=PREDICTION_SCHEMA, preserve_index=False))
                buffered += len(rows)
                n_new += len(rows)
                done.update(fresh["sid"])
                if buffered >= ROW_GROUP_ROWS:
                    flush()
            flush()
            if writer is not None:
                writer.close()
                writer = None
                os.replace(tmp, part)
        finally:
            if writer is not None:
                writer.close()
            if tmp.exists():
                tmp.unlink()
    return Collected(n_new, n_dup, str(part) if n_new else None, round(time.perf_counter() - t0, 2))


