"""Fixtures for integration tests that need real services.

``slurm_cluster`` (session): the single-node SLURM cluster of ``slurm/cluster.sh``.

* Already up (``SLURM_CONF`` in the environment, or ``slurm/.env`` written by ``cluster.sh start``,
  and ``sinfo`` answers): used as it is, left running.
* Else, with ``QECAT_SLURM=1``: ``bash slurm/cluster.sh start`` (root; installs the Debian packages
  when missing), stopped again at the end of the session unless ``QECAT_SLURM_KEEP=1``.
* Else the test is skipped, saying how to enable it.

The fixture sets the cluster's variables (``SLURM_CONF``) in ``os.environ`` for the session, so
``sbatch``/``sacct`` and submitit (which runs them) reach this cluster, and yields them as a dict.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SH = REPO / "slurm" / "cluster.sh"
LOCAL_CLUSTER_YAML = REPO / "slurm" / "local-cluster.yaml"
START_TIMEOUT_S = 900  # a fresh machine installs slurm-wlm, munge, slurmdbd, mariadb-server first


def _env_file() -> Path:
    return Path(os.environ.get("QECAT_SLURM_ENV_FILE", REPO / "slurm" / ".env"))


def read_env_file(path: Path) -> dict[str, str]:
    """``export KEY=VALUE`` lines of an env file written by ``cluster.sh start``."""
    env: dict[str, str] = {}
    if not path.is_file():
        return env
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export "):]
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        env[key.strip()] = value.strip().strip("'\"")
    return env


def _local_controller_down(conf: Path) -> bool:
    """For a slurm.conf written by cluster.sh: True when its slurmctld is not running (a quick check
    that spares ``sinfo`` its ~10 s of connection retries)."""
    text = conf.read_text()
    if "Written by slurm/cluster.sh" not in text:
        return False
    for line in text.splitlines():
        if line.startswith("SlurmctldPidFile="):
            pidfile = Path(line.split("=", 1)[1].strip())
            try:
                pid = int(pidfile.read_text().strip())
                return not Path(f"/proc/{pid}/comm").read_text().startswith("slurmctld")
            except (OSError, ValueError):
                return True
    return False


def cluster_is_up(env: dict[str, str]) -> bool:
    """True when ``sinfo`` (with ``env``) shows a node ready to run jobs."""
    if not env.get("SLURM_CONF") or not Path(env["SLURM_CONF"]).is_file() or shutil.which("sinfo") is None:
        return False
    if _local_controller_down(Path(env["SLURM_CONF"])):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], env={**os.environ, **env}, capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(s.strip().rstrip("*~#") in ("idle", "mix", "alloc") for s in out.stdout.split())


def _cluster_sh(action: str, timeout: float) -> subprocess.CompletedProcess:
    # stdout/stderr to a file, not a pipe: the daemons started by cluster.sh must not hold our pipe open
    with tempfile.TemporaryFile("w+") as fh:
        proc = subprocess.run(["bash", str(CLUSTER_SH), action], stdout=fh, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, timeout=timeout)
        fh.seek(0)
        proc.stdout = fh.read()
    return proc


@pytest.fixture(scope="session")
def slurm_cluster():
    started = False
    env = {"SLURM_CONF": os.environ["SLURM_CONF"]} if os.environ.get("SLURM_CONF") else {}
    if not cluster_is_up(env):
        env = read_env_file(_env_file())
    if not cluster_is_up(env):
        if os.environ.get("QECAT_SLURM") != "1":
            pytest.skip("needs the single-node SLURM cluster: set QECAT_SLURM=1 to start it "
                        "(bash slurm/cluster.sh start; root + apt), or start it yourself")
        if os.geteuid() != 0:
            pytest.skip("QECAT_SLURM=1 but not root: slurm/cluster.sh start runs the daemons as root")
        try:
            proc = _cluster_sh("start", START_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"slurm/cluster.sh start did not finish in {START_TIMEOUT_S} s")
        if proc.returncode != 0:
            pytest.fail(f"slurm/cluster.sh start failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}")
        started = True
        env = read_env_file(_env_file())
        if not cluster_is_up(env):
            pytest.fail(f"slurm/cluster.sh start succeeded but sinfo shows no usable node ({env})")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield dict(env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if started and os.environ.get("QECAT_SLURM_KEEP") != "1":
            _cluster_sh("stop", 120)
