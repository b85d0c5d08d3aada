"""Publication of the `chain` topic: the port, a Kafka adapter and an in-memory one.

`publish` returns only when every message is acknowledged (Kafka: `acks=all`, idempotent
producer) and raises `PublishError` otherwise; the relay (`indexer.relay`) deletes outbox rows
only after it returns, so publication is at-least-once and, with deterministic ids and
canonical bytes, deduplicable by consumers on the CloudEvent `(type, id)`.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from indexer import metrics
from indexer.errors import PublishError
from indexer.messages import TYPE_HEADER, ChainMessage

log = structlog.get_logger(__name__)


def _count_published(messages: Sequence[ChainMessage]) -> None:
    for message_type, count in Counter(m.message_type for m in messages).items():
        metrics.PUBLISHED.labels(message_type).inc(count)


class ChainPublisher(Protocol):
    """Where the indexer's messages go (Kafka, or the embedded in-process bus)."""

    def publish(self, messages: Sequence[ChainMessage]) -> None:
        """Publish `messages` in order; return once all are acknowledged, else raise
        `PublishError`."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass
class MemoryChainPublisher:
    """The embedded bus: keeps every message and calls subscribers synchronously."""

    messages: list[ChainMessage] = field(default_factory=list)
    subscribers: list[Callable[[ChainMessage], None]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, messages: Sequence[ChainMessage]) -> None:
        """Append and deliver."""
        with self._lock:
            self.messages.extend(messages)
            for message in messages:
                for subscriber in self.subscribers:
                    subscriber(message)
        _count_published(messages)

    def close(self) -> None:
        """Nothing to release."""


@dataclass(frozen=True)
class KafkaChainConfig:
    """Where and how to publish the `chain` topic."""

    bootstrap_servers: str
    topic: str = "chain"
    partitions: int = 3
    client_id: str = "royalty-indexer"
    delivery_timeout_ms: int = 30_000
    create_topic: bool = True


class KafkaChainPublisher:
    """Kafka adapter of `ChainPublisher` (kafka-python)."""

    def __init__(self, config: KafkaChainConfig) -> None:
        self.config = config
        self._producer: Any = None
        self._partitions: list[int] = []

    def _connect(self) -> Any:
        from kafka import KafkaProducer
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        c = self.config
        servers = c.bootstrap_servers.split(",")
        if c.create_topic:
            admin = KafkaAdminClient(bootstrap_servers=servers, client_id=f"{c.client_id}-admin")
            try:
                if c.topic not in set(admin.list_topics()):
                    # Another indexer may create it at the same time: either way it exists.
                    with contextlib.suppress(TopicAlreadyExistsError):
                        admin.create_topics(
                            [NewTopic(c.topic, num_partitions=c.partitions, replication_factor=1)]
                        )
            finally:
                admin.close()
        producer = KafkaProducer(
            bootstrap_servers=servers,
            client_id=c.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            batch_size=512 * 1024,
            compression_type="lz4",
            delivery_timeout_ms=c.delivery_timeout_ms,
            request_timeout_ms=c.delivery_timeout_ms * 2 // 3,
        )
        partitions = producer.partitions_for(c.topic)
        if not partitions:
            producer.close()
            raise PublishError(f"topic {c.topic} has no partitions")
        self._partitions = sorted(partitions)
        return producer

    def publish(self, messages: Sequence[ChainMessage]) -> None:
        """Send, then wait for every acknowledgement."""
        from kafka.errors import KafkaError

        try:
            if self._producer is None:
                self._producer = self._connect()
            producer = self._producer
            futures = []
            for m in messages:
                headers = [(TYPE_HEADER, m.message_type.encode("ascii"))]
                key = m.key.encode("utf-8")
                if m.broadcast:
                    for partition in self._partitions:
                        futures.append(
                            producer.send(
                                self.config.topic,
                                key=key,
                                value=m.value,
                                headers=headers,
                                partition=partition,
                            )
                        )
                else:
                    futures.append(
                        producer.send(self.config.topic, key=key, value=m.value, headers=headers)
                    )
            producer.flush(timeout=self.config.delivery_timeout_ms / 1000)
            for future in futures:
                future.get(timeout=0)
        except (KafkaError, OSError, AssertionError) as exc:
            raise PublishError(f"kafka publish failed: {exc}") from exc
        _count_published(messages)

    def close(self) -> None:
        """Flush and close the producer."""
        from kafka.errors import KafkaError

        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=5)
            except KafkaError as exc:
                log.warning("kafka producer closed with messages in flight", error=str(exc))
