"""Per-shard work as submitit jobs: predictors and the job functions submitit pickles.

* :class:`Predictor` — ``predict_shard(shard_path, sids=None) -> DataFrame`` (``sid``, ``e_ads_pred``
  in eV, ``mode``, ``model_id``). :class:`LocalPredictor` runs
  :func:`qecat_core.model.predict.predict_structures` in this process; the checkpoint is loaded once
  per process (and device) and torch uses ``num_threads`` threads (1 per local worker). The model
  runs on ``spec.device``, resolved in the job's own process: ``auto`` is the GPU of a SLURM job
  that asked for one (``gpus_per_node``), else the CPU.
  :class:`BatchedPredictor` runs a list of :class:`ShardTask` in one process with one loaded model:
  each shard under its own lock file, skipped if its output already exists, written atomically,
  its errors kept to itself.
* :class:`PredictShardsJob` / :class:`LabelJob` — the functions submitit pickles. They live in the
  installed package (a Prefect entrypoint file is imported as a top-level module, which a job
  process could not import) and are :class:`submitit.helpers.Checkpointable`: a timed-out or
  preempted SLURM job is requeued with the same arguments (``max_num_timeout`` times), which is
  safe because finished shards are skipped.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import submitit

from qecat_core.common.atomic import remove_stale_tmp
from qecat_core.common.errors import QecatError
from qecat_core.common.locks import file_lock
from qecat_core.results.schema import SHARD_OUTPUT

if TYPE_CHECKING:
    import pandas as pd


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
    device: str = "auto"  # auto | cpu | cuda | cuda:N, resolved in the job (qecat_core.model.device)
    max_atoms_per_batch: int | None = None  # None: batch_size structures per forward pass


@runtime_checkable
class Predictor(Protocol):
    model_id: str

    def predict_shard(self, shard_path: str | Path, sids: Collection[str] | None = None) -> pd.DataFrame:
        """E_ads predictions (eV) for the structures of one shard (or only ``sids`` of it)."""
        ...


_MODELS: dict[str, tuple[Any, Any]] = {}


def load_model_cached(checkpoint: str | Path, device=None) -> tuple[Any, Any]:
    """``(model, tokenizer)``, loaded once per process, checkpoint folder and device (a
    ``torch.device``; None = the CPU)."""
    path = str(Path(checkpoint).resolve())
    key = path if device is None or str(device) == "cpu" else f"{path}@{device}"
    if key not in _MODELS:
        from qecat_core.model.checkpoint import load_model

        _MODELS[key] = load_model(path, device=device)
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

        from qecat_core.model.device import resolve_device

        self.spec = spec
        self.should_stop = should_stop
        torch.set_num_threads(max(1, int(spec.num_threads)))
        self.device = resolve_device(spec.device)  # one-line InputError: no such device in this job
        self.model, self.tokenizer = load_model_cached(spec.checkpoint, self.device)
        self.model_id = str(getattr(self.model, "model_id", None) or "")
        if spec.model_id and self.model_id != spec.model_id:
            raise QecatError(f"{spec.checkpoint}: model id {self.model_id} is not the expected {spec.model_id} "
                             f"(the checkpoint changed while the run was going)")

    def predict_shard(self, shard_path: str | Path, sids: Collection[str] | None = None) -> pd.DataFrame:
        from qecat_core.common.structures import iter_structures
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
                                  allow_unseen_elements=self.spec.allow_unseen_elements, device=self.device,
                                  max_atoms_per_batch=self.spec.max_atoms_per_batch)


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
        from qecat_core.common.atomic import write_parquet_atomic

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
            write_parquet_atomic(df[list(SHARD_OUTPUT)], out)
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
    """Relax structures with the labeller (``qecat_core.label.relax.label``) and return its table.

    ``label`` is resumable (committed chunks in ``OUT.parts``), so a requeued job only does what
    is left; a lock file queues concurrent runs on the same output instead of failing them.
    """

    def __call__(self, input_path: str, out_parquet: str, calculator: str = "emt", workers: int = 1):
        import logging
        import warnings

        from qecat_core.label.relax import label

        warnings.filterwarnings("ignore")
        logging.getLogger("warp").setLevel(logging.ERROR)
        out = Path(out_parquet)
        with file_lock(out.with_name(f".{out.name}.lock"), note=input_path):
            return label(input_path, out, calculator=calculator, workers=workers, progress=False)


