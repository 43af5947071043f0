"""A killed pool worker (OOM killer, lost node) must not hang a run.

Each test runs a command in a subprocess, kills one of its pool workers (SIGKILL, from outside with
psutil, or deterministically by the test hook ``QECAT_TEST_KILL_WORKER`` of
:mod:`qecat_core.common.pools`) and checks that the command ends within :data:`LIMIT_S` (retried:
exit 0; or a one-line error naming what was lost: exit 2) and that a rerun gives every candidate /
label exactly once. A hang fails the test at LIMIT_S (the process group is killed).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml
from ase.calculators.calculator import all_changes
from ase.calculators.emt import EMT

from qecat_core.label.relax import parts_dir

REPO = Path(__file__).resolve().parents[1]
LIMIT_S = 60
KILL = "QECAT_TEST_KILL_WORKER"

# 7 bulks x 4 facets x 8 adsorbates: 1128 candidates, a few seconds of enumeration on 2 workers
CATALOG = {
    "name": "worker-death", "metals": ["Cu", "Pt", "Pd"], "pairs": ["Cu-Pt", "Cu-Pd"], "include_pure": True,
    "prototypes": [{"kind": "L1_2", "formula": "A3B"}, {"kind": "L1_0"}],
    "facets": ["111", "100", "110", "211"],
    "slab": {"min_layers": 3, "fixed_layers": 1, "min_lateral": 5.0},
    "adsorbates": ["*H", "*O", "*OH", "*C", "*CO", "*N", "*NH2", "*CH3"],
    "placement": {"max_per_system": 4},
}


class SlowEMT(EMT):
    """EMT that takes 10 ms more per slab evaluation, so that label workers live a few seconds."""

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        if atoms is not None and len(atoms) > 6:  # slabs, not the gas references
            time.sleep(0.01)
        super().calculate(atoms, properties, system_changes)


def slow_emt() -> EMT:
    return SlowEMT()


# ---------------------------------------------------------------------------------------------
# helpers


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != KILL}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH"), str(REPO)) if p)
    env.update(extra)
    return env


def _start(args: list[str], cwd: Path, **env: str) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "import sys; sys.argv[0] = 'qecat'; from qecat_core.cli.main import app; app()", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _finish(proc: subprocess.Popen, t0: float) -> tuple[int, str, str, float]:
    """Wait for ``proc`` until LIMIT_S after ``t0``; a hang kills its process group and fails."""
    try:
        out, err = proc.communicate(timeout=max(1.0, LIMIT_S - (time.monotonic() - t0)))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"hung: still running {LIMIT_S} s after a worker was killed\n{err[-1500:]}")
    return proc.returncode, out, err, time.monotonic() - t0


def _run(args: list[str], cwd: Path, **env: str) -> tuple[int, str, str, float]:
    t0 = time.monotonic()
    return _finish(_start(args, cwd, **env), t0)


def _workers(proc: subprocess.Popen) -> list[psutil.Process]:
    """Pool workers of ``proc``: its children (fork), or its forkserver's children; not the
    forkserver or the resource tracker themselves."""
    found = []
    try:
        for p in psutil.Process(proc.pid).children(recursive=True):
            cmd = " ".join(p.cmdline())
            if "resource_tracker" in cmd or ("forkserver" in cmd and p.ppid() == proc.pid):
                continue
            found.append(p)
    except psutil.Error:
        pass
    return found


def _kill_a_worker(proc: subprocess.Popen, n: int = 1, settle: float = 0.3) -> int | None:
    """SIGKILL one pool worker once ``n`` exist (and ``settle`` s later); its pid, or None if the
    command ended first."""
    while proc.poll() is None:
        if len(_workers(proc)) >= n:
            time.sleep(settle)
            for p in _workers(proc):
                try:
                    p.send_signal(signal.SIGKILL)
                    return p.pid
                except psutil.Error:
                    continue
        time.sleep(0.02)
    return None


def _one_line_error(err: str, *words: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [l for l in err.replace("\r", "\n").splitlines() if l.startswith("error: ")]
    assert len(lines) == 1, err[-3000:]
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------
# enumeration


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """The catalog file and its candidates' sids, enumerated in one process (the reference)."""
    from qecat_core.catalog.schema import Catalog
    from qecat_core.enumerate.candidates import iter_candidates

    path = tmp_path_factory.mktemp("catalog") / "catalog.yaml"
    path.write_text(yaml.safe_dump(CATALOG))
    sids = [c.meta["sid"] for c in iter_candidates(Catalog.model_validate(CATALOG), workers=1, progress=False)]
    return path, sids


def _enumerated(out: Path) -> list[str]:
    df = pd.read_parquet(out / "candidates.parquet")
    assert df["sid"].is_unique
    return list(df["sid"])


def test_enumeration_retries_a_killed_worker(catalog, tmp_path):
    # the hook kills one worker (the first to claim the file) on its first bulk: retried in a new pool
    path, sids = catalog
    rc, out, err, wall = _run(["enumerate", str(path), "-o", str(tmp_path / "enum"), "--workers", "2"],
                              tmp_path, **{KILL: f"enumerate:{tmp_path / 'killed'}"})
    assert (tmp_path / "killed").exists()  # a worker did die
    assert rc == 0, err[-3000:]
    assert "a worker died (killed? out of memory?) while enumerating bulk" in err and "again in a new pool" in err
    assert _enumerated(tmp_path / "enum") == sids
    assert wall < LIMIT_S


def test_enumeration_fails_in_one_line_when_the_retry_dies_too(catalog, tmp_path):
    # every worker dies on its first bulk, the retry's too: one line naming a bulk, nothing indexed
    path, sids = catalog
    out_dir = tmp_path / "enum"
    rc, out, err, wall = _run(["enumerate", str(path), "-o", str(out_dir), "--workers", "2"], tmp_path,
                              **{KILL: "enumerate"})
    assert rc == 2
    line = _one_line_error(err, "enumeration: a worker died (killed? out of memory?) while enumerating bulk ",
                           "rerun to continue")
    assert any(b in line for b in ("Cu", "Pt", "Pd"))
    assert not (out_dir / "candidates.parquet").exists() and not (out_dir / "manifest.json").exists()
    rc, out, err, _ = _run(["enumerate", str(path), "-o", str(out_dir), "--workers", "2"], tmp_path)
    assert rc == 0, err[-3000:]
    assert _enumerated(out_dir) == sids


def test_enumeration_survives_sigkill_of_a_worker(catalog, tmp_path):
    # a real kill -9 from outside, at whatever point the first workers are: retried or clean failure
    path, sids = catalog
    out_dir = tmp_path / "enum"
    t0 = time.monotonic()
    proc = _start(["enumerate", str(path), "-o", str(out_dir), "--workers", "2"], tmp_path)
    killed = _kill_a_worker(proc, n=2, settle=0.2)
    rc, out, err, wall = _finish(proc, t0)
    assert killed is not None, "the command ended before a worker could be killed"
    if rc != 0:
        assert rc == 2
        _one_line_error(err, "enumeration: a worker died")
        rc, out, err, _ = _run(["enumerate", str(path), "-o", str(out_dir), "--workers", "2"], tmp_path)
        assert rc == 0, err[-3000:]
    assert _enumerated(out_dir) == sids


# ---------------------------------------------------------------------------------------------
# labelling


@pytest.fixture
def structures(tmp_path):
    """48 adsorbate+Cu(111) structures (4 species x 4 sites x 3 heights) with sids ``t-...``."""
    from tests.test_label import on_cu111, write_inputs

    systems = [on_cu111(sp, site, height=h, sid=f"t-{sp}-{site}-{h}")
               for sp in ("O", "H", "N", "C") for site in ("fcc", "hcp", "ontop", "bridge") for h in (1.2, 1.6, 2.0)]
    return write_inputs(tmp_path / "in.extxyz", systems), [s.info["sid"] for s in systems]


def _labelled(out: Path, sids: list[str]) -> pd.DataFrame:
    """The labels in ``out``: every sid once, in input order, and once in the committed chunks."""
    df = pd.read_parquet(out)
    assert list(df["sid"]) == sids
    chunks = pd.concat([pd.read_parquet(p, columns=["sid"]) for p in parts_dir(out).glob("chunk-*.parquet")])
    assert chunks["sid"].is_unique and set(chunks["sid"]) == set(sids)
    return df


def test_label_retries_a_killed_worker(structures, tmp_path):
    inputs, sids = structures
    out = tmp_path / "labels.parquet"
    rc, _, err, wall = _run(["label", str(inputs), "-o", str(out), "--calculator", "emt", "--workers", "2"],
                            tmp_path, **{KILL: f"_relax_systems:{tmp_path / 'killed'}"})
    assert (tmp_path / "killed").exists()
    assert rc == 0, err[-3000:]
    assert "a worker died (killed? out of memory?) while relaxing sid t-" in err
    _labelled(out, sids)
    assert wall < LIMIT_S


def test_label_fails_in_one_line_naming_the_lost_sids_and_a_rerun_completes(structures, tmp_path):
    # the worker that takes system task 5 (sids 15-17: t-H-hcp-*) dies, in the retry too
    inputs, sids = structures
    out = tmp_path / "labels.parquet"
    args = ["label", str(inputs), "-o", str(out), "--calculator", "emt", "--workers", "2"]
    rc, _, err, wall = _run(args, tmp_path, **{KILL: "_relax_systems@5"})
    assert rc == 2
    line = _one_line_error(err, "label: a worker died (killed? out of memory?) while relaxing sid "
                           "t-H-hcp-1.2, t-H-hcp-1.6, t-H-hcp-2.0 (3 structures); the ", " finished are in ",
                           "rerun to complete")
    finished = int(line.split("; the ")[1].split()[0])
    committed = pd.concat([pd.read_parquet(p) for p in parts_dir(out).glob("chunk-*.parquet")])
    assert 0 < finished == len(committed) < len(sids) and committed["sid"].is_unique
    assert not set(committed["sid"]) & {"t-H-hcp-1.2", "t-H-hcp-1.6", "t-H-hcp-2.0"}
    rc, _, err, _ = _run(args, tmp_path)
    assert rc == 0, err[-3000:]
    df = _labelled(out, sids)
    kept = df.set_index("sid").loc[committed["sid"], "e_ads"].to_numpy()
    assert (kept == committed["e_ads"].to_numpy()).all()  # the rerun kept what was finished


def test_label_survives_sigkill_of_a_worker(structures, tmp_path):
    # kill -9 from outside while both workers relax systems (slow EMT: ~10 s of work)
    inputs, sids = structures
    out = tmp_path / "labels.parquet"
    args = ["label", str(inputs), "-o", str(out), "--calculator", "tests.test_worker_death:slow_emt",
            "--workers", "2"]
    t0 = time.monotonic()
    proc = _start(args, tmp_path)
    killed = _kill_a_worker(proc, n=2, settle=1.0)
    rc, _, err, wall = _finish(proc, t0)
    assert killed is not None, "the command ended before a worker could be killed"
    if rc != 0:
        assert rc == 2
        _one_line_error(err, "label: a worker died")
        rc, _, err, _ = _run(args, tmp_path)
        assert rc == 0, err[-3000:]
    _labelled(out, sids)


# ---------------------------------------------------------------------------------------------
# training (parallel pre-training)


def test_parallel_pretrain_fails_in_one_line_naming_the_stage(tmp_path):
    # both pre-training workers die on their stage (no retry: stages resume, so a rerun continues)
    for name in ("train.aselmdb", "val.aselmdb"):
        (tmp_path / name).write_text("")
    script = tmp_path / "train.py"
    script.write_text(
        "import sys\n"
        "from qecat_core.common.errors import QecatError\n"
        "from qecat_core.model.train.recipes import run_recipe\n"
        "if __name__ == '__main__':\n"
        "    try:\n"
        "        run_recipe({'stages': ['graph', 'text'], '_path': 'r.yaml'}, sys.argv[1], sys.argv[2], sys.argv[3])\n"
        "    except QecatError as exc:\n"
        "        print(f'error: {exc}', file=sys.stderr)\n"
        "        sys.exit(2)\n")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "model"), str(tmp_path / "train.aselmdb"),
                             str(tmp_path / "val.aselmdb")], cwd=tmp_path, env=_env(**{KILL: "train"}),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    rc, _, err, wall = _finish(proc, t0)
    assert rc == 2, err[-3000:]
    _one_line_error(err, "train: a worker died (killed? out of memory?) while training stage ", "rerun to continue")
