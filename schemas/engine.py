"""Engines for the settlement database, with the settings every component needs.

SQLite gets its parent directory created (the embedded default lives under `var/`), foreign
keys enforced (SQLite leaves them off per connection unless asked), a busy timeout so
concurrent embedded components wait instead of failing, and WAL so readers do not block the
writer. PostgreSQL needs nothing special.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url

SQLITE_BUSY_TIMEOUT_MS = 10_000


def create_engine(
    url: str, *, echo: bool = False, foreign_keys: bool = True, **kwargs: Any
) -> Engine:
    """An engine for `url` (sqlite or postgresql); `foreign_keys=False` only for migrations,
    whose SQLite batch mode copies tables around and must not trip over references."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, echo=echo, **kwargs)
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(parsed, echo=echo, **kwargs)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if database and database != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    return engine
