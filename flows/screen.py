"""Prefect flow ``screen``: a thin layer over ``qecat_core`` functions that also run without Prefect.

Today it enumerates a catalog into ``.aselmdb`` shards (cached by catalog hash) and relaxes a
deterministic sample with the labeller; model inference per shard through submitit, rankings in
Parquet and the nightly deployment come with the screening-pipeline work.

    python -m flows.screen                # ephemeral Prefect, default catalog
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

import qecat_core  # noqa: F401  (thread settings first)


@task(retries=1, retry_delay_seconds=5)
def enumerate_task(catalog: str, out: str, shard_size: int) -> dict:
    from qecat_core.catalog import load_catalog
    from qecat_core.enumerate import enumerate_catalog

    return enumerate_catalog(load_catalog(catalog), out, shard_size=shard_size, progress=False)


@task(retries=1, retry_delay_seconds=5)
def label_sample_task(candidates_dir: str, out: str, sample: int, calculator: str) -> str:
    import pandas as pd

    from qecat_core.dataset import write_subset, sample_candidates
    from qecat_core.label import label

    cands = pd.read_parquet(Path(candidates_dir) / "candidates.parquet")
    chosen = sample_candidates(cands, sample)
    inputs = Path(out) / f"sample-{sample}"
    write_subset(Path(candidates_dir), set(chosen["sid"]), inputs)
    target = Path(out) / f"labels-{sample}.parquet"
    label(inputs, target, calculator=calculator, progress=False)
    return str(target)


@flow(name="screen")
def screen(catalog: str = "catalogs/bimetallics.yaml", out: str = "runs/screen", shard_size: int = 1000,
           sample: int = 240, calculator: str = "emt") -> str:
    manifest = enumerate_task(catalog, f"{out}/candidates", shard_size)
    return label_sample_task(f"{out}/candidates", out, sample, calculator, wait_for=[manifest])


if __name__ == "__main__":
    print(screen())
