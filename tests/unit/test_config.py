"""Configuration: embedded defaults, env over TOML over defaults, fail-fast validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from royalty.cli import app
from royalty.config import COMPONENTS, load_settings, render_docs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ROYALTY_* variables from the caller's shell, and no ./royalty.toml."""
    import os

    for key in list(os.environ):
        if key.startswith("ROYALTY_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_embedded_defaults(tmp_path: Path) -> None:
    s = load_settings()
    assert s.engine.bus == "memory"
    assert s.database_url == f"sqlite:///{tmp_path / 'var' / 'royalty.db'}"
    assert s.analytics_url == f"chdb://{tmp_path / 'var' / 'analytics'}"
    assert s.manifest_path == tmp_path / "var" / "deployment.json"
    assert s.chain.rpc_urls == ["http://127.0.0.1:8545"]


def test_env_beats_toml_beats_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "royalty.toml").write_text(
        '[kafka]\nbootstrap_servers = "k1:9092"\nusage_topic = "usage-x"\n'
        "[epochs]\nlength_s = 600\n"
    )
    monkeypatch.setenv("ROYALTY_KAFKA_BOOTSTRAP_SERVERS", "k2:9092")
    s = load_settings()
    assert s.kafka.bootstrap_servers == "k2:9092"  # env
    assert s.kafka.usage_topic == "usage-x"  # toml
    assert s.kafka.accruals_topic == "accruals"  # default
    assert s.epochs.length_s == 600


def test_explicit_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "elsewhere.toml"
    cfg.write_text('[db]\nurl = "postgresql+psycopg://u@h:5432/d"\n')
    monkeypatch.setenv("ROYALTY_CONFIG_FILE", str(cfg))
    assert load_settings().database_url == "postgresql+psycopg://u@h:5432/d"


def test_missing_explicit_config_file_fails(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROYALTY_CONFIG_FILE", str(tmp_path / "absent.toml"))
    with pytest.raises(ValueError, match="no such file"):
        load_settings()


def test_list_setting_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROYALTY_CHAIN_RPC_URLS", '["http://a:1", "http://b:2"]')
    assert load_settings().chain.rpc_urls == ["http://a:1", "http://b:2"]


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("ROYALTY_BUS", "rabbit", "memory"),
        ("ROYALTY_EPOCH_LENGTH_S", "0", "greater than 0"),
        ("ROYALTY_CHAIN_CONFIRMATIONS", "-1", "greater than or equal to 0"),
        ("ROYALTY_DB_URL", "mysql://x", "only sqlite and postgresql"),
        ("ROYALTY_API_PORT", "70000", "less than 65536"),
    ],
)
def test_invalid_values_fail_fast(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str, message: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ValidationError, match=message):
        load_settings()


def test_unknown_toml_key_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "royalty.toml").write_text("[kafka]\nbootstrap_server = 'typo:9092'\n")
    with pytest.raises(ValidationError, match="bootstrap_server"):
        load_settings()


def test_every_setting_is_documented() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == render_docs(), "run: royalty config docs > docs/configuration.md"
    for cls in COMPONENTS.values():
        for name, info in cls.model_fields.items():
            assert info.description, f"{cls.__name__}.{name} has no description"


def test_cli_config_show_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROYALTY_CHAIN_SETTLER_PRIVATE_KEY", "0x" + "ab" * 32)
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    assert "ab" * 32 not in result.output
    assert '"bus": "memory"' in result.output


def test_settle_without_a_deployment_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROYALTY_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["settle", "--once"])
    assert result.exit_code == 2
    assert "manifest" in result.output
