"""The EMT-labelled training dataset with OC20-like splits.

``build_dataset(catalog, out)``:

1. enumerates the catalog into ``out/candidates/`` (cached by catalog hash);
2. takes a deterministic sample of at most ``max_systems`` candidates (lowest hash of the sid);
3. relaxes them with EMT (``qecat label``; resumable) into ``out/labels.parquet``;
4. splits by *system* (bulk, facet termination, adsorbate), never by placement, so no system has
   placements on both sides:

   - ``val-ood-ads``: systems of the held-out adsorbates (:data:`OOD_ADSORBATES`);
   - ``val-ood-cat``: systems on bulks of the held-out metal pairs (:data:`OOD_PAIRS`);
   - ``val-ood-both``: both held out;
   - ``val-id``: 10% of the remaining systems (by hash); ``train``: the rest;

5. writes ``out/dataset.parquet`` (candidates metadata + labels + split) and one ``.aselmdb`` of
   *initial* structures per split with ``e_ads`` (eV) in ``atoms.info`` (IS2RE-style), plus
   ``out/summary.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from qecat_core.common.errors import QecatError
from qecat_core.common.hashing import short_hash, unit_hash
from qecat_core.enumerate.candidates import sample_candidates

OOD_ADSORBATES = ("*NH2", "*CHO")
OOD_PAIRS = ("Cu-Pd", "Ag-Pt")
VAL_ID_FRACTION = 0.10
SPLITS = ("train", "val-id", "val-ood-ads", "val-ood-cat", "val-ood-both")


def assign_splits(df: pd.DataFrame, ood_adsorbates=OOD_ADSORBATES, ood_pairs=OOD_PAIRS,
                  val_fraction: float = VAL_ID_FRACTION) -> pd.Series:
    """Split label per row of a candidates table (columns adsorbate, metal_a, metal_b, system_id)."""
    pairs = {frozenset(p.split("-")) for p in ood_pairs}
    ood_cat = np.array([frozenset((a, b)) in pairs for a, b in zip(df["metal_a"], df["metal_b"])])
    ood_ads = df["adsorbate"].isin(ood_adsorbates).to_numpy()
    val = np.array([unit_hash(s) < val_fraction for s in df["system_id"]])
    split = np.where(ood_ads & ood_cat, "val-ood-both",
                     np.where(ood_ads, "val-ood-ads", np.where(ood_cat, "val-ood-cat",
                                                             np.where(val, "val-id", "train"))))
    return pd.Series(split, index=df.index, name="split")


def write_subset(cand_dir: Path, sids: set[str], out: Path, shard_size: int = 2000) -> list[Path]:
    """Copy the initial structures of ``sids`` from the candidate shards into new shards in ``out``.

    Each file is named by the content hash of the sids it holds (``part-<hash>.aselmdb``), so an
    existing file is reused only when it holds exactly those structures; files of an earlier sample or
    catalog that are not part of this subset are removed, so that labelling ``out`` never sees them.
    """
    from qecat_core.common.structures import iter_structures, write_aselmdb

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    buf: list = []

    def flush() -> None:
        path = out / f"part-{short_hash(*(a.info['sid'] for a in buf))}.aselmdb"
        if not path.exists():
            write_aselmdb(path, buf)
        written.append(path)
        buf.clear()

    for shard in sorted((cand_dir / "shards").glob("shard-*.aselmdb")):
        for atoms in iter_structures(shard):
            if atoms.info["sid"] in sids:
                atoms.info.pop("source", None)
                buf.append(atoms)
                if len(buf) >= shard_size:
                    flush()
    if buf:
        flush()
    for stale in set(out.glob("*.aselmdb")) - set(written):
        stale.unlink()
    return written


def _labelled_sids(out_parquet: Path) -> set[str]:
    """Sids already labelled into ``out_parquet`` or its resumable parts folder."""
    from qecat_core.label.relax import parts_dir

    sids: set[str] = set()
    for f in [out_parquet, *sorted(parts_dir(out_parquet).glob("*.parquet"))]:
        if f.exists():
            try:
                sids |= set(pd.read_parquet(f, columns=["sid"])["sid"])
            except Exception:  # slab-cache parts have no sid column
                pass
    return sids


def build_dataset(catalog_path: str | Path, out: str | Path, max_systems: int = 24000,
                  workers: int | None = None, calculator: str = "emt", fmax: float = 0.05, steps: int = 300,
                  warm_start: str | Path | None = None) -> str:
    """Enumerate, sample, label and split; return a one-paragraph summary.

    ``fmax`` (eV/Å) and ``steps`` go to :func:`qecat_core.label.relax.label`, as does ``warm_start``
    (the ``labels.parquet`` of an earlier build: its relaxations are continued, not redone).
    """
    from qecat_core.catalog.schema import load_catalog
    from qecat_core.common.atomic import write_parquet_atomic
    from qecat_core.common.structures import iter_structures, write_aselmdb
    from qecat_core.enumerate.candidates import enumerate_catalog
    from qecat_core.label.relax import label

    out = Path(out)
    t0 = time.perf_counter()
    catalog = load_catalog(catalog_path)
    manifest = enumerate_catalog(catalog, out / "candidates", workers=workers)
    t_enum = time.perf_counter() - t0
    cands = pd.read_parquet(out / "candidates" / "candidates.parquet")
    sample = sample_candidates(cands, max_systems)
    inputs = write_subset(out / "candidates", set(sample["sid"]), out / "inputs")
    if not inputs:
        raise QecatError(f"{catalog_path}: the catalog enumerates no candidates")
    already = _labelled_sids(out / "labels.parquet") & set(sample["sid"])
    t1 = time.perf_counter()
    labels = label(out / "inputs", out / "labels.parquet", calculator=calculator, workers=workers, fmax=fmax,
                   steps=steps, warm_start=warm_start)
    t_label = time.perf_counter() - t1

    keep = [c for c in labels.columns if c not in sample.columns or c == "sid"]
    df = sample.merge(labels[keep], on="sid", how="inner", validate="one_to_one")
    df["split"] = assign_splits(df)
    write_parquet_atomic(df, out / "dataset.parquet")

    # IS2RE-style split files: initial structures with the relaxed adsorption energy
    target = df.set_index("sid")[["e_ads", "split", "anomaly"]]
    by_split: dict[str, list] = {s: [] for s in SPLITS}
    for part in inputs:
        for atoms in iter_structures(part):
            sid = atoms.info["sid"]
            if sid in target.index:
                atoms.info.pop("source", None)
                atoms.info["e_ads"] = float(target.at[sid, "e_ads"])
                atoms.info["anomaly"] = bool(target.at[sid, "anomaly"])
                by_split[target.at[sid, "split"]].append(atoms)
    for split, atoms_list in by_split.items():
        if atoms_list:
            write_aselmdb(out / f"{split}.aselmdb", atoms_list)

    clean = df[~df["anomaly"]]
    per_ads = clean.groupby("adsorbate")["e_ads"].describe()[["count", "mean", "std", "min", "50%", "max"]]
    summary = {
        "catalog": str(catalog_path), "catalog_hash": manifest["catalog_hash"],
        "n_candidates": manifest["n_candidates"], "n_labelled": len(df), "n_clean": len(clean),
        "splits": df["split"].value_counts().to_dict(),
        "anomalies": {k: int(df[k].sum()) for k in ("desorbed", "dissociated", "surface_changed", "not_converged")},
        "seconds_enumerate": round(t_enum, 1), "seconds_label": round(t_label, 1),
        "labelled_this_run": len(labels) - len(already), "resumed": len(already),
        "labels_per_second": round((len(labels) - len(already)) / max(t_label, 1e-9), 2),
        "e_ads_per_adsorbate": per_ads.round(3).reset_index().to_dict(orient="records"),
        "ood_adsorbates": list(OOD_ADSORBATES), "ood_pairs": list(OOD_PAIRS),
        "fmax": fmax, "steps": steps, "warm_start": None if warm_start is None else str(warm_start),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return (f"{len(df)} labelled systems ({len(clean)} without anomalies) -> {out}/dataset.parquet; "
            f"splits {summary['splits']}; labelled {summary['labelled_this_run']} in {t_label / 60:.1f} min "
            f"({summary['labels_per_second']}/s), {len(already)} resumed from an earlier run")
