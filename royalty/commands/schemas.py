"""`royalty schemas ...`: the published JSON Schemas of events and records."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schemas.export import SCHEMA_DIR, export, stale

app = typer.Typer(help="Published JSON Schemas (schemas/jsonschema/).", no_args_is_help=True)


@app.command("export")
def export_command(
    directory: Annotated[
        Path, typer.Argument(help="Where to write the <name>.json files.")
    ] = SCHEMA_DIR,
) -> None:
    """Write the JSON Schema of every published record type into DIRECTORY."""
    for path in export(directory):
        typer.echo(str(path))


@app.command()
def check(
    directory: Annotated[
        Path, typer.Argument(help="Directory of the committed files.")
    ] = SCHEMA_DIR,
) -> None:
    """Exit non-zero if the files in DIRECTORY differ from a fresh export."""
    out_of_date = stale(directory)
    if out_of_date:
        typer.secho(
            f"out of date in {directory}: {', '.join(out_of_date)} (run `royalty schemas export`)",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(code=1)
    typer.echo(f"{directory}: up to date")
