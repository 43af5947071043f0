"""Screening step 6: the best systems relaxed with the labeller, next to the prediction.

:func:`verify` (``verify_top_k`` > 0) — the K best systems per adsorbate relaxed with the labeller
through the same executor; ``e_ads_physics`` and the error (eV) next to ``e_ads_pred`` in
``RESULTS/verification/screen=<screen>/model=<model_id>/part-<run_id>.parquet``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from qecat_core.common.errors import QecatError
from qecat_core.common.hashing import short_hash
from qecat_core.common.locks import file_lock
from qecat_core.results.schema import CANDIDATE_META, PREDICTIONS, arrow_schema
from qecat_core.screen.collect import _remove_tmp
from qecat_core.screen.plan import ScreenPlan, content_key

META_COLUMNS = list(CANDIDATE_META)
PREDICTION_SCHEMA = arrow_schema(PREDICTIONS)
ROW_GROUP_ROWS = 250_000


# ---------------------------------------------------------------------------------------------
# 6. verify


def _read_structures_of(plan: ScreenPlan, sids: set[str]) -> list:
    from qecat_core.common.structures import iter_structures

    cands = pd.read_parquet(Path(plan.enumeration) / "candidates.parquet", columns=["sid", "shard"])
    shards = sorted(set(cands.loc[cands["sid"].isin(sids), "shard"]))
    found = []
    for shard in shards:
        for atoms in iter_structures(Path(plan.enumeration) / "shards" / shard):
            if atoms.info.get("sid") in sids:
                atoms.info.pop("source", None)
                found.append(atoms)
    return found


def verify(plan: ScreenPlan, ranking: pd.DataFrame) -> dict[str, Any]:
    """Relax the ``verify_top_k`` best systems per adsorbate with the labeller (same executor) and
    publish ``e_ads_physics`` and ``error = e_ads_pred - e_ads_physics`` (eV) next to ``e_ads_pred``."""
    from qecat_core.calculators.registry import normalize_spec
    from qecat_core.common.structures import write_aselmdb
    from qecat_core.screen.executors import job_result, make_executor, submit_all
    from qecat_core.screen.jobs import LabelJob

    cfg = plan.cfg
    k = cfg.verify_top_k
    if k <= 0 or ranking.empty:
        return {"k": k, "n": 0}
    t0 = time.perf_counter()
    top = ranking.sort_values("e_ads_pred", kind="stable").groupby("adsorbate", sort=True).head(k)
    sids = set(top["sid"])
    spec = normalize_spec(cfg.calculator)
    slug = short_hash(spec, size=4) if ":" in spec else spec
    vdir = plan.paths.work / "verify" / slug
    key = content_key(sorted(sids))
    inputs = vdir / "inputs" / f"{key}.aselmdb"
    if not inputs.is_file():
        structures = _read_structures_of(plan, sids)
        write_aselmdb(inputs, structures)
    slurm = cfg.slurm_settings() if cfg.executor == "slurm" else None
    workers = slurm.cpus_per_task if slurm else cfg.n_workers()
    executor, info = make_executor(cfg.executor, plan.paths.submitit(plan.run_id) / "verify",
                                   workers=1, slurm=slurm, name=f"qecat-verify-{plan.name}")
    labels = None
    error = None
    for sj in submit_all(executor, info, LabelJob(), [(str(inputs), str(vdir / "labels.parquet"), spec, workers)]):
        try:
            labels = job_result(sj, info.kind)
        except QecatError as exc:
            error = f"verification: {exc}"
    if labels is None:
        return {"k": k, "n": 0, "error": error or "verification job returned nothing",
                "seconds": round(time.perf_counter() - t0, 1)}
    phys = labels[["sid", "e_ads", "anomaly", "converged", "calculator"]].rename(columns={"e_ads": "e_ads_physics"})
    v = top.merge(phys, on="sid", how="inner")
    v = v[["sid", "system_id", "bulk", "miller", "adsorbate", "site_type", "rank", "e_ads_pred", "e_ads_physics",
           "anomaly", "converged", "calculator"]].copy()
    v["error"] = v["e_ads_pred"] - v["e_ads_physics"]
    v["abs_error"] = v["error"].abs()
    v["model_id"], v["mode"], v["run_id"] = plan.model_id, plan.mode, plan.run_id
    v["timestamp"] = pd.Timestamp(plan.started_at)
    out_dir = plan.paths.verification(plan.model_id)
    part = out_dir / f"part-{plan.run_id}.parquet"
    from qecat_core.common.atomic import write_parquet_atomic

    with file_lock(plan.paths.lock(f"verification-{plan.model_id}"), note=plan.run_id):
        _remove_tmp(out_dir)
        seen: set[tuple] = set()
        for f in sorted(out_dir.glob("part-*.parquet")):
            old = pd.read_parquet(f, columns=["sid", "mode", "calculator"])
            seen.update(zip(old["sid"], old["mode"], old["calculator"]))
        fresh = v[[(s, m, c) not in seen for s, m, c in zip(v["sid"], v["mode"], v["calculator"])]]
        if len(fresh):
            write_parquet_atomic(fresh.reset_index(drop=True), part)
    clean = v[~v["anomaly"].astype(bool)]
    return {"k": k, "n": int(len(v)), "n_new": int(len(fresh)), "calculator": spec,
            "mae": round(float(v["abs_error"].mean()), 4) if len(v) else None,
            "mae_no_anomaly": round(float(clean["abs_error"].mean()), 4) if len(clean) else None,
            "n_anomaly": int(len(v) - len(clean)), "part": str(part) if len(fresh) else None,
            "seconds": round(time.perf_counter() - t0, 1), "table": v}


