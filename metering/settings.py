"""Settings glue: from `royalty.config.Settings` to metering's objects.

Resolves the embedded defaults of metering paths (under `<data_dir>`) and builds the billing
table, the Kafka publisher configuration and the durable producer. Everything fails fast with
a `ConfigurationError` naming the setting to fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from metering.billing import BillingTable, ModelBilling
from metering.durable import DurableProducer
from metering.errors import ConfigurationError
from metering.kafka_usage_publisher import KafkaPublisherConfig, KafkaUsagePublisher
from metering.metrics import MeteringMetrics
from metering.spool import FileSpool
from royalty.config import MeteringSettings, Settings


@dataclass(frozen=True)
class MeteringPaths:
    """Where metering keeps its files, with embedded defaults resolved."""

    signing_key: Path
    key_ring: Path
    api_keys: Path
    operators: Path
    spool_dir: Path
    licenses: Path | None


def resolve_paths(settings: Settings) -> MeteringPaths:
    """Metering's files: the configured paths, else their defaults under `<data_dir>`."""
    m = settings.metering
    base = settings.engine.data_dir.resolve() / "metering"
    return MeteringPaths(
        signing_key=m.signing_key_file or base / "signing-key.json",
        key_ring=m.key_ring_file or base / "keyring.json",
        api_keys=m.api_keys_file or base / "api-keys.json",
        operators=m.operators_file or base / "operators.json",
        spool_dir=m.spool_dir or settings.engine.data_dir.resolve() / "spool" / m.node_id,
        licenses=m.licenses_file,
    )


def billing_table(metering: MeteringSettings) -> BillingTable:
    """The metered models of the configuration."""
    return BillingTable(
        {
            name: ModelBilling(
                name=name,
                model_id=int(model.model_id),
                metric=model.metric,
                units_output=model.units_output,
                batch_input=model.batch_input,
            )
            for name, model in metering.models.items()
        }
    )


def pepper(metering: MeteringSettings) -> bytes:
    """The API key pepper; `ConfigurationError` when unset."""
    if metering.api_key_pepper is None or not metering.api_key_pepper.get_secret_value():
        raise ConfigurationError(
            "set ROYALTY_METERING_API_KEY_PEPPER (a long random secret) to use API keys"
        )
    return metering.api_key_pepper.get_secret_value().encode()


def publisher_config(settings: Settings) -> KafkaPublisherConfig:
    """The Kafka producer's configuration."""
    m = settings.metering
    return KafkaPublisherConfig(
        bootstrap_servers=settings.kafka.bootstrap_servers,
        topic=settings.kafka.usage_topic,
        client_id=f"{settings.kafka.client_id}-{m.node_id}",
        linger_ms=m.kafka_linger_ms,
        batch_bytes=m.kafka_batch_bytes,
        compression=m.kafka_compression,
        delivery_timeout_ms=m.kafka_delivery_timeout_ms,
        partitions=settings.kafka.partitions,
        create_topic=m.create_topic,
    )


def build_producer(
    settings: Settings, metrics: MeteringMetrics | None = None, spool_dir: Path | None = None
) -> DurableProducer:
    """The durable producer of this node (not started)."""
    m = settings.metering
    spool = FileSpool(
        spool_dir or resolve_paths(settings).spool_dir,
        max_bytes=m.spool_max_bytes,
        segment_bytes=m.spool_segment_bytes,
    )
    return DurableProducer(
        KafkaUsagePublisher(publisher_config(settings)),
        spool,
        write_ahead=m.delivery == "spool",
        metrics=metrics,
        alarm_ratio=m.spool_alarm_ratio,
        delivery_timeout_s=m.kafka_delivery_timeout_ms / 1000,
    )
