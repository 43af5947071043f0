"""The screening pipeline on the single-node SLURM cluster (slurm/cluster.sh): same results as local,
jobs in sacct, and exactly once after a job is cancelled mid-shard.

Skipped unless the cluster is up or ``QECAT_SLURM=1`` (see tests/integration/conftest.py):

    QECAT_SLURM=1 python -m pytest tests/integration/test_screen_slurm.py -m integration_slurm
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.screening_fixtures import (
    SHARD_SIZE,
    make_base,
    make_env,
    read_predictions,
    screen_and_stop_a_job,
    screen_config,
)

pytestmark = pytest.mark.integration_slurm

REPO = Path(__file__).resolve().parents[2]
LOCAL_CLUSTER_YAML = REPO / "slurm" / "local-cluster.yaml"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("screen-slurm"))


@pytest.fixture
def env(base, tmp_path):
    return make_env(base, tmp_path)


def _cfg(env, **kw):
    return screen_config(env, **{"executor": "slurm", "slurm": LOCAL_CLUSTER_YAML, **kw})


_predictions = read_predictions


def _sacct(name: str) -> list[tuple[str, str]]:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,JobName,State", "--name", name, "-S", "now-1hour"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [tuple(l.split("|")[0::2]) for l in out.stdout.splitlines() if l.strip()]


def test_flow_on_slurm_matches_local_and_jobs_are_in_sacct(slurm_cluster, env):
    from prefect.testing.utilities import prefect_test_harness

    from flows.screen import screen
    from qecat_core.screen.config import make_screen_config

    cfg = make_screen_config(dict(catalog=str(env["catalog"]), checkpoint=str(env["models"][0]),
                                  results=str(env["results"]), work=str(env["workdir"]), shard_size=SHARD_SIZE,
                                  executor="slurm", slurm=str(LOCAL_CLUSTER_YAML), batch_size=4))
    with prefect_test_harness(server_startup_timeout=300):  # a busy machine starts it slowly
        summary = screen(cfg)
    assert summary["status"] == "ok" and summary["new"] == env["n"]
    assert summary["shards"]["jobs"] == env["shards"]  # one SLURM job per shard
    slurm_preds = _predictions(env["results"])
    # the same candidates through the local executor give the same numbers
    from qecat_core.screen.pipeline import run_screen

    local_results = env["tmp"] / "results-local"
    shutil.rmtree(env["workdir"] / "tinyscreen" / "predictions")
    r = run_screen(_cfg(env, executor="local", results=local_results))
    assert r.summary["status"] == "ok"
    local_preds = _predictions(local_results)
    merged = slurm_preds.merge(local_preds, on="sid", suffixes=("_slurm", "_local"))
    assert len(merged) == env["n"] == len(slurm_preds) == len(local_preds)
    assert (merged["e_ads_pred_slurm"] - merged["e_ads_pred_local"]).abs().max() < 1e-5
    # every shard job is in the accounting database, completed
    jobs = _sacct("qecat-tinyscreen")
    completed = [j for j in jobs if j[1] == "COMPLETED"]
    assert len(completed) >= env["shards"], jobs


def test_scancel_mid_shard_then_rerun_exactly_once(slurm_cluster, env):
    from qecat_core.screen.pipeline import run_screen

    # all shards in one job, one structure per batch: the job is surely mid-shard when SIGTERM arrives
    cfg = _cfg(env, batch_size=1, shards_per_job=100, catalog=env["catalog_h"])
    result, cancelled = screen_and_stop_a_job(
        cfg, env["workdir"], "job", lambda job: subprocess.run(["scancel", str(job)], check=True, timeout=60))
    assert cancelled is not None, "every shard finished before one could be cancelled"
    s1 = result.summary
    assert s1["status"] == "failed" and s1["failed"], s1
    assert any("cancelled (SIGTERM) mid-shard" in f["error"] for f in s1["failed"]), s1["failed"]
    n_before = len(_predictions(env["results"])) if s1["new"] else 0
    s2 = run_screen(_cfg(env, catalog=env["catalog_h"])).summary
    assert s2["status"] == "ok" and s2["new"] == env["n_h"] - n_before
    preds = _predictions(env["results"])
    assert len(preds) == env["n_h"] and preds["sid"].is_unique
