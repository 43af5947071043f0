"""The screening pipeline as plain functions (no Prefect): ``flows/screen.py`` and ``qecat screen`` call them.

:func:`run_screen` does, for a :class:`~qecat_core.config.ScreenConfig`:

1. :func:`enumerate_candidates` — the catalog into ``.aselmdb`` shards under
   ``WORK/<screen>/enumerations/<catalog hash>-s<shard size>/`` (cached by catalog hash and
   :data:`~qecat_core.enumerate.ENUMERATION_VERSION`; a lock file keeps two runs from enumerating
   into the same folder at once);
2. :func:`plan_screen` — the candidates not yet predicted by this model (``model_id``, the weights
   hash, and ``mode``) according to the results dataset; per enumeration shard one
   :class:`~qecat_core.executors.ShardTask` with those candidates (none when all are done), keyed by
   the content hash of its candidates; tasks whose per-shard output already exists
   (``WORK/<screen>/predictions/<model_id>/<mode>/<key>.parquet``) are not run again;
3. :func:`run_shards` — the remaining tasks through the executor (submitit ``local`` or ``slurm``);
   each shard's predictions are written atomically under a lock of their own; one bad shard fails
   alone, with a one-line error naming it;
4. :func:`collect` — under a lock on the results partition, the new predictions joined with the
   candidate metadata and appended as one Parquet file per run, every sid at most once per
   (model, mode) even across concurrent or killed runs::

       RESULTS/predictions/screen=<screen>/model=<model_id>/run_date=<YYYY-MM-DD>/part-<run_id>.parquet

5. :func:`rank` — AdsorbML ranking (minimum over placements per bulk/facet/adsorbate system) over
   every prediction of this model for the current candidates; a snapshot per run in
   ``RESULTS/rankings/screen=<screen>/ranking-<run_id>.parquet`` and the biggest movers against the
   previous run's snapshot;
6. :func:`verify` (``verify_top_k`` > 0) — the K best systems per adsorbate relaxed with the
   labeller through the same executor; ``e_ads_physics`` and the error next to ``e_ads_pred`` in
   ``RESULTS/verification/screen=<screen>/model=<model_id>/part-<run_id>.parquet``;
7. :func:`finish` — the run summary (``RESULTS/runs/screen=<screen>/run-<run_id>.json`` and a
   one-row ``.parquet`` for the ``runs`` view).

Energies in eV. ``qecat query`` (:mod:`qecat_core.query`) reads all of it with DuckDB.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import qecat_core
from qecat_core.config import ScreenConfig
from qecat_core.errors import InputError, QecatError
from qecat_core.executors import (PredictorSpec, ShardOutcome, ShardTask, file_lock, output_ok,
                                  run_prediction_jobs)

META_COLUMNS = [
    "system_id", "slab_id", "bulk", "bulk_formula", "prototype", "metal_a", "metal_b", "fraction_b",
    "lattice_constant", "miller", "shift", "top", "adsorbate", "placement", "site_type",
    "binding_element", "binding_atoms", "n_atoms", "catalog_hash",
]
PREDICTION_SCHEMA = pa.schema([
    ("sid", pa.string()), ("system_id", pa.string()), ("slab_id", pa.string()), ("bulk", pa.string()),
    ("bulk_formula", pa.string()), ("prototype", pa.string()), ("metal_a", pa.string()), ("metal_b", pa.string()),
    ("fraction_b", pa.float64()), ("lattice_constant", pa.float64()), ("miller", pa.string()),
    ("shift", pa.float64()), ("top", pa.bool_()), ("adsorbate", pa.string()), ("placement", pa.string()),
    ("site_type", pa.string()), ("binding_element", pa.string()), ("binding_atoms", pa.string()),
    ("n_atoms", pa.int64()), ("catalog_hash", pa.string()),
    ("e_ads_pred", pa.float64()), ("mode", pa.string()), ("model_id", pa.string()),
    ("checkpoint_hash", pa.string()), ("code_version", pa.string()), ("run_id", pa.string()),
    ("timestamp", pa.timestamp("us", tz="UTC")),
])
ROW_GROUP_ROWS = 250_000


# ---------------------------------------------------------------------------------------------
# identities


def _h(*parts: Any, size: int = 8) -> str:
    h = hashlib.blake2b(digest_size=size)
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"|")
    return h.hexdigest()


def content_key(sids: Sequence[str]) -> str:
    """Content hash of a set of candidates (sids are hashes of the initial structures)."""
    return _h(*sorted(sids))


def new_run_id(now: datetime | None = None) -> str:
    """Unique, and sorts by start time (to the microsecond): ``YYYYmmddTHHMMSS.ffffffZ-<6 hex>``.

    >>> new_run_id(datetime(2026, 11, 26, 2, 0, 5, 42, tzinfo=timezone.utc))[:23]
    '20261126T020005.000042Z'
    """
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S.%fZ}-{uuid.uuid4().hex[:6]}"


_CODE_VERSION: str | None = None


def code_version() -> str:
    """``<package version>+g<commit>[.dirty]`` when run from a git checkout, else the version."""
    global _CODE_VERSION
    if _CODE_VERSION is None:
        version = qecat_core.__version__
        root = Path(qecat_core.__file__).resolve().parent.parent
        try:
            rev = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                                 text=True, timeout=10)
            if rev.returncode == 0 and rev.stdout.strip():
                dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no",
                                        "--", "qecat_core"], capture_output=True, text=True, timeout=10)
                version += f"+g{rev.stdout.strip()}" + (".dirty" if dirty.stdout.strip() else "")
        except (OSError, subprocess.SubprocessError):
            pass
        _CODE_VERSION = version
    return _CODE_VERSION


def checkpoint_info(path: str | Path) -> tuple[str, str]:
    """``(model_id, checkpoint_hash)`` of a model folder without loading the weights.

    ``model_id`` is the weights hash from ``config.json``; ``checkpoint_hash`` also covers the
    architecture, the normaliser and the tokenizer files (everything a prediction depends on).
    """
    from qecat_core.model.checkpoint import TOKENIZER_DIR, read_config

    cfg = read_config(path)
    model_id = str(cfg.get("model_id") or "")
    if not model_id:
        raise InputError(f"{Path(path) / 'config.json'}: no model_id")
    parts: list[Any] = [model_id, json.dumps({k: cfg.get(k) for k in ("model", "normalizer", "vocab_size")},
                                             sort_keys=True, default=str)]
    tok = Path(path) / TOKENIZER_DIR
    if tok.is_dir():
        for f in sorted(tok.rglob("*")):
            if f.is_file():
                parts += [f.relative_to(tok).as_posix(), f.read_bytes()]
    return model_id, _h(*parts)


# ---------------------------------------------------------------------------------------------
# paths


@dataclass
class ScreenPaths:
    results: Path
    work: Path  # WORK/<screen>
    name: str

    @classmethod
    def of(cls, cfg: ScreenConfig, name: str) -> ScreenPaths:
        return cls(cfg.results.resolve(), (cfg.work / name).resolve(), name)

    def enumeration(self, catalog_hash: str, shard_size: int) -> Path:
        return self.work / "enumerations" / f"{catalog_hash}-s{shard_size}"

    def shard_outputs(self, model_id: str, mode: str) -> Path:
        return self.work / "predictions" / model_id / mode

    def submitit(self, run_id: str) -> Path:
        return self.work / "submitit" / run_id

    def predictions(self, model_id: str | None = None) -> Path:
        p = self.results / "predictions" / f"screen={self.name}"
        return p / f"model={model_id}" if model_id else p

    def candidates(self) -> Path:
        return self.results / "candidates" / f"screen={self.name}" / "candidates.parquet"

    def rankings(self) -> Path:
        return self.results / "rankings" / f"screen={self.name}"

    def verification(self, model_id: str) -> Path:
        return self.results / "verification" / f"screen={self.name}" / f"model={model_id}"

    def runs(self) -> Path:
        return self.results / "runs" / f"screen={self.name}"

    def plots(self) -> Path:
        return self.results / "plots" / f"screen={self.name}"

    def lock(self, what: str) -> Path:
        return self.results / ".locks" / f"{what}-{self.name}.lock"


# ---------------------------------------------------------------------------------------------
# 1. enumeration


@dataclass
class Enumeration:
    name: str  # screen name
    catalog: str
    catalog_hash: str
    directory: str
    n_candidates: int
    n_shards: int
    seconds: float


def screen_name(cfg: ScreenConfig, catalog=None) -> str:
    if cfg.name:
        return cfg.name
    if catalog is None:
        from qecat_core.catalog import load_catalog

        catalog = load_catalog(cfg.catalog)
    return catalog.name


def check_model_elements(cfg: ScreenConfig, catalog) -> None:
    """Refuse (one-line :class:`InputError`) a catalog with elements the screening model was not trained on.

    The model's ``config.json`` lists them (``training_elements``; a model without the list is not
    checked). ``allow_unseen_elements: true`` in the screen config screens such a catalog anyway.
    """
    from qecat_core.model.checkpoint import read_config
    from qecat_core.model.elements import unseen_elements

    if cfg.allow_unseen_elements:
        return
    checkpoint = cfg.checkpoint_path()
    model_cfg = read_config(checkpoint)
    trained = model_cfg.get("training_elements")
    for field_name, els in catalog.elements().items():
        bad = unseen_elements(els, trained)
        if bad:
            raise InputError(f"{cfg.catalog}: {field_name} use {', '.join(bad)}, which model "
                             f"{model_cfg.get('model_id')} ({checkpoint}) never saw in training (trained on "
                             f"{', '.join(trained)}); screen with a model trained on them, or set "
                             f"allow_unseen_elements: true in the screen config (--allow-unseen-elements) "
                             f"to screen anyway")


def enumerate_candidates(cfg: ScreenConfig, progress: bool = False) -> Enumeration:
    """Enumerate the catalog into the work folder, once per catalog hash and shard size.

    First checks the catalog's elements against the model's (:func:`check_model_elements`)."""
    from qecat_core.catalog import load_catalog
    from qecat_core.enumerate import enumerate_catalog

    t0 = time.perf_counter()
    catalog = load_catalog(cfg.catalog)
    check_model_elements(cfg, catalog)
    name = screen_name(cfg, catalog)
    paths = ScreenPaths.of(cfg, name)
    chash = catalog.content_hash()
    out = paths.enumeration(chash, cfg.shard_size)
    with file_lock(out.parent / f".{out.name}.lock", note="enumerate"):
        manifest = enumerate_catalog(catalog, out, shard_size=cfg.shard_size, workers=cfg.n_workers(),
                                     progress=progress)
    return Enumeration(name, str(cfg.catalog), chash, str(out), int(manifest["n_candidates"]),
                       len(manifest["shards"]), round(time.perf_counter() - t0, 2))


def load_candidates(enum: Enumeration, cfg: ScreenConfig, columns: list[str] | None = None) -> pd.DataFrame:
    """The candidates in scope (all, or the ``limit`` with the lowest sid hash)."""
    from qecat_core.dataset import sample_candidates

    path = Path(enum.directory) / "candidates.parquet"
    try:
        df = pd.read_parquet(path, columns=columns)
    except Exception as exc:
        raise InputError(f"{path}: cannot read the candidate index ({type(exc).__name__}: {exc}); "
                         f"delete {enum.directory} to re-enumerate") from None
    if cfg.limit:
        df = sample_candidates(df, cfg.limit).reset_index(drop=True)
    return df


# ---------------------------------------------------------------------------------------------
# 2. plan


@dataclass
class ScreenPlan:
    run_id: str
    started_at: str
    run_date: str
    name: str
    config: dict[str, Any]
    executor: str
    catalog: str
    catalog_hash: str
    enumeration: str
    n_candidates: int
    n_already: int  # candidates predicted by this model before the run (skipped)
    model_id: str
    checkpoint: str
    checkpoint_hash: str
    mode: str
    code_version: str
    n_shards: int  # enumeration shards in scope
    n_shards_skipped: int  # every candidate already predicted
    tasks: list[ShardTask] = field(default_factory=list)  # shards with candidates to predict
    cached: list[str] = field(default_factory=list)  # task keys whose output exists already
    jobs: list[list[ShardTask]] = field(default_factory=list)  # the tasks to run, grouped per job
    enumerate_seconds: float = 0.0

    @property
    def cfg(self) -> ScreenConfig:
        return ScreenConfig.model_validate(self.config)

    @property
    def paths(self) -> ScreenPaths:
        return ScreenPaths(Path(self.config["results"]), Path(self.config["work"]) / self.name, self.name)

    @property
    def n_to_predict(self) -> int:
        return sum(t.n for t in self.tasks)


def predicted_sids(paths: ScreenPaths, model_id: str, mode: str) -> set[str]:
    """Sids with a prediction of this model and mode in the results dataset (any run date)."""
    root = paths.predictions(model_id)
    sids: set[str] = set()
    for f in sorted(root.glob("run_date=*/part-*.parquet")):
        try:
            t = pq.read_table(f, columns=["sid", "mode"])
        except Exception as exc:
            raise InputError(f"{f}: unreadable results file ({type(exc).__name__}: {exc}); move it away and rerun "
                             f"(its candidates are then predicted again)") from None
        sids.update(t.filter(pc.equal(t["mode"], mode))["sid"].to_pylist())
    return sids


def _balanced_jobs(tasks: list[ShardTask], n_jobs: int) -> list[list[ShardTask]]:
    """Tasks spread over ``n_jobs`` jobs with about equal candidate counts (largest first)."""
    n_jobs = max(1, min(n_jobs, len(tasks)))
    jobs: list[list[ShardTask]] = [[] for _ in range(n_jobs)]
    load = [0] * n_jobs
    for t in sorted(tasks, key=lambda t: (-t.n, t.shard)):
        k = int(np.argmin(load))
        jobs[k].append(t)
        load[k] += t.n
    for j in jobs:
        j.sort(key=lambda t: t.shard)
    return [j for j in jobs if j]


def group_jobs(tasks: list[ShardTask], cfg: ScreenConfig) -> list[list[ShardTask]]:
    """Local: one job per worker (one model load each); SLURM: one job per shard (or ``shards_per_job``)."""
    if not tasks:
        return []
    if cfg.shards_per_job:
        per = cfg.shards_per_job
        ordered = sorted(tasks, key=lambda t: t.shard)
        return [ordered[i:i + per] for i in range(0, len(ordered), per)]
    if cfg.executor == "local":
        return _balanced_jobs(tasks, cfg.n_workers())
    if cfg.executor == "inline":
        return _balanced_jobs(tasks, 1)
    return [[t] for t in sorted(tasks, key=lambda t: t.shard)]


def plan_screen(cfg: ScreenConfig, enum: Enumeration | None = None, run_id: str | None = None,
                progress: bool = False) -> ScreenPlan:
    """Enumerate (cached) and work out which shards need predictions with this model."""
    now = datetime.now(timezone.utc)
    run_id = run_id or new_run_id(now)
    checkpoint = cfg.checkpoint_path().resolve()
    model_id, ckpt_hash = checkpoint_info(checkpoint)
    if cfg.executor == "slurm":
        cfg.slurm_settings()  # one-line error naming the settings file before anything runs
    enum = enum or enumerate_candidates(cfg, progress=progress)
    paths = ScreenPaths.of(cfg, enum.name)
    cands = load_candidates(enum, cfg, columns=["sid", "shard"])
    done = predicted_sids(paths, model_id, cfg.mode)
    todo = cands[~cands["sid"].isin(done)]
    full = cands.groupby("shard").size()
    out_dir = paths.shard_outputs(model_id, cfg.mode)
    shard_dir = Path(enum.directory) / "shards"
    tasks: list[ShardTask] = []
    for shard, group in todo.groupby("shard", sort=True):
        sids = group["sid"].tolist()
        key = content_key(sids)
        whole = len(sids) == int(full[shard]) and not cfg.limit
        tasks.append(ShardTask(key=key, shard=str(shard_dir / shard), n=len(sids), output=str(out_dir / f"{key}.parquet"),
                               sids=None if whole else tuple(sids)))
    cached = [t.key for t in tasks if output_ok(t.output, t.n)]
    to_run = [t for t in tasks if t.key not in set(cached)]
    resolved = cfg.model_copy(update={"results": cfg.results.resolve(), "work": cfg.work.resolve(),
                                      "catalog": cfg.catalog, "checkpoint": checkpoint, "name": enum.name})
    return ScreenPlan(
        run_id=run_id, started_at=now.isoformat(timespec="seconds"), run_date=f"{now:%Y-%m-%d}", name=enum.name,
        config=resolved.model_dump(mode="json"), executor=cfg.executor, catalog=str(cfg.catalog),
        catalog_hash=enum.catalog_hash, enumeration=enum.directory, n_candidates=len(cands),
        n_already=int(len(cands) - len(todo)), model_id=model_id, checkpoint=str(checkpoint),
        checkpoint_hash=ckpt_hash, mode=cfg.mode, code_version=code_version(), n_shards=int(len(full)),
        n_shards_skipped=int(len(full) - len(tasks)), tasks=tasks, cached=cached, jobs=group_jobs(to_run, cfg),
        enumerate_seconds=enum.seconds,
    )


# ---------------------------------------------------------------------------------------------
# 3. run


def predictor_spec(plan: ScreenPlan) -> PredictorSpec:
    cfg = plan.cfg
    threads = cfg.slurm_settings().cpus_per_task if cfg.executor == "slurm" else 1
    return PredictorSpec(checkpoint=plan.checkpoint, mode=plan.mode, batch_size=cfg.batch_size,
                         num_threads=threads, model_id=plan.model_id,
                         allow_unseen_elements=cfg.allow_unseen_elements)


def run_shards(plan: ScreenPlan, jobs: Sequence[Sequence[ShardTask]] | None = None) -> list[ShardOutcome]:
    """Run ``jobs`` (default: all of the plan's) through the configured executor; one outcome per task."""
    cfg = plan.cfg
    jobs = plan.jobs if jobs is None else jobs
    slurm = cfg.slurm_settings() if cfg.executor == "slurm" else None
    return run_prediction_jobs(predictor_spec(plan), jobs, cfg.executor, plan.paths.submitit(plan.run_id),
                               workers=cfg.n_workers(), slurm=slurm, name=f"qecat-{plan.name}")


def cached_outcomes(plan: ScreenPlan) -> list[ShardOutcome]:
    by_key = {t.key: t for t in plan.tasks}
    return [ShardOutcome(k, by_key[k].shard, by_key[k].n, "cached") for k in plan.cached]


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
    from qecat_core.parquet import write_parquet_atomic

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
    tmp = part.with_name(f".{part.name}.{uuid.uuid4().hex[:8]}.tmp")
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


# ---------------------------------------------------------------------------------------------
# 5. rank


RANK_COLUMNS = ["sid", "system_id", "bulk", "bulk_formula", "prototype", "metal_a", "metal_b", "miller", "shift",
                "top", "adsorbate", "site_type", "e_ads_pred", "run_id"]


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
    from qecat_core.parquet import write_parquet_atomic
    from qecat_core.ranking import rank_systems, snapshot_table

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


# ---------------------------------------------------------------------------------------------
# 6. verify


def _read_structures_of(plan: ScreenPlan, sids: set[str]) -> list:
    from qecat_core.io import iter_structures

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
    from qecat_core.calculators import normalize_spec
    from qecat_core.executors import LabelJob, job_result, make_executor, submit_all
    from qecat_core.io import write_aselmdb

    cfg = plan.cfg
    k = cfg.verify_top_k
    if k <= 0 or ranking.empty:
        return {"k": k, "n": 0}
    t0 = time.perf_counter()
    top = ranking.sort_values("e_ads_pred", kind="stable").groupby("adsorbate", sort=True).head(k)
    sids = set(top["sid"])
    spec = normalize_spec(cfg.calculator)
    slug = _h(spec, size=4) if ":" in spec else spec
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
    from qecat_core.parquet import write_parquet_atomic

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


# ---------------------------------------------------------------------------------------------
# 7. finish / all steps


def finish(plan: ScreenPlan, outcomes: Sequence[ShardOutcome], collected: Collected, ranking: pd.DataFrame,
           moved: dict[str, Any], verification: dict[str, Any] | None, seconds: float | None = None) -> dict[str, Any]:
    """Write the run summary (JSON + a one-row parquet for the ``runs`` view); return it."""
    from qecat_core.parquet import write_parquet_atomic

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
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=1, default=str))
    os.replace(tmp, path)
    row = {k: summary[k] for k in ("run_id", "status", "started_at", "finished_at", "seconds", "catalog",
                                   "catalog_hash", "model_id", "checkpoint_hash", "mode", "executor",
                                   "code_version", "candidates", "skipped", "new", "failed_candidates")}
    row.update({f"shards_{k}": v for k, v in summary["shards"].items()})
    row["failed_shards"] = "; ".join(f"{f['shard']}: {f['error']}" for f in failed)
    row["verified"] = int(verification.get("n") or 0)
    row["verify_mae"] = verification.get("mae")
    row["summary"] = str(path)
    write_parquet_atomic(pd.DataFrame([row]).astype({"verify_mae": "float64"}), runs / f"run-{plan.run_id}.parquet")
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
    ranking = rank(plan)
    moved = movers(plan, ranking)
    ver = verify(plan, ranking) if cfg.verify_top_k else None
    summary = finish(plan, outcomes, collected, ranking, moved, ver, seconds=time.perf_counter() - t0)
    return ScreenResult(summary, ranking, (ver or {}).get("table"))


__all__ = [
    "Collected", "Enumeration", "ScreenPaths", "ScreenPlan", "ScreenResult", "cached_outcomes", "checkpoint_info",
    "code_version", "collect", "content_key", "enumerate_candidates", "finish", "group_jobs", "load_candidates",
    "movers", "new_run_id", "plan_screen", "predicted_sids", "rank", "read_predictions", "run_screen",
    "run_shards", "screen_name", "verify", "write_candidates_view",
]
