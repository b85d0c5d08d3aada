"""The Alembic migrations on SQLite and PostgreSQL: apply, revert, re-apply, and no drift."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from schemas import migrate
from schemas.engine import create_engine
from schemas.errors import SchemaDriftError
from schemas.tables import metadata


def _tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def _execute(url: str, statement: str) -> None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_without_drift(db_url: str) -> None:
    assert migrate.current(db_url) is None
    migrate.upgrade(db_url)
    head = migrate.head()
    assert head is not None
    assert migrate.current(db_url) == head
    assert _tables(db_url) == set(metadata.tables)
    migrate.check(db_url)

    migrate.downgrade(db_url, "base")
    assert migrate.current(db_url) is None
    assert _tables(db_url) == set()

    migrate.upgrade(db_url, "head")
    migrate.check(db_url)


def test_upgrade_is_idempotent(db_url: str) -> None:
    migrate.upgrade(db_url)
    migrate.upgrade(db_url)
    assert migrate.current(db_url) == migrate.head()


def test_check_refuses_a_database_behind_head(db_url: str) -> None:
    with pytest.raises(SchemaDriftError, match="royalty db upgrade"):
        migrate.check(db_url)


def test_check_finds_a_missing_index(db_url: str) -> None:
    migrate.upgrade(db_url)
    _execute(db_url, "DROP INDEX ix_accruals_payer")
    with pytest.raises(SchemaDriftError) as caught:
        migrate.check(db_url)
    assert any("ix_accruals_payer" in difference for difference in caught.value.differences)


def test_check_finds_an_unexpected_column(db_url: str) -> None:
    migrate.upgrade(db_url)
    _execute(db_url, "ALTER TABLE epochs ADD COLUMN note VARCHAR(10)")
    with pytest.raises(SchemaDriftError, match="note"):
        migrate.check(db_url)


def test_check_finds_a_changed_uint256_type(pg_url: str) -> None:
    # compare_type is on: NUMERIC(78, 0) narrowed to NUMERIC(40, 0) is drift, while the
    # Uint256 decorator itself must compare equal to NUMERIC(78, 0) (the test above).
    migrate.upgrade(pg_url)
    _execute(pg_url, "ALTER TABLE accruals ALTER COLUMN fee_e6 TYPE NUMERIC(40, 0)")
    with pytest.raises(SchemaDriftError, match="fee_e6"):
        migrate.check(pg_url)


def test_offline_sql_renders_for_postgresql(capsys: pytest.CaptureFixture[str]) -> None:
    from alembic import command

    config = migrate.alembic_config("postgresql+psycopg://nobody@127.0.0.1:1/none")
    command.upgrade(config, "head", sql=True)
    sql = capsys.readouterr().out
    assert "fee_e6 NUMERIC(78, 0) NOT NULL" in sql
    assert "CONSTRAINT uq_accruals_usage_id UNIQUE (usage_id)" in sql
