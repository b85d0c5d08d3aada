"""`royalty db ...`: migrations of the settlement database (Alembic, `schemas/migrations/`).

The database is the one in the settings (`ROYALTY_DB_URL`, `[db] url`, default SQLite under
the data directory).
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.engine import make_url

from royalty.config import load_settings
from schemas import migrate
from schemas.errors import SchemaDriftError

app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)


def _database_url() -> str:
    return load_settings().database_url


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


@app.command()
def upgrade(
    revision: Annotated[
        str, typer.Argument(help="Target revision (default: the latest).")
    ] = "head",
) -> None:
    """Apply the migrations up to REVISION to the configured database."""
    url = _database_url()
    migrate.upgrade(url, revision)
    typer.echo(f"{_shown(url)}: at revision {migrate.current(url)}")


@app.command()
def downgrade(
    revision: Annotated[str, typer.Argument(help="Target revision (`base` drops every table).")],
) -> None:
    """Revert the migrations of the configured database down to REVISION."""
    url = _database_url()
    migrate.downgrade(url, revision)
    typer.echo(f"{_shown(url)}: at revision {migrate.current(url)}")


@app.command()
def current() -> None:
    """Print the revision the configured database is at, and the latest one."""
    url = _database_url()
    typer.echo(f"{_shown(url)}: at revision {migrate.current(url)} (head: {migrate.head()})")


@app.command()
def check() -> None:
    """Exit non-zero unless the database is at head and matches the models (no drift)."""
    url = _database_url()
    try:
        migrate.check(url)
    except SchemaDriftError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from exc
    typer.echo(f"{_shown(url)}: at head {migrate.head()}, no drift")
