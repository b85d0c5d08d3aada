"""`royalty db upgrade | current | check | downgrade` against the configured database."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from royalty.commands.db import app
from royalty.config import get_settings
from schemas import migrate


@pytest.fixture(autouse=True)
def _configured(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROYALTY_DB_URL", sqlite_url)
    monkeypatch.delenv("ROYALTY_CONFIG_FILE", raising=False)
    get_settings.cache_clear()


def test_db_commands_migrate_the_configured_database() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["check"])
    assert result.exit_code == 1
    assert "royalty db upgrade" in result.output

    result = runner.invoke(app, ["upgrade"])
    assert result.exit_code == 0, result.output
    assert f"at revision {migrate.head()}" in result.output

    result = runner.invoke(app, ["current"])
    assert result.exit_code == 0
    assert f"at revision {migrate.head()} (head: {migrate.head()})" in result.output

    result = runner.invoke(app, ["check"])
    assert result.exit_code == 0, result.output
    assert "no drift" in result.output

    result = runner.invoke(app, ["downgrade", "base"])
    assert result.exit_code == 0, result.output
    assert "at revision None" in result.output
