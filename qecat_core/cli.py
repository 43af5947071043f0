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


def main() -> None:  # pragma: no cover
    sys.exit(app())
