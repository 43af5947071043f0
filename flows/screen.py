"""Prefect flow ``screen``: a thin layer over :mod:`qecat_core.screen` (which runs without Prefect).

Tasks: ``enumerate`` (cached on disk by catalog hash) -> ``plan`` (which shards still need this
model's predictions) -> one ``shards`` task per local job or per SLURM array chunk (never per
candidate; retried when a job died) -> ``collect`` -> ``rank`` -> ``verify`` (``verify_top_k`` > 0)
-> ``finish`` (run summary, plots). The flow run fails, after writing its summary, when a shard failed.
Its one parameter is a :class:`~qecat_core.screen.config.ScreenConfig` (the deployment's
``parameters.config`` in prefect.yaml); ``qecat screen`` runs the same steps without Prefect.

    python -m flows.screen [--config my-screen.yaml] [--top 20]   # ephemeral Prefect (make screen)
"""

from __future__ import annotations

import os
import sys
from typing import Any

# an ephemeral Prefect server (no PREFECT_API_URL) may need more than the default 20 s to start on a
# busy machine; and it stays offline (no telemetry look-ups) unless told otherwise
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

import qecat_core  # noqa: E402,F401  (thread settings before numpy)
from qecat_core.screen.collect import collect  # noqa: E402
from qecat_core.screen.config import ScreenConfig, load_screen_config  # noqa: E402
from qecat_core.screen.jobs import ShardOutcome  # noqa: E402
from qecat_core.screen.pipeline import finish, job_chunks, report  # noqa: E402
from qecat_core.screen.plan import cached_outcomes, enumerate_candidates, new_run_id, plan_screen, run_shards  # noqa: E402
from qecat_core.screen.rank import rank_with_movers  # noqa: E402
from qecat_core.screen.verify import verify  # noqa: E402

SHARD_RETRIES = 2


def _task(fn, **kw):
    return task(fn, name=fn.__name__.removesuffix("_candidates").removesuffix("_screen"), cache_policy=NO_CACHE, **kw)


enumerate_task = _task(enumerate_candidates, retries=1, retry_delay_seconds=5)  # cached on disk by catalog hash
plan_task = _task(plan_screen)
collect_task = _task(collect, retries=1, retry_delay_seconds=5)
verify_task = _task(verify)
rank_task = task(rank_with_movers, name="rank", cache_policy=NO_CACHE)


@task(name="shards", cache_policy=NO_CACHE, retries=SHARD_RETRIES, retry_delay_seconds=10, task_run_name="shards-{label}")
def shards_task(plan, jobs, label: str) -> list[ShardOutcome]:
    from prefect.runtime import task_run

    outcomes = run_shards(plan, jobs)
    died = [o for o in outcomes if o.status == "failed" and o.retryable]
    if died and (task_run.run_count or 1) <= SHARD_RETRIES:  # a killed / cancelled / timed-out job
        raise RuntimeError(f"{len(died)} shard(s) lost with their job, e.g. {died[0].error}")
    for o in outcomes:
        if o.status == "failed":
            get_run_logger().error("%s", o.error)
    return outcomes


@task(name="finish", cache_policy=NO_CACHE)
def finish_task(plan, outcomes, collected, ranking, moved, verification) -> dict[str, Any]:
    from qecat_core.results.report import write_plots

    summary = finish(plan, outcomes, collected, ranking, moved, verification)
    summary["plots"] = write_plots(summary, ranking, (verification or {}).get("table"))
    return summary


@flow(name="screen", log_prints=True)
def screen(config: ScreenConfig | None = None, run_id: str | None = None) -> dict[str, Any]:
    """Screen ``config.catalog`` with ``config.checkpoint``; returns the run summary (qecat_core.screen.pipeline.finish)."""
    cfg = config or ScreenConfig()
    cfg.checkpoint_path(), cfg.check_device()  # one-line errors before anything runs
    run_id = run_id or new_run_id()
    plan = plan_task(cfg, enum=enumerate_task(cfg), run_id=run_id)
    futures = [(jobs, shards_task.submit(plan, jobs, label)) for label, jobs in job_chunks(plan)]
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
    get_run_logger().info("%s run %s: %d new, %d skipped, %d shards failed; summary %s", summary["screen"], run_id,
                          summary["new"], summary["skipped"], summary["shards"]["failed"], summary["summary_path"])
    if summary["status"] != "ok":
        first = summary["failed"][0]["error"] if summary["failed"] else summary["verification"].get("error")
        raise RuntimeError(f"{summary['shards']['failed']} shard(s) failed (e.g. {first}); "
                           f"summary {summary['summary_path']}; rerun to retry them")
    return summary


def main(argv: list[str] | None = None) -> int:
    import argparse

    from qecat_core.common.errors import QecatError

    p = argparse.ArgumentParser(prog="python -m flows.screen", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="ScreenConfig YAML (default: every field's default)")
    p.add_argument("--top", type=int, default=20, help="rows of the ranking to print")
    args = p.parse_args(argv)
    try:
        cfg = load_screen_config(args.config)
        cfg.checkpoint_path()
        run_id = new_run_id()
        state = screen(cfg, run_id=run_id, return_state=True)
        summary = report(cfg, run_id, top=args.top, raise_from=state)
    except QecatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if summary["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
