"""Screening pipeline: incremental reruns, exactly-once results, failures, queries, verification.

Fixtures from tests/screening_fixtures.py: a tiny catalog (18 candidates in 4 shards) enumerated once
per module and two tiny random-initialised models saved with ``save_model``, so nothing depends on
the shipped checkpoint. Runs that must exercise real job processes use submitit's ``local``
executor; the others use ``inline`` (same job functions, in this process, model loaded once).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from qecat_core.cli.main import app
from qecat_core.common.errors import InputError
from qecat_core.screen.config import load_screen_config
from tests.screening_fixtures import (
    SHARD_SIZE,
    make_base,
    make_env,
    read_predictions,
    screen_and_stop_a_job,
    screen_config,
)

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """Catalog files, a pre-enumerated work folder and two tiny models."""
    return make_base(tmp_path_factory.mktemp("screen"))


@pytest.fixture
def env(base, tmp_path):
    return make_env(base, tmp_path)


_cfg = screen_config
_predictions = read_predictions


def _visible_parts(results: Path) -> list[Path]:
    return sorted(p for p in results.rglob("*.parquet") if not p.name.startswith("."))


# ---------------------------------------------------------------------------------------------
# configuration


def test_config_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: fussed\n")
    with pytest.raises(InputError, match=r"bad.yaml: mode: .*'fused', 'graph' or 'text'.*fussed"):
        load_screen_config(bad)
    bad.write_text("executor: slurm\nslurm: {partition: debug, gpus: 1}\n")
    with pytest.raises(InputError, match=r"bad.yaml: slurm.gpus: unknown field; allowed: partition, gpus_per_node"):
        load_screen_config(bad)
    s = tmp_path / "s.yaml"
    s.write_text("partition: debug\nmem_gb: -1\n")
    bad.write_text(f"executor: slurm\nslurm: {s}\n")
    with pytest.raises(InputError, match=r"s.yaml: mem_gb: .*greater than 0"):
        load_screen_config(bad)
    with pytest.raises(InputError, match="config file not found"):
        load_screen_config(tmp_path / "none.yaml")
    with pytest.raises(InputError, match="checkpoint: .*model folder not found"):
        load_screen_config(None, checkpoint=tmp_path / "nope").checkpoint_path()
    monkey = os.environ.pop("QECAT_CHECKPOINT", None)
    try:
        cwd = os.getcwd()
        os.chdir(tmp_path)
        import qecat_core.screen.config as c

        old, c.REPO_ROOT = c.REPO_ROOT, tmp_path
        try:
            with pytest.raises(InputError, match="shipped default model models/qecat-emt-v1/ is missing"):
                load_screen_config(None).checkpoint_path()
        finally:
            c.REPO_ROOT = old
            os.chdir(cwd)
    finally:
        if monkey is not None:
            os.environ["QECAT_CHECKPOINT"] = monkey
    # a config file with every section, and the shipped slurm settings files
    good = tmp_path / "good.yaml"
    good.write_text("catalog: catalogs/bimetallics.yaml\nmode: graph\nexecutor: slurm\n"
                    "slurm: {partition: gpu, gpus_per_node: 1, additional_parameters: {requeue: true}}\n"
                    "verify_top_k: 3\n")
    cfg = load_screen_config(good, shard_size=10)
    assert cfg.mode == "graph" and cfg.shard_size == 10 and cfg.slurm_settings().gpus_per_node == 1
    for f in sorted((REPO / "slurm").glob("*.yaml")):
        from qecat_core.screen.config import load_slurm_settings

        load_slurm_settings(f)


def test_catalog_with_elements_the_model_never_saw_is_refused_before_enumerating(base, tmp_path):
    from qecat_core.catalog.schema import load_catalog
    from qecat_core.model.checkpoint import load_model, save_model
    from qecat_core.screen.plan import check_model_elements
    from tests.screening_fixtures import write_catalog

    m, tok = load_model(base["models"][0])
    m.training_elements = ("Cu", "H", "O", "Pt")
    save_model(m, tok, tmp_path / "model")
    ok = write_catalog(tmp_path / "ok.yaml")
    rh = write_catalog(tmp_path / "rh.yaml", metals=["Cu", "Pt", "Rh"], pairs=["Cu-Rh"])
    nh = write_catalog(tmp_path / "nh.yaml", adsorbates=["*O", "*NH2"])
    assert load_catalog(rh).elements() == {"metals": ["Cu", "Pt", "Rh"], "adsorbates": ["H", "O"]}
    cfg = dict(checkpoint=tmp_path / "model", work=tmp_path / "runs", results=tmp_path / "results")
    check_model_elements(load_screen_config(None, catalog=ok, **cfg), load_catalog(ok))
    with pytest.raises(InputError, match=r"rh.yaml: metals use Rh, which model .* never saw in training "
                                         r"\(trained on Cu, H, O, Pt\).*allow_unseen_elements"):
        check_model_elements(load_screen_config(None, catalog=rh, **cfg), load_catalog(rh))
    with pytest.raises(InputError, match="nh.yaml: adsorbates use N, which"):
        check_model_elements(load_screen_config(None, catalog=nh, **cfg), load_catalog(nh))
    check_model_elements(load_screen_config(None, catalog=rh, allow_unseen_elements=True, **cfg), load_catalog(rh))
    # the CLI stops with the one-line error (exit 2) before enumerating anything
    res = runner.invoke(app, ["screen", "--catalog", str(rh), "--checkpoint", str(tmp_path / "model"),
                              "--work", str(tmp_path / "runs"), "--results", str(tmp_path / "results")])
    assert res.exit_code == 2 and "metals use Rh" in res.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
    # a model saved without the record is not checked
    check_model_elements(load_screen_config(None, catalog=rh, checkpoint=base["models"][0], work=tmp_path / "w"),
                         load_catalog(rh))


def test_slurm_settings_reach_sbatch(tmp_path, monkeypatch):
    import submitit

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun needed

    from qecat_core.screen.config import SlurmSettings
    from qecat_core.screen.executors import slurm_parameters

    s = SlurmSettings(partition="gpu", gpus_per_node=1, cpus_per_task=8, mem_gb=64, timeout_min=240,
                      array_parallelism=32, account="proj", qos="normal", constraint="a100",
                      additional_parameters={"requeue": True}, setup=["module load cuda"])
    params = slurm_parameters(s, "qecat-x")
    ex = submitit.AutoExecutor(tmp_path, cluster="slurm", slurm_max_num_timeout=s.max_num_timeout)
    ex.update_parameters(**params)
    text = ex._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=64GB", "--time=240",
                 "--signal=USR2@90",
                 "--account=proj", "--qos=normal", "--constraint=a100", "--requeue", "--job-name=qecat-x"):
        assert line in text, line
    assert "module load cuda" in text
    # no GPUs: no --gpus-per-node at all (a cluster without GPU GRES rejects it)
    assert "gpus_per_node" not in slurm_parameters(SlurmSettings())
    # a limit too short for the requeue signal is refused, naming both fields
    with pytest.raises(ValueError, match="timeout_min=2 .*signal_delay_s=90"):
        SlurmSettings(timeout_min=2)
    assert slurm_parameters(SlurmSettings(timeout_min=2, signal_delay_s=30))["slurm_signal_delay_s"] == 30


def test_run_ids_sort_by_start_time_within_a_second():
    from datetime import datetime, timedelta, timezone

    from qecat_core.screen.plan import new_run_id

    t0 = datetime(2026, 11, 26, 2, 0, 0, tzinfo=timezone.utc)
    ids = [new_run_id(t0 + timedelta(microseconds=i)) for i in range(200)]  # random suffixes
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_slurm_arrays_are_chunked_under_max_array_size():
    from contextlib import contextmanager

    from qecat_core.screen.executors import ExecutorInfo, submit_all

    class Job:
        def __init__(self, value):
            self.value, self.job_id = value, f"j{value}"

        def done(self):
            return True

        def result(self):
            return self.value

    class FakeSlurm:
        def __init__(self):
            self.arrays, self._batch = [], None

        @contextmanager
        def batch(self):
            self._batch = []
            yield
            self.arrays.append(self._batch)
            self._batch = None

        def submit(self, fn, *args):
            assert self._batch is not None, "submitted outside executor.batch()"
            self._batch.append(args)
            return Job(fn(*args))

    ex = FakeSlurm()
    done = list(submit_all(ex, ExecutorInfo("slurm", 2, max_array_size=3, poll_s=0), lambda x: x * 10,
                           [(k,) for k in range(7)]))
    assert [len(a) for a in ex.arrays] == [3, 3, 1]
    assert sorted(sj.job.result() for sj in done) == [k * 10 for k in range(7)]


# ---------------------------------------------------------------------------------------------
# incremental runs


def test_first_run_then_rerun_skips_everything(env):
    from qecat_core.screen.pipeline import run_screen

    cfg = _cfg(env, executor="local")
    r1 = run_screen(cfg)
    s1 = r1.summary
    assert s1["status"] == "ok", s1["failed"]
    assert s1["new"] == env["n"] and s1["skipped"] == 0 and s1["shards"]["run"] == env["shards"]
    preds = _predictions(env["results"])
    assert len(preds) == env["n"] and preds["sid"].is_unique
    for col in ("e_ads_pred", "model_id", "checkpoint_hash", "catalog_hash", "code_version", "run_id", "timestamp",
                "bulk", "miller", "adsorbate", "site_type", "system_id"):
        assert preds[col].notna().all(), col
    assert set(preds["run_id"]) == {s1["run_id"]}
    assert len(r1.ranking) == preds["system_id"].nunique()
    assert (r1.ranking.groupby("adsorbate")["rank"].min() == 1).all()
    # partitioned layout
    part = Path(s1["part"])
    assert part.parent.name.startswith("run_date=") and part.parent.parent.name == f"model={s1['model_id']}"
    assert part.parent.parent.parent.name == "screen=tinyscreen"
    # rerun: nothing predicted, nothing submitted
    r2 = run_screen(_cfg(env))
    s2 = r2.summary
    assert s2["new"] == 0 and s2["skipped"] == env["n"] and s2["shards"]["skipped"] == env["shards"]
    assert s2["shards"]["jobs"] == 0 and s2["movers"]["previous_run"] == s1["run_id"]
    assert s2["movers"]["n_changed"] == 0
    assert len(_predictions(env["results"])) == env["n"]
    summary = json.loads(Path(s2["summary_path"]).read_text())
    assert summary["run_id"] == s2["run_id"] and summary["status"] == "ok"


def test_new_adsorbate_predicts_only_new_sids_and_new_model_repredicts(env):
    from qecat_core.screen.pipeline import run_screen

    s1 = run_screen(_cfg(env)).summary
    before = set(_predictions(env["results"])["sid"])
    cands_h = _enum_candidates(env, env["catalog_h"])
    new_sids = set(cands_h["sid"]) - before
    assert new_sids and set(cands_h.loc[cands_h["adsorbate"] == "*H", "sid"]) == new_sids  # sids are stable
    s2 = run_screen(_cfg(env, catalog=env["catalog_h"])).summary
    assert s2["status"] == "ok"
    assert s2["new"] == len(new_sids) and s2["skipped"] == env["n"] and s2["catalog_hash"] != s1["catalog_hash"]
    preds = _predictions(env["results"])
    assert preds["sid"].is_unique and set(preds["sid"]) == set(cands_h["sid"])
    assert set(preds.loc[preds["run_id"] == s2["run_id"], "sid"]) == new_sids
    # another checkpoint: everything again, under its own model id; the first model's rows untouched
    s3 = run_screen(_cfg(env, catalog=env["catalog_h"], checkpoint=env["models"][1])).summary
    assert s3["model_id"] != s1["model_id"] and s3["new"] == env["n_h"] and s3["skipped"] == 0
    preds = _predictions(env["results"])
    assert preds.groupby("model_id")["sid"].apply(lambda s: s.is_unique and len(s) == env["n_h"]).all()
    assert s3["movers"]["previous_run"] == s2["run_id"] and s3["movers"]["n_changed"] > 0
    # the ranking view reads the newest snapshot per model and equals the ranking computed from predictions
    from qecat_core.results.query import RANKING_SQL, connect

    con = connect(env["results"])
    cols = "model_id, system_id, sid, e_ads_pred, n_placements, rank"
    fast = con.sql(f"SELECT {cols}, run_id FROM ranking ORDER BY model_id, system_id").df()
    con.execute(RANKING_SQL.replace("CREATE VIEW ranking", "CREATE VIEW ranking_slow"))
    slow = con.sql(f"SELECT {cols} FROM ranking_slow ORDER BY model_id, system_id").df()
    con.close()
    assert set(fast.groupby("model_id")["run_id"].unique().map(tuple)) == {(s2["run_id"],), (s3["run_id"],)}
    assert len(fast) == len(slow) > 0
    pd.testing.assert_frame_equal(fast[slow.columns].reset_index(drop=True), slow, check_dtype=False)


def test_latest_rankings_newest_snapshot_per_model_even_if_empty(tmp_path):
    import pyarrow as pa

    from qecat_core.results.query import latest_rankings, query
    from qecat_core.results.ranking import RANKING_KEY
    from qecat_core.screen.rank import RANK_COLUMNS

    d = tmp_path / "rankings" / "screen=s"
    d.mkdir(parents=True)

    def snap(run, model, rows, tagged=True):
        cols = {c: pa.array([f"{c}{i}" for i in range(rows)], pa.string()) for c in RANK_COLUMNS}
        cols.update({"e_ads_pred": pa.array([-1.0 * i for i in range(rows)], pa.float64()),
                     "shift": pa.array([0.0] * rows, pa.float64()), "top": pa.array([True] * rows),
                     "n_placements": pa.array([2] * rows, pa.int64()), "rank": pa.array(range(1, rows + 1), pa.int64()),
                     "model_id": pa.array([model] * rows, pa.string()), "mode": pa.array(["fused"] * rows, pa.string()),
                     "run_id": pa.array([run] * rows, pa.string())})
        t = pa.table(cols)
        if tagged:
            t = t.replace_schema_metadata({RANKING_KEY: json.dumps({"model_id": model, "mode": "fused"}).encode()})
        pq.write_table(t, d / f"ranking-{run}.parquet")
        return d / f"ranking-{run}.parquet"

    snap("20260101T000000.000001Z-aa", "m0", 3)
    newest_m0 = snap("20260102T000000.000001Z-00", "m0", 0)  # every candidate gone: an empty ranking
    snap("20260101T000000Z-ff", "m1", 2, tagged=False)  # a snapshot from before the metadata
    newest_m1 = snap("20260103T000000.000001Z-bb", "m1", 4, tagged=False)
    assert latest_rankings(tmp_path) == sorted([newest_m0, newest_m1])
    got = query("SELECT model_id, count(*) AS n FROM ranking GROUP BY 1", tmp_path)
    assert dict(zip(got["model_id"], got["n"])) == {"m1": 4}


def _enum_candidates(env, catalog):
    from qecat_core.screen.plan import enumerate_candidates

    enum = enumerate_candidates(_cfg(env, catalog=catalog))
    return pd.read_parquet(Path(enum.directory) / "candidates.parquet")


# ---------------------------------------------------------------------------------------------
# failures


def test_corrupted_shard_fails_alone_with_its_name(env):
    from qecat_core.screen.plan import enumerate_candidates

    enum = enumerate_candidates(_cfg(env))
    bad = Path(enum.directory) / "shards" / "shard-00001.aselmdb"
    bad.write_bytes(b"this is not an lmdb file" * 100)
    result = runner.invoke(app, ["screen", "--catalog", str(env["catalog"]), "--checkpoint", str(env["models"][0]),
                                 "--results", str(env["results"]), "--work", str(env["workdir"]),
                                 "--shard-size", str(SHARD_SIZE), "--workers", "1", "--executor", "inline",
                                 "--no-plots"])
    assert result.exit_code == 1, result.output
    assert "shard-00001.aselmdb" in result.stderr or "shard-00001.aselmdb" in result.output
    runs = sorted((env["results"] / "runs" / "screen=tinyscreen").glob("run-*.json"))
    summary = json.loads(runs[-1].read_text())
    assert summary["status"] == "failed" and [f["shard"] for f in summary["failed"]] == ["shard-00001.aselmdb"]
    err = summary["failed"][0]["error"]
    assert str(bad) in err and "\n" not in err
    preds = _predictions(env["results"])
    assert len(preds) == env["n"] - summary["failed"][0]["n"] and preds["sid"].is_unique


def test_crash_during_parquet_write_leaves_nothing_partial(env, monkeypatch):
    from qecat_core.screen import plan as screening
    from qecat_core.screen.collect import collect
    from qecat_core.screen.plan import cached_outcomes, plan_screen, run_shards

    cfg = _cfg(env)
    plan = plan_screen(cfg)
    real = pq.write_table

    def half_then_crash(table, where, **kw):  # the per-shard writer dies after writing half a file
        real(table.slice(0, max(1, len(table) // 2)), where, **kw)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(pq, "write_table", half_then_crash)
    outcomes = run_shards(plan)
    assert all(o.status == "failed" and "disk full" in o.error for o in outcomes)
    monkeypatch.setattr(pq, "write_table", real)
    assert not list(Path(env["workdir"]).rglob("predictions/**/*.parquet"))  # no partial shard output
    assert not [p for p in Path(env["workdir"]).rglob("*.tmp")]

    plan = plan_screen(cfg)
    outcomes = cached_outcomes(plan) + run_shards(plan)
    real_close = pq.ParquetWriter.close

    def crash_on_close(self):  # the results writer dies before the rename
        real_close(self)
        raise OSError("killed (simulated)")

    monkeypatch.setattr(pq.ParquetWriter, "close", crash_on_close)
    with pytest.raises(OSError):
        collect(plan, outcomes)
    monkeypatch.setattr(pq.ParquetWriter, "close", real_close)
    assert not list((env["results"] / "predictions").rglob("*.parquet"))
    assert not [p for p in env["results"].rglob("*.tmp")]
    collected = collect(plan, outcomes)  # shard outputs are reused, published exactly once
    assert collected.n_new == env["n"]
    assert _predictions(env["results"])["sid"].is_unique
    assert screening.predicted_sids(plan.paths, plan.model_id, plan.mode) == set(_predictions(env["results"])["sid"])


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_local_job_mid_shard_then_rerun_exactly_once(env, sig):
    from qecat_core.screen.pipeline import run_screen

    cfg = _cfg(env, executor="local", batch_size=1, shard_size=SHARD_SIZE)
    # the job process, while it holds a shard
    result, killed = screen_and_stop_a_job(cfg, env["workdir"], "pid", lambda pid: os.kill(pid, sig), poll=0.002)
    assert killed is not None, "the job finished before it could be killed"
    s1 = result.summary
    assert s1["status"] == "failed" and s1["failed"], s1
    if sig == signal.SIGKILL:  # the job died: its unfinished shards fail
        assert all("ended without a result" in f["error"] for f in s1["failed"]), s1["failed"]
    else:  # SIGTERM (scancel, preemption): the shard stops at once, nothing written
        assert any("cancelled (SIGTERM) mid-shard" in f["error"] for f in s1["failed"]), s1["failed"]
    done_before = len(_predictions(env["results"]))
    assert done_before < env["n"]
    s2 = run_screen(_cfg(env)).summary  # rerun: only the lost shards
    assert s2["status"] == "ok" and s2["new"] == env["n"] - done_before
    preds = _predictions(env["results"])
    assert len(preds) == env["n"] and preds["sid"].is_unique


@pytest.mark.slow
def test_two_concurrent_runs_create_no_duplicates(env):
    cmd = [str(Path(sys.executable).parent / "qecat"), "screen", "--catalog", str(env["catalog"]),
           "--checkpoint", str(env["models"][0]), "--results", str(env["results"]), "--work", str(env["workdir"]),
           "--shard-size", str(SHARD_SIZE), "--workers", "1", "--executor", "local", "--no-plots"]
    procs = [subprocess.Popen(cmd, cwd=env["tmp"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    preds = _predictions(env["results"])
    assert len(preds) == env["n"] and preds["sid"].is_unique
    runs = [json.loads(p.read_text()) for p in (env["results"] / "runs" / "screen=tinyscreen").glob("run-*.json")]
    assert sum(r["new"] for r in runs) == env["n"]


# ---------------------------------------------------------------------------------------------
# queries, verification, flow


def test_query_views_and_errors(env):
    from qecat_core.results.query import query
    from qecat_core.screen.pipeline import run_screen

    r = run_screen(_cfg(env))
    res = str(env["results"])
    n = query("SELECT count(*) AS n, count(DISTINCT sid) AS d FROM predictions", res)
    assert n["n"][0] == n["d"][0] == env["n"]
    assert query("SELECT count(*) AS n FROM candidates", res)["n"][0] == env["n"]
    ranking = query("SELECT system_id, e_ads_pred, rank FROM ranking ORDER BY system_id", res)
    mine = r.ranking.sort_values("system_id").reset_index(drop=True)
    assert list(ranking["system_id"]) == list(mine["system_id"])
    assert (ranking["e_ads_pred"] - mine["e_ads_pred"]).abs().max() < 1e-12
    assert list(ranking["rank"]) == list(mine["rank"])
    assert query("SELECT status FROM runs", res)["status"].tolist() == ["ok"]
    assert len(query("SELECT * FROM verification", res)) == 0  # empty view still binds
    assert len(query("SELECT * FROM ranking_history", res)) == len(r.ranking)
    # the documented example queries run
    doc = (REPO / "docs" / "queries.md").read_text()
    examples = [block.split("```", 1)[0].strip() for block in doc.split("```sql")[1:]]
    assert len(examples) >= 3
    for sql in examples:
        query(sql, res)
    # CLI: table, csv, parquet; errors are one line with exit 2
    out = runner.invoke(app, ["query", "SELECT adsorbate, min(e_ads_pred) AS best FROM ranking GROUP BY 1 ORDER BY 1",
                              "--results", res, "--format", "csv"])
    assert out.exit_code == 0 and out.stdout.splitlines()[0] == "adsorbate,best"
    target = env["tmp"] / "q.parquet"
    out = runner.invoke(app, ["query", "SELECT * FROM predictions", "--results", res, "--format", "parquet", "-o",
                              str(target)])
    assert out.exit_code == 0 and pq.read_metadata(target).num_rows == env["n"]
    for sql, words in [("SELEC * FROM predictions", "syntax error"), ("SELECT nope FROM predictions", "nope"),
                       ("DROP VIEW predictions", "read-only"), ("COPY predictions TO 'x.csv'", "read-only"),
                       ("SELECT * FROM read_csv('/etc/passwd')", "")]:
        out = runner.invoke(app, ["query", sql, "--results", res])
        lines = [l for l in out.stderr.splitlines() if l.strip()]
        assert out.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: query:"), (sql, out.output)
        assert words.lower() in lines[0].lower()


def test_verify_top_k_writes_physics_energies(env):
    from qecat_core.results.query import query
    from qecat_core.screen.pipeline import run_screen

    r = run_screen(_cfg(env, verify_top_k=1))
    v = r.summary["verification"]
    assert r.summary["status"] == "ok", v
    assert v["n"] == 2 and v["calculator"] == "emt"  # the best system of *O and of *OH
    table = query("SELECT * FROM verification", str(env["results"]))
    assert len(table) == 2 and set(table["adsorbate"]) == {"*O", "*OH"}
    assert table["e_ads_physics"].between(-5, 2).all()
    assert ((table["e_ads_pred"] - table["e_ads_physics"]) - table["error"]).abs().max() < 1e-12
    top = r.ranking[r.ranking["rank"] == 1]
    assert set(table["sid"]) == set(top["sid"])
    # a rerun verifies nothing new and adds no duplicate rows
    r2 = run_screen(_cfg(env, verify_top_k=1))
    assert r2.summary["verification"]["n_new"] == 0
    assert len(query("SELECT * FROM verification", str(env["results"]))) == 2


def test_plots_and_report(env, capsys):
    from qecat_core.results.report import print_report, write_plots
    from qecat_core.screen.pipeline import run_screen

    r = run_screen(_cfg(env))
    paths = write_plots(r.summary, r.ranking)
    for p in paths.values():
        assert Path(p).stat().st_size > 1000
    print_report(r.summary, r.ranking, top=5)
    out = capsys.readouterr().out
    assert "tinyscreen" in out and "e_ads_pred" in out


@pytest.mark.slow
def test_prefect_flow_matches_plain_run(env, capsys):
    pytest.importorskip("prefect")
    import yaml
    from prefect.testing.utilities import prefect_test_harness

    from flows.screen import main, screen
    from qecat_core.screen.config import make_screen_config
    from qecat_core.screen.pipeline import run_screen

    fields = dict(catalog=str(env["catalog"]), checkpoint=str(env["models"][0]), results=str(env["results"]),
                  work=str(env["workdir"]), shard_size=SHARD_SIZE, workers=1, executor="inline")
    with prefect_test_harness(server_startup_timeout=300):  # a busy machine starts it slowly
        summary = screen(make_screen_config(fields, shards_per_job=2))
        assert summary["status"] == "ok" and summary["new"] == env["n"] and summary["shards"]["jobs"] == 2
        # `python -m flows.screen --config FILE` (make screen) runs the same flow and prints the report
        # (a rerun: nothing new)
        cfg_file = env["tmp"] / "screen.yaml"
        cfg_file.write_text(yaml.safe_dump(fields))
        assert main(["--config", str(cfg_file)]) == 0
        out = capsys.readouterr().out
        assert "already predicted" in out and "top 20 systems" in out
    preds = _predictions(env["results"])
    assert len(preds) == env["n"] and preds["sid"].is_unique
    assert (env["results"] / "plots" / "screen=tinyscreen" / "heatmap.png").is_file()
    # the plain run over the same candidates gives the same numbers
    plain, plain_work = env["tmp"] / "results-plain", env["tmp"] / "runs-plain"
    shutil.copytree(env["work"], plain_work)  # fresh shard outputs: predicted again
    assert run_screen(_cfg(env, results=plain, work=plain_work)).summary["shards"]["run"] == env["shards"]
    a = preds.set_index("sid")["e_ads_pred"].sort_index()
    b = _predictions(plain).set_index("sid")["e_ads_pred"].sort_index()
    assert (a - b).abs().max() < 1e-9


def test_checkpoint_found_from_any_folder_and_as_a_training_run(tmp_path, monkeypatch):
    """The shipped default is found from outside the repository, and a training run's folder
    (``qecat train ... -o DIR`` puts the final model in DIR/model) is accepted as a checkpoint."""
    from qecat_core.model.checkpoint import load_model, read_config
    from qecat_core.screen.config import resolve_checkpoint

    monkeypatch.delenv("QECAT_CHECKPOINT", raising=False)
    monkeypatch.chdir(tmp_path)
    shipped = resolve_checkpoint()
    assert shipped == REPO / "models" / "qecat-emt-v1"
    run = tmp_path / "run"
    run.mkdir()
    (run / "model").symlink_to(shipped, target_is_directory=True)
    assert resolve_checkpoint(run) == run / "model"
    assert read_config(run)["model_id"] == read_config(shipped)["model_id"]
    model, _ = load_model(run)
    assert model is not None
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: not a qecat model folder \(config.json missing, and no "
                                         r"model/config.json of a training run\)"):
        resolve_checkpoint(tmp_path / "empty")
