"""The ``qecat`` command line: one subcommand per pipeline stage.

Errors caused by input (files, fields, values) print one line ``error: ...`` and exit with 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

import qecat_core  # noqa: F401  (sets thread env vars before numpy is imported)
from qecat_core.catalog.bulks import bulk_specs
from qecat_core.cli.common import fail, quiet_warnings
from qecat_core.common.errors import QecatError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="QE-Catalytic: enumerate, label, train, predict and screen adsorbate-slab systems.")
dataset_app = typer.Typer(no_args_is_help=True, help="Training datasets (EMT-labelled, OC20-like splits).")
app.add_typer(dataset_app, name="dataset")


@app.command("enumerate")
def enumerate_cmd(
    catalog: Annotated[Path, typer.Argument(help="catalog YAML, e.g. catalogs/bimetallics.yaml")],
    out: Annotated[Path, typer.Option("-o", "--out", help="output folder (shards/ + candidates.parquet)")],
    shard_size: Annotated[int, typer.Option(min=1, help="candidates per .aselmdb shard")] = 1000,
    workers: Annotated[Optional[int], typer.Option(min=1, help="processes (default: all cores)")] = None,
    force: Annotated[bool, typer.Option(help="redo even if OUT holds this catalog already")] = False,
) -> None:
    """Enumerate adsorbate-slab candidates of a catalog into .aselmdb shards and an index."""
    from qecat_core.catalog.schema import load_catalog
    from qecat_core.enumerate.candidates import enumerate_catalog

    try:
        cat = load_catalog(catalog)
        m = enumerate_catalog(cat, out, shard_size=shard_size, workers=workers, force=force)
    except QecatError as exc:
        fail(exc)
    typer.echo(f"{m['n_candidates']} candidates ({m['n_systems']} systems, {m['n_bulks']} bulks) "
               f"in {len(m['shards'])} shards -> {out}/  [catalog {m['catalog_hash']}]")


@app.command("validate")
def validate_cmd(catalog: Annotated[Path, typer.Argument(help="catalog YAML")]) -> None:
    """Validate a catalog and print what it spans."""
    from qecat_core.catalog.schema import load_catalog

    try:
        cat = load_catalog(catalog)
    except QecatError as exc:
        fail(exc)
    specs = bulk_specs(cat)
    n_facets = sum(len(s.facets) if s.facets is not None else len(cat.facets) for s in specs)
    typer.echo(f"{catalog}: ok — {len(specs)} bulks, {n_facets} bulk × facet pairs, "
               f"{len(cat.adsorbates)} adsorbates [hash {cat.content_hash()}]")


@app.command("adsorbates")
def adsorbates_cmd() -> None:
    """List the OC20 adsorbate SMILES a catalog may use."""
    from qecat_core.catalog.adsorbates import load_adsorbates

    for smiles, ads in load_adsorbates().items():
        typer.echo(f"{smiles}\t{ads.atoms.get_chemical_formula()}\tbinding={list(ads.binding_indices)}")


@app.command("describe")
def describe_cmd(
    input: Annotated[Path, typer.Argument(help="structures: extxyz, traj, ASE db, .aselmdb, or a folder")],
    out: Annotated[Path, typer.Option("-o", "--out", help="output parquet, one row per structure")],
    infer_metadata: Annotated[bool, typer.Option("--infer-metadata", help="adsorbate, bulk formula, lattice and "
                                                 "Miller index from the geometry wherever it gives them, over "
                                                 "atoms.info")] = False,
) -> None:
    """Adsorbate (SMILES, binding atoms, site), surface (bulk, lattice, Miller index) and configuration text
    of each structure, as qecat predict reads them; a structure that cannot be described gets an error row."""
    from qecat_core.enumerate.describe import write_description

    try:
        df = write_description(input, out, prefer_geometry=infer_metadata, progress=True)
    except QecatError as exc:
        fail(exc)
    n_err = int(df["error"].notna().sum())
    typer.echo(f"{len(df) - n_err} described, {n_err} with errors (the error column) -> {out}")


@app.command("label")
def label_cmd(
    input: Annotated[Path, typer.Argument(help="structures: extxyz, traj, ASE db, .aselmdb, or a folder")],
    out: Annotated[Path, typer.Option("-o", "--out", help="output parquet (relaxed structures go to OUT.aselmdb)")],
    calculator: Annotated[str, typer.Option(help="emt | chgnet | MODULE:FACTORY")] = "emt",
    fmax: Annotated[float, typer.Option(min=1e-4, help="force convergence, eV/Å")] = 0.05,
    steps: Annotated[int, typer.Option(min=1, help="max BFGS steps")] = 300,
    workers: Annotated[Optional[int], typer.Option(min=1, help="processes (default: all cores)")] = None,
    warm_start: Annotated[Optional[Path], typer.Option(
        help="OUT parquet of an earlier run on the same inputs: continue its relaxations (e.g. to a tighter --fmax)")] = None,
) -> None:
    """Relax structures and their clean slabs; write OC20-referenced adsorption energies (eV)."""
    quiet_warnings()
    from qecat_core.label.relax import label

    try:
        df = label(input, out, calculator=calculator, fmax=fmax, steps=steps, workers=workers,
                   warm_start=warm_start)
    except QecatError as exc:
        fail(exc)
    typer.echo(f"{len(df)} labelled -> {out}")


@dataset_app.command("build")
def dataset_build_cmd(
    out: Annotated[Path, typer.Option("-o", "--out", help="dataset folder")] = Path("data/emt-v1"),
    catalog: Annotated[Path, typer.Option(help="catalog YAML")] = Path("catalogs/bimetallics.yaml"),
    max_systems: Annotated[int, typer.Option(min=1, help="label at most this many candidates (sid-hash sample)")] = 24000,
    workers: Annotated[Optional[int], typer.Option(min=1)] = None,
    fmax: Annotated[float, typer.Option(min=1e-4, help="force convergence of the labels, eV/Å")] = 0.05,
    steps: Annotated[int, typer.Option(min=1, help="max BFGS steps per relaxation")] = 300,
    warm_start: Annotated[Optional[Path], typer.Option(
        help="labels.parquet of an earlier build of the same catalog: continue its relaxations")] = None,
) -> None:
    """Enumerate the catalog, label a sample with EMT, and split it like OC20."""
    quiet_warnings()
    from qecat_core.label.dataset import build_dataset

    try:
        summary = build_dataset(catalog, out, max_systems=max_systems, workers=workers, fmax=fmax,
                                steps=steps, warm_start=warm_start)
    except QecatError as exc:
        fail(exc)
    typer.echo(summary)


@app.command("screen")
def screen_cmd(
    config: Annotated[Optional[Path], typer.Option("--config", help="ScreenConfig YAML (options below override it)")] = None,
    catalog: Annotated[Optional[Path], typer.Option(help="catalog YAML (default: catalogs/bimetallics.yaml)")] = None,
    checkpoint: Annotated[Optional[Path], typer.Option(help="model folder (default: models/qecat-emt-v1)")] = None,
    mode: Annotated[Optional[str], typer.Option(help="fused | graph | text (default: fused)")] = None,
    executor: Annotated[Optional[str], typer.Option(help="local | slurm (default: local)")] = None,
    slurm: Annotated[Optional[Path], typer.Option(help="SLURM settings YAML, e.g. slurm/local-cluster.yaml")] = None,
    shard_size: Annotated[Optional[int], typer.Option(min=1, help="candidates per shard (default: 1000)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="structures per forward pass (default: 32)")] = None,
    device: Annotated[Optional[str], typer.Option(help="where the jobs run the model: auto | cpu | cuda | cuda:N "
                                                  "(default: auto, a job's GPU when it has one)")] = None,
    results: Annotated[Optional[Path], typer.Option(help="results folder (default: results)")] = None,
    work: Annotated[Optional[Path], typer.Option(help="work folder: enumerations, shard outputs, job logs (default: runs)")] = None,
    name: Annotated[Optional[str], typer.Option(help="screen name (default: the catalog's name)")] = None,
    verify_top_k: Annotated[Optional[int], typer.Option(min=0, help="relax the K best systems per adsorbate (default: 0 = off)")] = None,
    calculator: Annotated[Optional[str], typer.Option(help="labeller calculator for verification (default: emt)")] = None,
    workers: Annotated[Optional[int], typer.Option(min=1, help="local processes (default: all cores)")] = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="screen only this many candidates (sid-hash sample)")] = None,
    allow_unseen_elements: Annotated[bool, typer.Option("--allow-unseen-elements", help="screen a catalog with "
                                                        "elements the model was not trained on")] = False,
    top: Annotated[int, typer.Option(min=1, help="rows of the ranking to print")] = 20,
    plots: Annotated[bool, typer.Option(help="write heatmap.png and summary.png under RESULTS/plots/")] = True,
) -> None:
    """Screen a catalog with the model: enumerate (cached), predict only what is new, rank, verify.

    The same steps as the Prefect flow ``screen`` (flows/screen.py, ``make screen``), without Prefect.

    Exit status 0 when every shard succeeded, 1 when some failed (listed), 2 for bad input.
    """
    quiet_warnings()
    from qecat_core.screen.config import load_screen_config

    overrides = dict(catalog=catalog, checkpoint=checkpoint, mode=mode, executor=executor, slurm=slurm,
                     shard_size=shard_size, batch_size=batch_size, device=device, results=results, work=work, name=name,
                     verify_top_k=verify_top_k, calculator=calculator, workers=workers, limit=limit,
                     allow_unseen_elements=True if allow_unseen_elements else None)
    try:
        cfg = load_screen_config(config, **overrides)
        cfg.checkpoint_path()
        cfg.check_device()
        from qecat_core.screen.pipeline import run_screen

        result = run_screen(cfg, progress=True)
    except QecatError as exc:
        fail(exc)
    _show(result.summary, result.ranking, result.verification, top, plots)
    raise typer.Exit(0 if result.ok else 1)


def _show(summary: dict, ranking, verification, top: int, plots: bool) -> None:
    from qecat_core.results.report import print_report, write_plots

    print_report(summary, ranking, top=top)
    if plots:
        for what, path in write_plots(summary, ranking, verification).items():
            typer.echo(f"{what}: {path}")
    if summary["status"] != "ok":
        typer.echo(f"error: {len(summary['failed'])} shard(s) failed"
                   + (f"; verification: {summary['verification']['error']}"
                      if (summary.get("verification") or {}).get("error") else "")
                   + f" (see {summary.get('summary_path')}); rerun to retry them", err=True)


@app.command("query")
def query_cmd(
    sql: Annotated[str, typer.Argument(help="read-only SQL over the views candidates, predictions, ranking, "
                                            "ranking_history, runs, verification")],
    format: Annotated[str, typer.Option("--format", "-f", help="table | csv | parquet")] = "table",
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="write to this file (parquet needs it)")] = None,
    results: Annotated[Path, typer.Option(help="results folder")] = Path("results"),
    max_rows: Annotated[int, typer.Option(min=1, help="rows shown in table format")] = 50,
) -> None:
    """Query the screening results with DuckDB (docs/screening.md has example queries)."""
    from qecat_core.results.query import query, query_arrow

    try:
        if format not in ("table", "csv", "parquet"):
            raise QecatError(f"--format: unknown format {format!r}; allowed: table, csv, parquet")
        if format == "parquet" and output is None:
            raise QecatError("--format parquet needs -o FILE")
        if not results.is_dir():
            raise QecatError(f"{results}: results folder not found (run qecat screen first, or pass --results)")
        if format == "parquet":
            import pyarrow.parquet as pq

            table = query_arrow(sql, results)
            output.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, output)
            typer.echo(f"{table.num_rows} rows -> {output}")
            return
        df = query(sql, results)
    except QecatError as exc:
        fail(exc)
    if format == "csv":
        if output:
            output.parent.mkdir(parents=True, exist_ok=True)
            df.to_csv(output, index=False)
            typer.echo(f"{len(df)} rows -> {output}")
        else:
            sys.stdout.write(df.to_csv(index=False))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(caption=f"{len(df)} rows" + (f" (first {max_rows} shown)" if len(df) > max_rows else ""))
    for c in df.columns:
        t.add_column(str(c), no_wrap=True)
    for row in df.head(max_rows).itertuples(index=False):
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row])
    if output:
        with open(output, "w") as fh:
            Console(file=fh, width=200).print(t)
        typer.echo(f"{len(df)} rows -> {output}")
    else:
        Console().print(t)


from qecat_core.cli import model as _cli_model  # noqa: E402

_cli_model.register(app)


def main() -> None:  # pragma: no cover
    sys.exit(app())
