"""One typed configuration for a screening run, shared by ``qecat screen``, the Prefect flow and SLURM.

:class:`ScreenConfig` says what to screen (catalog), with what (checkpoint, mode), where it runs
(executor ``local`` or ``slurm`` with :class:`SlurmSettings`) and where results go. It loads from
YAML (:func:`load_screen_config`); every error is one line naming the file, the field and what is
allowed, raised as :class:`~qecat_core.common.errors.InputError`::

    catalog: catalogs/bimetallics.yaml
    checkpoint: models/qecat-emt-v1     # omitted / null: the shipped default model
    mode: fused                         # fused | graph | text
    executor: slurm                     # local | slurm
    slurm: slurm/gpu-cluster.yaml       # a file of SlurmSettings fields, or the fields inline
    shard_size: 1000
    verify_top_k: 5
    device: auto                        # auto | cpu | cuda | cuda:N: where each job predicts
    max_atoms_per_batch: null           # e.g. 20000 on a GPU: batches packed by atom count

A SLURM settings file (``slurm/*.yaml``) holds the fields of :class:`SlurmSettings` at top level.
Relative paths are relative to the current directory (the repository root for ``make`` and the
Prefect deployment).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from qecat_core.common.config import (
    load_yaml_model,
    read_yaml,
    validate,
    validation_message,
)
from qecat_core.common.errors import InputError
from qecat_core.model.device import DeviceSpec

#: The model ``qecat screen`` uses when no checkpoint is given (a folder written by ``save_model``):
#: ``$QECAT_CHECKPOINT`` if set, else this folder (relative to the current directory, then to the
#: repository the package is installed from).
DEFAULT_CHECKPOINT = Path("models/qecat-emt-v1")


def resolve_checkpoint(checkpoint: str | Path | None = None) -> Path:
    """``checkpoint``, else ``$QECAT_CHECKPOINT``, else the shipped :data:`DEFAULT_CHECKPOINT`
    (relative to the current directory, then to the repository); a one-line error if it is not a model folder."""
    if checkpoint is not None:
        path = Path(checkpoint)
    elif os.environ.get("QECAT_CHECKPOINT"):
        path = Path(os.environ["QECAT_CHECKPOINT"])
    else:
        path = DEFAULT_CHECKPOINT
        if not path.is_dir() and (REPO_ROOT / DEFAULT_CHECKPOINT).is_dir():
            path = REPO_ROOT / DEFAULT_CHECKPOINT
        if not path.is_dir():
            raise InputError(f"checkpoint: the shipped default model {DEFAULT_CHECKPOINT}/ is missing; pass "
                             f"--checkpoint DIR (a folder written by qecat_core.model.checkpoint.save_model)")
    if not path.is_dir():
        raise InputError(f"checkpoint: {path}: model folder not found")
    from qecat_core.model.checkpoint import CONFIG, model_folder

    path = model_folder(path)  # a training run's folder: its final model, DIR/model
    if not (path / CONFIG).is_file():
        raise InputError(f"checkpoint: {path}: not a qecat model folder ({CONFIG} missing, and no model/{CONFIG} "
                         f"of a training run)")
    return path
REPO_ROOT = Path(__file__).resolve().parents[2]  # the repository (qecat_core/screen/config.py)
MODES = ("fused", "graph", "text")
EXECUTORS = ("local", "slurm", "inline")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SlurmSettings(_Strict):
    """How per-shard jobs are submitted to SLURM (mapped onto submitit's ``update_parameters``)."""

    partition: str | None = None
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(1, ge=1)
    mem_gb: float = Field(8.0, gt=0)
    timeout_min: int = Field(60, ge=1)
    array_parallelism: int = Field(256, ge=1)  # array tasks running at once (sbatch --array=...%N)
    max_array_size: int = Field(1001, ge=1)  # the cluster's MaxArraySize: larger arrays are split
    max_num_timeout: int = Field(3, ge=0)  # requeues of a timed-out / preempted job
    # seconds before the time limit at which SLURM sends the job USR2 (checkpoint + requeue); SLURM
    # delivers it with up to 60 s delay, so keep at least 60 s between it and the limit
    signal_delay_s: int = Field(90, ge=10)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    additional_parameters: dict[str, Any] = Field(default_factory=dict)  # extra #SBATCH --key=value
    setup: list[str] = Field(default_factory=list)  # shell lines run before the job (module load, ...)

    @model_validator(mode="after")
    def _signal_before_limit(self):
        if self.signal_delay_s + 60 > self.timeout_min * 60:
            raise ValueError(f"timeout_min={self.timeout_min} leaves no time for the requeue signal "
                             f"(signal_delay_s={self.signal_delay_s} + up to 60 s of SLURM delay); "
                             f"use timeout_min >= {-(-(self.signal_delay_s + 60) // 60)} or a smaller signal_delay_s")
        return self


class ScreenConfig(_Strict):
    """Everything a screening run needs; defaults are what ``make screen`` runs."""

    catalog: Path = Path("catalogs/bimetallics.yaml")
    checkpoint: Path | None = None  # None: DEFAULT_CHECKPOINT
    mode: Literal["fused", "graph", "text"] = "fused"
    executor: Literal["local", "slurm", "inline"] = "local"  # inline: in this process (tests, debugging)
    slurm: Path | SlurmSettings | None = None  # a slurm/*.yaml file or the settings inline
    shard_size: int = Field(1000, ge=1)  # candidates per enumeration shard (= per job task)
    batch_size: int = Field(32, ge=1)  # structures per model forward pass
    # where each prediction job runs the model: auto (its GPU when it has one, else the CPU) | cpu |
    # cuda | cuda:N; only the spelling is checked here (check_device checks the device before a run)
    device: DeviceSpec = "auto"
    # None: batch_size structures per forward pass; else consecutive structures up to this many atoms
    # (of the cropped structures), for GPU-sized batches (qecat_core.model.data.pack_by_atoms)
    max_atoms_per_batch: int | None = Field(None, ge=1)
    results: Path = Path("results")
    work: Path = Path("runs")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$")  # None: the catalog's name
    verify_top_k: int = Field(0, ge=0)  # relax the K best systems per adsorbate; 0 = off
    calculator: str = "emt"  # the labeller's calculator for verification
    workers: int | None = Field(None, ge=1)  # local processes (default: the CPUs available)
    shards_per_job: int | None = Field(None, ge=1)  # None: local -> spread over workers, slurm -> 1
    limit: int | None = Field(None, ge=1)  # screen only this many candidates (lowest sid hash)
    # screen a catalog with elements the model was not trained on (its predictions there extrapolate)
    allow_unseen_elements: bool = False

    @field_validator("slurm", mode="before")
    @classmethod
    def _slurm(cls, v):
        if isinstance(v, str):
            return Path(v)
        return v

    @model_validator(mode="after")
    def _check(self) -> ScreenConfig:
        if self.calculator.strip() == "":
            raise ValueError("calculator: must not be empty (emt | chgnet | MODULE:FACTORY)")
        return self

    # -- resolved values ------------------------------------------------------------------------
    def checkpoint_path(self) -> Path:
        """The model folder to use; a one-line error if it is missing or not a model folder."""
        return resolve_checkpoint(self.checkpoint)

    def check_device(self) -> None:
        """A one-line :class:`InputError` now when the prediction jobs could not use ``device``.

        ``local`` / ``inline``: the jobs run on this machine, so ``device`` must resolve here
        (:func:`qecat_core.model.device.resolve_device`: ``cuda`` without CUDA is refused). ``slurm``:
        the jobs' machines decide; ``cuda`` / ``cuda:N`` need ``gpus_per_node`` > N in the SLURM settings
        (``auto`` uses the GPU a job gets, if any). A job that still finds no usable device fails its
        shards with the same one-line error.
        """
        from qecat_core.model.device import cuda_index, resolve_device

        index = cuda_index(self.device)
        if index is None:  # auto / cpu always resolve (and the screen driver need not import torch)
            return
        if self.executor != "slurm":
            resolve_device(self.device)
            return
        gpus = self.slurm_settings().gpus_per_node
        if index >= gpus:
            where = f" ({self.slurm})" if isinstance(self.slurm, Path) else ""
            raise InputError(f"device {self.device}: the SLURM jobs ask for {gpus} GPU{'s' if gpus != 1 else ''} "
                             f"(gpus_per_node: {gpus}{where}); set gpus_per_node >= {index + 1} or device auto/cpu")

    def slurm_settings(self) -> SlurmSettings:
        if isinstance(self.slurm, SlurmSettings):
            return self.slurm
        if self.slurm is None:
            return SlurmSettings()
        return load_slurm_settings(self.slurm)

    def n_workers(self) -> int:
        if self.workers:
            return self.workers
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1


def load_slurm_settings(path: str | Path) -> SlurmSettings:
    """:class:`SlurmSettings` from a YAML file of its fields; one-line errors naming file and field."""
    return load_yaml_model(path, SlurmSettings, "slurm settings file")


def make_screen_config(data: dict[str, Any] | None = None, source: str = "config", **overrides: Any) -> ScreenConfig:
    """A validated :class:`ScreenConfig` from a mapping plus ``overrides`` (None values are ignored)."""
    merged = dict(data or {})
    merged.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(merged.get("slurm"), dict):  # inline settings: errors name slurm.<field>
        try:
            merged["slurm"] = SlurmSettings.model_validate(merged["slurm"])
        except ValidationError as err:
            msg = validation_message(source, err, SlurmSettings).removeprefix(f"{source}: ")
            raise InputError(f"{source}: slurm.{msg}") from None
    elif merged.get("slurm") is not None and not isinstance(merged["slurm"], (str, Path, SlurmSettings)):
        raise InputError(f"{source}: slurm: expected a path to a slurm/*.yaml file or a mapping of "
                         f"{', '.join(SlurmSettings.model_fields)}; got {type(merged['slurm']).__name__}")
    cfg = validate(ScreenConfig, merged, source)
    if isinstance(cfg.slurm, Path) and cfg.executor == "slurm":
        cfg.slurm_settings()  # fail early, naming the slurm file
    return cfg


def load_screen_config(path: str | Path | None = None, **overrides: Any) -> ScreenConfig:
    """Read ``path`` (YAML; optional) and apply ``overrides`` (e.g. CLI options; None = not given)."""
    data = read_yaml(path) if path is not None else {}
    return make_screen_config(data, str(path) if path is not None else "config", **overrides)
