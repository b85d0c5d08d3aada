"""Kafka adapter of the `UsagePublisher` port: kafka-python, `acks=all`, idempotent, batched.

The producer is built lazily by `probe()` (the replayer's thread), never on the gateway's event
loop: kafka-python blocks while it bootstraps, and fails when no broker answers, and the
gateway must start and keep serving (into the spool) while Kafka is down. Once built, the same
producer survives broker restarts: its sender reconnects by itself.

Events are sent in batches (`send_batch`): send them all, flush once, and report how many from
the first were acked. kafka-python's failures end up as that count (and a log line); nothing
above this module imports kafka.

Records go to the partition kafka-python's default partitioner (Java's) would pick for their key,
computed once per key and partition count (`KeyPartitions`, used by the stream workers' output
producers too) and passed to `send()`. Left to itself, kafka-python's default partitioner lists
and sorts the topic's partitions and hashes the key on every send: 4.4 µs per record here,
against 0.8 µs for a send that names its partition.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from kafka.partitioner.default import murmur2

log = structlog.get_logger(__name__)


LEAN_CLIENT: dict[str, Any] = {"metrics_enabled": False}
"""kafka-python client options for every producer and consumer of metering and the workers:
no client-side metrics. Nothing reads them, and recording them costs CPU on every request:
a single event's produce-and-acknowledge round trip, which the gateway waits for on every
inference, took 570 µs of CPU with them and 522 µs without in the saved run of
`bench/kafka_roundtrip_bench.py` (0.70 and 0.65 ms p50), and 660-770 against 520-560 µs in
earlier alternated runs while the machine was slower."""


class KeyPartitions:
    """The partition of a record key, as kafka-python's default partitioner and Java's pick it
    (murmur2 of the key, sign bit cleared, modulo the partition count), memoized per key and
    partition count: keys here are model ids, a few hundred at most. Thread-safe."""

    def __init__(self, max_keys: int = 65_536) -> None:
        self.max_keys = max_keys
        self._memo: dict[tuple[bytes, int], int] = {}

    @staticmethod
    def count(producer: Any, topic: str) -> int:
        """How many partitions `topic` has, from the producer's metadata (0 when none are
        known). Waits for the metadata as `send()` would (`max_block_ms`) when the producer
        has none for the topic yet."""
        known = producer.partitions_for(topic)
        return len(known) if known else 0

    def send(
        self,
        producer: Any,
        topic: str,
        records: Iterable[tuple[bytes, bytes]],
        sent: list[Any],
    ) -> None:
        """Send `(key, value)` records to `topic`, each to its key's partition, appending
        each send's future to `sent` as it goes (so that a send that raises leaves the
        futures of those before it there)."""
        count = self.count(producer, topic)
        for key, value in records:
            sent.append(producer.send(topic, key=key, value=value, partition=self.of(key, count)))

    @staticmethod
    def pick(key: bytes, count: int) -> int:
        """The partition of `key` among `count` (more than 0), not memoized: for keys seen
        once (usage ids)."""
        partition: int = (murmur2(key) & 0x7FFFFFFF) % count
        return partition

    def of(self, key: bytes, count: int) -> int | None:
        """The partition of `key` among `count` (None when `count` is 0: kafka-python then
        partitions by itself, once it knows the topic)."""
        if count == 0:
            return None
        partition = self._memo.get((key, count))
        if partition is None:
            partition = self.pick(key, count)
            if len(self._memo) >= self.max_keys:
                self._memo.clear()
            self._memo[key, count] = partition
        return partition


@dataclass(frozen=True)
class KafkaPublisherConfig:
    """What the producer needs: where, which topic, and how to batch."""

    bootstrap_servers: str
    topic: str
    client_id: str = "royalty-metering"
    linger_ms: int = 0
    batch_bytes: int = 256 * 1024
    compression: Literal["lz4", "gzip", "none"] = "lz4"
    delivery_timeout_ms: int = 5000
    partitions: int = 3
    create_topic: bool = True
    probe_timeout_ms: int = 2000


class KafkaUsagePublisher:
    """Publishes usage events to one Kafka topic (thread-safe)."""

    def __init__(self, config: KafkaPublisherConfig) -> None:
        self.config = config
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()
        self._partitions = KeyPartitions()

    def _producer_options(self) -> dict[str, Any]:
        c = self.config
        # kafka-python requires delivery_timeout >= linger + request_timeout.
        request_timeout = max(500, (c.delivery_timeout_ms - c.linger_ms) * 2 // 3)
        return {
            "bootstrap_servers": c.bootstrap_servers.split(","),
            "client_id": c.client_id,
            "acks": "all",
            "enable_idempotence": True,
            "compression_type": None if c.compression == "none" else c.compression,
            "linger_ms": c.linger_ms,
            "batch_size": c.batch_bytes,
            "delivery_timeout_ms": c.delivery_timeout_ms,
            "request_timeout_ms": request_timeout,
            # A blocked send() would stall the gateway's event loop: fail fast instead, the
            # event then goes to the spool.
            "max_block_ms": 500,
            "bootstrap_timeout_ms": c.probe_timeout_ms,
            "reconnect_backoff_max_ms": 1000,
            **LEAN_CLIENT,
        }

    def _ensure_topic(self) -> None:
        c = self.config
        admin = KafkaAdminClient(
            bootstrap_servers=c.bootstrap_servers.split(","),
            client_id=f"{c.client_id}-admin",
            request_timeout_ms=c.probe_timeout_ms,
            bootstrap_timeout_ms=c.probe_timeout_ms,
        )
        try:
            if c.create_topic and c.topic not in set(admin.list_topics()):
                try:
                    admin.create_topics(
                        [NewTopic(c.topic, num_partitions=c.partitions, replication_factor=1)]
                    )
                    log.info("created usage topic", topic=c.topic, partitions=c.partitions)
                except TopicAlreadyExistsError:
                    pass
            else:
                admin.describe_topics([c.topic])
        finally:
            admin.close()

    def probe(self) -> bool:
        """True when a broker answers a metadata round trip now (builds the producer).

        kafka-python answers `partitions_for` from its cache even while every broker is down,
        so the probe asks the cluster through an admin client instead.
        """
        try:
            self._ensure_topic()
            with self._lock:
                if self._producer is None:
                    self._producer = KafkaProducer(**self._producer_options())
                producer = self._producer
            return bool(producer.partitions_for(self.config.topic))
        except (KafkaError, OSError) as exc:
            log.debug("kafka probe failed", error=str(exc))
            return False

    def send_batch(self, records: Sequence[tuple[bytes, bytes]], timeout_s: float) -> int:
        """Send `records` in order and wait for them; return how many, from the first, Kafka
        acked (the replayer may move its cursor over exactly those). No callbacks: one flush,
        then each record's future is read."""
        producer = self._producer
        if producer is None:
            return 0
        futures: list[Any] = []
        try:
            self._partitions.send(producer, self.config.topic, records, futures)
            producer.flush(timeout=timeout_s)
        except (KafkaError, AssertionError, BufferError) as exc:
            log.warning("kafka batch send incomplete", error=str(exc))
        acked = 0
        for future in futures:
            if not future.succeeded():
                break
            acked += 1
        if acked < len(records):
            self._replace(producer)
        return acked

    def _replace(self, producer: Any) -> None:
        """Drop a producer that failed a batch; the next `probe()` builds a fresh one.

        After a broker restart, kafka-python's idempotent producer can keep timing out every
        batch (its producer id reset under records of the old one); a fresh producer gets a
        new id. Records the old one still held are in the spool: a resend may duplicate an
        event, never lose it (duplicates are removed downstream by id).
        """
        failed: Any = producer
        with self._lock:
            current: Any = self._producer
            if current is not failed:
                return
            self._producer = None
        log.warning("kafka producer replaced after an incomplete batch")
        # What it still holds is in the spool: closed without delivering it.
        discard_producer(failed)

    def flush(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for everything queued to be acked or failed."""
        producer = self._producer
        if producer is None:
            return
        try:
            producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            log.warning("kafka flush incomplete", error=str(exc))

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush and close the producer."""
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.close(timeout=timeout_s)
        except KafkaError as exc:
            # kafka-python's close() raises when its flush times out; what was not acked is
            # in the spool (a batch not acked in full is spooled from its first unacked event).
            log.warning("kafka producer closed with events in flight", error=str(exc))


def discard_producer(producer: Any) -> None:
    """Close a kafka-python producer without delivering what it still holds: its sender is
    stopped first (their futures fail), since `close()` flushes and, with records it cannot
    deliver, gives up without closing; then it releases its sockets and threads."""
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
        sender.join(5)
    try:
        producer.close(timeout=0)
    except (KafkaError, AssertionError) as exc:
        log.debug("force-closing a producer", error=str(exc))
