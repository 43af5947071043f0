"""Label adsorbate+slab structures with relaxed adsorption energies (eV; lengths in Å, forces eV/Å).

For every structure (OC20 tags 0 fixed subsurface / 1 surface / 2 adsorbate, inferred when
absent) :func:`label` relaxes the adsorbate+slab system and its clean slab (adsorbate atoms
removed, same cell and constraints) with ASE's BFGS to ``fmax`` eV/Å in at most ``steps`` steps
and reports::

    e_ads = e_total - e_slab - e_ref,    e_ref = sum_i n_i mu_i   (OC20 gas references, eV)

Work is resumable. Results go to chunk files in the sibling folder ``OUT.parts/`` as they are
produced, each written atomically (the ``.aselmdb`` of relaxed structures first, then the
``.parquet`` rows, which commit the chunk); relaxed clean slabs are kept there by content hash.
A rerun skips every sid already in a committed chunk and re-relaxes no cached slab, so a run
killed at any point loses only unwritten work and never duplicates a sid. At the end the rows
for the input's sids (in input order) are merged into ``OUT`` (parquet) and the relaxed
structures into ``OUT`` with suffix ``.aselmdb``, both replaced atomically.

Parallelism is over processes (``forkserver`` start method, so workers import numpy afresh with
one BLAS/OpenMP thread each), each with one calculator reused for all its structures. Clean
slabs are relaxed first, each once, then the systems, in tasks of a few to a few tens. A worker
that dies (SIGKILL: OOM killer, lost node) is noticed at once: its tasks run again in a new pool,
once; if a worker dies there too, a one-line :class:`QecatError` names the structures lost, and
what finished is committed, so that a rerun completes the run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from ase import Atoms
from ase.constraints import FixAtoms
from ase.data import chemical_symbols

from qecat_core.calculators.registry import (
    calculator_info,
    normalize_spec,
    shared_calculator,
    supported_elements,
)
from qecat_core.common.atomic import write_json_atomic, write_parquet_atomic
from qecat_core.common.errors import InputError, QecatError
from qecat_core.common.hashing import fixed_mask, slab_hash, structure_sid
from qecat_core.common.pools import Pool, WorkerDied, some
from qecat_core.common.structures import iter_structures, write_aselmdb
from qecat_core.common.tags import TAG_ADSORBATE, ensure_tags
from qecat_core.label.anomaly import (
    AnomalyFlags,
    has_surface_changed,
    is_desorbed,
    is_dissociated,
    surface_bonds,
)
from qecat_core.label.references import (
    REFERENCE_ELEMENTS,
    chemical_potentials,
    reference_energy,
)
from qecat_core.results.schema import LABELS

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

PARTS_FORMAT = 1
CHUNK_SIZE = 256  # systems per committed chunk file
FLUSH_SECONDS = 60.0  # also commit a chunk when this long has passed since the last one
MAX_TASK_SIZE = 32  # structures per worker task
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

COLUMNS = tuple(LABELS)
_RESERVED = frozenset(COLUMNS)


# --------------------------------------------------------------------------------------------
# hashing, slabs, metadata


def clean_slab(atoms: Atoms) -> Atoms:
    """``atoms`` without its adsorbate (tag 2): same cell, pbc, tags and FixAtoms constraint."""
    keep = atoms.get_tags() != TAG_ADSORBATE
    slab = Atoms(numbers=atoms.numbers[keep], positions=atoms.positions[keep], cell=atoms.cell,
                 pbc=atoms.pbc, tags=atoms.get_tags()[keep])
    slab.set_constraint(FixAtoms(mask=fixed_mask(atoms)[keep]))
    return slab


def _metadata(info: dict) -> dict[str, Any]:
    """Scalar entries of ``atoms.info`` (lists, tuples and arrays as strings; dicts dropped)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if not isinstance(key, str) or key in _RESERVED:
            continue
        if isinstance(value, np.ndarray):
            value = str(value.tolist()) if value.ndim else value.item()
        elif isinstance(value, (list, tuple)):
            value = str([v.item() if isinstance(v, np.generic) else v for v in value])
        elif isinstance(value, np.generic):
            value = value.item()
        if value is None or isinstance(value, (str, bool, int, float)):
            out[key] = value
    return out


@dataclass
class _System:
    sid: str
    atoms: Atoms  # OC20-tagged, FixAtoms on tag 0, info cleared
    slab_hash: str
    meta: dict[str, Any]


def _read_systems(input_path: str | Path, spec: str) -> list[_System]:
    """Read, tag and check every structure; one system per sid (first occurrence wins)."""
    allowed = supported_elements(spec)
    systems: dict[str, _System] = {}
    duplicates = 0
    for i, atoms in enumerate(iter_structures(input_path)):
        name = str(atoms.info.get("source", f"{input_path}:{i}"))
        ensure_tags(atoms, name)
        symbols = set(atoms.get_chemical_symbols())
        if allowed is not None and not symbols <= allowed:
            bad = ", ".join(sorted(symbols - allowed))
            raise InputError(f"{name}: calculator {spec!r} cannot handle {bad} "
                             f"(it handles {', '.join(sorted(allowed))})")
        ads_symbols = {chemical_symbols[z] for z in atoms.numbers[atoms.get_tags() == TAG_ADSORBATE]}
        if not ads_symbols <= set(REFERENCE_ELEMENTS):
            bad = ", ".join(sorted(ads_symbols - set(REFERENCE_ELEMENTS)))
            raise InputError(f"{name}: adsorbate (tag 2) contains {bad}; gas references exist only for "
                             f"{', '.join(REFERENCE_ELEMENTS)}")
        sid = structure_sid(atoms)
        if sid in systems:
            duplicates += 1
            continue
        meta = _metadata(atoms.info)
        atoms.info = {}
        atoms.calc = None
        systems[sid] = _System(sid, atoms, slab_hash(clean_slab(atoms)), meta)
    if duplicates:
        log.warning("%s: %d structures repeat an earlier sid and are labelled once", input_path, duplicates)
    return list(systems.values())


# --------------------------------------------------------------------------------------------
# relaxations (run in worker processes, or in-process when workers == 1)


@dataclass(frozen=True)
class _Settings:
    spec: str
    name: str
    version: str
    fmax: float
    steps: int
    mus: dict[str, float]


@dataclass
class SlabResult:
    """A relaxed clean slab (energy eV, fmax eV/Å, positions Å)."""

    slab_hash: str
    energy: float
    n_steps: int
    fmax: float
    converged: bool
    surface_changed: bool  # surface bonds differ between the initial and the relaxed clean slab
    positions: np.ndarray


_WORKER: dict[str, Any] = {}
_SLAB_MEMO: dict[tuple, SlabResult] = {}  # in-process clean-slab cache across label() calls


def _init_worker(settings: _Settings, pool_worker: bool = False) -> None:
    """Make this process's calculator (once per spec) and settings; pool workers leave Ctrl-C to
    the parent, which saves what finished and stops the pool."""
    if pool_worker:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    calc = shared_calculator(settings.spec)
    if pool_worker and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    _WORKER["settings"] = settings
    _WORKER["calc"] = calc


def relax(atoms: Atoms, calc: Any, fmax: float, steps: int,
          maxstep: float | None = None) -> tuple[float, int, float, bool]:
    """BFGS-relax ``atoms`` in place: (energy eV, steps taken, final max force eV/Å, converged).

    ``maxstep`` (Å): the largest move of any atom in one step; None keeps ASE's default (0.2 Å), the
    labeller's protocol.

    When the only constraint is FixAtoms, BFGS works on the free atoms alone (an ase Filter): the
    same trajectory (fixed coordinates never move, so their Hessian block stays decoupled) with a
    much smaller matrix to diagonalise each step.
    """
    from ase.constraints import FixAtoms
    from ase.filters import Filter
    from ase.optimize import BFGS

    atoms.calc = calc
    target = atoms
    if atoms.constraints and all(isinstance(c, FixAtoms) for c in atoms.constraints):
        free = np.ones(len(atoms), bool)
        for c in atoms.constraints:
            free[c.get_indices()] = False
        if free.any():
            target = Filter(atoms, mask=free)
    opt = BFGS(target, logfile=None) if maxstep is None else BFGS(target, logfile=None, maxstep=maxstep)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    energy = float(atoms.get_potential_energy())
    forces = atoms.get_forces()  # with constraints applied: fixed atoms count as zero
    fmax_final = float(np.sqrt((forces ** 2).sum(axis=1)).max()) if len(forces) else 0.0
    atoms.calc = None
    return energy, int(opt.nsteps), fmax_final, converged


def _relaxed_surface_bonds(system: Atoms, sr: SlabResult) -> frozenset[tuple[int, int]]:
    """Surface bonds of the relaxed clean slab of ``system``, cached per slab in this process."""
    cache: dict[str, frozenset[tuple[int, int]]] = _WORKER.setdefault("surface_bonds", {})
    if sr.slab_hash not in cache:
        if len(cache) > 4096:
            cache.clear()
        slab = clean_slab(system)
        slab.positions = sr.positions
        cache[sr.slab_hash] = surface_bonds(slab)
    return cache[sr.slab_hash]


def _relax_slabs(items: list[tuple[str, Atoms, np.ndarray | None]]) -> list[SlabResult]:
    s: _Settings = _WORKER["settings"]
    out = []
    for h, slab, start in items:
        initial = slab.copy()
        if start is not None:  # warm start: continue from an earlier relaxation of this slab
            slab.positions = start
        try:
            energy, n, fm, conv = relax(slab, _WORKER["calc"], s.fmax, s.steps)
        except Exception as exc:
            raise QecatError(f"clean slab {h}: relaxation failed ({type(exc).__name__}: {exc})") from None
        out.append(SlabResult(h, energy, n, fm, conv, has_surface_changed(initial, slab), slab.positions.copy()))
    return out


def _relax_systems(items: list[tuple[str, Atoms, SlabResult, np.ndarray | None]]) -> list[tuple[dict[str, Any], Atoms]]:
    s: _Settings = _WORKER["settings"]
    out = []
    for sid, initial, sr, start in items:
        final = initial.copy()
        if start is not None:  # warm start: continue from an earlier relaxation; flags still
            final.positions = start  # compare the end point with the initial structure
        try:
            energy, n, fm, conv = relax(final, _WORKER["calc"], s.fmax, s.steps)
        except Exception as exc:
            raise QecatError(f"{sid}: relaxation failed ({type(exc).__name__}: {exc})") from None
        ads = initial[initial.get_tags() == TAG_ADSORBATE]
        e_ref = reference_energy(ads.get_chemical_symbols(), s.mus)
        flags = AnomalyFlags(
            desorbed=is_desorbed(final),
            dissociated=is_dissociated(initial, final),
            surface_changed=sr.surface_changed or surface_bonds(final) != _relaxed_surface_bonds(initial, sr),
            not_converged=not (conv and sr.converged),
        )
        row = {
            "sid": sid, "e_ads": energy - sr.energy - e_ref, "e_total": energy, "e_slab": sr.energy,
            "e_ref": e_ref, "converged": conv, "n_steps": n, "n_steps_slab": sr.n_steps, "fmax_final": fm,
            **flags.as_dict(), "calculator": s.name, "calculator_version": s.version,
            "adsorbate_formula": ads.get_chemical_formula(), "n_atoms": len(initial),
        }
        out.append((row, final))
    return out


# --------------------------------------------------------------------------------------------
# the parts folder


def _uniform_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Object columns holding several types (e.g. str and int metadata) become strings."""
    for col in df.columns:
        if df[col].dtype == object:
            kinds = {type(v) for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1:
                df[col] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
                           for v in df[col]]
    return df


def parts_dir(out_parquet: str | Path) -> Path:
    """The folder ``OUT.parts`` next to ``OUT`` holding chunks, cached slabs and references."""
    out = Path(out_parquet)
    return out.with_name(out.name + ".parts")


def structures_path(out_parquet: str | Path) -> Path:
    """Where the relaxed structures go: ``OUT`` with suffix ``.aselmdb``."""
    return Path(out_parquet).with_suffix(".aselmdb")


class _Parts:
    """``OUT.parts/``: manifest.json, references.json, slabs-*.parquet, chunk-*.{aselmdb,parquet}."""

    def __init__(self, out: Path, manifest: dict[str, Any]):
        self.out = out
        self.dir = parts_dir(out)
        self.manifest = manifest
        self._lock_fh: Any = None

    def __enter__(self) -> _Parts:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fh = open(self.dir / ".lock", "w")
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            raise QecatError(f"{self.dir}: another label run is writing here") from None
        self._check_manifest()
        self._clean()
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
        self._lock_fh.close()

    def _check_manifest(self) -> None:
        path = self.dir / "manifest.json"
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except ValueError:
                raise InputError(f"{path}: unreadable; delete {self.dir} to start over") from None
            if old != self.manifest:
                differ = ", ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in self.manifest.items()
                                   if old.get(k) != v)
                raise QecatError(f"{self.dir} was made with other settings ({differ}): "
                                 f"choose another output or delete {self.dir}")
        else:
            write_json_atomic(path, self.manifest, sort_keys=True)

    def _clean(self) -> None:
        """Remove temporary files and chunk structures whose rows were never committed."""
        for p in self.dir.iterdir():
            if p.name.startswith(".") and ".tmp" in p.name:
                p.unlink()
            elif p.name.endswith("-lock") and p.name != ".lock":
                p.unlink()
            elif p.suffix == ".aselmdb" and not p.with_suffix(".parquet").exists():
                p.unlink()

    def chunk_files(self) -> list[Path]:
        return sorted(self.dir.glob("chunk-*.parquet"))

    def done_sids(self) -> set[str]:
        import pyarrow.parquet as pq

        done: set[str] = set()
        for p in self.chunk_files():
            done.update(pq.read_table(p, columns=["sid"]).column("sid").to_pylist())
        return done

    def load_slabs(self) -> dict[str, SlabResult]:
        import pyarrow.parquet as pq

        out: dict[str, SlabResult] = {}
        for p in sorted(self.dir.glob("slabs-*.parquet")):
            for r in pq.read_table(p).to_pylist():
                out[r["slab_hash"]] = SlabResult(
                    r["slab_hash"], r["e_slab"], r["n_steps_slab"], r["fmax_slab"], r["converged_slab"],
                    r["surface_changed_slab"], np.asarray(r["positions"], dtype=np.float64).reshape(-1, 3))
        return out

    @staticmethod
    def _name(prefix: str) -> str:
        return f"{prefix}-{time.time_ns():020d}-{uuid.uuid4().hex[:6]}"

    def write_slabs(self, results: Sequence[SlabResult]) -> None:
        import pandas as pd

        if not results:
            return
        df = pd.DataFrame({
            "slab_hash": [r.slab_hash for r in results], "e_slab": [r.energy for r in results],
            "n_steps_slab": [r.n_steps for r in results], "fmax_slab": [r.fmax for r in results],
            "converged_slab": [r.converged for r in results],
            "surface_changed_slab": [r.surface_changed for r in results],
            "positions": [r.positions.ravel().tolist() for r in results],
        })
        write_parquet_atomic(df, self.dir / f"{self._name('slabs')}.parquet")

    def write_chunk(self, rows: Sequence[dict[str, Any]], structures: Sequence[Atoms]) -> None:
        """Commit one chunk: relaxed structures first, then the rows (the commit marker)."""
        import pandas as pd

        if not rows:
            return
        name = self._name("chunk")
        for row, atoms in zip(rows, structures):
            atoms.info = dict(row)
        write_aselmdb(self.dir / f"{name}.aselmdb", structures)
        write_parquet_atomic(_uniform_columns(pd.DataFrame(list(rows))), self.dir / f"{name}.parquet")

    def merge(self, sids: Sequence[str]) -> pd.DataFrame:
        """Write ``OUT`` and ``OUT.aselmdb`` with the committed rows of ``sids``, in that order."""
        import pandas as pd

        chunks = self.chunk_files()
        fingerprint = hashlib.blake2b("\n".join([c.name for c in chunks] + ["|", *sids]).encode(),
                                      digest_size=16).hexdigest()
        merged_json = self.dir / "merged.json"
        out_db = structures_path(self.out)
        if (merged_json.exists() and self.out.exists() and out_db.exists()
                and json.loads(merged_json.read_text()).get("fingerprint") == fingerprint):
            return pd.read_parquet(self.out)
        order = {sid: k for k, sid in enumerate(sids)}
        frames = [pd.read_parquet(c) for c in chunks]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(COLUMNS))
        df = df.drop_duplicates("sid", keep="first")
        df = df[df["sid"].isin(order)]
        df = df.iloc[np.argsort(df["sid"].map(order).to_numpy(), kind="stable")].reset_index(drop=True)
        df = _uniform_columns(df)
        missing = len(order) - len(df)
        if missing:
            raise QecatError(f"{self.dir}: {missing} systems have no committed rows after labelling")
        wanted = set(df["sid"])
        relaxed: dict[str, Atoms] = {}
        for c in chunks:
            db = c.with_suffix(".aselmdb")
            if not db.exists():
                raise QecatError(f"{db}: missing (its rows are in {c.name}); delete {c} and rerun")
            for atoms in iter_structures(db):
                sid = str(atoms.info.get("sid"))
                if sid in wanted and sid not in relaxed:
                    relaxed[sid] = atoms
        self.out.parent.mkdir(parents=True, exist_ok=True)
        write_aselmdb(out_db, (relaxed[sid] for sid in df["sid"]))
        write_parquet_atomic(df, self.out)
        write_json_atomic(merged_json, {"fingerprint": fingerprint, "n": len(df)}, sort_keys=True)
        return df


# --------------------------------------------------------------------------------------------
# warm start from an earlier run

CARRIED_FLAGS = ("desorbed", "dissociated", "surface_changed")


@dataclass
class WarmStart:
    """An earlier :func:`label` run (its ``OUT`` parquet) to continue from.

    ``systems``: sid -> the earlier relaxed structure (``atoms.info`` holds its row);
    ``slabs``: slab hash -> the earlier relaxed clean-slab positions (Å).
    """

    path: Path
    systems: dict[str, Atoms]
    slabs: dict[str, np.ndarray]

    @classmethod
    def load(cls, out_parquet: str | Path, sids: set[str] | None = None) -> WarmStart:
        import pyarrow.parquet as pq

        path = Path(out_parquet)
        db = structures_path(path)
        if not db.exists():
            raise InputError(f"{db}: missing; --warm-start takes the OUT parquet of an earlier label run "
                             f"(its relaxed structures sit next to it as .aselmdb)")
        systems = {}
        for atoms in iter_structures(db):
            sid = str(atoms.info.get("sid"))
            if sids is None or sid in sids:
                systems.setdefault(sid, atoms)
        slabs: dict[str, np.ndarray] = {}
        for p in sorted(parts_dir(path).glob("slabs-*.parquet")):
            for r in pq.read_table(p, columns=["slab_hash", "positions"]).to_pylist():
                slabs.setdefault(r["slab_hash"], np.asarray(r["positions"], dtype=np.float64).reshape(-1, 3))
        return cls(path, systems, slabs)

    def earlier(self, system: _System) -> Atoms | None:
        """The earlier relaxed structure of ``system`` (None if it was not labelled there); raises
        :class:`InputError` if it has other atoms or another cell than the input."""
        earlier = self.systems.get(system.sid)
        if earlier is None:
            return None
        if len(earlier) != len(system.atoms) or (earlier.numbers != system.atoms.numbers).any() or \
                not np.allclose(earlier.cell.array, system.atoms.cell.array, atol=1e-4):
            raise InputError(f"{structures_path(self.path)}: sid {system.sid} has other atoms or another "
                             f"cell than the input structure; warm-start only from a run on the same inputs")
        return earlier

    @staticmethod
    def carried(earlier: Atoms | None) -> bool:
        """True if the earlier run flagged this structure desorbed, dissociated or surface-changed: a
        further relaxation cannot give it a meaningful adsorption energy, so its row is kept."""
        return earlier is not None and any(bool(earlier.info.get(k, False)) for k in CARRIED_FLAGS)


# --------------------------------------------------------------------------------------------
# running


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _main_reimportable() -> bool:
    """False when ``__main__`` names a file that does not exist (a script piped on stdin,
    ``python - < script.py``). forkserver workers start by re-running ``__main__`` from its path, so
    each would fail at start and the pool would replace it forever: a silent hang."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None):
        return True  # python -m module
    path = getattr(main, "__file__", None)
    return path is None or os.path.exists(path)  # None: python -c, REPL, Jupyter


class _Runner:
    """Maps task functions over lists of tasks, in a process pool or in this process.

    The pool (:class:`qecat_core.common.pools.Pool`, a ``ProcessPoolExecutor``) notices a dead
    worker (SIGKILL: OOM killer, lost node) at once: the tasks it left unfinished run again in a
    new pool, once per :meth:`imap`; if a worker dies there too, :class:`WorkerDied` names the
    structures the dead worker held.
    """

    def __init__(self, settings: _Settings, workers: int):
        self.settings = settings
        self.workers = workers
        self.pool: Pool | None = None

    def __enter__(self) -> _Runner:
        if self.workers > 1 and not _main_reimportable():
            log.warning("__main__ is %r, which worker processes cannot re-import: labelling in this "
                        "process (workers=1); run the script from a file for parallel workers",
                        getattr(sys.modules["__main__"], "__file__", None))
            self.workers = 1
        if self.workers > 1:
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(["qecat_core.label"])
            self.pool = Pool("label", self.workers, ctx, initializer=_init_worker, initargs=(self.settings, True),
                             env={k: "1" for k in THREAD_VARS}).__enter__()
        else:
            _init_worker(self.settings)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.pool is not None:
            self.pool.__exit__(*exc)

    def imap(self, fn: Callable[[list], list], tasks: list[list], what: str = "relaxing") -> Iterator[list]:
        """``fn(task)`` for every task, in the order they finish; ``what`` names a task's structures
        (by their first field: sid or slab hash) when a worker dies."""
        if self.pool is None:
            return map(fn, tasks)

        def describe(ks: list[int]) -> str:
            ids = [item[0] for k in ks for item in tasks[k]]
            return f"{what} {some(ids)} ({len(ids)} structure{'s' * (len(ids) != 1)})"

        return (result for _, result in self.pool.map_unordered(fn, tasks, describe))


def _tasks(items: list, workers: int) -> list[list]:
    size = max(1, min(MAX_TASK_SIZE, len(items) // (8 * workers)))
    return [items[k:k + size] for k in range(0, len(items), size)]


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="relax", disable=not enabled or total == 0,
                dynamic_ncols=True, smoothing=0.05)


def _drain(results: Iterable[list], flush: Callable[[list], None], bar: Any) -> None:
    """Collect task results, committing them every CHUNK_SIZE items or FLUSH_SECONDS."""
    buffer: list = []
    last = time.monotonic()
    try:
        for batch in results:
            buffer.extend(batch)
            bar.update(len(batch))
            if len(buffer) >= CHUNK_SIZE or time.monotonic() - last >= FLUSH_SECONDS:
                flush(buffer)
                buffer, last = [], time.monotonic()
    except BaseException:
        try:  # keep what finished, so that a rerun resumes after it
            flush(buffer)
        except Exception:
            log.exception("could not save %d finished results", len(buffer))
        raise
    flush(buffer)


def label(input_path: str | Path, out_parquet: str | Path, calculator: str = "emt", fmax: float = 0.05,
          steps: int = 300, workers: int | None = None, progress: bool = True,
          warm_start: str | Path | None = None) -> pd.DataFrame:
    """Relax every structure of ``input_path`` and write adsorption energies to ``out_parquet``.

    ``input_path``: anything :func:`qecat_core.common.structures.iter_structures` reads. ``calculator``: 'emt',
    'chgnet' or 'MODULE:FACTORY'. ``fmax`` in eV/Å; ``steps``: BFGS step limit per relaxation;
    ``workers``: processes (default: the CPUs available; 1 runs in this process).
    Returns the merged table (columns :data:`COLUMNS` plus scalar ``atoms.info`` metadata), one
    row per input sid in input order; the relaxed structures go to ``OUT.aselmdb`` with the row
    in ``row.data``. Raises :class:`InputError` (one line naming the file) for unusable input and
    :class:`QecatError` for bad settings or an ``OUT.parts`` made with other settings.

    ``warm_start``: the ``OUT`` parquet of an earlier run on the same inputs (e.g. at a looser
    ``fmax``). Each system and clean slab it labelled continues from its earlier relaxed positions
    (``steps`` more BFGS steps at most; ``n_steps`` counts this run's), and the anomaly flags still
    compare the end point with the *initial* structure, so the result is that of one relaxation to
    the new ``fmax``. Systems it flagged desorbed, dissociated or surface-changed keep their earlier
    row (further relaxation cannot make them meaningful). Systems it lacks start from scratch.
    """
    spec = normalize_spec(calculator)
    if not (isinstance(fmax, (int, float, np.number)) and fmax > 0):
        raise QecatError(f"fmax must be a positive number of eV/Å, got {fmax!r}")
    if not (isinstance(steps, (int, np.integer)) and not isinstance(steps, bool) and steps >= 0):
        raise QecatError(f"steps must be a non-negative integer, got {steps!r}")
    if workers is not None and not (isinstance(workers, (int, np.integer)) and workers >= 1):
        raise QecatError(f"workers must be a positive integer, got {workers!r}")
    out = Path(out_parquet)
    if out.suffix == ".aselmdb":
        raise QecatError(f"{out}: the output is a parquet table; the structures go next to it as .aselmdb")
    name, version = calculator_info(spec)
    systems = _read_systems(input_path, spec)
    manifest = {"format": PARTS_FORMAT, "calculator": spec, "calculator_name": name,
                "calculator_version": version, "fmax": float(fmax), "steps": int(steps)}
    if warm_start is not None:
        if Path(warm_start).resolve() == out.resolve():
            raise QecatError(f"{out}: the warm start must be another run's output, not this one's")
        manifest["warm_start"] = str(warm_start)

    with _Parts(out, manifest) as parts:
        done = parts.done_sids()
        todo = [s for s in systems if s.sid not in done]
        log.info("%s: %d systems, %d already labelled, %d to relax", input_path, len(systems),
                 len(systems) - len(todo), len(todo))
        if todo:
            warm = WarmStart.load(warm_start, {s.sid for s in todo}) if warm_start is not None else None
            try:
                _label_systems(todo, parts, spec, name, version, float(fmax), int(steps), workers, progress, warm)
            except WorkerDied as exc:  # what finished is committed (_drain): a rerun resumes after it
                n = len(parts.done_sids() & {s.sid for s in systems})
                raise QecatError(f"label: {exc}; the {n} finished are in {parts.dir}; rerun to complete") from None
        return parts.merge([s.sid for s in systems])


def _label_systems(todo: list[_System], parts: _Parts, spec: str, name: str, version: str, fmax: float,
                   steps: int, workers: int | None, progress: bool, warm: WarmStart | None = None) -> None:
    mus = chemical_potentials(spec, cache_file=parts.dir / "references.json")
    settings = _Settings(spec, name, version, fmax, steps, mus)
    key = (spec, version, fmax, steps, str(warm.path) if warm else None)
    if warm is not None:
        earlier = [warm.earlier(s) for s in todo]  # checked against the input once per system
        carried = [e for e in earlier if WarmStart.carried(e)]
        for k in range(0, len(carried), CHUNK_SIZE):
            batch = carried[k:k + CHUNK_SIZE]
            parts.write_chunk([dict(e.info) for e in batch], [e.copy() for e in batch])
        if carried:
            log.info("%d systems keep their flagged rows from %s", len(carried), warm.path)
        kept = [(s, e) for s, e in zip(todo, earlier) if not WarmStart.carried(e)]
        todo = [s for s, _ in kept]
        starts = {s.sid: None if e is None else e.positions.copy() for s, e in kept}
    else:
        starts = {}
    slabs = parts.load_slabs()
    needed = {s.slab_hash for s in todo}
    from_memo = [_SLAB_MEMO[(*key, h)] for h in sorted(needed - slabs.keys()) if (*key, h) in _SLAB_MEMO]
    parts.write_slabs(from_memo)  # persisted, so that a rerun in a new process reuses them too
    slabs.update((sr.slab_hash, sr) for sr in from_memo)

    todo = sorted(todo, key=lambda s: s.slab_hash)  # systems sharing a slab go to the same tasks
    new_slabs: dict[str, Atoms] = {}
    for s in todo:
        if s.slab_hash not in slabs and s.slab_hash not in new_slabs:
            new_slabs[s.slab_hash] = clean_slab(s.atoms)
    n_workers = max(1, min(workers or default_workers(), len(todo)))

    def save_slabs(results: list[SlabResult]) -> None:
        parts.write_slabs(results)
        for sr in results:
            slabs[sr.slab_hash] = sr
            _SLAB_MEMO[(*key, sr.slab_hash)] = sr

    by_sid = {s.sid: s for s in todo}

    def save_systems(results: list[tuple[dict[str, Any], Atoms]]) -> None:
        rows = [{**row, **{k: v for k, v in by_sid[row["sid"]].meta.items() if k not in row}}
                for row, _ in results]
        parts.write_chunk(rows, [atoms for _, atoms in results])

    with _Runner(settings, n_workers) as runner:
        with _progress(len(new_slabs), "clean slabs", progress) as bar:
            slab_items = [(h, slab, warm.slabs.get(h) if warm else None) for h, slab in new_slabs.items()]
            _drain(runner.imap(_relax_slabs, _tasks(slab_items, n_workers), "relaxing clean slab"), save_slabs, bar)
        items = [(s.sid, s.atoms, slabs[s.slab_hash], starts.get(s.sid)) for s in todo]
        with _progress(len(items), "systems", progress) as bar:
            _drain(runner.imap(_relax_systems, _tasks(items, n_workers), "relaxing sid"), save_systems, bar)
