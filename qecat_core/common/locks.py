"""Advisory file locks (``fcntl.flock``) that say who holds them.

The OS releases a lock when its holder dies (a killed job, a lost node), so a lock never outlives
the process that took it; the file's content only tells a person who holds it now.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: str | Path, blocking: bool = True, note: str | None = None) -> Iterator[bool]:
    """An exclusive ``fcntl.flock`` on ``path`` (created if missing); yields whether it was acquired.

    With ``blocking=False`` it yields False at once when another process holds it. While held the
    file says who holds it (pid, host, SLURM/submitit job id, time, ``note``); the OS releases the lock
    when the holder dies.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            fh.seek(0)
            fh.truncate()
            job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")
            fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "job": job,
                                 "since": time.time(), "note": note}))
            fh.flush()
            yield True
        finally:
            fh.seek(0)
            fh.truncate()
            fh.flush()
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()
