"""Configuration of every component: environment variables over a TOML file over defaults.

The defaults are the embedded ones (SQLite file, chDB directory, local anvil, in-process bus), so
a fresh checkout runs without any configuration. Each component has one settings class with its
own environment prefix and TOML table; `get_settings()` builds them all once and validates them
up front, and the result is passed to the components (nothing reads settings at import time).

    ROYALTY_CONFIG_FILE=royalty.toml   # optional; ./royalty.toml is read when it exists
    ROYALTY_DB_URL=postgresql+psycopg://...  # env beats the file's [db] url

`docs/configuration.md` is generated from these classes (`royalty config docs`).
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

CONFIG_FILE_ENV = "ROYALTY_CONFIG_FILE"
DEFAULT_CONFIG_FILE = Path("royalty.toml")


def config_file() -> Path | None:
    """The TOML file in force: $ROYALTY_CONFIG_FILE (must exist), else ./royalty.toml if any."""
    explicit = os.environ.get(CONFIG_FILE_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ValueError(f"{CONFIG_FILE_ENV}={explicit}: no such file")
        return path
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


class TomlTableSource(PydanticBaseSettingsSource):
    """Reads one table (`[db]`, `[kafka]`, ...) of the TOML configuration file."""

    def __init__(self, settings_cls: type[BaseSettings], table: str) -> None:
        super().__init__(settings_cls)
        path = config_file()
        data: dict[str, Any] = {}
        if path is not None:
            with path.open("rb") as fh:
                doc = tomllib.load(fh)
            section = doc.get(table, {})
            if not isinstance(section, dict):
                raise ValueError(f"{path}: [{table}] must be a table")
            data = section
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


class ComponentSettings(BaseSettings):
    """Base of the per-component settings: env prefix + one TOML table each."""

    toml_table: ClassVar[str] = ""
    model_config = SettingsConfigDict(extra="forbid", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlTableSource(settings_cls, cls.toml_table))


class EngineSettings(ComponentSettings):
    """Process-wide settings."""

    toml_table: ClassVar[str] = "engine"
    model_config = SettingsConfigDict(env_prefix="ROYALTY_", extra="forbid", frozen=True)

    data_dir: Path = Field(
        Path("var"), description="Directory of embedded state (SQLite file, chDB, spool, manifest)."
    )
    bus: Literal["memory", "kafka"] = Field(
        "memory", description="Event bus: in-process queues (embedded) or Kafka."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Log level."
    )
    log_json: bool = Field(False, description="Structured JSON logs instead of console lines.")


class DatabaseSettings(ComponentSettings):
    """The settlement database (source of truth for accruals, epochs, projections)."""

    toml_table: ClassVar[str] = "db"
    model_config = SettingsConfigDict(env_prefix="ROYALTY_DB_", extra="forbid", frozen=True)

    url: str | None = Field(
        None,
        description="SQLAlchemy URL. Default: SQLite file `<data_dir>/royalty.db`. "
        "PostgreSQL: `postgresql+psycopg://user@host:port/db`.",
    )
    echo: bool = Field(False, description="Log every SQL statement.")

    @field_validator("url")
    @classmethod
    def _supported(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("sqlite", "postgresql")):
            raise ValueError("only sqlite and postgresql URLs are supported")
        return v


class ChainSettings(ComponentSettings):
    """The chain the indexer follows and the settler commits to."""

    toml_table: ClassVar[str] = "chain"
    model_config = SettingsConfigDict(env_prefix="ROYALTY_CHAIN_", extra="forbid", frozen=True)

    rpc_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8545"],
        description="JSON-RPC endpoints, tried in order with failover (JSON list in env).",
    )
    confirmations: int = Field(
        2, ge=0, description="Blocks behind head before a block counts as finalized."
    )
    manifest_path: Path | None = Field(
        None, description="Deployment manifest. Default: `<data_dir>/deployment.json`."
    )
    poll_interval_s: float = Field(1.0, gt=0, description="Head polling interval, seconds.")
    max_block_range: int = Field(
        2000, gt=0, description="Upper bound of one eth_getLogs block range."
    )
    settler_private_key: SecretStr | None = Field(
        None, description="Key of the settler role (hex). Default on anvil: dev account 1."
    )


class KafkaSettings(ComponentSettings):
    """Kafka brokers and topic names (used when `bus = kafka`)."""

    toml_table: ClassVar[str] = "kafka"
    model_config = SettingsConfigDict(env_prefix="ROYALTY_KAFKA_", extra="forbid", frozen=True)

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    usage_topic: str = Field("usage", description="CloudEvents usage events, key = model id.")
    chain_topic: str = Field("chain", description="Decoded chain events and retractions.")
    accruals_topic: str = Field("accruals", description="Priced, valid usage.")
    dead_letter_topic: str = Field("usage.dead-letter", description="Rejected usage with reason.")
    partitions: int = Field(3, gt=0, description="Partitions of topics the engine creates.")
    client_id: str = Field("royalty-engine", description="Kafka client id prefix.")


class AnalyticsSettings(ComponentSettings):
    """ClickHouse for analysts: embedded chDB by default, a server by URL."""

    toml_table: ClassVar[str] = "analytics"
    model_config = SettingsConfigDict(env_prefix="ROYALTY_ANALYTICS_", extra="forbid", frozen=True)

    url: str | None = Field(
        None,
        description="`chdb:///abs/path` or `http(s)://user:pass@host:port`. "
        "Default: chDB in `<data_dir>/analytics`.",
    )
    database: str = Field("royalty", description="ClickHouse database name.")


class TritonSettings(ComponentSettings):
    """The Triton server behind the metering gateway."""

    toml_table: ClassVar[str] = "triton"
    model_config = SettingsConfigDict(env_prefix="ROYALTY_TRITON_", extra="forbid", frozen=True)

    http_url: str = Field("127.0.0.1:8000", description="Triton KServe v2 HTTP endpoint.")
    grpc_url: str = Field("127.0.0.1:8001", description="Triton KServe v2 gRPC endpoint.")
    metrics_url: str = Field(
        "http://127.0.0.1:8002/metrics", description="Triton Prometheus metrics."
    )


class ApiSettings(ComponentSettings):
    """The public/claims API."""

    toml_table: ClassVar[str] = "api"
    model_config = SettingsConfigDict(env_prefix="ROYALTY_API_", extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8080, gt=0, lt=65536, description="Bind port.")
    page_size_max: int = Field(500, gt=0, description="Largest page a list endpoint returns.")
    page_size_default: int = Field(100, gt=0, description="Page size when `limit` is not given.")
    rate_limit_per_s: float = Field(
        200.0,
        ge=0,
        description="Public reads: sustained requests per second per client IP (0 = no limit).",
    )
    rate_limit_burst: int = Field(
        400, gt=0, description="Public reads: requests a client IP may send at once."
    )
    admin_rate_limit_per_s: float = Field(
        20.0,
        ge=0,
        description="Admin calls: requests per second per API key unless the key sets its own.",
    )
    key_pepper: SecretStr | None = Field(
        None,
        description="Server-side pepper of admin API key hashes (HMAC-SHA256); required for "
        "admin endpoints and `royalty api --create-key`.",
    )
    tree_cache_epochs: int = Field(
        256, ge=0, description="Epoch Merkle trees kept in memory for proofs (0 = no cache)."
    )
    workers: int = Field(1, gt=0, description="uvicorn worker processes.")
    epoch_cache_s: float = Field(
        1.0,
        ge=0,
        description="How long contributor endpoints reuse one read of the epochs' statuses "
        "(0 = read per request).",
    )


class EpochSettings(ComponentSettings):
    """Epoch windows and watermarks."""

    toml_table: ClassVar[str] = "epochs"
    model_config = SettingsConfigDict(env_prefix="ROYALTY_EPOCH_", extra="forbid", frozen=True)

    length_s: int = Field(3600, gt=0, description="Epoch length in seconds.")
    genesis_s: int = Field(0, ge=0, description="Start (unix seconds) of epoch 0.")
    allowed_lateness_s: int = Field(
        300, ge=0, description="Usage watermark = max event time seen minus this."
    )
    dispute_window_s: int = Field(
        3600, ge=0, description="Seconds after commit before an epoch is claimable."
    )
    wall_clock_watermark: bool = Field(
        False,
        description="Let the usage watermark also advance with wall-clock time (now minus the "
        "allowed lateness), so epochs close through idle periods without usage.",
    )
    settle_interval_s: float = Field(
        10.0, gt=0, description="Seconds between two steps of `royalty settle`."
    )
    receipt_timeout_s: float = Field(
        120.0, gt=0, description="Seconds the settler waits for a transaction's receipt per step."
    )


class MeteredModelSettings(BaseModel):
    """How one Triton model is billed: its on-chain model id and its billing metric."""

    model_config = {"frozen": True, "extra": "forbid"}

    model_id: str = Field(
        description="On-chain model id (ModelRegistry), a decimal string.",
        pattern=r"^(0|[1-9][0-9]{0,77})$",
    )
    metric: Literal["requests", "batch_items", "tokens"] = Field(
        "requests",
        description="Units of one inference: 1 per request, the batch size, or the sum of an "
        "output tensor (tokens).",
    )
    units_output: str | None = Field(
        None, description="Output tensor holding the units (required for `tokens`)."
    )
    batch_input: str | None = Field(
        None, description="Input whose first dimension is the batch size (default: the first)."
    )

    @model_validator(mode="after")
    def _tokens_need_an_output(self) -> MeteredModelSettings:
        if self.metric == "tokens" and not self.units_output:
            raise ValueError("metric 'tokens' needs units_output (the output tensor to sum)")
        return self


class MeteringSettings(ComponentSettings):
    """Metering: the gateway in front of Triton, usage signing, the durable producer, ingest."""

    toml_table: ClassVar[str] = "metering"
    model_config = SettingsConfigDict(env_prefix="ROYALTY_METERING_", extra="forbid", frozen=True)

    node_id: str = Field(
        "metering-1",
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="This metering node: event `source` is `//metering/<node_id>`, ids start "
        "with it.",
    )
    host: str = Field("127.0.0.1", description="Gateway bind address.")
    port: int = Field(8010, gt=0, lt=65536, description="Gateway bind port.")
    grpc_port: int | None = Field(
        None,
        gt=0,
        lt=65536,
        description="Gateway KServe v2 gRPC port (proxied to `triton.grpc_url`); unset: no gRPC.",
    )
    models: dict[str, MeteredModelSettings] = Field(
        default_factory=dict,
        description="Metered Triton models by name (`[metering.models.<name>]` tables; JSON "
        "in env). Other models are refused.",
    )
    signing_key_file: Path | None = Field(
        None,
        description="Ed25519 or HMAC signing key (`royalty metering keygen`). "
        "Default: `<data_dir>/metering/signing-key.json`.",
    )
    key_ring_file: Path | None = Field(
        None,
        description="Key ring of verification keys by key id. "
        "Default: `<data_dir>/metering/keyring.json`.",
    )
    api_keys_file: Path | None = Field(
        None,
        description="Hashed API keys -> license (`royalty metering add-key`). "
        "Default: `<data_dir>/metering/api-keys.json`.",
    )
    api_key_pepper: SecretStr | None = Field(
        None, description="Server-side pepper mixed into API key hashes (required with keys)."
    )
    licenses_file: Path | None = Field(
        None,
        description="License directory (id -> model id, owner) enabling wallet-signed "
        "requests; unset disables them.",
    )
    wallet_max_skew_s: int = Field(
        300, gt=0, description="Largest clock skew accepted on a wallet-signed request."
    )
    operators_file: Path | None = Field(
        None,
        description="Hashed operator tokens for HTTP ingest. "
        "Default: `<data_dir>/metering/operators.json`.",
    )
    auth_metadata: bool = Field(
        False, description="Require an API key on model metadata/config/ready endpoints too."
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, gt=0, description="Largest inference request body accepted (413)."
    )
    upstream_timeout_s: float = Field(
        60.0, gt=0, description="Timeout of one request forwarded to Triton."
    )
    upstream_connections: int = Field(64, gt=0, description="Keep-alive connections to Triton.")
    delivery: Literal["kafka", "spool"] = Field(
        "kafka",
        description="Acknowledge after the Kafka ack (spool only when Kafka fails), or after "
        "the local spool's fsync (write-ahead, shipped in the background).",
    )
    spool_dir: Path | None = Field(
        None, description="Local spool directory. Default: `<data_dir>/spool/<node_id>`."
    )
    spool_max_bytes: int = Field(
        256 * 1024 * 1024, gt=0, description="Spool capacity; inference gets 503 when full."
    )
    spool_segment_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="Spool segment size before rotation."
    )
    spool_alarm_ratio: float = Field(
        0.8, gt=0, lt=1, description="Fill ratio above which the spool alarm is raised."
    )
    kafka_linger_ms: int = Field(0, ge=0, description="Producer linger (batching delay).")
    kafka_batch_bytes: int = Field(
        256 * 1024, gt=0, description="Producer batch size per partition."
    )
    kafka_compression: Literal["lz4", "gzip", "none"] = Field(
        "lz4", description="Producer compression codec."
    )
    kafka_delivery_timeout_ms: int = Field(
        5000, gt=0, description="After this, an unacknowledged event goes to the spool."
    )
    create_topic: bool = Field(
        True, description="Create the usage topic at startup when it does not exist."
    )
    reconcile_interval_s: float = Field(30.0, gt=0, description="Reconciler polling interval.")
    reconcile_tolerance: int = Field(
        0, ge=0, description="Drift (requests) per window tolerated before it is reported."
    )

    @model_validator(mode="after")
    def _segments_fit(self) -> MeteringSettings:
        if self.spool_segment_bytes > self.spool_max_bytes:
            raise ValueError("spool_segment_bytes must not exceed spool_max_bytes")
        return self


class Settings(BaseModel):
    """All component settings, validated together, with embedded defaults resolved."""

    model_config = {"frozen": True}

    engine: EngineSettings
    db: DatabaseSettings
    chain: ChainSettings
    kafka: KafkaSettings
    analytics: AnalyticsSettings
    triton: TritonSettings
    api: ApiSettings
    epochs: EpochSettings
    metering: MeteringSettings

    @model_validator(mode="after")
    def _resolve_embedded_defaults(self) -> Settings:
        data_dir = self.engine.data_dir.resolve()
        updates: dict[str, ComponentSettings] = {}
        if self.db.url is None:
            updates["db"] = self.db.model_copy(
                update={"url": f"sqlite:///{data_dir / 'royalty.db'}"}
            )
        if self.analytics.url is None:
            updates["analytics"] = self.analytics.model_copy(
                update={"url": f"chdb://{data_dir / 'analytics'}"}
            )
        if self.chain.manifest_path is None:
            updates["chain"] = self.chain.model_copy(
                update={"manifest_path": data_dir / "deployment.json"}
            )
        for name, value in updates.items():
            object.__setattr__(self, name, value)
        return self

    @property
    def database_url(self) -> str:
        assert self.db.url is not None  # resolved above
        return self.db.url

    @property
    def analytics_url(self) -> str:
        assert self.analytics.url is not None
        return self.analytics.url

    @property
    def manifest_path(self) -> Path:
        assert self.chain.manifest_path is not None
        return self.chain.manifest_path


COMPONENTS: dict[str, type[ComponentSettings]] = {
    "engine": EngineSettings,
    "db": DatabaseSettings,
    "chain": ChainSettings,
    "kafka": KafkaSettings,
    "analytics": AnalyticsSettings,
    "triton": TritonSettings,
    "api": ApiSettings,
    "epochs": EpochSettings,
    "metering": MeteringSettings,
}


def load_settings() -> Settings:
    """Build and validate every component's settings from env, TOML file and defaults."""
    parts: dict[str, Any] = {name: cls() for name, cls in COMPONENTS.items()}
    return Settings(**parts)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, built once (call `get_settings.cache_clear()` in tests)."""
    return load_settings()


def _env_name(cls: type[ComponentSettings], field: str) -> str:
    prefix = str(cls.model_config.get("env_prefix", ""))
    return f"{prefix}{field}".upper()


def _type_name(annotation: Any) -> str:
    """A readable name for a field's type in the reference table."""
    text = getattr(annotation, "__name__", None)
    if text is None or getattr(annotation, "__args__", None):
        text = str(annotation)
    for noise in ("typing.", "pathlib.", "pydantic.types."):
        text = text.replace(noise, "")
    return text.replace("|", "\\|")


def render_docs() -> str:
    """Markdown reference of every setting (the content of docs/configuration.md)."""
    lines = [
        "# Configuration",
        "",
        "Generated by `royalty config docs` from `royalty/config.py`; do not edit by hand.",
        "",
        "Every setting is read, highest priority first, from: its environment variable; the",
        "table of the TOML file named by `ROYALTY_CONFIG_FILE` (or `./royalty.toml` when it",
        "exists); the default. Defaults are the embedded ones: nothing needs configuring to run",
        "the engine on one machine. List values in environment variables are JSON",
        '(`ROYALTY_CHAIN_RPC_URLS=\'["http://a:8545","http://b:8545"]\'`).',
        "",
    ]
    for table, cls in COMPONENTS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        lines += [
            f"## `[{table}]` — {doc}",
            "",
            "| env | TOML key | type | default | meaning |",
            "|---|---|---|---|---|",
        ]
        for name, info in cls.model_fields.items():
            if info.default_factory is not None:
                default: Any = info.default_factory()  # type: ignore[call-arg]
            else:
                default = info.default
            shown = str(default) if isinstance(default, Path) else repr(default)
            lines.append(
                f"| `{_env_name(cls, name)}` | `{name}` | `{_type_name(info.annotation)}` | "
                f"`{shown}` | {info.description or ''} |"
            )
        lines.append("")
    return "\n".join(lines)
