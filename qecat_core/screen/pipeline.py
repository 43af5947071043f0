"""The screening pipeline as plain functions (no Prefect): ``flows/screen.py`` and ``qecat screen`` call them.

:func:`run_screen` does, for a :class:`~qecat_core.screen.config.ScreenConfig`, the steps of
:mod:`~qecat_core.screen.plan` (enumerate, plan, run), :mod:`~qecat_core.screen.collect`,
:mod:`~qecat_core.screen.rank` and :mod:`~qecat_core.screen.verify`, then :func:`finish`: the run
summary (``RESULTS/runs/screen=<screen>/run-<run_id>.json`` and a one-row ``.parquet`` for the
``runs`` view). Energies in eV. ``qecat query`` (:mod:`qecat_core.results.query`) reads all of it
with DuckDB.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from qecat_core.common.atomic import write_json_atomic
from qecat_core.common.errors import QecatError
from qecat_core.results.schema import CANDIDATE_META, PREDICTIONS, RUNS, arrow_schema
from qecat_core.screen.collect import Collected, collect
from qecat_core.screen.config import ScreenConfig
from qecat_core.screen.jobs import ShardOutcome, ShardTask
from qecat_core.screen.plan import (
    ScreenPaths,
    ScreenPlan,
    cached_outcomes,
    plan_screen,
    run_shards,
    screen_name,
)
from qecat_core.screen.rank import rank_with_movers
from qecat_core.screen.verify import verify

META_COLUMNS = list(CANDIDATE_META)
PREDICTION_SCHEMA = arrow_schema(PREDICTIONS)
ROW_GROUP_ROWS = 250_000



# ---------------------------------------------------------------------------------------------
# 7. finish / all steps


def finish(plan: ScreenPlan, outcomes: Sequence[ShardOutcome], collected: Collected, ranking: pd.DataFrame,
           moved: dict[str, Any], verification: dict[str, Any] | None, seconds: float | None = None) -> dict[str, Any]:
    """Write the run summary (JSON + a one-row parquet for the ``runs`` view); return it."""
    from qecat_core.common.atomic import write_parquet_atomic

    by_status: dict[str, list[ShardOutcome]] = {"done": [], "cached": [], "failed": []}
    seen = set()
    for o in outcomes:
        if o.key in seen:
            continue
        seen.add(o.key)
        by_status.setdefault(o.status, []).append(o)
    missing = [t for t in plan.tasks if t.key not in seen]  # no outcome at all (should not happen)
    failed = [{"shard": Path(o.shard).name, "path": o.shard, "n": o.n, "error": o.error, "job_id": o.job_id}
              for o in by_status["failed"]]
    failed += [{"shard": Path(t.shard).name, "path": t.shard, "n": t.n, "error": "no result (job never reported)",
                "job_id": None} for t in missing]
    verification = dict(verification or {})
    verification.pop("table", None)
    finished = datetime.now(timezone.utc)
    status = "ok" if not failed and not verification.get("error") else "failed"
    summary = {
        "run_id": plan.run_id, "screen": plan.name, "status": status,
        "started_at": plan.started_at, "finished_at": finished.isoformat(timespec="seconds"),
        "seconds": round(seconds if seconds is not None else
                         (finished - datetime.fromisoformat(plan.started_at)).total_seconds(), 1),
        "catalog": plan.catalog, "catalog_hash": plan.catalog_hash, "model_id": plan.model_id,
        "checkpoint": plan.checkpoint, "checkpoint_hash": plan.checkpoint_hash, "mode": plan.mode,
        "executor": plan.executor, "code_version": plan.code_version,
        "candidates": plan.n_candidates, "skipped": plan.n_already, "to_predict": plan.n_to_predict,
        "new": collected.n_new, "duplicates_dropped": collected.n_duplicate,
        "failed_candidates": int(sum(f["n"] for f in failed)),
        "shards": {"total": plan.n_shards, "skipped": plan.n_shards_skipped, "cached": len(by_status["cached"]),
                   "run": len(by_status["done"]), "failed": len(failed), "jobs": len(plan.jobs)},
        "failed": failed, "movers": moved, "verification": verification,
        "results": str(plan.paths.results), "part": collected.part,
        "systems_ranked": int(len(ranking)), "config": plan.config,
    }
    runs = plan.paths.runs()
    runs.mkdir(parents=True, exist_ok=True)
    path = runs / f"run-{plan.run_id}.json"
    write_json_atomic(path, summary)
    row = {k: summary[k] for k in ("run_id", "status", "started_at", "finished_at", "seconds", "catalog",
                                   "catalog_hash", "model_id", "checkpoint_hash", "mode", "executor",
                                   "code_version", "candidates", "skipped", "new", "failed_candidates")}
    row.update({f"shards_{k}": v for k, v in summary["shards"].items()})
    row["failed_shards"] = "; ".join(f"{f['shard']}: {f['error']}" for f in failed)
    row["verified"] = int(verification.get("n") or 0)
    row["verify_mae"] = verification.get("mae")
    row["summary"] = str(path)
    write_parquet_atomic(pd.DataFrame([row]), runs / f"run-{plan.run_id}.parquet", schema=arrow_schema(RUNS))
    summary["summary_path"] = str(path)
    return summary


@dataclass
class ScreenResult:
    summary: dict[str, Any]
    ranking: pd.DataFrame
    verification: pd.DataFrame | None = None

    @property
    def ok(self) -> bool:
        return self.summary["status"] == "ok"


def run_screen(cfg: ScreenConfig, progress: bool = False, run_id: str | None = None) -> ScreenResult:
    """Every step in this process (the executor still runs the shards in their own processes/jobs)."""
    t0 = time.perf_counter()
    plan = plan_screen(cfg, run_id=run_id, progress=progress)
    outcomes = cached_outcomes(plan) + run_shards(plan)
    collected = collect(plan, outcomes)
    ranking, moved = rank_with_movers(plan)
    ver = verify(plan, ranking) if cfg.verify_top_k else None
    summary = finish(plan, outcomes, collected, ranking, moved, ver, seconds=time.perf_counter() - t0)
    return ScreenResult(summary, ranking, (ver or {}).get("table"))


def job_chunks(plan: ScreenPlan) -> list[tuple[str, list[list[ShardTask]]]]:
    """How a workflow engine submits the plan's jobs: local, one chunk per job (they run side by
    side); SLURM, one chunk per job array of at most ``max_array_size`` jobs."""
    if plan.executor != "slurm":
        return [(f"{k:03d}", [job]) for k, job in enumerate(plan.jobs)]
    size = plan.cfg.slurm_settings().max_array_size
    return [(f"array-{k // size:03d}", plan.jobs[k:k + size]) for k in range(0, len(plan.jobs), size)]


def report(cfg: ScreenConfig, run_id: str, top: int = 20, raise_from: Any = None) -> dict[str, Any]:
    """Print the summary and the top of the ranking of run ``run_id`` (as written by :func:`finish`).

    ``raise_from``: a Prefect state whose error to re-raise when the run wrote no summary (bad input).
    """
    import sys

    from qecat_core.results.report import print_report

    paths = ScreenPaths.of(cfg, screen_name(cfg))
    summary_path = paths.runs() / f"run-{run_id}.json"
    if not summary_path.is_file():
        if raise_from is not None:
            raise_from.result()
        raise QecatError(f"run {run_id} finished without writing {summary_path}")
    summary = json.loads(summary_path.read_text())
    summary["summary_path"] = str(summary_path)
    print_report(summary, pd.read_parquet(paths.rankings() / f"ranking-{run_id}.parquet"), top=top)
    for what in ("heatmap", "summary"):
        if (p := paths.plots() / f"{what}.png").is_file():
            print(f"{what}: {p}")
    if summary["status"] != "ok":
        print(f"error: {len(summary['failed'])} shard(s) failed (see {summary_path}); rerun to retry them",
              file=sys.stderr)
    return summary
