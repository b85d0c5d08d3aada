"""The committed JSON Schemas (schemas/jsonschema/*.json) equal a fresh export."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from royalty.commands.schemas import app
from schemas.export import PUBLISHED, SCHEMA_DIR, rendered, stale


def test_committed_schema_files_are_up_to_date() -> None:
    assert stale() == [], "run `royalty schemas export` and commit schemas/jsonschema/"
    committed = {path.name for path in SCHEMA_DIR.glob("*.json")}
    assert committed == {f"{name}.json" for name in PUBLISHED}


def test_schema_files_are_stable_json() -> None:
    for filename, content in rendered().items():
        document = json.loads(content)
        assert (
            content == json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        ), filename
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert document["additionalProperties"] is False


def test_amounts_are_published_as_decimal_strings() -> None:
    accrual = json.loads(rendered()["accrual.json"])
    assert accrual["properties"]["fee_e6"]["type"] == "string"
    usage = json.loads(rendered()["usage_event.json"])
    assert usage["properties"]["type"]["const"] == "ai.royalty.usage.v1"


def test_export_command_writes_and_check_command_compares(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["check", str(tmp_path)]).exit_code == 1
    result = runner.invoke(app, ["export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert stale(tmp_path) == []
    assert runner.invoke(app, ["check", str(tmp_path)]).exit_code == 0
    (tmp_path / "epoch.json").write_text("{}\n")
    result = runner.invoke(app, ["check", str(tmp_path)])
    assert result.exit_code == 1
    assert "epoch.json" in result.output
