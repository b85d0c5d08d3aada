"""Kafka (KRaft, single node) smoke: a real produce/consume round trip with kafka-python."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic

from deploy.local import KafkaBroker

pytestmark = pytest.mark.kafka


def _round_trip(broker: KafkaBroker, topic: str, messages: list[bytes]) -> list[bytes]:
    producer = KafkaProducer(
        bootstrap_servers=broker.bootstrap_servers, acks="all", enable_idempotence=True
    )
    for value in messages:
        producer.send(topic, key=b"model-1", value=value)
    producer.flush(timeout=30)
    producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap_servers,
        group_id=f"g-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    received = [m.value for m in consumer]
    consumer.close()
    return received


def test_produce_consume_round_trip(kafka_broker: KafkaBroker) -> None:
    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap_servers)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    admin.close()
    sent = [f"event-{i}".encode() for i in range(50)]
    # One key: one partition, so the order is kept too.
    assert _round_trip(kafka_broker, topic, sent) == sent


@pytest.mark.slow
def test_broker_restart_keeps_data(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Stop + start is a real broker restart on the same ports and log dirs."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-restart"), partitions=1).start()
    try:
        topic = "restart-smoke"
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        admin.close()
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        producer.send(topic, value=b"before").get(timeout=30)
        producer.close()
        broker.restart()
        assert broker.running()
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        producer.send(topic, value=b"after").get(timeout=60)
        producer.close()
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap_servers,
            auto_offset_reset="earliest",
            consumer_timeout_ms=10_000,
        )
        assert [m.value for m in consumer] == [b"before", b"after"]
        consumer.close()
    finally:
        broker.stop()
