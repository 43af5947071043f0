"""The ``qecat`` command line: one subcommand per pipeline stage.

Errors caused by input (files, fields, values) print one line ``error: ...`` and exit with 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

import qecat_core  # noqa: F401  (sets thread env vars before numpy is imported)
from qecat_core.errors import QecatError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="QE-Catalytic: enumerate, label, train, predict and screen adsorbate-slab systems.")
dataset_app = typer.Typer(no_args_is_help=True, help="Training datasets (EMT-labelled, OC20-like splits).")
app.add_typer(dataset_app, name="dataset")


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def _quiet_warnings() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("warp").setLevel(logging.ERROR)


@app.command("enumerate")
def enumerate_cmd(
    catalog: Annotated[Path, typer.Argument(help="catalog YAML, e.g. catalogs/bimetallics.yaml")],
    out: Annotated[Path, typer.Option("-o", "--out", help="output folder (shards/ + candidates.parquet)")],
    shard_size: Annotated[int, typer.Option(min=1, help="candidates per .aselmdb shard")] = 1000,
    workers: Annotated[Optional[int], typer.Option(min=1, help="processes (default: all cores)")] = None,
    force: Annotated[bool, typer.Option(help="redo even if OUT holds this catalog already")] = False,
) -> None:
    """Enumerate adsorbate-slab candidates of a catalog into .aselmdb shards and an index."""
    from qecat_core.catalog import load_catalog
    from qecat_core.enumerate import enumerate_catalog

    try:
        cat = load_catalog(catalog)
        m = enumerate_catalog(cat, out, shard_size=shard_size, workers=workers, force=force)
    except QecatError as exc:
        _fail(exc)
    typer.echo(f"{m['n_candidates']} candidates ({m['n_systems']} systems, {m['n_bulks']} bulks) "
               f"in {len(m['shards'])} shards -> {out}/  [catalog {m['catalog_hash']}]")


@app.command("validate")
def validate_cmd(catalog: Annotated[Path, typer.Argument(help="catalog YAML")]) -> None:
    """Validate a catalog and print what it spans."""
    from qecat_core.catalog import load_catalog

    try:
        cat = load_catalog(catalog)
    except QecatError as exc:
        _fail(exc)
    typer.echo(f"{catalog}: ok — {len(cat.bulk_specs())} bulks, {len(cat.facets)} facets, "
               f"{len(cat.adsorbates)} adsorbates [hash {cat.content_hash()}]")


@app.command("adsorbates")
def adsorbates_cmd() -> None:
    """List the OC20 adsorbate SMILES a catalog may use."""
    from qecat_core.adsorbates import load_adsorbates

    for smiles, ads in load_adsorbates().items():
        typer.echo(f"{smiles}\t{ads.atoms.get_chemical_formula()}\tbinding={list(ads.binding_indices)}")


@app.command("label")
def label_cmd(
    input: Annotated[Path, typer.Argument(help="structures: extxyz, traj, ASE db, .aselmdb, or a folder")],
    out: Annotated[Path, typer.Option("-o", "--out", help="output parquet (relaxed structures go to OUT.aselmdb)")],
    calculator: Annotated[str, typer.Option(help="emt | chgnet | MODULE:FACTORY")] = "emt",
    fmax: Annotated[float, typer.Option(min=1e-4, help="force convergence, eV/Å")] = 0.05,
    steps: Annotated[int, typer.Option(min=1, help="max BFGS steps")] = 300,
    workers: Annotated[Optional[int], typer.Option(min=1, help="processes (default: all cores)")] = None,
) -> None:
    """Relax structures and their clean slabs; write OC20-referenced adsorption energies (eV)."""
    _quiet_warnings()
    from qecat_core.label import label

    try:
        df = label(input, out, calculator=calculator, fmax=fmax, steps=steps, workers=workers)
    except QecatError as exc:
        _fail(exc)
    typer.echo(f"{len(df)} labelled -> {out}")


@dataset_app.command("build")
def dataset_build_cmd(
    out: Annotated[Path, typer.Option("-o", "--out", help="dataset folder")] = Path("data/emt-v1"),
    catalog: Annotated[Path, typer.Option(help="catalog YAML")] = Path("catalogs/bimetallics.yaml"),
    max_systems: Annotated[int, typer.Option(min=1, help="label at most this many candidates (sid-hash sample)")] = 24000,
    workers: Annotated[Optional[int], typer.Option(min=1)] = None,
) -> None:
    """Enumerate the catalog, label a sample with EMT, and split it like OC20."""
    _quiet_warnings()
    from qecat_core.dataset import build_dataset

    try:
        summary = build_dataset(catalog, out, max_systems=max_systems, workers=workers)
    except QecatError as exc:
        _fail(exc)
    typer.echo(summary)


@app.command("screen")
def screen_cmd(
    catalog: Annotated[Path, typer.Option(help="catalog YAML")] = Path("catalogs/bimetallics.yaml"),
    out: Annotated[Path, typer.Option("-o", "--out", help="run folder")] = Path("runs/screen"),
    sample: Annotated[int, typer.Option(min=1, help="candidates to relax with EMT (sid-hash sample)")] = 240,
    top: Annotated[int, typer.Option(min=1, help="rows of the ranking to print")] = 20,
    workers: Annotated[Optional[int], typer.Option(min=1)] = None,
) -> None:
    """Enumerate the catalog, relax a sample with EMT, and print the best systems (AdsorbML min)."""
    _quiet_warnings()
    import pandas as pd
    from rich.console import Console
    from rich.table import Table

    from qecat_core.catalog import load_catalog
    from qecat_core.dataset import write_subset, sample_candidates
    from qecat_core.enumerate import enumerate_catalog
    from qecat_core.label import label
    from qecat_core.ranking import rank_systems

    try:
        cat = load_catalog(catalog)
        m = enumerate_catalog(cat, out / "candidates", workers=workers)
        cands = pd.read_parquet(out / "candidates" / "candidates.parquet")
        chosen = sample_candidates(cands, sample)
        write_subset(out / "candidates", set(chosen["sid"]), out / f"sample-{sample}")
        labels = label(out / f"sample-{sample}", out / f"labels-{sample}.parquet", workers=workers)
    except QecatError as exc:
        _fail(exc)
    keep = [c for c in labels.columns if c not in chosen.columns or c == "sid"]
    df = chosen.merge(labels[keep], on="sid")
    ranking = rank_systems(df[~df["anomaly"]], "e_ads")
    table = Table(title=f"{cat.name}: {m['n_candidates']} candidates enumerated, {len(df)} relaxed with EMT; "
                        f"top {top} systems by E_ads (eV)")
    for col in ("bulk", "miller", "adsorbate", "site_type", "e_ads", "n_placements"):
        table.add_column(col, justify="right" if col in ("e_ads", "n_placements") else "left", no_wrap=True)
    for r in ranking.head(top).itertuples():
        table.add_row(r.bulk, r.miller, r.adsorbate, r.site_type, f"{r.e_ads:.3f}", str(r.n_placements))
    Console().print(table)


from qecat_core import cli_model as _cli_model  # noqa: E402

_cli_model.register(app)


def main() -> None:  # pragma: no cover
    sys.exit(app())
