"""Where per-shard work runs: predictors, submitit job functions and executors (local or SLURM).

* :class:`Predictor` — ``predict_shard(shard_path, sids=None) -> DataFrame`` (``sid``, ``e_ads_pred``
  in eV, ``mode``, ``model_id``). :class:`LocalPredictor` runs
  :func:`qecat_core.model.predict.predict_structures` in this process; the checkpoint is loaded once
  per process and torch uses ``num_threads`` threads (1 per local worker).
  :class:`BatchedPredictor` runs a list of :class:`ShardTask` in one process with one loaded model:
  each shard under its own lock file, skipped if its output already exists, written atomically,
  its errors kept to itself.
* :class:`PredictShardsJob` / :class:`LabelJob` — the functions submitit pickles. They live in the
  installed package (a Prefect entrypoint file is imported as a top-level module, which a job
  process could not import) and are :class:`submitit.helpers.Checkpointable`: a timed-out or
  preempted SLURM job is requeued with the same arguments (``max_num_timeout`` times), which is
  safe because finished shards are skipped.
* :func:`make_executor` — ``local``: :class:`submitit.LocalExecutor` (one process per job; at most
  ``workers`` run at once); ``slurm``: :class:`submitit.AutoExecutor` with :class:`SlurmSettings`
  mapped onto ``update_parameters`` (:func:`slurm_parameters`). :func:`run_jobs` submits SLURM jobs
  as arrays of at most ``max_array_size`` tasks, each chunk inside ``executor.batch()``, and turns
  every finished, failed, killed or cancelled job into per-shard :class:`ShardOutcome` rows.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import submitit

from qecat_core.config import SlurmSettings
from qecat_core.errors import QecatError

if TYPE_CHECKING:
    import pandas as pd

LOCAL_TIMEOUT_MIN = 24 * 60  # submitit's LocalExecutor kills jobs after 2 min unless told otherwise
PREDICTION_COLUMNS = ("sid", "e_ads_pred", "mode", "model_id")


# ---------------------------------------------------------------------------------------------
# locks


@contextmanager
def file_lock(path: str | Path, blocking: bool = True, note: str | None = None) -> Iterator[bool]:
    """An exclusive ``fcntl.flock`` on ``path`` (created if missing); yields whether it was acquired.

    With ``blocking=False`` it yields False at once when another process holds it. While held the
    file says who holds it (pid, host, SLURM/submitit job id, time, ``note``); the OS releases the lock
    when the holder dies.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            fh.seek(0)
            fh.truncate()
            job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")
            fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "job": job,
                                 "since": time.time(), "note": note}))
            fh.flush()
            yield True
        finally:
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


def remove_stale_tmp(path: Path) -> None:
    """Delete hidden temporary siblings ``.NAME.*.tmp`` of ``path`` (call while holding its lock)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# predictors


@dataclass(frozen=True)
class PredictorSpec:
    """What a job needs to build its predictor (picklable, absolute paths)."""

    checkpoint: str
    mode: str = "fused"
    batch_size: int = 32
    num_threads: int = 1
    model_id: str | None = None  # expected model id (checked after loading)
    allow_unseen_elements: bool = False  # predict structures with elements the model was not trained on


@runtime_checkable
class Predictor(Protocol):
    model_id: str

    def predict_shard(self, shard_path: str | Path, sids: Collection[str] | None = None) -> pd.DataFrame:
        """E_ads predictions (eV) for the structures of one shard (or only ``sids`` of it)."""
        ...


_MODELS: dict[str, tuple[Any, Any]] = {}


def load_model_cached(checkpoint: str | Path) -> tuple[Any, Any]:
    """``(model, tokenizer)``, loaded once per process and checkpoint folder."""
    key = str(Path(checkpoint).resolve())
    if key not in _MODELS:
        from qecat_core.model.checkpoint import load_model

        _MODELS[key] = load_model(key)
    return _MODELS[key]


class JobCancelled(QecatError):
    """The job was told to stop (SIGTERM: scancel, preemption) while it worked on a shard."""


class StopFlag:
    """Set by SIGTERM while a prediction job runs (submitit itself only logs SIGTERM, so without this
    a cancelled job would go on until SLURM's KillWait ends it with SIGKILL)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: Any = None) -> None:
        self.signum = signum

    def is_set(self) -> bool:
        return self.signum is not None


class LocalPredictor:
    """:func:`predict_structures` in this process, the model loaded once per process.

    ``should_stop`` (optional) is polled before each structure; when it says so the shard is
    abandoned with :class:`JobCancelled` (nothing is written).
    """

    def __init__(self, spec: PredictorSpec, should_stop: Callable[[], bool] | None = None):
        import torch

        self.spec = spec
        self.should_stop = should_stop
        torch.set_num_threads(max(1, int(spec.num_threads)))
        self.model, self.tokenizer = load_model_cached(spec.checkpoint)
        self.model_id = str(getattr(self.model, "model_id", None) or "")
        if spec.model_id and self.model_id != spec.model_id:
            raise QecatError(f"{spec.checkpoint}: model id {self.model_id} is not the expected {spec.model_id} "
                             f"(the checkpoint changed while the run was going)")

    def predict_shard(self, shard_path: str | Path, sids: Collection[str] | None = None) -> pd.DataFrame:
        from qecat_core.io import iter_structures
        from qecat_core.model.predict import predict_structures

        wanted = None if sids is None else set(sids)

        def structures():
            for a in iter_structures(shard_path):
                if self.should_stop is not None and self.should_stop():
                    raise JobCancelled(f"{shard_path}: job cancelled (SIGTERM) mid-shard; nothing written")
                if wanted is None or a.info.get("sid") in wanted:
                    yield a

        return predict_structures(self.model, structures(), mode=self.spec.mode, batch_size=self.spec.batch_size,
                                  tokenizer=self.tokenizer, progress=False, num_threads=self.spec.num_threads,
                                  allow_unseen_elements=self.spec.allow_unseen_elements)


@dataclass(frozen=True)
class ShardTask:
    """One unit of prediction work: the candidates ``sids`` (None: all ``n``) of an enumeration shard.

    ``key`` is the content hash of the candidates (their sids are structure hashes); the output
    ``output`` is keyed by it and the model id, so the same work is never done twice.
    """

    key: str
    shard: str
    n: int
    output: str
    sids: tuple[str, ...] | None = None

    @property
    def lock(self) -> Path:
        out = Path(self.output)
        return out.with_name(f".{out.stem}.lock")

    @property
    def name(self) -> str:
        return Path(self.shard).name + ("" if self.sids is None else f"[{self.n} of its candidates]")


@dataclass
class ShardOutcome:
    key: str
    shard: str
    n: int
    status: str  # done | cached | failed
    error: str | None = None
    seconds: float = 0.0
    retryable: bool = False  # the job died (killed, cancelled, timed out) rather than the shard failing
    job_id: str | None = None
    host: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def output_ok(path: str | Path, n: int) -> bool:
    """The per-shard output exists and is a readable parquet of ``n`` rows."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        return False
    try:
        return pq.read_metadata(path).num_rows == n
    except Exception:
        return False


def one_line(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    text = msg[0] if msg else ""
    return text if isinstance(exc, QecatError) else f"{type(exc).__name__}: {text}"


class BatchedPredictor:
    """Runs many shards in one process through one :class:`Predictor` (one model load).

    Shards whose lock another process holds are deferred to the end (then waited for), so two runs
    over the same shards share the work instead of queueing behind each other.
    """

    def __init__(self, predictor: Predictor, should_stop: Callable[[], bool] | None = None):
        self.predictor = predictor
        self.should_stop = should_stop or (lambda: False)

    def _cancelled(self, task: ShardTask) -> ShardOutcome:
        return ShardOutcome(task.key, task.shard, task.n, "failed", retryable=True,
                            error=f"{task.shard}: job cancelled (SIGTERM) before this shard started")

    def run(self, tasks: Sequence[ShardTask]) -> list[ShardOutcome]:
        outcomes: list[ShardOutcome] = []
        deferred: list[ShardTask] = []
        for task in tasks:
            if self.should_stop():
                outcomes.append(self._cancelled(task))
                continue
            with file_lock(task.lock, blocking=False, note=task.shard) as got:
                if got:
                    outcomes.append(self._one(task))
                else:
                    deferred.append(task)
        for task in deferred:
            if self.should_stop():
                outcomes.append(self._cancelled(task))
                continue
            with file_lock(task.lock, blocking=True, note=task.shard):
                outcomes.append(self._one(task))
        return outcomes

    def _one(self, task: ShardTask) -> ShardOutcome:
        from qecat_core.parquet import write_parquet_atomic

        t0 = time.perf_counter()
        host = socket.gethostname()
        job_id = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")
        out = Path(task.output)
        if output_ok(out, task.n):
            return ShardOutcome(task.key, task.shard, task.n, "cached", job_id=job_id, host=host)
        remove_stale_tmp(out)
        try:
            df = self.predictor.predict_shard(task.shard, task.sids)
            got = set(df["sid"])
            want = set(task.sids) if task.sids is not None else None
            if len(df) != task.n or (want is not None and got != want) or len(got) != len(df):
                raise QecatError(f"{task.shard}: predicted {len(df)} rows ({len(got)} distinct sids) for the "
                                 f"{task.n} candidates the index lists: shard and candidates.parquet disagree "
                                 f"(re-enumerate with --force)")
            write_parquet_atomic(df[list(PREDICTION_COLUMNS)], out)
        except Exception as exc:  # one bad shard must not stop the others of this job
            msg = one_line(exc)
            if task.shard not in msg:
                msg = f"{task.shard}: {msg}"
            return ShardOutcome(task.key, task.shard, task.n, "failed", error=msg,
                                retryable=isinstance(exc, JobCancelled), seconds=time.perf_counter() - t0, job_id=job_id, host=host)
        return ShardOutcome(task.key, task.shard, task.n, "done", seconds=time.perf_counter() - t0,
                            job_id=job_id, host=host)


# ---------------------------------------------------------------------------------------------
# submitit job functions (pickled by reference: keep them in the installed package)


class PredictShardsJob(submitit.helpers.Checkpointable):
    """Predict a list of shards in one job; returns one :class:`ShardOutcome` per shard."""

    def __init__(self, spec: PredictorSpec):
        self.spec = spec

    def __call__(self, tasks: Sequence[ShardTask]) -> list[ShardOutcome]:
        import logging
        import warnings

        warnings.filterwarnings("ignore")
        logging.getLogger("warp").setLevel(logging.ERROR)
        stop = StopFlag()
        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGTERM, stop) if main else None
        try:
            try:
                predictor = LocalPredictor(self.spec, should_stop=stop.is_set)
            except Exception as exc:  # unusable checkpoint: every shard fails with the same one-line reason
                msg = one_line(exc)
                return [ShardOutcome(t.key, t.shard, t.n, "failed", error=msg) for t in tasks]
            return BatchedPredictor(predictor, should_stop=stop.is_set).run(tasks)
        finally:
            if main:
                signal.signal(signal.SIGTERM, old)


class LabelJob(submitit.helpers.Checkpointable):
    """Relax structures with the labeller (``qecat_core.label.label``) and return its table.

    ``label`` is resumable (committed chunks in ``OUT.parts``), so a requeued job only does what
    is left; a lock file queues concurrent runs on the same output instead of failing them.
    """

    def __call__(self, input_path: str, out_parquet: str, calculator: str = "emt", workers: int = 1):
        import logging
        import warnings

        from qecat_core.label import label

        warnings.filterwarnings("ignore")
        logging.getLogger("warp").setLevel(logging.ERROR)
        out = Path(out_parquet)
        with file_lock(out.with_name(f".{out.name}.lock"), note=input_path):
            return label(input_path, out, calculator=calculator, workers=workers, progress=False)


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


def format_traceback(exc: BaseException) -> str:  # pragma: no cover - debugging aid
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
