"""What every ``qecat`` subcommand module shares: one-line errors and quiet third-party warnings."""

from __future__ import annotations

import typer


def fail(exc: Exception) -> None:
    """Print ``error: <message>`` (one line, stderr) and exit with status 2 (bad input)."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def quiet_warnings() -> None:
    """Silence library warnings (fairchem/warp/transformers) that say nothing to a CLI user."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("warp").setLevel(logging.ERROR)
