"""Screening steps 1-3: enumerate the catalog (cached), plan what is new, run the shard jobs.

* :func:`enumerate_candidates` — the catalog into ``.aselmdb`` shards under
  ``WORK/<screen>/enumerations/<catalog hash>-s<shard size>/`` (cached by catalog hash and
  :data:`~qecat_core.enumerate.candidates.ENUMERATION_VERSION`; a lock file keeps two runs from
  enumerating into the same folder at once);
* :func:`plan_screen` — the candidates not yet predicted by this model (``model_id``, the weights
  hash, and ``mode``) according to the results dataset; per enumeration shard one
  :class:`~qecat_core.screen.jobs.ShardTask` with those candidates (none when all are done), keyed
  by the content hash of its candidates; tasks whose per-shard output already exists
  (``WORK/<screen>/predictions/<model_id>/<mode>/<key>.parquet``) are not run again;
* :func:`run_shards` — the remaining tasks through the executor (submitit ``local`` or ``slurm``);
  each shard's predictions are written atomically under a lock of their own; one bad shard fails
  alone, with a one-line error naming it.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

import qecat_core
from qecat_core.common.errors import InputError
from qecat_core.common.hashing import short_hash
from qecat_core.common.locks import file_lock
from qecat_core.results.schema import CANDIDATE_META, PREDICTIONS, arrow_schema
from qecat_core.screen.config import ScreenConfig
from qecat_core.screen.executors import run_prediction_jobs
from qecat_core.screen.jobs import PredictorSpec, ShardOutcome, ShardTask, output_ok

META_COLUMNS = list(CANDIDATE_META)
PREDICTION_SCHEMA = arrow_schema(PREDICTIONS)
ROW_GROUP_ROWS = 250_000


# ---------------------------------------------------------------------------------------------
# identities


def content_key(sids: Sequence[str]) -> str:
    """Content hash of a set of candidates (sids are hashes of the initial structures)."""
    return short_hash(*sorted(sids))


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
    return model_id, short_hash(*parts)


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
        from qecat_core.catalog.schema import load_catalog

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
    from qecat_core.catalog.schema import load_catalog
    from qecat_core.enumerate.candidates import enumerate_catalog

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
    from qecat_core.enumerate.candidates import sample_candidates

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
    cfg.check_device()  # and the device, before enumerating
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
                         allow_unseen_elements=cfg.allow_unseen_elements, device=cfg.device,
                         max_atoms_per_batch=cfg.max_atoms_per_batch)


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


