"""Where jobs run: submitit executors (local or SLURM), array submission and job outcomes.

* :func:`make_executor` — ``local``: :class:`submitit.LocalExecutor` (one process per job; at most
  ``workers`` run at once); ``slurm``: :class:`submitit.AutoExecutor` with :class:`SlurmSettings`
  mapped onto ``update_parameters`` (:func:`slurm_parameters`); ``inline``: this process.
* :func:`submit_all` submits SLURM jobs as arrays of at most ``max_array_size`` tasks, each chunk
  inside ``executor.batch()``; :func:`job_outcomes` turns every finished, failed, killed or
  cancelled job into per-shard :class:`~qecat_core.screen.jobs.ShardOutcome` rows.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit

from qecat_core.common.errors import QecatError
from qecat_core.screen.config import SlurmSettings
from qecat_core.screen.jobs import output_ok

if TYPE_CHECKING:
    pass

from qecat_core.screen.jobs import (
    PredictorSpec,
    PredictShardsJob,
    ShardOutcome,
    ShardTask,
)

LOCAL_TIMEOUT_MIN = 24 * 60  # submitit's LocalExecutor kills jobs after 2 min unless told otherwise


# ---------------------------------------------------------------------------------------------
# executors


def slurm_parameters(s: SlurmSettings, name: str = "qecat-screen") -> dict[str, Any]:
    """:class:`SlurmSettings` as ``AutoExecutor.update_parameters`` keywords."""
    params: dict[str, Any] = {
        "name": name,
        "timeout_min": int(s.timeout_min),
        "mem_gb": float(s.mem_gb),
        "cpus_per_task": int(s.cpus_per_task),
        "tasks_per_node": 1,
        "nodes": 1,
        "slurm_array_parallelism": int(s.array_parallelism),
        "slurm_signal_delay_s": int(s.signal_delay_s),
    }
    if s.gpus_per_node:  # a cluster without GPU GRES rejects --gpus-per-node even when 0
        params["gpus_per_node"] = int(s.gpus_per_node)
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(s, key)
        if value:
            params[f"slurm_{key}"] = value
    if s.additional_parameters:
        params["slurm_additional_parameters"] = dict(s.additional_parameters)
    if s.setup:
        params["slurm_setup"] = list(s.setup)
    return params


@dataclass
class ExecutorInfo:
    kind: str  # local | slurm
    parallelism: int  # local: jobs running at once
    max_array_size: int = 1001
    poll_s: float = 0.5


class InlineJob:
    """The outcome of a job function run in this process (executor ``inline``: tests, debugging)."""

    def __init__(self, fn: Any, args: tuple):
        self.job_id = f"inline-{os.getpid()}"
        self.state = "FINISHED"
        self._exc: BaseException | None = None
        try:
            self._result = fn(*args)
        except Exception as exc:
            self._result, self._exc, self.state = None, exc, "FAILED"

    def done(self) -> bool:
        return True

    def result(self) -> Any:
        if self._exc is not None:
            raise self._exc
        return self._result

    def cancel(self, check: bool = True) -> None:
        pass


def make_executor(kind: str, folder: str | Path, workers: int = 1, slurm: SlurmSettings | None = None,
                  name: str = "qecat-screen") -> tuple[submitit.Executor | None, ExecutorInfo]:
    """A submitit executor writing to ``folder`` (use one folder per run) and how to drive it.

    ``inline`` runs the job functions in this process, one after the other (no submitit; for tests
    and debugging: the model is loaded once per process and stays loaded).
    """
    folder = Path(folder)
    if kind == "inline":
        return None, ExecutorInfo("inline", 1)
    if kind == "local":
        ex = submitit.LocalExecutor(folder, max_num_timeout=(slurm or SlurmSettings()).max_num_timeout)
        ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
        return ex, ExecutorInfo("local", max(1, int(workers)), poll_s=0.25)
    if kind == "slurm":
        s = slurm or SlurmSettings()
        if shutil.which("sbatch") is None:
            raise QecatError("executor slurm: sbatch is not on PATH (no SLURM here); use executor: local "
                             "or start the cluster (slurm/README.md)")
        ex = submitit.AutoExecutor(folder, cluster="slurm", slurm_max_num_timeout=s.max_num_timeout)
        try:
            ex.update_parameters(**slurm_parameters(s, name))
        except (ValueError, NameError, AssertionError) as exc:
            raise QecatError(f"slurm settings: {str(exc).splitlines()[0]}") from None
        return ex, ExecutorInfo("slurm", s.array_parallelism, max_array_size=s.max_array_size, poll_s=2.0)
    raise QecatError(f"executor: unknown executor {kind!r}; allowed: local, slurm, inline")


def job_error_text(exc: BaseException) -> str:
    """One line from a submitit exception (whose message holds the job's whole traceback)."""
    lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
    # a failed job: the last line of the remote traceback is the exception
    for line in reversed(lines):
        if ": " in line and not line.startswith(("File ", "raise ", "return ")) and "Error" in line.split(": ")[0]:
            return line
    return lines[0] if lines else type(exc).__name__


@dataclass
class SubmittedJob:
    job: Any
    args: tuple
    tasks: Sequence[Any] = field(default_factory=list)


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), max(1, size)):
        yield items[i:i + size]


def submit_all(executor: submitit.Executor, info: ExecutorInfo, fn: Any, arg_lists: Sequence[tuple]) -> Iterator[SubmittedJob]:
    """Submit ``fn(*args)`` per item; SLURM: arrays chunked under ``max_array_size``; local: throttled.

    Yields the jobs as they finish (in completion order).
    """
    if not arg_lists:
        return
    if info.kind == "inline":
        for args in arg_lists:
            yield SubmittedJob(InlineJob(fn, args), args)
        return
    if info.kind == "slurm":
        submitted: list[SubmittedJob] = []
        for chunk in _chunks(list(arg_lists), info.max_array_size):
            with executor.batch():
                jobs = [executor.submit(fn, *args) for args in chunk]
            submitted.extend(SubmittedJob(j, a) for j, a in zip(jobs, chunk))
        try:
            pending = list(submitted)
            while pending:
                still = []
                for sj in pending:
                    if _finished(sj):
                        yield sj
                    else:
                        still.append(sj)
                pending = still
                if pending:
                    time.sleep(info.poll_s)
        except BaseException:
            for sj in submitted:
                if not sj.job.done():
                    sj.job.cancel(check=False)
            raise
        return
    queue = list(arg_lists)
    running: list[SubmittedJob] = []
    try:
        while queue or running:
            while queue and len(running) < info.parallelism:
                args = queue.pop(0)
                running.append(SubmittedJob(executor.submit(fn, *args), args))
            finished = [sj for sj in running if _finished(sj)]
            for sj in finished:
                running.remove(sj)
                yield sj
            if not finished:
                time.sleep(info.poll_s)
    except BaseException:
        for sj in running:
            sj.job.cancel(check=False)
        raise


def _finished(sj: SubmittedJob) -> bool:
    # a local job's result pickle is there before its process (torch teardown) has exited
    paths = getattr(sj.job, "paths", None)
    return (paths is not None and paths.result_pickle.exists()) or sj.job.done()


def job_result(sj: SubmittedJob, kind: str) -> Any:
    """The job function's return value; raises :class:`JobLost` (job died, was cancelled or timed
    out: worth retrying) or :class:`QecatError` (the function raised) with a one-line message."""
    job = sj.job
    paths = getattr(job, "paths", None)
    if kind == "local" and paths is not None:
        if not paths.result_pickle.exists():
            state = getattr(job, "state", "unknown")
            raise JobLost(f"job {job.job_id} ended without a result (state {state}); log {paths.stderr}")
        outcome, value = submitit.core.utils.pickle_load(paths.result_pickle)
        if outcome == "success":
            return value
        raise QecatError(job_error_text(Exception(str(value))))
    try:
        return job.result()
    except submitit.core.utils.UncompletedJobError as exc:
        state = ""
        try:
            state = str(job.state)
        except Exception:
            pass
        raise JobLost(f"job {getattr(job, 'job_id', '?')} ended without a result ({state or 'unknown state'}): "
                      f"{job_error_text(exc)}") from None
    except QecatError:
        raise
    except Exception as exc:
        raise QecatError(job_error_text(exc)) from None


class JobLost(QecatError):
    """A job ended without returning (killed, cancelled, timed out beyond its requeues)."""


def job_outcomes(sj: SubmittedJob, tasks: Sequence[ShardTask], kind: str) -> list[ShardOutcome]:
    """The per-shard outcomes of a finished prediction job; a job that died fails its shards
    (retryable) except those whose output it had already written."""
    job_id = str(getattr(sj.job, "job_id", ""))
    try:
        return list(job_result(sj, kind))
    except QecatError as exc:
        lost = isinstance(exc, JobLost)
        out = []
        for t in tasks:
            if output_ok(t.output, t.n):
                out.append(ShardOutcome(t.key, t.shard, t.n, "done", job_id=job_id))
            else:
                out.append(ShardOutcome(t.key, t.shard, t.n, "failed", retryable=lost, job_id=job_id,
                                        error=f"{t.shard}: {exc}"))
        return out


def run_prediction_jobs(spec: PredictorSpec, jobs: Sequence[Sequence[ShardTask]], kind: str, folder: str | Path,
                        workers: int = 1, slurm: SlurmSettings | None = None,
                        name: str = "qecat-screen") -> list[ShardOutcome]:
    """Run every job (a list of shard tasks) through the executor; one outcome per shard task."""
    if not jobs:
        return []
    executor, info = make_executor(kind, folder, workers=workers, slurm=slurm, name=name)
    fn = PredictShardsJob(spec)
    outcomes: list[ShardOutcome] = []
    for sj in submit_all(executor, info, fn, [(list(j),) for j in jobs]):
        outcomes.extend(job_outcomes(sj, sj.args[0], info.kind))
    return outcomes
