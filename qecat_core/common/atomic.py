"""Atomic writes: a temporary name in the same folder, then ``os.replace``.

A crash mid-write leaves the old file (or nothing) visible, never a partial one; a failed write
removes its temporary file. Every file qecat writes that another process may read goes through
:func:`atomic_path`.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> write_json_atomic(d / "a.json", {"e_ads": -0.5})
>>> (d / "a.json").read_text()
'{\\n "e_ads": -0.5\\n}'
>>> sorted(p.name for p in d.iterdir())
['a.json']
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def temporary_name(path: str | Path, suffix: str = ".tmp") -> Path:
    """A hidden, unique sibling of ``path``: ``.NAME.<8 hex><suffix>``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{suffix}")


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed.

    ``suffix`` keeps a file extension that a writer needs (``.aselmdb``, ``.pt``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        for leftover in (tmp, Path(str(tmp) + "-lock")):
            if leftover.is_file():
                leftover.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as numbers and lists; anything else JSON cannot write as ``str``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_json_atomic(path: str | Path, data: Any, sort_keys: bool = False) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, sort_keys=sort_keys, default=_plain))


def write_parquet_atomic(df, path: str | Path, row_group_size: int = 1_000_000, schema=None) -> Path:
    """A pandas DataFrame or Arrow table as one zstd Parquet file (optionally cast to ``schema``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False, schema=schema)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression="zstd")
    return Path(path)


def replace_dir_atomic(src: str | Path, dst: str | Path) -> None:
    """Put the folder ``src`` (same file system) in place of ``dst``; the old ``dst`` is removed.

    The swap is two renames: for an instant neither name exists, never a half-written folder.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old.{uuid.uuid4().hex[:8]}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def remove_stale_tmp(path: Path) -> None:
    """Delete hidden temporary siblings ``.NAME.*.tmp`` of ``path`` (call while holding its lock)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass
