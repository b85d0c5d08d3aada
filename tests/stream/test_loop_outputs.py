"""The workers' output producer (`stream.loop_outputs`) on a real broker: a take's
outputs published from a thread reach their topics, each on its key's partition, in order;
nothing acknowledged means `OutputsNotAcknowledged` and a fresh producer next time; closing
releases a thread that waits."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.partitioner.default import murmur2

from deploy.local import KafkaBroker
from deploy.local.process import free_port
from stream.errors import OutputsNotAcknowledged
from stream.loop_outputs import LoopOutputProducer, OutputLoop, Outputs
from tests.stream.worker_support import topic_records

pytestmark = [pytest.mark.kafka]


def _topics(servers: str, partitions: int = 3) -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    names = (f"accruals-{tag}", f"dead-{tag}")
    admin = KafkaAdminClient(bootstrap_servers=servers)
    try:
        admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        admin.close()
    return names


def _producer(servers: str, topics: tuple[str, str], **options: float) -> LoopOutputProducer:
    return LoopOutputProducer(
        servers,
        accruals_topic=topics[0],
        dead_letter_topic=topics[1],
        client_id="outputs-test",
        **options,  # type: ignore[arg-type]
    )


def _on_loop(producer: LoopOutputProducer, body: Callable[[], Awaitable[None]]) -> None:
    """Run `body` on a fresh loop the producer is attached to; close the producer after."""

    async def main() -> None:
        producer.attach(asyncio.get_running_loop())
        try:
            await body()
        finally:
            await producer.close()

    asyncio.run(main())


def _in_thread(outputs: Outputs, producer: LoopOutputProducer) -> Awaitable[None]:
    """`publish` from another thread, as the join does."""
    return asyncio.get_running_loop().run_in_executor(None, producer.publish, outputs)


def test_outputs_reach_their_key_partitions_in_order(kafka_broker: KafkaBroker) -> None:
    servers = kafka_broker.bootstrap_servers
    topics = _topics(servers)
    # Small batches: a partition's records span several of them, sent one after another.
    producer = _producer(servers, topics, max_batch_bytes=4096)
    models = [f"model-{m}".encode() for m in range(7)]
    takes = [
        Outputs(
            accruals=[
                (models[i % 7], b'{"take":%d,"n":%d,"pad":"%s"}' % (t, i, b"x" * 200))
                for i in range(300)
            ],
            letters=[(f"usage-{t}-{i}".encode(), b'{"n":%d}' % i) for i in range(20)]
            + [(b"", b"{unparsed}")],
        )
        for t in range(3)
    ]

    async def body() -> None:
        for take in takes:
            await _in_thread(take, producer)
        assert producer.started

    _on_loop(producer, body)
    for topic, sent in zip(
        topics, ([t.accruals for t in takes], [t.letters for t in takes]), strict=True
    ):
        count, records = topic_records(servers, topic)
        expected = [record for take in sent for record in take]
        assert sorted((k, v) for _, k, v in records) == sorted(expected)  # each exactly once
        for partition, key, _ in records:
            assert partition == (murmur2(key) & 0x7FFFFFFF) % count
        for partition in range(count):
            mine = [(k, v) for p, k, v in records if p == partition]
            assert mine == [
                r for r in expected if (murmur2(r[0]) & 0x7FFFFFFF) % count == partition
            ]


def test_an_empty_take_needs_no_broker() -> None:
    producer = _producer(f"127.0.0.1:{free_port()}", ("a", "d"))

    async def body() -> None:
        await _in_thread(Outputs(), producer)
        assert not producer.started

    _on_loop(producer, body)


def test_no_broker_means_not_acknowledged_then_a_fresh_producer(
    kafka_broker: KafkaBroker,
) -> None:
    servers = kafka_broker.bootstrap_servers
    topics = _topics(servers)
    producer = _producer(f"127.0.0.1:{free_port()}", topics, timeout_s=5)
    take = Outputs(accruals=[(b"m", b"{}")])

    async def body() -> None:
        started = time.monotonic()
        with pytest.raises(OutputsNotAcknowledged):
            await _in_thread(take, producer)
        assert time.monotonic() - started < 10
        assert not producer.started
        producer.bootstrap_servers = servers  # the broker is back
        await _in_thread(take, producer)
        assert producer.started

    _on_loop(producer, body)
    assert len(topic_records(servers, topics[0])[1]) == 1


def test_publish_without_a_loop_or_after_close_is_refused() -> None:
    producer = _producer(f"127.0.0.1:{free_port()}", ("a", "d"))
    take = Outputs(letters=[(b"u", b"{}")])
    with pytest.raises(OutputsNotAcknowledged, match="not running"):
        producer.publish(take)  # never attached

    async def body() -> None:
        await producer.close()
        with pytest.raises(OutputsNotAcknowledged):
            await _in_thread(take, producer)

    _on_loop(producer, body)


@contextlib.contextmanager
def _silent_broker() -> Iterator[str]:
    """A port that accepts connections and reads them but never answers (a broker hung)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                connection, _ = server.accept()
                accepted.append(connection)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        for connection in accepted:
            connection.close()


def test_a_broker_that_never_answers_fails_the_take_in_time() -> None:
    with _silent_broker() as servers:
        producer = _producer(servers, ("a", "d"), timeout_s=2)

        async def body() -> None:
            started = time.monotonic()
            with pytest.raises(OutputsNotAcknowledged, match="no output producer"):
                await _in_thread(Outputs(accruals=[(b"m", b"{}")]), producer)
            assert time.monotonic() - started < 2 + 3
            assert not producer.started

        _on_loop(producer, body)


def test_closing_releases_a_thread_waiting_for_acknowledgements() -> None:
    """At shutdown the worker closes the producer: a take waiting for a broker that does not
    answer gives up at once (it rolls back) instead of waiting out its timeout."""
    with _silent_broker() as servers:
        producer = _producer(servers, ("a", "d"), timeout_s=30)

        async def body() -> None:
            waiting = _in_thread(Outputs(accruals=[(b"m", b"{}")]), producer)
            await asyncio.sleep(0.5)
            closing = time.monotonic()
            await producer.close()
            with pytest.raises(OutputsNotAcknowledged, match="closing"):
                await waiting
            assert time.monotonic() - closing < 2

        _on_loop(producer, body)


@pytest.mark.slow
def test_a_broker_restart_fails_the_take_in_flight_then_a_fresh_producer_goes_on(
    tmp_path: Path,
) -> None:
    """Broker stopped: a take is not acknowledged within the timeout (the worker rolls it
    back); broker back on the same port: the next take goes through a fresh producer."""
    broker = KafkaBroker(tmp_path / "kafka").start()
    try:
        servers = broker.bootstrap_servers
        topics = _topics(servers)
        producer = _producer(servers, topics, timeout_s=4)

        async def body() -> None:
            await _in_thread(Outputs(accruals=[(b"m", b'{"n":1}')]), producer)
            broker.stop()
            started = time.monotonic()
            with pytest.raises(OutputsNotAcknowledged):
                await _in_thread(Outputs(accruals=[(b"m", b'{"n":2}')]), producer)
            assert time.monotonic() - started < 4 + 5 + 2
            assert not producer.started
            await asyncio.get_running_loop().run_in_executor(None, broker.start)
            await _in_thread(Outputs(accruals=[(b"m", b'{"n":3}')]), producer)
            assert producer.started

        _on_loop(producer, body)
        values = [v for _, _, v in topic_records(servers, topics[0])[1]]
        # The acknowledged ones are there, in order; the other one may be too (at least once).
        assert values[0] == b'{"n":1}'
        assert values[-1] == b'{"n":3}'
        assert set(values) <= {b'{"n":1}', b'{"n":2}', b'{"n":3}'}
    finally:
        broker.stop()


def test_publish_is_thread_safe_across_takes(kafka_broker: KafkaBroker) -> None:
    """Two threads publishing at once (the worker serializes its takes, but nothing may break
    if two overlap): every record arrives."""
    servers = kafka_broker.bootstrap_servers
    topics = _topics(servers)
    producer = _producer(servers, topics)
    takes = [
        Outputs(accruals=[(b"m%d" % (t % 3), b"%d-%d" % (t, i)) for i in range(50)])
        for t in range(8)
    ]

    async def body() -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(len(takes)) as threads:
            await asyncio.gather(
                *(loop.run_in_executor(threads, producer.publish, t) for t in takes)
            )

    _on_loop(producer, body)
    values = sorted(v for _, _, v in topic_records(servers, topics[0])[1])
    assert values == sorted(v for t in takes for _, v in t.accruals)


def test_an_output_loop_of_its_own_connects_publishes_and_stops(
    kafka_broker: KafkaBroker,
) -> None:
    """The kafka-python worker's arrangement: the producer on an event loop of its own thread,
    driven from the worker's thread. No broker: `connect` fails in time; the broker back: it
    connects and a take is acknowledged; `close` stops the thread, and refuses what follows."""
    servers = kafka_broker.bootstrap_servers
    topics = _topics(servers)
    outputs = OutputLoop(_producer(f"127.0.0.1:{free_port()}", topics, timeout_s=3))
    producer = outputs.start()
    try:
        started = time.monotonic()
        with pytest.raises(OutputsNotAcknowledged):
            producer.connect()
        assert time.monotonic() - started < 10
        producer.bootstrap_servers = servers
        producer.connect()
        assert producer.started
        take = Outputs(accruals=[(b"7", b'{"a":1}')], letters=[(b"u-1", b'{"d":1}')])
        producer.wait(producer.submit(take))
    finally:
        outputs.close()
    assert not any(t.name == "royalty-worker-outputs" for t in threading.enumerate())
    assert producer.closed
    with pytest.raises(OutputsNotAcknowledged):
        producer.publish(take)
    assert [r[1:] for r in topic_records(servers, topics[0])[1]] == [(b"7", b'{"a":1}')]
    assert [r[1:] for r in topic_records(servers, topics[1])[1]] == [(b"u-1", b'{"d":1}')]
