"""`royalty db ...`: database migrations (lands with the schemas work)."""

from __future__ import annotations

import typer

from royalty.commands.placeholder import not_yet

app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)


@app.command()
def upgrade() -> None:
    """Apply every migration to the configured database."""
    not_yet("db upgrade", "schemas")
