"""Alembic environment of the settlement database.

The URL comes, first match wins, from `-x url=...` on the `alembic` command line, from
`schemas.migrate` (which passes it in the config's attributes), from `sqlalchemy.url` in an ini
file, or from the engine's settings (`royalty.config.get_settings().database_url`).
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import NullPool

from schemas.engine import create_engine
from schemas.migrate import POSTGRES_MIGRATION_LOCK, context_options
from schemas.tables import metadata

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    """The URL of the database to migrate (see the module docstring for the order)."""
    explicit = context.get_x_argument(as_dictionary=True).get("url")
    if explicit:
        return explicit
    given = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if given:
        return str(given)
    from royalty.config import get_settings  # only the CLI path needs the settings

    return get_settings().database_url


def run_migrations_offline() -> None:
    """Emit the SQL of the migrations (`alembic upgrade head --sql`) without a database."""
    url = database_url()
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **context_options(make_url(url).get_backend_name()),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        **context_options(connection.dialect.name),
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two processes starting at once must not both apply the same migration.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_MIGRATION_LOCK}
            )
        context.run_migrations()


def run_migrations_online() -> None:
    """Apply the migrations over a connection (given by the caller, or opened here)."""
    given = config.attributes.get("connection")
    if given is not None:
        _run(given)
        return
    engine = create_engine(database_url(), foreign_keys=False, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
