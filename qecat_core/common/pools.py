"""Process pools that notice a dead worker and retry its task once.

A ``multiprocessing.Pool`` whose worker is SIGKILLed (the OOM killer, a lost node) starts a new
worker and forgets the task the dead one held: the parent waits for it forever. A
``concurrent.futures.ProcessPoolExecutor`` instead fails every unfinished future with
``BrokenProcessPool`` within moments. :class:`Pool` maps a function over a list of tasks in such
an executor; when it breaks, the tasks it left unfinished go to a new executor, once per
:meth:`Pool.map_unordered` call; if that one breaks too, :class:`WorkerDied` (a
:class:`~qecat_core.common.errors.QecatError`) names the tasks the dead worker was running.

Each worker notes the task it is running in a file named by its pid in a private folder, so that
the lost task can be named: the dead worker is the one that did not exit cleanly or by the
executor's own SIGTERM.

Test hook (fault tests only), ``QECAT_TEST_KILL_WORKER=TARGET[@K][:FILE]``: a worker SIGKILLs
itself at the start of its first task of ``TARGET`` (a pool name: ``templates``, ``enumerate``,
``label``, ``train``; or a task function's name, e.g. ``_relax_systems``; ``1`` or ``any``: every
task), or with ``@K`` at the start of task number ``K`` (0-based) of the call. Without ``FILE`` every
worker does so, the retry's too (so the run fails with :class:`WorkerDied`); with ``FILE`` only the
one worker that first creates ``FILE`` (so the retry succeeds).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from qecat_core.common.errors import QecatError

log = logging.getLogger(__name__)

KILL_ENV = "QECAT_TEST_KILL_WORKER"


class WorkerDied(QecatError):
    """A pool broke (a worker died) again after its unfinished tasks were retried in a new pool.

    ``lost``: indices of the tasks the dead worker was running (all unfinished ones when that is
    not known); ``unfinished``: indices of every task left undone.
    """

    def __init__(self, message: str, lost: list[int], unfinished: list[int]):
        super().__init__(message)
        self.lost = lost
        self.unfinished = unfinished


def some(names: Sequence[str], limit: int = 4) -> str:
    """``a, b, c`` or ``a, b, c, d and 5 more``."""
    names = list(names)
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"


# ---------------------------------------------------------------------------------------------
# in the workers

_STATE: dict[str, Any] = {}


def _init(name: str, track: str, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    _STATE.update(name=name, track=track, hooked=False, error=None)
    if initializer is not None:
        try:
            initializer(*initargs)
        except Exception as exc:  # raised by the tasks instead: a failed start is no dead worker
            _STATE["error"] = exc


def _kill_hook(name: str, fn_name: str, index: int) -> None:
    target, _, once = os.environ.get(KILL_ENV, "").partition(":")
    target, _, at = target.partition("@")
    if not target or target not in (name, fn_name, "1", "any"):
        return
    if at:
        if index != int(at):
            return
    elif _STATE["hooked"]:
        return
    _STATE["hooked"] = True
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)


def _call(fn: Callable[[Any], Any], index: int, task: Any) -> Any:
    if _STATE.get("error") is not None:
        raise _STATE["error"]
    mark = os.path.join(_STATE["track"], str(os.getpid()))
    with open(mark, "w") as fh:
        fh.write(str(index))
    try:
        if KILL_ENV in os.environ:
            _kill_hook(_STATE["name"], getattr(fn, "__name__", ""), index)
        return fn(task)
    finally:
        os.unlink(mark)


# ---------------------------------------------------------------------------------------------
# in the parent


class Pool:
    """A ``ProcessPoolExecutor`` of ``workers`` processes (start method ``context``) that is
    replaced when a worker dies; ``env`` is set while workers start (e.g. one BLAS thread).

    Use as a context manager. Leaving it by an exception (Ctrl-C included) stops the workers at
    once, or with ``stop_on_error=False`` waits for the tasks they are running.
    """

    def __init__(self, name: str, workers: int, context: Any, initializer: Callable[..., None] | None = None,
                 initargs: tuple = (), env: Mapping[str, str] | None = None, stop_on_error: bool = True):
        self.name = name
        self.workers = workers
        self.context = context
        self.initializer = initializer
        self.initargs = initargs
        self.env = dict(env or {})
        self.stop_on_error = stop_on_error
        self._ex: ProcessPoolExecutor | None = None
        self._procs: dict[int, Any] = {}
        self._track = ""

    def __enter__(self) -> Pool:
        self._track = tempfile.mkdtemp(prefix=f"qecat-{self.name}-")
        self._new()
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            self._close(stop=exc_type is not None and self.stop_on_error)
        finally:
            shutil.rmtree(self._track, ignore_errors=True)

    def _new(self) -> None:
        for f in os.listdir(self._track):  # marks of an executor that broke
            os.unlink(os.path.join(self._track, f))
        self._ex = ProcessPoolExecutor(self.workers, mp_context=self.context, initializer=_init,
                                       initargs=(self.name, self._track, self.initializer, self.initargs))
        self._procs = getattr(self._ex, "_processes", None)
        if not isinstance(self._procs, dict):  # not CPython's executor: lost tasks named less exactly
            self._procs = {}

    def _close(self, stop: bool) -> None:
        if self._ex is None:
            return
        if stop:  # don't wait for running tasks: stop the workers (the executor then sees them gone)
            for p in list(self._procs.values()):
                if p.exitcode is None:
                    p.terminate()
        self._ex.shutdown(wait=True, cancel_futures=stop)
        self._ex = None

    def _submit(self, fn: Callable[[Any], Any], index: int, task: Any) -> Any:
        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # workers start on submit (forkserver, spawn) or the first one (fork)
        try:
            return self._ex.submit(_call, fn, index, task)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def _lost(self, unfinished: set[int]) -> list[int]:
        """The unfinished tasks that were running in a worker that died (after shutdown)."""
        dead = {pid for pid, p in list(self._procs.items()) if p.exitcode not in (None, 0, -signal.SIGTERM)}
        running: dict[int, int] = {}
        for f in os.listdir(self._track):
            try:
                with open(os.path.join(self._track, f)) as fh:
                    running[int(f)] = int(fh.read())
            except (OSError, ValueError):
                continue
        lost = sorted({k for pid, k in running.items() if pid in dead} & unfinished)
        return lost or sorted(set(running.values()) & unfinished) or sorted(unfinished)

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Sequence[Any],
                      describe: Callable[[list[int]], str] | None = None,
                      retries: int = 1) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, fn(tasks[index]))`` as tasks finish (``fn``: a module-level function).

        A task's exception is raised as it comes. When a worker dies the unfinished tasks run again
        in a new executor (``retries`` times); when one dies after that, :class:`WorkerDied` is
        raised with the message ``a worker died (killed? out of memory?) while <describe(lost)>``.
        """
        describe = describe or (lambda ks: f"running task {some([str(k) for k in ks])}")
        todo = set(range(len(tasks)))
        for attempt in range(retries + 1):
            if self._ex is None:
                self._new()
            pending: dict[Any, int] = {}
            broken = False
            try:
                for k in sorted(todo):
                    pending[self._submit(fn, k, tasks[k])] = k
            except BrokenProcessPool:  # a worker died before this call (e.g. while idle)
                broken = True
            for f in as_completed(pending):  # a broken executor fails every unfinished future at once
                k = pending[f]
                exc = f.exception()
                if isinstance(exc, BrokenProcessPool):
                    broken = True
                elif exc is not None:
                    raise exc
                else:
                    todo.discard(k)
                    yield k, f.result()
            if not broken:
                return
            self._close(stop=False)  # the executor stopped its other workers itself
            lost = self._lost(todo)
            what = f"a worker died (killed? out of memory?) while {describe(lost)}"
            if attempt == retries:
                raise WorkerDied(what, lost, sorted(todo))
            log.warning("%s: %s; running its %d unfinished tasks again in a new pool", self.name, what, len(todo))
        raise AssertionError("unreachable")
