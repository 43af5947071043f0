"""A local, offline Prefect server + process worker for the deployments of prefect.yaml (``make serve``).

    python -m flows.serve start    # server, work pool, `prefect deploy --all`, worker (again: re-deploys)
    python -m flows.serve stop     # worker, then `prefect server stop`                  (all idempotent)

Prefect's commands do the work: ``prefect server start --background`` (pid in ``$PREFECT_HOME/server.pid``:
two homes never collide) / ``prefect server stop``, ``prefect --no-prompt deploy --all`` from the repository
root (``PWD`` pinned there: prefect.yaml's pull step renders ``{{ $PWD }}``), ``prefect worker start``.
Hand-written, and why: (1) the work pool, created with the Python client from the process worker's bundled
job template, as ``prefect work-pool create`` makes the server fetch worker metadata from GitHub (slow
offline); (2) the worker's process, as Prefect has no background worker: own session, output in
``logs/worker.log``, pid in ``worker.pid``; it stops on SIGINT (ignores SIGTERM), ending its flow runs
but leaving them Running, so ``stop`` marks them Crashed (a rerun redoes only unfinished shards);
(3) waiting, as ``server start --background`` returns at once and ``server stop`` does not wait.

``PREFECT_HOME`` = ``--home`` / ``$QECAT_PREFECT_HOME`` (default ``.prefect/``): ``prefect.db``, pid files,
``logs/`` (worker, deploy; the background server's output is not kept), ``env`` (``source`` it to reach
this server). Port: ``--port`` / ``$QECAT_PREFECT_PORT``, else the one ``env`` records, else 4200.
What runs: Prefect's own ``prefect server status``, ``prefect work-pool inspect qecat-process``,
``prefect deployment schedule ls screen/bimetallics`` and ``prefect flow-run ls`` (after ``source .prefect/env``).
"""

import argparse
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO, POOL, DEPLOYMENT, HOST = Path(__file__).resolve().parent.parent, "qecat-process", "screen/bimetallics", "127.0.0.1"
PREFECT = str(Path(sys.executable).parent / "prefect")
OFFLINE = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_SERVER_UI_ENABLED": "false",
           "PREFECT_CLI_PROMPT": "false"}
_FOREIGN = ("PREFECT_PROFILE", "PREFECT_API_", "PREFECT_SERVER_DATABASE_", "PREFECT_HOME", "PREFECT_CLOUD_")


class ServeError(RuntimeError):
    """A step of start failed; the message says which and where to look."""


@dataclass
class ServeConfig:
    home: Path = field(default_factory=lambda: Path(os.environ.get("QECAT_PREFECT_HOME", REPO / ".prefect")))
    port: int | None = None
    repo: Path = REPO
    start_timeout: float = field(default_factory=lambda: float(os.environ.get("QECAT_PREFECT_START_TIMEOUT", 300)))
    extra_env: dict[str, str] = field(default_factory=dict)  # added to server, deploy and worker (= flow runs)

    def __post_init__(self) -> None:
        self.home, self.repo = Path(self.home).resolve(), Path(self.repo).resolve()
        m = re.search(r"PREFECT_API_URL=http://[\d.]+:(\d+)/api", _read(self.home / "env"))
        self.recorded_port = int(m[1]) if m else None
        self.port = int(self.port or os.environ.get("QECAT_PREFECT_PORT") or self.recorded_port or 4200)
        self.api_url = f"http://{HOST}:{self.port}/api"

    def log(self, what: str) -> Path:
        return self.home / "logs" / f"{what}.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN)}  # no other server, profile, DB
        env = {"PREFECT_WORKER_QUERY_SECONDS": "5", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", **env}
        return {**env, **OFFLINE, "PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api_url,
                "PWD": str(self.repo), "HF_HUB_OFFLINE": "1", **self.extra_env}


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.is_file() else ""


def _prefect(cfg: ServeConfig, *args: str, log: str | None = None, capture: bool = True) -> None:
    """``prefect ARGS`` in the repository root; a ServeError with its output when it fails."""
    out = subprocess.run([PREFECT, *args], cwd=cfg.repo, env=cfg.env(), stdin=subprocess.DEVNULL, text=True,
                         capture_output=capture, start_new_session=True)  # the background server: no SIGHUP
    if log:
        cfg.log(log).write_text(f"{shlex.join([PREFECT, *args])}\n{out.stdout}{out.stderr}")
    if out.returncode:
        raise ServeError(f"`prefect {shlex.join(args)}` failed ({out.returncode}):\n{out.stdout or ''}{out.stderr or ''}")


def healthy(cfg: ServeConfig) -> bool:
    try:
        return urllib.request.urlopen(f"{cfg.api_url}/health", timeout=5).status == 200
    except OSError:
        return False


def running_pid(cfg: ServeConfig, what: str) -> int | None:
    """The pid in ``server.pid``/``worker.pid`` if that process runs and is Prefect (pids get reused)."""
    try:
        pid = int(_read(cfg.home / f"{what}.pid"))
        stat, cmdline = Path(f"/proc/{pid}/stat").read_text(), Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if ") Z" not in stat and b"prefect" in cmdline else None


def _wait(cfg: ServeConfig, what: str, ready, see) -> int:
    """Until ``ready()``; a ServeError when our ``what`` exits first or after ``cfg.start_timeout``."""
    t0 = time.monotonic()
    while (pid := running_pid(cfg, what)) and not ready() and time.monotonic() - t0 < cfg.start_timeout:
        time.sleep(0.5)
    if not pid or not ready():
        raise ServeError(f"the {what} {'is not ready in time' if pid else 'exited'}; {see()}")
    return pid


def start_server(cfg: ServeConfig) -> int:
    (cfg.home / "logs").mkdir(parents=True, exist_ok=True)
    if running_pid(cfg, "server") and cfg.recorded_port not in (None, cfg.port):
        raise ServeError(f"the server of {cfg.home} runs on port {cfg.recorded_port}: stop it or use that port")
    if not running_pid(cfg, "server"):
        (cfg.home / "server.pid").unlink(missing_ok=True)  # stale (a crash, a reboot): `start` would refuse
        _prefect(cfg, "server", "start", "--background", "--host", HOST, "--port", str(cfg.port))
    (cfg.home / "env").write_text(f'export PATH={shlex.quote(str(Path(PREFECT).parent))}:"$PATH"\n' + "".join(
        f"export {k}={shlex.quote(v)}\n" for k, v in {**OFFLINE, "PREFECT_HOME": str(cfg.home),
                                                     "PREFECT_API_URL": cfg.api_url}.items()))
    pid = _wait(cfg, "server", lambda: healthy(cfg), lambda: f"`PREFECT_HOME={cfg.home} prefect server start` says why")
    print(f"serve: server (pid {pid}) healthy at {cfg.api_url}, database {cfg.home / 'prefect.db'}")
    return pid


def ensure_work_pool(cfg: ServeConfig) -> bool:
    """The process work pool unless it exists (not by the CLI: see the module docstring); True if created."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

    try:
        with SyncPrefectClient(api=cfg.api_url) as c:
            c.create_work_pool(WorkPoolCreate(name=POOL, type="process",
                                              base_job_template=ProcessWorker.get_default_base_job_template()))
    except ObjectAlreadyExists:
        return False
    print(f"serve: work pool {POOL!r} created")
    return True


def start_worker(cfg: ServeConfig) -> int:
    log = cfg.log("worker")
    if not running_pid(cfg, "worker"):
        with open(log, "ab") as fh:
            offset, cmd = fh.tell(), [PREFECT, "worker", "start", "--pool", POOL, "--name", f"qecat-{cfg.port}"]
            pid = subprocess.Popen(cmd, cwd=cfg.repo, env=cfg.env(), stdin=subprocess.DEVNULL, stdout=fh,
                                   stderr=subprocess.STDOUT, start_new_session=True,  # no SIGHUP, no Ctrl-C; and
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)).pid  # `make serve &`
        (cfg.home / "worker.pid").write_text(f"{pid}\n")
        _wait(cfg, "worker", lambda: b"started!" in log.read_bytes()[offset:], lambda: _read(log)[offset:][-3000:])
    print(f"serve: worker (pid {running_pid(cfg, 'worker')}) polls work pool {POOL!r}, log {log}")
    return running_pid(cfg, "worker")


def start(cfg: ServeConfig, quiet: bool = False) -> None:
    start_server(cfg), ensure_work_pool(cfg), _prefect(cfg, "--no-prompt", "deploy", "--all", log="deploy")
    print(f"serve: deployed prefect.yaml, log {cfg.log('deploy')}")
    start_worker(cfg)
    home = cfg.home.relative_to(cfg.repo) if cfg.home.is_relative_to(cfg.repo) else cfg.home
    opt = "" if cfg.home == ServeConfig().home else f" --home {home}"
    if not quiet:
        print(f"\nready; from the repository root:\n  source {home}/env\n  prefect deployment run {DEPLOYMENT} "
              f"--watch\n  prefect flow-run ls\n  python -m flows.serve stop{opt}")


def stop(cfg: ServeConfig) -> None:
    """The worker (SIGINT), then the server (``prefect server stop``: SIGTERM), each waited for (SIGKILL after 60 s)."""
    for what in ("worker", "server"):
        if not (pid := running_pid(cfg, what)):
            print(f"serve: no {what} running")
            continue
        os.kill(pid, signal.SIGINT) if what == "worker" else _prefect(cfg, "server", "stop")
        t0 = time.monotonic()
        while running_pid(cfg, what) == pid and time.monotonic() - t0 < 60:
            time.sleep(0.2)
        if running_pid(cfg, what) == pid:
            os.kill(pid, signal.SIGKILL)
        (cfg.home / f"{what}.pid").unlink(missing_ok=True)
        print(f"serve: {what} (pid {pid}) stopped")
        if what == "worker" and healthy(cfg):
            _mark_crashed(cfg)


def _mark_crashed(cfg: ServeConfig) -> None:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas import filters as f
    from prefect.states import Crashed

    unfinished = f.FlowRunFilter(state=f.FlowRunFilterState(type=f.FlowRunFilterStateType(
        any_=["PENDING", "RUNNING", "CANCELLING"])))
    with SyncPrefectClient(api=cfg.api_url) as c:
        runs = c.read_flow_runs(flow_run_filter=unfinished, work_pool_filter=f.WorkPoolFilter(
            name=f.WorkPoolFilterName(any_=[POOL])))
        for r in runs:
            c.set_flow_run_state(r.id, Crashed(message="its worker was stopped (flows.serve stop)"), force=True)
            print(f"serve: flow run {r.name} interrupted: marked Crashed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["start", "stop"])
    ap.add_argument("--home", type=Path, help="PREFECT_HOME (default .prefect/ in the repository)")
    ap.add_argument("--port", type=int, help="server port (default 4200)")
    args = ap.parse_args(argv)
    cfg = ServeConfig(port=args.port, **({"home": args.home} if args.home else {}))
    try:
        return {"start": start, "stop": stop}[args.command](cfg) or 0
    except ServeError as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
