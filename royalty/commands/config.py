"""`royalty config ...`: show the settings in force, or print their reference."""

from __future__ import annotations

import json

import typer

from royalty.config import load_settings, render_docs

app = typer.Typer(help="Configuration.", no_args_is_help=True)


@app.command()
def show() -> None:
    """Print the settings in force (secrets masked) as JSON."""
    settings = load_settings()
    typer.echo(json.dumps(settings.model_dump(mode="json"), indent=2))


@app.command()
def docs() -> None:
    """Print the Markdown reference of every setting (docs/configuration.md)."""
    typer.echo(render_docs(), nl=False)
