"""The kafka-python worker waits for an unreachable broker at start (backoff until a deadline)
instead of dying on the first connection error, and says clearly when the deadline passes; once
running, it rides out a broker restart and outputs Kafka did not acknowledge."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.errors import KafkaConnectionError, KafkaTimeoutError
from sqlalchemy.pool import NullPool

import stream.app as stream_app
from deploy.local import KafkaBroker
from deploy.local.process import free_port
from schemas import migrate
from schemas.engine import create_engine
from stream.app import KafkaJoinWorker, WorkerConfig, until_reachable
from stream.errors import BrokerUnavailable, Retryable
from tests.stream.worker_support import (
    ThreadWorker,
    Topics,
    decided_count,
    keyless_worker_config,
    produce_usage,
    wait_for,
)


def _config(servers: str, url: str, timeout_s: float) -> WorkerConfig:
    return keyless_worker_config(servers, url, Topics.unique(), connect_timeout_s=timeout_s)


def test_until_reachable_retries_then_gives_up() -> None:
    failures = iter([KafkaConnectionError("down"), KafkaConnectionError("still down")])

    def flaky(_left: float) -> str:
        error = next(failures, None)
        if error is not None:
            raise error
        return "up"

    assert until_reachable("reach it", time.monotonic() + 30, flaky) == "up"

    def down(_left: float) -> str:
        raise KafkaConnectionError("down")

    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="could not reach it") as caught:
        until_reachable("reach it", time.monotonic() + 0.5, down)
    assert isinstance(caught.value, Retryable)
    assert time.monotonic() - started < 5


def test_start_against_no_broker_fails_clearly_at_the_deadline(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    servers = f"127.0.0.1:{free_port()}"  # nothing listens there
    worker = KafkaJoinWorker(_config(servers, sqlite_url, timeout_s=2))
    started = time.monotonic()
    try:
        with pytest.raises(BrokerUnavailable, match="Kafka unreachable"):
            worker.start()
    finally:
        worker.close()
    assert time.monotonic() - started < 20


@pytest.mark.slow
def test_worker_waits_for_a_broker_that_starts_late(sqlite_url: str, tmp_path: Path) -> None:
    migrate.upgrade(sqlite_url)
    broker = KafkaBroker(tmp_path / "kafka")  # its ports are chosen, nothing listens yet
    worker = KafkaJoinWorker(_config(broker.bootstrap_servers, sqlite_url, timeout_s=180))
    errors: list[BaseException] = []

    def start() -> None:
        try:
            worker.start()
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=start, daemon=True)
    thread.start()
    try:
        time.sleep(3)
        assert thread.is_alive()  # still waiting,
        assert not errors  # not dead
        broker.start()
        thread.join(timeout=150)
        assert not thread.is_alive()
        assert not errors, errors
        assert worker.chain is not None
        # The broker gone again: looking up a topic's partitions retries, then says so.
        consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers.split(","))
        broker.stop()
        with pytest.raises((BrokerUnavailable, RuntimeError)):
            KafkaJoinWorker._wait_for_partitions(consumer, "never-created", timeout_s=3)
        consumer.close()
    finally:
        worker.close()
        broker.stop()


@pytest.mark.slow
def test_running_worker_rides_out_a_broker_restart_and_a_failed_flush(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once running, a broker that goes away is polled again with backoff (kafka-python raises
    connection errors out of `poll()`), and a batch whose outputs Kafka does not acknowledge is
    rolled back and decided again: the worker thread never dies, every message is decided once."""
    migrate.upgrade(sqlite_url)
    broker = KafkaBroker(tmp_path / "kafka").start()
    config = _config(broker.bootstrap_servers, sqlite_url, timeout_s=120)
    engine = create_engine(sqlite_url, poolclass=NullPool)
    flushes = {"failed": 0}
    real_confirm = stream_app.confirm_sent

    def confirm_once_failing(producer: Any, futures: list[Any]) -> None:
        if futures and not flushes["failed"]:
            flushes["failed"] += 1
            raise KafkaTimeoutError("outputs not acknowledged (injected)")
        real_confirm(producer, futures)

    monkeypatch.setattr(stream_app, "confirm_sent", confirm_once_failing)
    worker = ThreadWorker(config).start()
    try:
        usage = lambda: worker.worker._usage  # noqa: E731
        wait_for(
            lambda: usage() is not None and bool(usage().assignment()), 60, "partitions assigned"
        )
        # kafka-python raises connection errors out of `poll()` while the coordinator is away.
        consumer, polls = usage(), {"failed": 0}
        real_poll = consumer.poll

        def poll_once_failing(*args: Any, **kwargs: Any) -> Any:
            if not polls["failed"]:
                polls["failed"] += 1
                raise KafkaConnectionError("socket disconnected (injected)")
            return real_poll(*args, **kwargs)

        consumer.poll = poll_once_failing
        # Malformed usage: each one is decided as a dead letter (no key ring, no chain needed).
        produce_usage(broker.bootstrap_servers, config.usage_topic, [b"{bad"] * 3)
        wait_for(lambda: decided_count(engine) == (0, 3), 90, "3 dead letters")
        assert flushes["failed"] == 1  # the first batch was rolled back, then decided again
        assert polls["failed"] == 1
        broker.stop()
        time.sleep(4)  # polls fail meanwhile
        broker.start()
        produce_usage(broker.bootstrap_servers, config.usage_topic, [b"[]"] * 2)
        wait_for(lambda: decided_count(engine) == (0, 5), 120, "5 dead letters")
    finally:
        try:
            worker.stop()  # re-raises what the worker thread died of, if it did
        finally:
            engine.dispose()
            broker.stop()
