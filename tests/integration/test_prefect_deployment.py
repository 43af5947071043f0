"""The ``screen/bimetallics`` deployment on a real (private, offline) Prefect server and process worker.

A module fixture starts what ``make serve`` starts (``flows.serve``: server on a free port with a
temporary PREFECT_HOME, the ``qecat-process`` pool, ``prefect deploy --all`` from the repository
root, a worker), with the scheduler service off so that the nightly schedule never starts a full
screen during a test. Runs go through the CLI a user types, parameters overridden to a 4-candidate
catalog, a random-init tiny model and temporary results/work folders:

* one ``prefect deployment run screen/bimetallics --watch`` completes and writes results;
* two concurrent runs of the deployment write every candidate exactly once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from flows import serve

pytestmark = pytest.mark.integration_prefect

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = float(os.environ.get("QECAT_PREFECT_RUN_TIMEOUT", 600))  # a run: ~15-30 s on 2 idle cores

MICRO_CATALOG = {
    "name": "prefect-micro",
    "metals": ["Cu", "Pt"],
    "pairs": ["Cu-Pt"],
    "include_pure": False,
    "prototypes": [{"kind": "L1_2", "formula": "A3B"}],
    "facets": ["111"],
    "slab": {"min_layers": 3, "fixed_layers": 1, "min_lateral": 5.0},
    "adsorbates": ["*O"],
    "placement": {"max_per_system": 4},
}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A random-init tiny QE-Catalytic model folder (as tests/test_model.py builds one)."""
    import torch

    from qecat_core.model.checkpoint import save_model
    from qecat_core.model.data import StructureDataset
    from qecat_core.model.fusion import QECatModel
    from qecat_core.model.normalizer import Normalizer
    from qecat_core.model.tokenizer import train_tokenizer
    from tests.test_model import TINY_MODEL, make_systems

    systems = make_systems(8)
    tok = train_tokenizer([a.info["text"] for a in systems], systems[:2], vocab_size=512)
    ds = StructureDataset(systems)
    torch.manual_seed(0)
    model = QECatModel(TINY_MODEL, len(tok), tok.pad_token_id, tok.bos_token_id, tok.eos_token_id,
                       Normalizer.fit(ds.targets, ds.adsorbates)).eval()
    out = tmp_path_factory.mktemp("ckpt") / "tiny-model"
    save_model(model, tok, out)
    return out


@pytest.fixture(scope="module")
def micro_catalog(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("catalog") / "prefect-micro.yaml"
    p.write_text(yaml.safe_dump(MICRO_CATALOG))
    return p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((serve.HOST, 0))
        return s.getsockname()[1]


def _client(cfg: serve.ServeConfig):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api=cfg.api_url)


def _worker_log(cfg: serve.ServeConfig, lines: int = 60) -> str:
    return "\n".join(cfg.log("worker").read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def prefect_stack(tmp_path_factory):
    """Server + pool + deployment + worker through flows.serve, on a free port; stopped afterwards."""
    home = tmp_path_factory.mktemp("prefect-home")
    # scheduler off: the nightly schedule must not start a full screen during a test; the other
    # services off because nothing here needs them (automations, late runs, pauses, ...) and CI has 2 cores
    idle_services = ["SCHEDULER", "TRIGGERS", "LATE_RUNS", "PAUSE_EXPIRATIONS", "REPOSSESSOR", "CANCELLATION_CLEANUP",
                     "FOREMAN", "CLEANUP_RECONCILER", "DB_VACUUM"]
    env = {f"PREFECT_SERVER_SERVICES_{s}_ENABLED": "false" for s in idle_services}
    env["PREFECT_WORKER_QUERY_SECONDS"] = "1"
    cfg = serve.ServeConfig(home=home, port=_free_port(), extra_env=env)
    try:
        t0 = time.monotonic()
        serve.start(cfg, quiet=True)
        print(f"prefect stack ready in {time.monotonic() - t0:.1f} s")
        yield cfg
    except serve.ServeError as exc:
        pytest.fail(str(exc))
    finally:
        t0 = time.monotonic()
        serve.stop(cfg)
        print(f"stopped in {time.monotonic() - t0:.1f} s")
        for what in ("server", "worker"):
            assert serve.running_pid(cfg, what) is None
            assert not (cfg.home / f"{what}.pid").exists()
        assert not serve.healthy(cfg)
        serve.stop(cfg)  # idempotent


def test_start_again_finds_server_and_worker(prefect_stack):
    pids = {w: serve.running_pid(prefect_stack, w) for w in ("server", "worker")}
    assert all(pids.values())
    assert serve.start_server(prefect_stack) == pids["server"]
    assert not serve.ensure_work_pool(prefect_stack)  # exists: not created again
    assert serve.start_worker(prefect_stack) == pids["worker"]


def _params(micro_catalog: Path, checkpoint: Path, base: Path) -> dict:
    """The flow's one parameter, a ScreenConfig (replaces the deployment's ``config`` as a whole)."""
    return {"config": {"catalog": str(micro_catalog), "checkpoint": str(checkpoint), "executor": "local",
                       "shard_size": 2, "workers": 1, "results": str(base / "results"), "work": str(base / "work")}}


def _run_cmd(params: dict, name: str) -> list[str]:
    return [serve.PREFECT, "deployment", "run", serve.DEPLOYMENT, "--params", json.dumps(params),
            "--flow-run-name", name, "--watch"]


def _predictions(results: Path):
    import pandas as pd

    files = sorted(results.glob("predictions/**/*.parquet"))
    assert files, f"no prediction files under {results}"
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _n_candidates(work: Path) -> int:
    import pandas as pd

    files = list(work.glob("**/candidates.parquet"))
    assert files, f"no enumeration under {work}"
    return len(pd.read_parquet(files[0], columns=["sid"]))


def test_deployment_is_registered_with_nightly_schedule(prefect_stack):
    with _client(prefect_stack) as client:
        dep = client.read_deployment_by_name(serve.DEPLOYMENT)
    assert dep.work_pool_name == serve.POOL
    assert dep.entrypoint == "flows/screen.py:screen"
    assert dep.parameters["config"]["catalog"] == "catalogs/bimetallics.yaml"
    assert dep.parameters["config"]["executor"] == "local"
    declared = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"][0]["schedules"][0]
    (sched,) = dep.schedules
    assert sched.schedule.cron == declared["cron"] and str(sched.schedule.timezone) == declared["timezone"]
    assert sched.active
    # the pull step points at this checkout, whatever its path
    (step,) = dep.pull_steps
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == str(REPO)


def test_deployment_run_completes_and_writes_results(prefect_stack, micro_catalog, tiny_checkpoint, tmp_path):
    params = _params(micro_catalog, tiny_checkpoint, tmp_path)
    t0 = time.monotonic()
    proc = subprocess.run(_run_cmd(params, "pytest-single"), cwd=REPO, env=prefect_stack.env(), capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)
    took = time.monotonic() - t0
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\nworker log:\n" \
                                 f"{_worker_log(prefect_stack)}"
    assert "Completed" in proc.stdout
    print(f"one deployment run (micro catalog): {took:.1f} s")
    preds = _predictions(Path(params["config"]["results"]))
    n = _n_candidates(Path(params["config"]["work"]))
    assert n >= 2
    assert len(preds) == n and preds["sid"].is_unique
    assert preds["e_ads_pred"].notna().all()


def test_two_concurrent_runs_write_each_candidate_once(prefect_stack, micro_catalog, tiny_checkpoint, tmp_path):
    params = _params(micro_catalog, tiny_checkpoint, tmp_path)  # fresh work + results: both runs do everything
    env = prefect_stack.env()
    t0 = time.monotonic()
    procs = [subprocess.Popen(_run_cmd(params, f"pytest-concurrent-{i}"), cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=RUN_TIMEOUT_S)[0] for p in procs]
    print(f"two concurrent deployment runs: {time.monotonic() - t0:.1f} s")
    for p, out in zip(procs, outs):
        assert p.returncode == 0, f"{out[-3000:]}\nworker log:\n{_worker_log(prefect_stack)}"
    # the two runs really overlapped (the worker started both before either finished)
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with _client(prefect_stack) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[f"pytest-concurrent-{i}" for i in range(2)])))
    assert len(runs) == 2 and all(r.state_name == "Completed" for r in runs)
    assert max(r.start_time for r in runs) < min(r.end_time for r in runs), "the runs did not overlap"
    preds = _predictions(Path(params["config"]["results"]))
    n = _n_candidates(Path(params["config"]["work"]))
    dup = preds["sid"][preds["sid"].duplicated()].tolist()
    assert not dup, f"duplicate sids in results: {dup}"
    assert len(preds) == n and n >= 2
