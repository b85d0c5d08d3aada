"""PostgreSQL smoke: the real server takes the migrations and round-trips exact money."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from deploy.local import Postgres
from schemas import migrate
from schemas.engine import create_engine

pytestmark = pytest.mark.postgres


def test_migration_applies_and_has_no_drift(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    assert migrate.current(pg_url) == migrate.head()
    migrate.check(pg_url)
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        numeric = conn.execute(
            sa.text(
                "SELECT data_type, numeric_precision, numeric_scale FROM information_schema.columns"
                " WHERE table_name = 'accruals' AND column_name = 'fee_e6'"
            )
        ).one()
    engine.dispose()
    assert {"accruals", "usage_events", "dead_letters", "epochs", "checkpoints"} <= tables
    assert tuple(numeric) == ("numeric", 78, 0)


def test_client_fails_once_server_is_stopped(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = Postgres(tmp_path_factory.mktemp("pg-stop")).start()
    url = server.create_database("gone")
    server.stop()
    engine = create_engine(url)
    with pytest.raises(sa.exc.OperationalError, match=r"refused|connect"):
        engine.connect()
    engine.dispose()
