"""The faust worker's usage hand-over (`stream.faust_app.UsageRecords` and its consumer): each
fetch's usage records are queued per partition, in order, bounded, dropped on a seek or a
revocation; the consumer keeps faust's stream for every other topic and queues nothing it
fetched while the flow is suspended. No broker needed: the consumer is never started."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

import stream.faust_app as faust_app
from stream.faust_app import FaustJoinWorker, UsageRecords
from tests.stream.worker_support import Topics, keyless_worker_config


class _Record(NamedTuple):  # the fields of aiokafka's ConsumerRecord the join reads
    offset: int
    value: bytes | None


def _records(first: int, last: int) -> list[_Record]:
    return [_Record(o, f"v{o}".encode()) for o in range(first, last + 1)]


def test_takes_are_bounded_in_order_and_per_partition() -> None:
    usage = UsageRecords("usage", limit=10)
    usage.put({TopicPartition("usage", 0): _records(0, 3), TopicPartition("usage", 1): []})
    usage.put({TopicPartition("usage", 1): _records(7, 9)})
    usage.put({TopicPartition("usage", 0): [_Record(4, None)]})
    assert len(usage) == 8
    first = usage.take(6)
    # Partition 0 whole (its two fetches, in order), then the start of partition 1.
    assert first == {
        TP("usage", 0): [(0, b"v0"), (1, b"v1"), (2, b"v2"), (3, b"v3"), (4, b"")],
        TP("usage", 1): [(7, b"v7")],
    }
    assert all(type(tp) is TP for tp in first)
    assert usage.take(6) == {TP("usage", 1): [(8, b"v8"), (9, b"v9")]}
    assert len(usage) == 0
    assert usage.take(6) == {}


def test_a_dropped_partition_loses_only_its_own_records() -> None:
    usage = UsageRecords("usage", limit=100)
    usage.put(
        {TopicPartition("usage", 0): _records(0, 4), TopicPartition("usage", 1): _records(0, 1)}
    )
    usage.drop(TP("usage", 0))
    usage.drop(TP("usage", 2))  # nothing queued: nothing to do
    assert len(usage) == 2
    assert usage.take(100) == {TP("usage", 1): [(0, b"v0"), (1, b"v1")]}


def test_waiters_wake_on_records_and_on_space() -> None:
    async def scenario() -> None:
        usage = UsageRecords("usage", limit=4)
        waiting = asyncio.ensure_future(usage.wait_records())
        await asyncio.sleep(0.01)
        assert not waiting.done()
        usage.put({TopicPartition("usage", 0): _records(0, 4)})  # 5: past the limit
        await asyncio.wait_for(waiting, 1)
        full = asyncio.ensure_future(usage.wait_space())
        await asyncio.sleep(0.01)
        assert not full.done()
        assert len(usage.take(1)) == 1  # 4 left: still at the limit
        await asyncio.sleep(0.01)
        assert not full.done()
        usage.take(1)
        await asyncio.wait_for(full, 1)
        usage.take(10)
        empty = asyncio.ensure_future(usage.wait_records())
        await asyncio.sleep(0.01)
        assert not empty.done()  # nothing queued any more
        empty.cancel()

    asyncio.run(scenario())


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[FaustJoinWorker]:
    topics = Topics("usage", "chain", "accruals", "dead", "g", "c")
    url = f"sqlite:///{tmp_path / 'w.db'}"
    built = FaustJoinWorker(keyless_worker_config("127.0.0.1:9", url, topics, max_records=3))
    try:
        yield built
    finally:
        built.close()


def _fetching(monkeypatch: pytest.MonkeyPatch, fetched: dict[Any, list[_Record]]) -> None:
    async def wait_next_records(_self: Any, _timeout: float) -> tuple[Any, Any]:
        return dict(fetched), None

    monkeypatch.setattr(faust_aiokafka.Consumer, "_wait_next_records", wait_next_records)


def test_the_consumer_hands_usage_over_and_keeps_the_rest_for_faust(
    worker: FaustJoinWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = TopicPartition("other", 0)
    _fetching(monkeypatch, {TopicPartition("usage", 1): _records(5, 6), other: _records(0, 0)})
    consumer = worker.app.consumer
    assert consumer.usage is worker.usage
    rest, _ = asyncio.run(consumer._wait_next_records(1.0))
    assert rest == {other: _records(0, 0)}
    assert worker.usage.take(10) == {TP("usage", 1): [(5, b"v5"), (6, b"v6")]}

    # Fetched while faust suspends the flow (a rebalance): faust yields none of it, nor do we.
    consumer.flow_active = False
    rest, _ = asyncio.run(consumer._wait_next_records(1.0))
    assert rest == {other: _records(0, 0)}
    assert len(worker.usage) == 0


def test_the_consumer_waits_for_the_join_when_the_queue_is_full(
    worker: FaustJoinWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fetching(monkeypatch, {TopicPartition("usage", 0): _records(0, 11)})  # limit: 4 x 3

    async def scenario() -> None:
        fetch = asyncio.ensure_future(worker.app.consumer._wait_next_records(1.0))
        await asyncio.sleep(0.05)
        assert not fetch.done()  # no further fetch before the join takes some
        assert len(worker.usage.take(3)) == 1
        await asyncio.wait_for(fetch, 2)

    asyncio.run(scenario())
    assert len(worker.usage) == 9


def test_a_seek_back_drops_what_was_queued_for_that_partition(
    worker: FaustJoinWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    sought: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        sought.append((tp, offset))

    monkeypatch.setattr(worker.app.consumer, "seek", seek)
    monkeypatch.setattr(worker.app.consumer, "assignment", lambda: {TP("usage", 0)})
    worker.usage.put({TopicPartition("usage", 0): _records(10, 12)})
    worker.usage.put({TopicPartition("usage", 1): _records(3, 4)})
    asyncio.run(worker._settle(TP("usage", 0), faust_app._Seek(0, gap=True, first=7), block=0))
    assert sought == [(TP("usage", 0), 0)]
    assert worker.usage.take(10) == {TP("usage", 1): [(3, b"v3"), (4, b"v4")]}
    # A take settled after its partition was revoked (the take in flight, committed or rolled
    # back by the next step): no seek of a partition this worker no longer has.
    asyncio.run(worker._settle(TP("usage", 2), faust_app._Seek(5, gap=False), block=0))
    assert sought == [(TP("usage", 0), 0)]
    # Revoked: its queued records are its next owner's to read.
    worker.usage.put({TopicPartition("usage", 1): _records(5, 5)})
    asyncio.run(worker._on_revoked(None, {TP("usage", 1)}))
    assert len(worker.usage) == 0
