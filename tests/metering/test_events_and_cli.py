"""Event ids and attributes; the metering commands; the metering settings."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from metering.auth import ApiKeyStore
from metering.billing import ModelBilling
from metering.events import EventIds, Usage, UsageEventFactory, short_text
from metering.keyfiles import (
    load_api_key_records,
    load_key_ring,
    load_operator_records,
    load_signing_key,
)
from metering.settings import billing_table, resolve_paths
from metering.signing import Signer, SigningKey
from royalty.commands import gateway as gateway_cmd
from royalty.config import get_settings, load_settings
from schemas.usage import parse_usage_event


def test_ids_are_unique_across_threads_and_processes() -> None:
    ids = EventIds("node-1")
    seen: list[str] = []

    def take() -> None:
        seen.extend(ids.next_id() for _ in range(2000))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 8000
    assert all(i.startswith("node-1:") for i in seen)
    assert EventIds("node-1").prefix != ids.prefix  # a restart never reuses ids


def test_factory_builds_signed_valid_events() -> None:
    key = SigningKey.generate(prefix="node-1")
    factory = UsageEventFactory("node-1", Signer(key))
    billing = ModelBilling("echo-lm", 1, "tokens", "tokens")
    encoded = factory.encode(
        Usage(billing, 42, 7, datetime.now(UTC), "3", "req\x00bad", latency_ms=12)
    )
    event = parse_usage_event(encoded.value)
    assert encoded.key == b"1"
    assert event.id == encoded.id
    assert event.subject == "echo-lm"
    assert event.data.model_version == "3"
    assert event.data.request_id is None  # a client label that would make the event invalid
    assert event.data.billing_metric == "tokens"
    assert short_text("x" * 257) is None
    assert short_text("ok") == "ok"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    for key in list(os.environ):
        if key.startswith("ROYALTY_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROYALTY_METERING_API_KEY_PEPPER", "cli-pepper")
    monkeypatch.setenv("ROYALTY_METERING_NODE_ID", "node-cli")
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()
    # `royalty gateway` configured logging onto this test's captured stderr: undo it.
    structlog.reset_defaults()


def _app() -> typer.Typer:
    # What the lead wires into royalty/cli.py, rebuilt here.
    app = typer.Typer()
    app.command()(gateway_cmd.gateway)
    app.command()(gateway_cmd.reconcile)
    app.add_typer(gateway_cmd.metering_app, name="metering")
    return app


def test_keygen_add_key_revoke_and_rotate(cli: CliRunner, tmp_path: Path) -> None:
    app = _app()
    result = cli.invoke(app, ["metering", "keygen"])
    assert result.exit_code == 0, result.output
    paths = resolve_paths(load_settings())
    first = load_signing_key(paths.signing_key)
    assert first.keyid.startswith("node-cli-")
    assert first.keyid in load_key_ring(paths.key_ring)
    assert oct(paths.signing_key.stat().st_mode & 0o777) == "0o600"
    assert cli.invoke(app, ["metering", "keygen"]).exit_code == 1  # refuses to overwrite
    rotated = cli.invoke(app, ["metering", "keygen", "--rotate", "--retire-after", "60"])
    assert rotated.exit_code == 0, rotated.output
    second = load_signing_key(paths.signing_key)
    ring = load_key_ring(paths.key_ring)
    assert {first.keyid, second.keyid} <= set(ring)
    assert ring[first.keyid].not_after is not None

    added = cli.invoke(app, ["metering", "add-key", "--license", "42", "--model", "1"])
    assert added.exit_code == 0, added.output
    plain = added.stdout.strip().splitlines()[0]
    assert plain.startswith("rk_")
    store = ApiKeyStore(load_api_key_records(paths.api_keys), b"cli-pepper")
    assert store.authenticate(plain).license_id == 42
    kid = plain.split("_")[1]
    assert cli.invoke(app, ["metering", "revoke-key", kid]).exit_code == 0
    assert load_api_key_records(paths.api_keys)[0].revoked
    assert cli.invoke(app, ["metering", "revoke-key", "nope"]).exit_code == 1

    op = cli.invoke(app, ["metering", "add-operator", "acme", "--keyid", second.keyid])
    assert op.exit_code == 0, op.output
    assert load_operator_records(paths.operators)[0].keyids == frozenset({second.keyid})

    spool = cli.invoke(app, ["metering", "spool"])
    assert spool.exit_code == 0
    assert "0 events" in spool.output


def test_gateway_refuses_to_start_without_models(cli: CliRunner) -> None:
    result = cli.invoke(_app(), ["gateway"])
    assert result.exit_code == 1
    assert "no metered models" in result.output


def test_metering_settings_from_toml(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "royalty.toml").write_text(
        "[metering]\n"
        'delivery = "spool"\n'
        "[metering.models.echo-lm]\n"
        'model_id = "1"\n'
        'metric = "tokens"\n'
        'units_output = "tokens"\n'
        "[metering.models.doubler]\n"
        'model_id = "2"\n'
        'metric = "batch_items"\n'
    )
    settings = load_settings()
    table = billing_table(settings.metering)
    assert table["echo-lm"].units_output == "tokens"
    assert table["doubler"].model_id == 2
    assert settings.metering.delivery == "spool"
    paths = resolve_paths(settings)
    assert paths.spool_dir == tmp_path / "var" / "spool" / "node-cli"


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"m": {"model_id": "1", "metric": "tokens"}}, "units_output"),
        ({"m": {"model_id": "01"}}, "pattern"),
        ({"m": {"model_id": "1", "metric": "seconds"}}, "metric"),
    ],
)
def test_bad_model_settings_fail_fast(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, models: object, message: str
) -> None:
    monkeypatch.setenv("ROYALTY_METERING_MODELS", json.dumps(models))
    with pytest.raises(ValidationError, match=message):
        load_settings()
