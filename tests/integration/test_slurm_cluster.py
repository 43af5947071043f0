"""The single-node SLURM cluster (slurm/cluster.sh) with submitit, as the screening pipeline uses it.

Needs the ``slurm_cluster`` fixture (tests/integration/conftest.py): skipped unless the cluster is up
or ``QECAT_SLURM=1``. Run: ``QECAT_SLURM=1 python -m pytest tests/integration -m integration_slurm``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

from qecat_core.screen.config import load_slurm_settings
from qecat_core.screen.executors import slurm_parameters

pytestmark = pytest.mark.integration_slurm

LOCAL_CLUSTER_YAML = Path(__file__).resolve().parents[2] / "slurm" / "local-cluster.yaml"

# The job process unpickles the functions below; pickle them by value so that it need not import
# this test module (pytest's import name for it depends on the rootdir and on how pytest is run).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _square(x: int) -> dict:
    return {
        "value": x * x,
        "task": os.environ.get("SLURM_ARRAY_TASK_ID"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


class TimesOutOnce(submitit.helpers.Checkpointable):
    """Sleeps until SLURM signals the coming time limit; submitit then calls :meth:`checkpoint`
    (the state it returns is what the requeued job runs) and requeues the job."""

    def __init__(self) -> None:
        self.attempt = 0

    def __call__(self, marker: str) -> int:
        with open(marker, "a") as fh:
            fh.write(f"{self.attempt} {os.environ.get('SLURM_JOB_ID')} {os.environ.get('SLURM_RESTART_COUNT', '0')}\n")
        if self.attempt == 0:
            time.sleep(600)  # interrupted by USR2 before the time limit
        return self.attempt

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        self.attempt += 1
        return super().checkpoint(*args, **kwargs)


def _executor(folder: Path, **overrides) -> submitit.AutoExecutor:
    settings = load_slurm_settings(LOCAL_CLUSTER_YAML)
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=settings.max_num_timeout)
    ex.update_parameters(**slurm_parameters(settings, name="qecat-it"))
    if overrides:
        ex.update_parameters(**overrides)
    return ex


def _run(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True, timeout=30).stdout


def _wait(jobs, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(j.done() for j in jobs):
        if time.monotonic() > deadline:
            info = "; ".join(f"{j.job_id}: {j.state}: {(j.stderr() or '')[-500:]}" for j in jobs)
            for j in jobs:
                j.cancel(check=False)
            pytest.fail(f"jobs not finished after {timeout_s:.0f} s: {info}")
        time.sleep(1)


def _sacct(job_id: str, *extra: str) -> list[tuple[str, str]]:
    out = _run("sacct", "-n", "-P", "-X", "-j", job_id, "--format=JobID,State", *extra)
    return [tuple(line.split("|")[:2]) for line in out.splitlines() if line.strip()]


def _wait_sacct(job_id: str, expect, timeout_s: float = 60) -> list[tuple[str, str]]:
    """sacct rows once ``expect(rows)`` holds (job ends reach slurmdbd asynchronously)."""
    deadline = time.monotonic() + timeout_s
    rows = _sacct(job_id)
    while not expect(rows) and time.monotonic() < deadline:
        time.sleep(1)
        rows = _sacct(job_id)
    return rows


def _has_gpu_gres() -> bool:
    return "gpu" in _run("sinfo", "-h", "-o", "%G")


def test_job_array_runs_and_is_accounted(slurm_cluster, tmp_path):
    ex = _executor(tmp_path / "submitit")
    jobs = ex.map_array(_square, [3, 4])
    gpu_job = None
    if _has_gpu_gres():  # the fake GPU: a job asking for one gets CUDA_VISIBLE_DEVICES
        gpu_job = _executor(tmp_path / "submitit", gpus_per_node=1).submit(_square, 5)
    _wait(jobs + ([gpu_job] if gpu_job else []), timeout_s=180)

    results = [j.result() for j in jobs]
    assert [r["value"] for r in results] == [9, 16]
    assert [r["task"] for r in results] == ["0", "1"]
    assert {r["partition"] for r in results} == {"debug"}
    if gpu_job is not None:
        assert gpu_job.result()["cuda"] == "0"

    array_id = jobs[0].job_id.split("_")[0]
    assert all(j.job_id.startswith(f"{array_id}_") for j in jobs)
    rows = _wait_sacct(array_id, lambda rows: sorted(rows) == [(f"{array_id}_0", "COMPLETED"),
                                                                (f"{array_id}_1", "COMPLETED")])
    assert sorted(rows) == [(f"{array_id}_0", "COMPLETED"), (f"{array_id}_1", "COMPLETED")], rows


def test_timed_out_checkpointable_job_is_requeued(slurm_cluster, tmp_path):
    """Time limit -> SLURM's USR2 -> submitit checkpoints and requeues -> the rerun finishes.

    To keep this fast the job starts with a 5-minute limit (submitit asks for USR2 90 s before the
    end), and once its Python is running the test lowers the limit so that the warning is due at
    once; while the requeued job waits (AuthInfo cred_expire, 10 s in cluster.sh's slurm.conf) the
    limit goes back up, so that the rerun is not signalled before Python has installed its handler.
    """
    marker = tmp_path / "attempts.txt"
    ex = _executor(tmp_path / "submitit", timeout_min=5)
    t_submit = time.monotonic()
    job = ex.submit(TimesOutOnce(), str(marker))

    deadline = time.monotonic() + 180
    while not (marker.exists() and marker.read_text().strip()):
        assert not job.done(), f"job ended before it ran: {job.state}: {job.stderr()}"
        assert time.monotonic() < deadline, f"job {job.job_id} did not start: {job.state}"
        time.sleep(0.3)
    # a limit already (nearly) reached: end - 90 s is in the past, SLURM sends USR2 now
    minutes = 1 + math.floor((time.monotonic() - t_submit) / 60)
    _run("scontrol", "update", f"JobId={job.job_id}", f"TimeLimit={minutes}")

    deadline = time.monotonic() + 120
    while True:  # requeued: PENDING until cred_expire has passed
        state = _run("squeue", "-h", "-j", job.job_id, "-o", "%T").strip()
        if state in ("PENDING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD"):
            break
        assert state, f"job {job.job_id} left the queue without a requeue: {job.stderr()}"
        assert time.monotonic() < deadline, f"job {job.job_id} not requeued (state {state}): {job.stderr()}"
        time.sleep(0.2)
    _run("scontrol", "update", f"JobId={job.job_id}", "TimeLimit=5")

    _wait([job], timeout_s=240)
    assert job.result() == 1  # the rerun got the checkpointed state
    attempts = [line.split() for line in marker.read_text().splitlines()]
    assert [a[0] for a in attempts] == ["0", "1"], attempts
    assert {a[1] for a in attempts} == {job.job_id}  # same SLURM job, requeued
    assert attempts[1][2] == "1"  # SLURM_RESTART_COUNT
    assert "Requeued job" in job.stdout()

    states = [s for _, s in _wait_sacct(job.job_id, lambda rows: any(s == "COMPLETED" for _, s in rows))]
    assert "COMPLETED" in states, states
    assert [s for _, s in _sacct(job.job_id, "-D")].count("REQUEUED") >= 1
