"""The faust worker (`python -m stream.faust_app`) on real Kafka, anvil and PostgreSQL: the
ground-truth scenario gives the scenario's accruals and rejects, exactly the embedded runner's;
held events wait for the watermark; a failing database stops it. (SIGKILL, rebalance and broker
restart: `test_kafka_worker.py` and `test_worker_rebalance.py`, on both engines.)"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka.partitioner.default import murmur2
from sqlalchemy.pool import NullPool

from deploy.local import KafkaBroker
from deploy.local.process import free_port
from schemas import migrate
from schemas.accrual import DeadLetter
from schemas.codec import decode
from schemas.engine import create_engine
from schemas.tables import metadata
from settlement.chain import System
from stream.faust_app import FaustJoinWorker, ensure_topics
from stream.topic_chain_view import TopicChainView
from tests.contracts.contract_helpers import ChainHarness
from tests.stream.scenario import Script, build
from tests.stream.test_embedded import _check
from tests.stream.test_kafka_worker import (
    _consumed,
    _embedded_accruals,
    _worker_accruals,
    assert_accruals_on_key_partitions,
)
from tests.stream.worker_support import (
    Topics,
    assert_each_usage_id_once,
    decided_count,
    expected_totals,
    index_into_topic,
    keyless_worker_config,
    produce_usage,
    spawn_engine,
    stop,
    topic_records,
    wait_for,
)

pytestmark = [pytest.mark.kafka, pytest.mark.anvil, pytest.mark.postgres, pytest.mark.slow]


def test_faust_worker_matches_scenario_and_embedded_runner(
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
    process = spawn_engine("stream.faust_app", script, servers, pg_url, chain_id, topics, tmp_path)
    log = tmp_path / "worker-1.log"
    engine = create_engine(pg_url, poolclass=NullPool)
    try:
        wait_for(
            lambda: _consumed(pg_url, topics.component)[0] == len(script.messages),
            60,
            "every usage message consumed",
        )
        assert _consumed(pg_url, topics.component)[1] > 0, "no event waits for the chain"
        st_chain.advance_time(script.last_time - st_chain.now() + 5)
        index_into_topic(st_system, st_chain, pg_url, servers, topics.chain)
        want = expected_totals(script)
        wait_for(lambda: decided_count(engine) == want, 60, f"{want} accruals / dead letters")
        assert _consumed(pg_url, topics.component) == (len(script.messages), 0)
        assert process.poll() is None, log.read_text()[-3000:]
        assert stop(process, log) == 0, "no graceful stop on SIGTERM"
    finally:
        stop(process, log)
    _check(script, engine)
    assert_each_usage_id_once(engine)
    embedded = _embedded_accruals(script, st_system, st_chain, f"sqlite:///{tmp_path / 'e.db'}")
    assert _worker_accruals(pg_url) == embedded
    assert_accruals_on_key_partitions(servers, topics.accruals, embedded)
    # Every reject on `usage.dead-letter`, keyed by usage id, on that key's partition.
    count, records = topic_records(servers, topics.dead_letter)
    letters = [(partition, key, decode(DeadLetter, value)) for partition, key, value in records]
    for partition, key, letter in letters:
        assert key == (letter.usage_id or "").encode()
        assert partition == (murmur2(key) & 0x7FFFFFFF) % count
    table = metadata.tables["dead_letters"]
    with engine.connect() as connection:
        rows = connection.execute(sa.select(table.c.usage_id, table.c.reason)).all()
    assert Counter((lt.usage_id, lt.reason.value) for _, _, lt in letters) == Counter(
        (usage_id, reason) for usage_id, reason in rows
    )
    engine.dispose()


def test_faust_worker_stops_on_a_failing_database(
    pg_url: str, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    # Not migrated: the first checkpoint read fails. The worker must stop with an error (its
    # restart re-reads from the checkpoint), never skip the batch and go on.
    servers, topics = kafka_broker.bootstrap_servers, Topics.unique()
    produce_usage(servers, topics.usage, [b"{not json"])
    process = spawn_engine("stream.faust_app", Script(), servers, pg_url, 1, topics, tmp_path)
    try:
        code = process.wait(timeout=60)
    finally:
        stop(process, tmp_path / "worker-1.log")
    assert code != 0
    assert "checkpoints" in (tmp_path / "worker-1.log").read_text()


@contextlib.contextmanager
def _kafka_unreachable(worker: FaustJoinWorker) -> Iterator[None]:
    """The worker's outputs go to a port nobody listens on (a broker gone): its producer
    cannot start, nothing is acknowledged."""
    servers = worker.outputs.bootstrap_servers
    worker.outputs.bootstrap_servers = f"127.0.0.1:{free_port()}"
    try:
        yield
    finally:
        worker.outputs.bootstrap_servers = servers


def _ready_worker(servers: str, url: str) -> tuple[FaustJoinWorker, Topics]:
    """A faust worker on fresh topics and a migrated database, its chain view empty (the
    takes' malformed events need no chain state), as after its start."""
    migrate.upgrade(url)
    t = Topics.unique()
    config = keyless_worker_config(servers, url, t)
    ensure_topics(config)  # what the worker does first
    worker = FaustJoinWorker(config)
    worker.chain = TopicChainView(31337, 1)
    return worker, t


def test_faust_batch_with_unacknowledged_outputs_is_rolled_back_and_read_again(
    kafka_broker: KafkaBroker, sqlite_url: str
) -> None:
    """Outputs Kafka does not acknowledge (a broker restarting) roll the take back: nothing
    is committed, each of its partitions is sent back to its checkpoint and a fresh producer
    takes the next try, which decides the batches once, in one transaction; its outputs are
    on the topics."""
    from faust.types import TP

    import stream.faust_app as faust_app

    worker, t = _ready_worker(kafka_broker.bootstrap_servers, sqlite_url)

    p0, p1 = TP(t.usage, 0), TP(t.usage, 1)
    # Malformed events: dead letters, no chain state needed. One take, two partitions.
    take = [(p0, [(0, b"{bad"), (1, b"[]")], False), (p1, [(0, b"nope")], False)]
    engine = create_engine(sqlite_url, poolclass=NullPool)

    async def decide(items: object) -> object:
        # As `process` does: the join's thread, the outputs produced on this loop.
        loop = asyncio.get_running_loop()
        worker.outputs.attach(loop)
        return await loop.run_in_executor(None, worker._decide, items)

    async def scenario() -> None:
        with _kafka_unreachable(worker):
            failed = await decide(take)
        # The whole take rolled back: both partitions go back to their checkpoints.
        assert failed == {p0: faust_app._Seek(0, gap=False), p1: faust_app._Seek(0, gap=False)}
        assert not worker.outputs.started  # the failed producer was dropped
        assert decided_count(engine) == (0, 0)
        done = await decide(take)
        assert isinstance(done, dict)
        assert all(isinstance(r, faust_app._Decided) for r in done.values())
        assert worker.outputs.started
        assert decided_count(engine) == (0, 3)
        # Read again (a seek delivered them twice): nothing is decided twice; a partition
        # whose batch starts past its checkpoint + 1 is sought back, the other one decided.
        again = await decide([(p0, [(1, b"[]"), (2, b"{")], False), (p1, [(5, b"x")], False)])
        assert isinstance(again, dict)
        assert again[p1] == faust_app._Seek(1, gap=True, first=5)
        assert isinstance(again[p0], faust_app._Decided)
        assert decided_count(engine) == (0, 4)
        await worker.outputs.close()

    try:
        asyncio.run(scenario())
        # Every dead letter committed was acknowledged on its topic first: the four of the
        # two takes that committed, none of the rolled-back one.
        _, letters = topic_records(kafka_broker.bootstrap_servers, t.dead_letter)
        assert len(letters) == 4
    finally:
        worker.close()
        engine.dispose()


def test_faust_take_in_flight_commits_with_the_next_step_or_rolls_back_with_it(
    kafka_broker: KafkaBroker, pg_url: str
) -> None:
    """On PostgreSQL a take stays in flight (its inserts running, its outputs on their way)
    until the next step has parsed its own records: nothing of it is visible before. Outputs
    Kafka did not acknowledge roll it back there, and the next take's records of the same
    partitions are sought back with it (they follow the rolled-back ones); the others are
    decided. Every record is decided once in the end."""
    from faust.types import TP

    import stream.faust_app as faust_app

    worker, t = _ready_worker(kafka_broker.bootstrap_servers, pg_url)
    p0, p1, p2 = TP(t.usage, 0), TP(t.usage, 1), TP(t.usage, 2)
    # Malformed events: dead letters, no chain state needed.
    first = [(p0, [(0, b"{bad"), (1, b"[]")], None), (p1, [(0, b"nope")], None)]
    engine = create_engine(pg_url, poolclass=NullPool)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        worker.outputs.attach(loop)

        async def step(items: object) -> list[tuple[TP, object]]:
            return await loop.run_in_executor(None, worker._step, items)

        with _kafka_unreachable(worker):
            results = await step(first)
            flight = worker._in_flight
            assert flight is not None
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(flight.outputs)  # fails: no broker answers
        assert [r.committed for _, r in results if isinstance(r, faust_app._Decided)] == [
            False,
            False,
        ]
        assert decided_count(engine) == (0, 0)  # in flight: not committed
        # The next step: p0's new record follows the rolled-back take; p2 is new.
        results = await step([(p0, [(2, b"{")], None), (p2, [(0, b"x")], None)])
        assert results[:2] == [
            (p0, faust_app._Seek(0, gap=False)),
            (p1, faust_app._Seek(0, gap=False)),
        ]
        # p0's new record is not taken for a gap (that would count towards a hole): sought
        # back with the rolled-back take; only p2 is decided.
        assert results[2] == (p0, faust_app._Seek(0, gap=False))
        assert len(results) == 4
        assert results[3][0] == p2
        assert isinstance(results[3][1], faust_app._Decided)
        assert decided_count(engine) == (0, 0)
        # Read again from the checkpoints: decided with the next step, p2's take committed.
        again = [(p0, [(0, b"{bad"), (1, b"[]"), (2, b"{")], None), (p1, [(0, b"nope")], None)]
        results = await step(again)
        assert [tp for tp, r in results if isinstance(r, faust_app._Committed)] == [p2]
        assert decided_count(engine) == (0, 1)
        results = await loop.run_in_executor(None, worker._settle_in_flight)
        assert sorted(tp.partition for tp, r in results if isinstance(r, faust_app._Committed)) == [
            0,
            1,
        ]
        assert worker._in_flight is None
        assert decided_count(engine) == (0, 5)
        await worker.outputs.close()

    try:
        asyncio.run(scenario())
        # Each committed dead letter was acknowledged on its topic first.
        _, letters = topic_records(kafka_broker.bootstrap_servers, t.dead_letter)
        assert len(letters) == 5
    finally:
        worker.close()
        engine.dispose()


def test_faust_shutdown_lets_the_take_in_flight_finish_then_stops_producing(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust's shutdown signal waits for the take in flight (its outputs need the producer),
    then closes the output producer; no take starts after it."""
    from faust.types import TP

    t = Topics.unique()
    worker = FaustJoinWorker(keyless_worker_config(f"127.0.0.1:{free_port()}", sqlite_url, t))

    async def scenario() -> None:
        await worker._batch_lock.acquire()  # a take in flight
        shutdown = asyncio.ensure_future(worker.app.on_before_shutdown.send())
        await asyncio.sleep(0.2)
        assert not shutdown.done()
        assert not worker.outputs.closed
        worker._batch_lock.release()
        await asyncio.wait_for(shutdown, 5)
        assert worker.outputs.closed
        # No take is decided any more, even of an assigned partition.
        tp = TP(t.usage, 0)
        monkeypatch.setattr(worker.app.consumer, "assignment", lambda: {tp})
        worker.chain = TopicChainView(31337, 1)
        decided: list[object] = []
        monkeypatch.setattr(worker, "_step", lambda items: decided.append(items) or [])
        await worker.process({tp: [(0, b"{bad")]})
        assert decided == []

    try:
        asyncio.run(scenario())
    finally:
        worker.close()


def test_faust_usage_fetches_wait_briefly_for_idle_partitions(
    kafka_broker: KafkaBroker, sqlite_url: str
) -> None:
    """The group consumer faust builds for the worker fetches with `FETCH_MAX_WAIT_MS`, not
    faust's 1,500 ms: a fetch that asks only for an idle partition holds up the busy ones'
    next fetch (aiokafka sends one at a time per broker) for that long."""
    import stream.faust_app as faust_app

    t = Topics.unique()
    config = keyless_worker_config(kafka_broker.bootstrap_servers, sqlite_url, t)
    worker = faust_app.FaustJoinWorker(config)

    async def started_fetcher_wait() -> int:
        thread = worker.app.consumer._new_consumer_thread()
        consumer = thread._create_worker_consumer(worker.app.transport)
        await consumer.start()
        try:
            return int(consumer._fetcher._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    try:
        assert asyncio.run(started_fetcher_wait()) == faust_app.FETCH_MAX_WAIT_MS < 1500
    finally:
        worker.close()


def test_faust_records_queued_before_a_seek_back_are_never_taken_for_a_hole(
    kafka_broker: KafkaBroker, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rolled-back take seeks its partitions back to their checkpoints, but fetches already
    on their way still deliver records from past them: the next takes still start further on
    (10, 20, 30, ...), as if offsets were missing. Those are not holes: a hole starts every
    retry at the same offset. Only three gaps at the same offset are decided; records fetched
    before a seek are read again from the checkpoint, and every offset is decided once. A real
    hole (every read from the checkpoint starts at the same offset past it) is decided the
    third time."""
    from faust.types import TP

    import stream.faust_app as faust_app

    worker, t = _ready_worker(kafka_broker.bootstrap_servers, sqlite_url)
    tp = TP(t.usage, 0)
    sought: list[tuple[int, int]] = []

    async def seek(partition: TP, offset: int) -> None:
        sought.append((partition.partition, offset))

    holed = TP(t.usage, 1)
    monkeypatch.setattr(worker.app.consumer, "assignment", lambda: {tp, holed})
    monkeypatch.setattr(worker.app.consumer, "seek", seek)

    def take(first: int, last: int) -> dict[TP, list[tuple[int, bytes]]]:
        # Malformed events: dead letters, no chain state needed.
        return {tp: [(offset, b"{bad") for offset in range(first, last + 1)]}

    async def scenario() -> None:
        with _kafka_unreachable(worker):
            await worker.process(take(0, 9))  # rolled back: back to offset 0
        # What was fetched before the seek, then what is read from offset 0 again.
        for first in range(10, 60, 10):
            await worker.process(take(first, first + 9))
        for first in range(0, 60, 10):
            await worker.process(take(first, first + 9))
        # A real hole: offsets 0-4 of the other partition do not exist (transaction markers),
        # so every read from its checkpoint starts at 5. The third time it is decided.
        for _ in range(faust_app.GAP_RETRIES):
            assert decided_count(engine)[1] == 60
            await worker.process({holed: [(offset, b"{bad") for offset in range(5, 8)]})
        await worker.outputs.close()

    engine = create_engine(sqlite_url, poolclass=NullPool)
    try:
        asyncio.run(scenario())
        assert decided_count(engine) == (0, 63)
        assert_each_usage_id_once(engine)
        # Back to offset 0: after the rollback, after each of the five stale takes, and twice
        # at the hole before it is taken for real.
        assert sought == [(0, 0)] * 6 + [(1, 0)] * (faust_app.GAP_RETRIES - 1)
    finally:
        worker.close()
        engine.dispose()
