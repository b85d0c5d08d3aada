"""The Kafka adapter of the durable producer, on the session's real broker: records land on the
partition Kafka's own clients pick for their key, since the stream join relies on every event
of a model reaching the same partition whoever produced it."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from deploy.local import KafkaBroker
from metering.kafka_usage_publisher import (
    KafkaPublisherConfig,
    KafkaUsagePublisher,
    KeyPartitions,
)
from tests.metering.harness import create_topic


@pytest.mark.parametrize(
    ("key", "partition"),
    # The partitions Kafka's Java client picks among 1,000 (kafka-python's test vectors).
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_partition_of_a_key_is_the_java_clients(key: bytes, partition: int) -> None:
    partitions = KeyPartitions()
    assert partitions.of(key, 1000) == partition
    assert partitions.of(key, 1000) == partition  # memoized: the same answer


def test_partition_follows_the_partition_count() -> None:
    partitions = KeyPartitions(max_keys=2)
    by_count = {count: partitions.of(b"123456789", count) for count in (1, 3, 7, 1000)}
    assert by_count == {1: 0, 3: 0, 7: 1, 1000: 566}
    assert partitions.of(b"1", 0) is None  # unknown: kafka-python partitions itself
    assert len(partitions._memo) <= 2


def _partitions_by_key(bootstrap: str, topic: str, expected: int) -> dict[bytes, set[int]]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=500
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        consumer.seek_to_beginning()
        seen: dict[bytes, set[int]] = {}
        count = 0
        deadline = time.monotonic() + 30
        while count < expected and time.monotonic() < deadline:
            for message in consumer:
                assert message.key is not None
                seen.setdefault(message.key, set()).add(message.partition)
                count += 1
        assert count == expected
        return seen
    finally:
        consumer.close()


def test_records_land_where_kafkas_default_partitioner_puts_them(
    kafka_broker: KafkaBroker,
) -> None:
    bootstrap = kafka_broker.bootstrap_servers
    ours, theirs = create_topic(bootstrap, partitions=5), create_topic(bootstrap, partitions=5)
    keys = [str(model).encode() for model in range(1, 61)] + [b"", b"\xff" * 40]
    records = [(key, b"event %d" % i) for i in range(3) for key in keys]

    publisher = KafkaUsagePublisher(KafkaPublisherConfig(bootstrap, ours, create_topic=False))
    try:
        assert publisher.probe()
        assert publisher.send_batch(records, timeout_s=30) == len(records)
    finally:
        publisher.close()
    plain = KafkaProducer(bootstrap_servers=bootstrap)  # kafka-python's own partitioner
    try:
        for key, value in records:
            plain.send(theirs, key=key, value=value)
        plain.flush(30)
    finally:
        plain.close()

    placed = _partitions_by_key(bootstrap, ours, len(records))
    assert placed == _partitions_by_key(bootstrap, theirs, len(records))
    assert all(len(partitions) == 1 for partitions in placed.values())
    assert len({p for partitions in placed.values() for p in partitions}) == 5
