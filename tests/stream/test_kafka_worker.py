"""The stream worker on real Kafka, anvil and PostgreSQL: the ground-truth scenario produced into
`usage` and indexed into `chain` gives the scenario's expected accruals and rejects, exactly the
embedded runner's; held events wait for the watermark; a worker SIGKILLed mid-stream and
restarted loses and doubles nothing (on both engines; the rest on kafka-python, `stream.app`)."""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from kafka.errors import KafkaError, KafkaTimeoutError
from sqlalchemy.pool import NullPool

import stream.app as stream_app
from deploy.local import KafkaBroker
from metering.kafka_usage_publisher import KeyPartitions
from schemas import migrate
from schemas.accrual import Accrual
from schemas.codec import decode
from schemas.engine import create_engine
from schemas.tables import metadata
from settlement.chain import System
from stream.embedded import EmbeddedJoinRunner, numbered
from stream.epochs import EpochClock
from stream.sinks.sqlalchemy_accrual_store import JoinPosition, SqlAlchemyAccrualStore
from tests.contracts.contract_helpers import ChainHarness
from tests.indexer.support import index_to_head, make_follower
from tests.stream.scenario import EPOCH_S, Script, build
from tests.stream.test_embedded import _check
from tests.stream.worker_support import (
    ENGINES,
    ThreadWorker,
    Topics,
    assert_each_usage_id_once,
    decided_count,
    expected_totals,
    index_into_topic,
    produce_usage,
    spawn_engine,
    stop,
    topic_records,
    wait_for,
    worker_config,
)

pytestmark = [pytest.mark.kafka, pytest.mark.anvil, pytest.mark.postgres, pytest.mark.slow]


def _consumed(url: str, component: str) -> tuple[int, int]:
    """(messages consumed over all partitions, events held) per the committed checkpoints."""
    engine = create_engine(url, poolclass=NullPool)
    table = metadata.tables["checkpoints"]
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(table.c.position).where(table.c.component.like(f"{component}:%"))
            ).all()
    finally:
        engine.dispose()
    positions = [JoinPosition.from_json(row[0]) for row in rows]
    return sum(p.offset + 1 for p in positions), sum(len(p.held) for p in positions)


def _embedded_accruals(script: Script, system: System, chain: ChainHarness, url: str) -> list:  # type: ignore[type-arg]
    """The embedded runner's accruals on the same input, over its own freshly indexed DB."""
    migrate.upgrade(url)
    follower = make_follower(system, [chain.anvil.rpc_url], url, confirmations=0)
    try:
        index_to_head(follower)
    finally:
        follower.release_lease()
        follower.engine.dispose()
    engine = create_engine(url, poolclass=NullPool)
    runner = EmbeddedJoinRunner(
        engine, system.manifest.chain_id, script.key_ring, EpochClock(EPOCH_S, script.genesis)
    )
    runner.process(numbered(script.messages))
    with engine.connect() as connection:
        accruals = SqlAlchemyAccrualStore(connection).accruals()
    engine.dispose()
    return sorted(accruals, key=lambda a: a.usage_id)


def _worker_accruals(url: str) -> list:  # type: ignore[type-arg]
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as connection:
        accruals = SqlAlchemyAccrualStore(connection).accruals()
    engine.dispose()
    return sorted(accruals, key=lambda a: a.usage_id)


def _accrual_messages(servers: str, topic: str) -> tuple[int, list[tuple[int, bytes, Accrual]]]:
    """The `accruals` topic: its partition count, and every message as (partition, key,
    accrual)."""
    count, records = topic_records(servers, topic)
    return count, [(partition, key, decode(Accrual, value)) for partition, key, value in records]


def assert_accruals_on_key_partitions(servers: str, topic: str, expected: list[Accrual]) -> None:
    """The `accruals` topic holds every expected accrual (at least once), keyed by model id,
    on the partition Kafka's default partitioner picks for that key."""
    count, messages = _accrual_messages(servers, topic)
    assert {a.usage_id for _, _, a in messages} == {a.usage_id for a in expected}
    assert count > 1
    for partition, key, accrual in messages:
        assert key == str(accrual.model_id).encode()
        assert partition == KeyPartitions().of(key, count)


def _published_scenario(
    system: System, chain: ChainHarness, pg_url: str, broker: KafkaBroker, *, usage: bool = True
) -> tuple[Script, Topics, stream_app.WorkerConfig]:
    """The scenario in fresh topics, its chain finalized past every usage time (nothing is
    held), and a worker configuration for it; its usage messages produced unless `usage` is
    False."""
    migrate.upgrade(pg_url)
    servers, topics = broker.bootstrap_servers, Topics.unique()
    script = build(system, chain)
    chain.advance_time(script.last_time - chain.now() + 5)
    index_into_topic(system, chain, pg_url, servers, topics.chain)
    if usage:
        produce_usage(servers, topics.usage, script.messages)
    return script, topics, worker_config(script, servers, pg_url, system.manifest.chain_id, topics)


def _stop_runner(
    stop: threading.Event, runner: threading.Thread, worker: stream_app.KafkaJoinWorker
) -> None:
    """End a worker driven on a thread of the test's own: stop its loop, then close it."""
    stop.set()
    if runner.is_alive():
        runner.join(timeout=30)
    worker.close()


def test_worker_matches_scenario_and_embedded_runner(
    st_system: System,
    st_chain: ChainHarness,
    pg_url: str,
    kafka_broker: KafkaBroker,
    tmp_path: Path,
) -> None:
    migrate.upgrade(pg_url)
    servers, topics = kafka_broker.bootstrap_servers, Topics.unique()
    chain_id = st_system.manifest.chain_id
    script = build(st_system, st_chain)
    # The chain as scripted, not yet past the last usage times: the newest events are held.
    index_into_topic(st_system, st_chain, pg_url, servers, topics.chain)
    produce_usage(servers, topics.usage, script.messages)
    worker = ThreadWorker(worker_config(script, servers, pg_url, chain_id, topics)).start()
    try:
        wait_for(
            lambda: _consumed(pg_url, topics.component)[0] == len(script.messages),
            60,
            "every usage message consumed",
        )
        assert _consumed(pg_url, topics.component)[1] > 0, "no event waits for the chain"
        st_chain.advance_time(script.last_time - st_chain.now() + 5)
        index_into_topic(st_system, st_chain, pg_url, servers, topics.chain)
        engine = create_engine(pg_url, poolclass=NullPool)
        want = expected_totals(script)
        wait_for(lambda: decided_count(engine) == want, 60, f"{want} accruals / dead letters")
        assert _consumed(pg_url, topics.component) == (len(script.messages), 0)
        assert worker.worker.held
        assert sum(worker.worker.held.values()) == 0
    finally:
        worker.stop()
    _check(script, engine)
    engine.dispose()
    embedded = _embedded_accruals(script, st_system, st_chain, f"sqlite:///{tmp_path / 'e.db'}")
    assert _worker_accruals(pg_url) == embedded
    assert_accruals_on_key_partitions(servers, topics.accruals, embedded)


def test_unacknowledged_batch_in_flight_rolls_back_and_skips_nothing(
    st_system: System,
    st_chain: ChainHarness,
    pg_url: str,
    kafka_broker: KafkaBroker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kafka not acknowledging the outputs of the batch in flight, while records of another
    partition are already polled, rolls that batch back and seeks both its partitions and the
    other one back to their checkpoints: nothing is skipped, the result is the scenario's,
    every usage id billed once."""
    script, topics, config = _published_scenario(st_system, st_chain, pg_url, kafka_broker)
    # Polls of every partition's records at once, as under load.
    worker = stream_app.KafkaJoinWorker(dataclasses.replace(config, max_records=100))
    engine = create_engine(pg_url, poolclass=NullPool)
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    try:
        worker.start()
        usage = worker._usage
        assert usage is not None

        def poll() -> dict[Any, list[Any]]:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                records: dict[Any, list[Any]] = usage.poll(timeout_ms=200)
                if records:
                    return records
            raise AssertionError("no records polled")

        polled = poll()
        a = next(iter(polled))
        worker.step({a: polled.pop(a)})  # decided, inserts started: in flight
        assert worker._in_flight is not None
        while not set(polled) - {a}:  # until records of another partition are in hand
            for tp, records in poll().items():
                polled.setdefault(tp, []).extend(records)

        def refuse(producer: Any, futures: list[Any]) -> None:
            raise KafkaTimeoutError("injected: outputs not acknowledged")

        monkeypatch.setattr(stream_app, "confirm_sent", refuse)
        worker.step(polled)  # the batch in flight rolls back; the records in hand are dropped
        monkeypatch.undo()
        assert worker._in_flight is None
        assert decided_count(engine) == (0, 0)
        runner.start()
        want = expected_totals(script)
        wait_for(lambda: decided_count(engine) == want, 60, f"{want} accruals / dead letters")
        assert _consumed(pg_url, topics.component) == (len(script.messages), 0)
    finally:
        _stop_runner(stop, runner, worker)
    _check(script, engine)
    assert_each_usage_id_once(engine)
    engine.dispose()


def test_a_consumer_that_stops_fetching_is_replaced_and_skips_nothing(
    st_system: System,
    st_chain: ChainHarness,
    pg_url: str,
    kafka_broker: KafkaBroker,
) -> None:
    """A usage consumer whose polls come back empty at once, forever, while records wait (as
    kafka-python clients have been seen to do) is replaced after `stall_s`: the new consumer
    joins the group, resumes from the checkpoints, and the result is the scenario's, every
    usage id billed once. An idle topic, nothing waiting, replaces nothing."""
    script, topics, config = _published_scenario(st_system, st_chain, pg_url, kafka_broker)
    worker = stream_app.KafkaJoinWorker(dataclasses.replace(config, max_records=5, stall_s=2.0))
    engine = create_engine(pg_url, poolclass=NullPool)
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,), daemon=True)

    def replaced() -> float:
        value = stream_app.REGISTRY.get_sample_value("royalty_stream_usage_consumer_replaced_total")
        return value or 0.0

    before = replaced()
    try:
        worker.start()
        wedged = worker._usage
        assert wedged is not None
        real_poll = wedged.poll
        fetched, first = 0, len(script.messages) // 3

        def stops_fetching(timeout_ms: int = 0, **kwargs: Any) -> dict[Any, list[Any]]:
            # Some records first, then nothing, returned at once.
            nonlocal fetched
            if fetched >= first:
                return {}
            records: dict[Any, list[Any]] = real_poll(timeout_ms=timeout_ms, **kwargs)
            fetched += sum(len(r) for r in records.values())
            return records

        wedged.poll = stops_fetching  # type: ignore[method-assign]
        runner.start()
        wait_for(lambda: fetched >= first, 30, "the first records fetched")
        want = expected_totals(script)
        wait_for(lambda: decided_count(engine) == want, 90, f"{want} accruals / dead letters")
        assert worker._usage is not wedged
        assert replaced() == before + 1
        assert _consumed(pg_url, topics.component) == (len(script.messages), 0)
        # Nothing waits now: polls that bring nothing for longer than stall_s are just idle.
        current = worker._usage
        time.sleep(2 * 2.0 + 1)
        assert worker._usage is current
        assert replaced() == before + 1
        assert worker.waiting_records() == {}
        # A broker that cannot say the end offsets is no evidence of a stall.
        assert worker._chain is not None

        def unanswered(partitions: Any) -> dict[Any, int]:
            raise KafkaError("injected: no answer")

        worker._chain.end_offsets = unanswered  # type: ignore[method-assign]
        assert worker.waiting_records() == {}
    finally:
        _stop_runner(stop, runner, worker)
    _check(script, engine)
    assert_each_usage_id_once(engine)
    engine.dispose()


@pytest.mark.parametrize("module", ENGINES)
def test_worker_sigkilled_mid_stream_and_restarted(
    module: str,
    st_system: System,
    st_chain: ChainHarness,
    pg_url: str,
    kafka_broker: KafkaBroker,
    tmp_path: Path,
) -> None:
    migrate.upgrade(pg_url)
    servers, topics = kafka_broker.bootstrap_servers, Topics.unique()
    chain_id = st_system.manifest.chain_id
    script = build(st_system, st_chain)
    st_chain.advance_time(script.last_time - st_chain.now() + 5)
    index_into_topic(st_system, st_chain, pg_url, servers, topics.chain)
    engine = create_engine(pg_url, poolclass=NullPool)
    chunks = [script.messages[i::3] for i in range(3)]
    produced = 0
    for chunk in chunks:
        produce_usage(servers, topics.usage, chunk)
        produced += len(chunk)
        process = spawn_engine(module, script, servers, pg_url, chain_id, topics, tmp_path)
        before = sum(decided_count(engine))
        try:
            # Killed once it has committed something of this chunk: mid-stream, not at rest.
            wait_for(lambda b=before: sum(decided_count(engine)) > b, 60, "worker progress")  # type: ignore[misc]
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    process = spawn_engine(module, script, servers, pg_url, chain_id, topics, tmp_path)
    try:
        want = expected_totals(script)
        wait_for(lambda: decided_count(engine) == want, 90, f"{want} accruals / dead letters")
        assert _consumed(pg_url, topics.component) == (produced, 0)
    finally:
        stop(process, tmp_path / "worker-1.log")
    _check(script, engine)
    assert_each_usage_id_once(engine)
    engine.dispose()
