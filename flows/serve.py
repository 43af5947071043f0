"""A local, offline Prefect server + process worker that runs the ``screen/bimetallics`` deployment.

    python -m flows.serve start     # server, work pool, `prefect deploy --all`, worker (idempotent)
    python -m flows.serve status    # what runs, the deployment's schedule, the last flow runs
    python -m flows.serve deploy    # again `prefect deploy --all` (after editing prefect.yaml)
    python -m flows.serve stop      # worker (SIGINT), then server (SIGTERM) (idempotent)

Everything lives under ``PREFECT_HOME`` (default ``.prefect/`` in the repository, gitignored):
the SQLite database ``prefect.db``, ``logs/server.log``, ``logs/worker.log`` (the worker's output,
with the output of every flow run it starts), ``logs/deploy.log``, pid files in ``run/`` and
``env`` (the variables a shell needs to talk to this server: ``source .prefect/env``).

Offline by construction: analytics off, ``DO_NOT_TRACK=1``, UI off, no prompts; the work pool is
created with the Python client from the process worker's bundled job template (``prefect
work-pool create`` would make the server look up worker metadata on GitHub). The server listens
on 127.0.0.1 only. Options: ``--home DIR`` / ``$QECAT_PREFECT_HOME`` and ``--port N`` /
``$QECAT_PREFECT_PORT`` (default 4200); ``status``, ``deploy`` and ``stop`` reuse the port that
``start`` recorded.

The functions (:func:`start`, :func:`stop`, ...) take a :class:`ServeConfig`; the integration tests
run a private server on a free port through them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
POOL = "qecat-process"
DEPLOYMENT = "screen/bimetallics"
DEFAULT_PORT = 4200
HOST = "127.0.0.1"


class ServeError(RuntimeError):
    """A step of start/stop failed; the message says which and where its log is."""


_FOREIGN_PREFECT = ("PREFECT_PROFILE", "PREFECT_API_", "PREFECT_SERVER_DATABASE_", "PREFECT_API_DATABASE_",
                    "PREFECT_HOME", "PREFECT_CLOUD_")


@dataclass
class ServeConfig:
    home: Path = field(default_factory=lambda: Path(os.environ.get("QECAT_PREFECT_HOME", REPO / ".prefect")))
    port: int | None = None  # None: $QECAT_PREFECT_PORT, the port `start` recorded, else 4200
    host: str = HOST
    pool: str = POOL
    repo: Path = REPO
    worker_query_seconds: float = 5.0  # how often the worker asks for runs (PREFECT_WORKER_QUERY_SECONDS)
    # seconds to wait for the server / worker to come up (~10 s / ~5 s on an idle 2-core machine)
    start_timeout: float = field(default_factory=lambda: float(os.environ.get("QECAT_PREFECT_START_TIMEOUT", 300)))
    extra_env: dict[str, str] = field(default_factory=dict)  # added to server, worker and deploy

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.repo = Path(self.repo).resolve()
        if self.port is None:
            recorded = _read_json(self.state_file).get("port")
            self.port = int(os.environ.get("QECAT_PREFECT_PORT") or recorded or DEFAULT_PORT)

    # -- paths ----------------------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}/api"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def state_file(self) -> Path:
        return self.home / "run" / "serve.json"

    def pid_file(self, what: str) -> Path:
        return self.run_dir / f"{what}.pid"

    def log(self, what: str) -> Path:
        return self.log_dir / f"{what}.log"

    # -- environment ----------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        """The environment of the server, the worker (hence of every flow run) and `prefect deploy`."""
        # whatever points elsewhere (a cloud profile, another server or database) must not leak in
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFECT)}
        env.update({
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api_url,
            "PREFECT_SERVER_API_HOST": self.host,
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_UI_ENABLED": "false",
            "PREFECT_CLI_PROMPT": "false",
            "PREFECT_WORKER_QUERY_SECONDS": env.get("PREFECT_WORKER_QUERY_SECONDS", str(self.worker_query_seconds)),
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
            "OPENBLAS_NUM_THREADS": env.get("OPENBLAS_NUM_THREADS", "1"),
            # prefect.yaml's pull step is `set_working_directory: {{ $PWD }}`, rendered by `prefect
            # deploy` from this variable (not from the process's cwd): pin it to the repository.
            "PWD": str(self.repo),
        })
        env.update(self.extra_env)
        return env


# ---------------------------------------------------------------------------------------------
# small helpers

def _say(msg: str) -> None:
    print(f"serve: {msg}", flush=True)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _prefect_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "prefect"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "prefect"]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int | None) -> bool:
    """A live process that is ours: pid files can outlive a reboot, so the command line must name prefect."""
    if not pid or not _exists(pid):
        return False
    try:
        return b"prefect" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the signal


def running_pid(cfg: ServeConfig, what: str) -> int | None:
    """The pid of our ``server`` or ``worker`` if it is running; a stale pid file is removed."""
    pid = _read_pid(cfg.pid_file(what))
    if _alive(pid):
        return pid
    cfg.pid_file(what).unlink(missing_ok=True)
    return None


def healthy(cfg: ServeConfig, timeout: float = 10.0) -> bool:
    try:
        with urllib.request.urlopen(f"{cfg.api_url}/health", timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _default_signals() -> None:
    # Started from a background job of a non-interactive shell (`make serve &`, CI), we inherit
    # SIGINT ignored; Prefect's worker stops on SIGINT (and turns SIGTERM into SIGINT), so undo it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


_CHILDREN: dict[int, subprocess.Popen] = {}  # started by this process: reaped once they end


def _spawn(cfg: ServeConfig, what: str, args: list[str]) -> int:
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.log(what), "ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(args)}\n".encode())
        log.flush()
        proc = subprocess.Popen(args, cwd=cfg.repo, env=cfg.env(), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_default_signals)
    _CHILDREN[proc.pid] = proc
    cfg.pid_file(what).write_text(f"{proc.pid}\n")
    return proc.pid


def _group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid`` (the session each of our children leads)."""
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d.name))
    return out


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if _exists(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.2)


def _exists(pid: int) -> bool:
    if pid in _CHILDREN and _CHILDREN[pid].poll() is not None:
        del _CHILDREN[pid]
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        return ") Z" not in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust the signal


def _signal_and_wait(cfg: ServeConfig, what: str, sig: int, timeout: float) -> bool:
    """Send ``sig`` to our ``what`` and wait for it to end; escalate to SIGKILL after ``timeout``.

    What it leaves in its process group (flow runs of a worker that had to be killed) gets
    SIGTERM, then SIGKILL.
    """
    pid = running_pid(cfg, what)
    if pid is None:
        return False
    os.kill(pid, sig)
    if _wait_gone([pid], timeout):
        _say(f"{what} (pid {pid}) still running after {timeout:.0f} s: SIGKILL")
        os.kill(pid, signal.SIGKILL)
        _wait_gone([pid], 10)
    left = _group_members(pid)  # our child led its own session: pgid == pid
    if left:
        _say(f"{what} left {len(left)} process(es) behind ({', '.join(map(str, left))}): SIGTERM")
        for p in left:
            try:
                os.kill(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in _wait_gone(left, 15):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
    cfg.pid_file(what).unlink(missing_ok=True)
    return True


def _client(cfg: ServeConfig):
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api=cfg.api_url)


# ---------------------------------------------------------------------------------------------
# the steps

def start_server(cfg: ServeConfig, timeout: float | None = None) -> int:
    """Start ``prefect server start`` in the background (or find ours running); wait until healthy."""
    timeout = cfg.start_timeout if timeout is None else timeout
    pid = running_pid(cfg, "server")
    recorded = _read_json(cfg.state_file).get("port")
    if pid and recorded and int(recorded) != cfg.port:
        raise ServeError(f"the server of {cfg.home} (pid {pid}) runs on port {recorded}, not {cfg.port}; "
                         f"stop it first (python -m flows.serve stop) or use that port")
    if pid and healthy(cfg):
        _say(f"server already running (pid {pid}) at {cfg.api_url}")
        return pid
    if pid is None:
        if not port_free(cfg.host, cfg.port):
            raise ServeError(f"port {cfg.port} on {cfg.host} is in use by another program; "
                             f"choose another: QECAT_PREFECT_PORT=N make serve, or --port N")
        cfg.home.mkdir(parents=True, exist_ok=True)
        pid = _spawn(cfg, "server", _prefect_cmd() + ["server", "start", "--host", cfg.host, "--port", str(cfg.port)])
        cfg.state_file.write_text(json.dumps({"host": cfg.host, "port": cfg.port, "api_url": cfg.api_url,
                                              "home": str(cfg.home)}) + "\n")
        _say(f"server starting (pid {pid}), database {cfg.home / 'prefect.db'}, log {cfg.log('server')}")
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if healthy(cfg):
            _say(f"server healthy at {cfg.api_url} after {time.monotonic() - t0:.1f} s")
            write_env_file(cfg)
            return pid
        if not _alive(pid):
            cfg.pid_file("server").unlink(missing_ok=True)
            raise ServeError(f"the server exited during start-up; the end of {cfg.log('server')}:\n"
                             f"{_tail(cfg.log('server'))}")
        time.sleep(0.5)
    raise ServeError(f"the server (pid {pid}) is not healthy after {timeout:.0f} s; see {cfg.log('server')}")


def write_env_file(cfg: ServeConfig) -> Path:
    """``PREFECT_HOME/env``: ``source`` it so that ``prefect ...`` in a shell talks to this server."""
    path = cfg.home / "env"
    venv_bin = shlex.quote(str(Path(sys.executable).parent))
    path.write_text(f'export PATH={venv_bin}:"$PATH"\n' + "".join(f"export {k}={shlex.quote(v)}\n" for k, v in {
        "PREFECT_HOME": str(cfg.home), "PREFECT_API_URL": cfg.api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1", "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_CLI_PROMPT": "false"}.items()))
    return path


def ensure_work_pool(cfg: ServeConfig) -> bool:
    """Create the process work pool with the Python client unless it exists; True if created."""
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with _client(cfg) as client:
        try:
            pool = client.read_work_pool(cfg.pool)
            if pool.type != "process":
                raise ServeError(f"work pool {cfg.pool!r} exists with type {pool.type!r}, not 'process'")
            _say(f"work pool {cfg.pool!r} exists")
            return False
        except ObjectNotFound:
            pass
        try:
            client.create_work_pool(WorkPoolCreate(
                name=cfg.pool, type="process", description="qecat: flow runs as local processes",
                base_job_template=ProcessWorker.get_default_base_job_template()))
        except ObjectAlreadyExists:
            return False
    _say(f"work pool {cfg.pool!r} created (type process)")
    return True


def deploy(cfg: ServeConfig, timeout: float | None = None) -> None:
    """``prefect --no-prompt deploy --all`` from the repository root (prefect.yaml's deployments)."""
    timeout = max(300.0, cfg.start_timeout) if timeout is None else timeout
    if not healthy(cfg):
        raise ServeError(f"no Prefect server at {cfg.api_url}; run `python -m flows.serve start` first")
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    args = _prefect_cmd() + ["--no-prompt", "deploy", "--all"]
    with open(cfg.log("deploy"), "ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(args)}\n".encode())
        log.flush()
        try:
            rc = subprocess.run(args, cwd=cfg.repo, env=cfg.env(), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            raise ServeError(f"`prefect deploy --all` took over {timeout:.0f} s; see {cfg.log('deploy')}") from None
    if rc != 0:
        raise ServeError(f"`prefect deploy --all` failed (exit {rc}); the end of {cfg.log('deploy')}:\n"
                         f"{_tail(cfg.log('deploy'))}")
    _say(f"deployed prefect.yaml ({DEPLOYMENT}) in {time.monotonic() - t0:.1f} s")


def _worker_online(cfg: ServeConfig, name: str, since: float) -> bool:
    """Our worker has sent a heartbeat after ``since`` (epoch s): a stale record of a previous one won't do."""
    from prefect.client.schemas.objects import WorkerStatus

    try:
        with _client(cfg) as client:
            workers = client.read_workers_for_work_pool(cfg.pool)
    except Exception:
        return False
    return any(w.name == name and w.status == WorkerStatus.ONLINE and w.last_heartbeat_time is not None
               and w.last_heartbeat_time.timestamp() >= since - 1 for w in workers)


def worker_name(cfg: ServeConfig) -> str:
    return f"qecat-{socket.gethostname()}-{cfg.port}"


def start_worker(cfg: ServeConfig, timeout: float | None = None) -> int:
    """A process worker on the pool, in the background; wait until it has registered with the server."""
    timeout = cfg.start_timeout if timeout is None else timeout
    pid = running_pid(cfg, "worker")
    if pid:
        _say(f"worker already running (pid {pid}), log {cfg.log('worker')}")
        return pid
    name = worker_name(cfg)
    spawned = time.time()
    pid = _spawn(cfg, "worker", _prefect_cmd() + ["worker", "start", "--pool", cfg.pool, "--type", "process",
                                                  "--name", name])
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not _alive(pid):
            cfg.pid_file("worker").unlink(missing_ok=True)
            raise ServeError(f"the worker exited during start-up; the end of {cfg.log('worker')}:\n"
                             f"{_tail(cfg.log('worker'))}")
        if _worker_online(cfg, name, spawned):
            _say(f"worker {name!r} online (pid {pid}) after {time.monotonic() - t0:.1f} s, log {cfg.log('worker')}")
            return pid
        time.sleep(0.5)
    raise ServeError(f"the worker (pid {pid}) did not register within {timeout:.0f} s; see {cfg.log('worker')}")


def start(cfg: ServeConfig, quiet: bool = False) -> float:
    """Server, work pool, deployments, worker; returns the seconds it took."""
    t0 = time.monotonic()
    start_server(cfg)
    ensure_work_pool(cfg)
    deploy(cfg)
    start_worker(cfg)
    took = time.monotonic() - t0
    if not quiet:
        print_next_steps(cfg, took)
    return took


def stop(cfg: ServeConfig) -> None:
    """Worker first (SIGINT: it stops polling for runs, ends the flow runs it started and exits), then
    the server (SIGTERM). Flow runs the worker ended are marked Crashed (a rerun redoes only the
    shards they had not finished)."""
    if _signal_and_wait(cfg, "worker", signal.SIGINT, timeout=60):
        _say("worker stopped")
        if healthy(cfg):
            mark_interrupted_runs(cfg)
    else:
        _say("no worker running")
    if _signal_and_wait(cfg, "server", signal.SIGTERM, timeout=60):
        _say("server stopped")
    else:
        _say("no server running")


def _gone(infrastructure_pid: str | None) -> bool:
    """A process worker records the flow run's ``PID`` (or ``HOST:PID``): True unless it still runs here."""
    if not infrastructure_pid:
        return True  # never started
    host, _, pid = str(infrastructure_pid).rpartition(":")
    if host not in ("", socket.gethostname()):
        return False  # another machine's worker: not ours to judge
    return not (pid.isdigit() and _exists(int(pid)))


def mark_interrupted_runs(cfg: ServeConfig) -> list[str]:
    """Flow runs of our pool still Pending/Running/Cancelling whose process is gone -> Crashed."""
    from prefect.client.schemas.filters import (FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType,
                                                WorkPoolFilter, WorkPoolFilterName)
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    try:
        with _client(cfg) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                    any_=[StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]))),
                work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[cfg.pool])))
            runs = [r for r in runs if _gone(r.infrastructure_pid)]
            for r in runs:
                client.set_flow_run_state(r.id, Crashed(message="its worker was stopped (flows.serve stop)"),
                                          force=True)
    except Exception as exc:  # noqa: BLE001 - stopping must go on
        _say(f"could not check for interrupted flow runs: {exc.__class__.__name__}: {exc}")
        return []
    if runs:
        _say(f"{len(runs)} flow run(s) interrupted, marked Crashed: {', '.join(r.name for r in runs)}")
    return [r.name for r in runs]


def status(cfg: ServeConfig) -> int:
    """Print what runs; exit status 0 when server and worker both run."""
    server_pid, worker_pid = running_pid(cfg, "server"), running_pid(cfg, "worker")
    ok = healthy(cfg)
    _say(f"server: {'healthy' if ok else 'not reachable'} at {cfg.api_url}"
         + (f" (pid {server_pid})" if server_pid else " (not started by flows.serve)"))
    _say(f"worker: {'running (pid %d)' % worker_pid if worker_pid else 'not running'}; logs in {cfg.log_dir}")
    if ok:
        try:
            describe_deployment(cfg)
        except Exception as exc:  # noqa: BLE001 - status must not crash
            _say(f"deployment {DEPLOYMENT}: {exc.__class__.__name__}: {exc}")
    return 0 if ok and worker_pid else 1


def describe_deployment(cfg: ServeConfig, last: int = 5) -> None:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.exceptions import ObjectNotFound

    with _client(cfg) as client:
        try:
            dep = client.read_deployment_by_name(DEPLOYMENT)
        except ObjectNotFound:
            _say(f"deployment {DEPLOYMENT}: not deployed (python -m flows.serve deploy)")
            return
        scheds = [f"{getattr(s.schedule, 'cron', s.schedule)} {getattr(s.schedule, 'timezone', '')} "
                  f"({'active' if s.active else 'paused'})" for s in dep.schedules] or ["none"]
        _say(f"deployment {DEPLOYMENT}: pool {dep.work_pool_name}, schedule {'; '.join(scheds)}"
             + (", deployment paused" if dep.paused else ""))
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                                     sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=last)
        for r in runs:
            when = r.start_time or r.expected_start_time
            _say(f"  {r.name:<24} {r.state_name or '?':<10} {when:%Y-%m-%d %H:%M %Z}" if when else
                 f"  {r.name:<24} {r.state_name or '?'}")


def _rel(cfg: ServeConfig, path: Path) -> Path:
    return path.relative_to(cfg.repo) if path.is_relative_to(cfg.repo) else path


def print_next_steps(cfg: ServeConfig, took: float | None = None) -> None:
    head = f"ready in {took:.0f} s" if took is not None else "ready"
    default_home = cfg.home == ServeConfig(port=cfg.port).home
    opts = "" if default_home else f" --home {_rel(cfg, cfg.home)}"
    logs = _rel(cfg, cfg.log_dir)
    steps = [
        (f"source {_rel(cfg, cfg.home / 'env')}", "this server's PREFECT_API_URL, PREFECT_HOME; .venv/bin on PATH"),
        (f"prefect deployment run {DEPLOYMENT} --watch", "a screen now, with prefect.yaml's parameters"),
        (f"prefect deployment run {DEPLOYMENT} --param limit=500 --watch", "... a parameter overridden"),
        ("prefect flow-run ls --limit 5", "states; prefect flow-run logs <ID>"),
        (f"python -m flows.serve status{opts}", "schedule, last runs"),
    ]
    width = max(len(c) for c, _ in steps) + 2
    lines = "\n".join(f"  {c.ljust(width)}# {why}" for c, why in steps)
    print(f"""
{head}: Prefect API {cfg.api_url} (offline, no UI), worker on work pool {cfg.pool!r}.
{DEPLOYMENT} runs nightly on the cron schedule in prefect.yaml. Next, from the repository root:

{lines}

Results (Parquet under results/), e.g.:
  qecat query "SELECT * FROM runs ORDER BY run_id DESC LIMIT 5"
  qecat query "SELECT adsorbate, rank, bulk, miller, e_ads_pred FROM ranking WHERE rank <= 3 ORDER BY adsorbate, rank"

Logs: {logs}/server.log, {logs}/worker.log (with every flow run's output).
Stop: {'make serve-stop' if default_home else f'python -m flows.serve stop{opts}'}
""", flush=True)


# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["start", "stop", "status", "deploy"])
    ap.add_argument("--home", type=Path, default=None, help="PREFECT_HOME (default .prefect/ in the repository)")
    ap.add_argument("--port", type=int, default=None, help=f"server port (default {DEFAULT_PORT})")
    args = ap.parse_args(argv)
    cfg = ServeConfig(port=args.port) if args.home is None else ServeConfig(home=args.home, port=args.port)
    # this process's own Prefect client reads the same settings as the children
    for k, v in cfg.env().items():
        if k.startswith("PREFECT_") or k == "DO_NOT_TRACK":
            os.environ[k] = v
    try:
        if args.command == "start":
            start(cfg)
        elif args.command == "stop":
            stop(cfg)
        elif args.command == "deploy":
            deploy(cfg)
        else:
            return status(cfg)
    except ServeError as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
