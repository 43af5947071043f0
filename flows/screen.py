"""Prefect flow ``screen``: a thin layer over :mod:`qecat_core.screening` (which runs without Prefect).

Tasks: ``enumerate`` (cached on disk by catalog hash) -> ``plan`` (which shards still need this
model's predictions) -> one ``shards`` task per local job or per SLURM array chunk (never per
candidate; retried when a job died) -> ``collect`` -> ``rank`` -> ``verify`` (``verify_top_k`` > 0)
-> ``finish`` (run summary, plots). The flow run fails, after writing its summary, when a shard failed.

    python -m flows.screen                                  # ephemeral Prefect, shipped model, local
    python -m flows.screen --config my-screen.yaml --executor slurm --slurm slurm/local-cluster.yaml
    qecat screen --prefect ...                              # the same from the CLI

Every parameter defaults to None = the value in ``config`` (a ScreenConfig YAML) or ScreenConfig's
default; see docs/screening.md.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

# an ephemeral Prefect server (no PREFECT_API_URL) may need more than the default 20 s to start on a
# busy machine; and it stays offline (no telemetry look-ups) unless told otherwise
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

import qecat_core  # noqa: F401,E402  (thread settings first)
from qecat_core.config import ScreenConfig, SlurmSettings, load_screen_config  # noqa: E402
from qecat_core.executors import ShardOutcome, ShardTask  # noqa: E402
from qecat_core.screening import (Enumeration,  # noqa: E402
                                  ScreenPlan, cached_outcomes, collect, enumerate_candidates, finish,
                                  movers, new_run_id, plan_screen, rank, run_shards, verify)

SHARD_RETRIES = 2


@task(name="enumerate", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def enumerate_task(cfg: ScreenConfig) -> Enumeration:
    # cached by catalog hash on disk (manifest.json): a hit returns at once and never goes stale
    return enumerate_candidates(cfg)


@task(name="plan", cache_policy=NO_CACHE)
def plan_task(cfg: ScreenConfig, enum: Enumeration, run_id: str) -> ScreenPlan:
    plan = plan_screen(cfg, enum=enum, run_id=run_id)
    get_run_logger().info("%s: %d candidates, %d already predicted by model %s (%s); %d shards to run, %d cached, "
                          "%d skipped", plan.name, plan.n_candidates, plan.n_already, plan.model_id, plan.mode,
                          sum(len(j) for j in plan.jobs), len(plan.cached), plan.n_shards_skipped)
    return plan


@task(name="shards", cache_policy=NO_CACHE, retries=SHARD_RETRIES, retry_delay_seconds=10,
      task_run_name="shards-{label}")
def shards_task(plan: ScreenPlan, jobs: list[list[ShardTask]], label: str) -> list[ShardOutcome]:
    from prefect.runtime import task_run

    outcomes = run_shards(plan, jobs)
    died = [o for o in outcomes if o.status == "failed" and o.retryable]
    if died and (task_run.run_count or 1) <= SHARD_RETRIES:
        # a killed / cancelled / timed-out job: retry the chunk (finished shards are skipped)
        raise RuntimeError(f"{len(died)} shard(s) lost with their job, e.g. {died[0].error}")
    for o in outcomes:
        if o.status == "failed":
            get_run_logger().error("%s", o.error)
    return outcomes


@task(name="collect", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def collect_task(plan: ScreenPlan, outcomes: list[ShardOutcome]):
    return collect(plan, outcomes)


@task(name="rank", cache_policy=NO_CACHE)
def rank_task(plan: ScreenPlan):
    ranking = rank(plan)
    return ranking, movers(plan, ranking)


@task(name="verify", cache_policy=NO_CACHE)
def verify_task(plan: ScreenPlan, ranking) -> dict[str, Any]:
    return verify(plan, ranking)


@task(name="finish", cache_policy=NO_CACHE)
def finish_task(plan: ScreenPlan, outcomes, collected, ranking, moved, verification) -> dict[str, Any]:
    from qecat_core.report import write_plots

    summary = finish(plan, outcomes, collected, ranking, moved, verification)
    summary["plots"] = write_plots(summary, ranking, (verification or {}).get("table"))
    return summary


def chunks_of(plan: ScreenPlan) -> list[tuple[str, list[list[ShardTask]]]]:
    """Local: one chunk per job (they run side by side); SLURM: one array of <= max_array_size jobs."""
    if plan.executor != "slurm":
        return [(f"{k:03d}", [job]) for k, job in enumerate(plan.jobs)]
    size = plan.cfg.slurm_settings().max_array_size
    return [(f"array-{k // size:03d}", plan.jobs[k:k + size]) for k in range(0, len(plan.jobs), size)]


@flow(name="screen", log_prints=True)
def screen(catalog: str | None = None, checkpoint: str | None = None, mode: str | None = None,
           executor: str | None = None, slurm: str | None = None, shard_size: int | None = None,
           batch_size: int | None = None, results: str | None = None, work: str | None = None,
           name: str | None = None, verify_top_k: int | None = None, calculator: str | None = None,
           workers: int | None = None, shards_per_job: int | None = None, limit: int | None = None,
           config: str | None = None, run_id: str | None = None,
           allow_unseen_elements: bool | None = None) -> dict[str, Any]:
    """Screen ``catalog`` with ``checkpoint``; returns the run summary (see qecat_core.screening.finish)."""
    cfg = load_screen_config(config, catalog=catalog, checkpoint=checkpoint, mode=mode, executor=executor,
                             slurm=slurm, shard_size=shard_size, batch_size=batch_size, results=results, work=work,
                             name=name, verify_top_k=verify_top_k, calculator=calculator, workers=workers,
                             shards_per_job=shards_per_job, limit=limit,
                             allow_unseen_elements=allow_unseen_elements)
    run_id = run_id or new_run_id()
    enum = enumerate_task(cfg)
    plan = plan_task(cfg, enum, run_id)
    futures = [(jobs, shards_task.submit(plan, jobs, label)) for label, jobs in chunks_of(plan)]
    outcomes = cached_outcomes(plan)
    for jobs, fut in futures:
        res = fut.result(raise_on_failure=False)
        if isinstance(res, BaseException) or res is None:
            why = f"{type(res).__name__}: {res}" if isinstance(res, BaseException) else "no result"
            outcomes += [ShardOutcome(t.key, t.shard, t.n, "failed", error=f"{t.shard}: {why}", retryable=True)
                         for job in jobs for t in job]
        else:
            outcomes += res
    collected = collect_task(plan, outcomes)
    ranking, moved = rank_task(plan)
    verification = verify_task(plan, ranking) if cfg.verify_top_k else None
    summary = finish_task(plan, outcomes, collected, ranking, moved, verification)
    logger = get_run_logger()
    logger.info("%s run %s: %d new, %d skipped, %d shards failed; summary %s", summary["screen"], run_id,
                summary["new"], summary["skipped"], summary["shards"]["failed"], summary["summary_path"])
    if summary["status"] != "ok":
        first = summary["failed"][0]["error"] if summary["failed"] else summary["verification"].get("error")
        raise RuntimeError(f"{summary['shards']['failed']} shard(s) failed (e.g. {first}); "
                           f"summary {summary['summary_path']}; rerun to retry them")
    return summary


def run_flow_and_report(cfg: ScreenConfig, top: int = 20, plots: bool = True) -> dict[str, Any]:
    """Run the flow for ``cfg`` (ephemeral Prefect unless PREFECT_API_URL is set) and print the report."""
    import json

    import pandas as pd

    from qecat_core.report import print_report
    from qecat_core.screening import ScreenPaths, screen_name

    run_id = new_run_id()
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.model_dump().items() if v is not None}
    if isinstance(cfg.slurm, SlurmSettings):  # inline settings travel as a file, like a slurm/*.yaml
        import yaml

        path = cfg.work / ".slurm-settings" / f"{run_id}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(cfg.slurm.model_dump()))
        params["slurm"] = str(path)
    state = screen(**params, run_id=run_id, return_state=True)
    paths = ScreenPaths.of(cfg, screen_name(cfg))
    summary_path = paths.runs() / f"run-{run_id}.json"
    if not summary_path.is_file():
        state.result()  # re-raise the flow's own error (bad input, ...)
        raise RuntimeError(f"the flow finished without writing {summary_path}")
    summary = json.loads(summary_path.read_text())
    summary["summary_path"] = str(summary_path)
    ranking = pd.read_parquet(paths.rankings() / f"ranking-{run_id}.parquet")
    print_report(summary, ranking, top=top)
    if plots:
        for what in ("heatmap", "summary"):
            p = paths.plots() / f"{what}.png"
            if p.is_file():
                print(f"{what}: {p}")
    if summary["status"] != "ok":
        print(f"error: {len(summary['failed'])} shard(s) failed (see {summary_path}); rerun to retry them",
              file=sys.stderr)
    return summary


def main(argv: list[str] | None = None) -> int:
    import argparse

    from qecat_core.errors import QecatError

    p = argparse.ArgumentParser(prog="python -m flows.screen", description=__doc__.split("\n\n")[0])
    p.add_argument("--config")
    for field, info in ScreenConfig.model_fields.items():
        if field == "slurm":
            p.add_argument("--slurm")
        elif info.annotation is bool:
            p.add_argument(f"--{field.replace('_', '-')}", dest=field, action="store_const", const=True)
        else:
            kind = int if info.annotation in (int, int | None) else str
            p.add_argument(f"--{field.replace('_', '-')}", dest=field, type=kind)
    p.add_argument("--top", type=int, default=20)
    args = vars(p.parse_args(argv))
    top = args.pop("top")
    try:
        cfg = load_screen_config(args.pop("config"), **args)
        cfg.checkpoint_path()
        summary = run_flow_and_report(cfg, top=top)
    except QecatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if summary["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
