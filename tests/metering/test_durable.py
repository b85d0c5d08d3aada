"""The durable producer's delivery rules, with a scripted publisher and a real spool."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metering.durable import DurableProducer
from metering.errors import MeteringError, SpoolClosed, SpoolFull
from metering.metrics import MeteringMetrics
from metering.spool import FileSpool


class ScriptedKafka:
    """A publisher whose broker is up or down at the test's command."""

    def __init__(self) -> None:
        self.up = True
        self.published: list[bytes] = []
        self.batches: list[int] = []
        self.lock = threading.Lock()

    def probe(self) -> bool:
        return self.up

    def send_batch(self, records: list[tuple[bytes, bytes]], timeout_s: float) -> int:
        if not self.up:
            time.sleep(0.01)  # like a delivery timeout, only shorter
            return 0
        with self.lock:
            self.published.extend(value for _, value in records)
            self.batches.append(len(records))
        return len(records)

    def flush(self, timeout_s: float) -> None:
        time.sleep(0.05)

    def close(self, timeout_s: float = 5.0) -> None:
        pass


def _wait(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def kafka() -> ScriptedKafka:
    return ScriptedKafka()


@pytest.fixture
def producer(tmp_path: Path, kafka: ScriptedKafka) -> Iterator[DurableProducer]:
    spool = FileSpool(tmp_path / "spool", max_bytes=64 * 1024, segment_bytes=8 * 1024)
    p = DurableProducer(kafka, spool, metrics=MeteringMetrics(), delivery_timeout_s=1.0).start()
    yield p
    p.close(timeout_s=2, drain_s=0)


def _submit(p: DurableProducer, values: list[bytes]) -> list[str]:
    futures = [p.submit(b"1", v) for v in values]
    return [f.result(timeout=10) for f in futures]


def test_straight_to_kafka_once_it_answers(producer: DurableProducer, kafka: ScriptedKafka) -> None:
    _wait(lambda: not producer.spooling)
    assert _submit(producer, [b"a", b"b"]) == ["kafka", "kafka"]
    assert kafka.published == [b"a", b"b"]


def test_failures_spool_then_replay_in_order(
    producer: DurableProducer, kafka: ScriptedKafka
) -> None:
    _wait(lambda: not producer.spooling)
    assert _submit(producer, [b"0"]) == ["kafka"]
    kafka.up = False
    values = [f"{i}".encode() for i in range(1, 40)]
    deliveries = _submit(producer, values)
    assert set(deliveries) == {"spool"}  # durable on disk, acknowledged
    assert producer.spooling
    assert producer.spool.pending_records == 39
    kafka.up = True
    _wait(lambda: not producer.spooling)
    # Every event, in order; a replay attempt cut short may have sent some twice.
    assert list(dict.fromkeys(kafka.published)) == [b"0", *values]
    assert producer.spool.pending_records == 0
    assert _submit(producer, [b"after"]) == ["kafka"]


def test_full_spool_refuses_new_work(tmp_path: Path, kafka: ScriptedKafka) -> None:
    kafka.up = False
    spool = FileSpool(tmp_path / "s", max_bytes=20_000, segment_bytes=10_000)
    p = DurableProducer(kafka, spool, metrics=MeteringMetrics()).start()
    try:
        ok = _submit(p, [b"x" * 900 for _ in range(20)])
        assert ok == ["spool"] * 20
        assert not p.has_room(in_flight=1)
        over = [p.submit(b"1", b"y" * 900) for _ in range(5)]
        errors = [f.exception(timeout=10) for f in over]
        assert any(isinstance(e, SpoolFull) for e in errors)
        assert spool.pending_bytes <= 20_000
    finally:
        p.close(timeout_s=1, drain_s=0)


def test_alarm_when_nearly_full(tmp_path: Path, kafka: ScriptedKafka) -> None:
    kafka.up = False
    metrics = MeteringMetrics()
    spool = FileSpool(tmp_path / "s", max_bytes=10_000, segment_bytes=10_000)
    p = DurableProducer(kafka, spool, metrics=metrics, alarm_ratio=0.8).start()
    try:
        _submit(p, [b"x" * 1000 for _ in range(7)])
        assert metrics.registry.get_sample_value("royalty_metering_spool_alarm") == 0.0
        _submit(p, [b"x" * 1000 for _ in range(2)])
        assert metrics.registry.get_sample_value("royalty_metering_spool_alarm") == 1.0
        assert metrics.registry.get_sample_value("royalty_metering_spool_depth") == 9.0
        kafka.up = True
        _wait(lambda: spool.pending_records == 0)
        _wait(lambda: metrics.registry.get_sample_value("royalty_metering_spool_alarm") == 0.0)
    finally:
        p.close(timeout_s=1, drain_s=0)


def test_write_ahead_mode_always_spools_first(tmp_path: Path, kafka: ScriptedKafka) -> None:
    spool = FileSpool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=1 << 16)
    p = DurableProducer(kafka, spool, write_ahead=True).start()
    try:
        values = [f"{i}".encode() for i in range(50)]
        assert set(_submit(p, values)) == {"spool"}
        _wait(lambda: len(kafka.published) == 50)
        assert kafka.published == values
        assert p.spooling  # never goes direct
    finally:
        p.close(timeout_s=1, drain_s=0)


def test_write_ahead_replays_events_arriving_one_by_one_in_batches(
    tmp_path: Path, kafka: ScriptedKafka
) -> None:
    # Serial inference: each event is spooled alone and wakes the replayer, which lingers so
    # that a Kafka round trip and a cursor write serve several events.
    spool = FileSpool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=1 << 16)
    p = DurableProducer(kafka, spool, write_ahead=True).start()
    try:
        values = [f"{i}".encode() for i in range(60)]
        for value in values:
            assert p.submit(b"1", value).result(timeout=10) == "spool"
            time.sleep(0.002)
        _wait(lambda: len(kafka.published) == 60)
        assert kafka.published == values
        assert len(kafka.batches) <= 20, kafka.batches
        _wait(lambda: spool.pending_records == 0)  # the last batch's cursor
        assert spool.pending_bytes == 0
    finally:
        p.close(timeout_s=1, drain_s=0)


def test_a_restart_replays_what_kafka_never_acked(tmp_path: Path, kafka: ScriptedKafka) -> None:
    kafka.up = False
    spool = FileSpool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=1 << 16)
    first = DurableProducer(kafka, spool).start()
    _submit(first, [b"a", b"b", b"c"])
    first.close(timeout_s=1, drain_s=0)  # Kafka still down: they stay spooled
    kafka.up = True
    spool = FileSpool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=1 << 16)
    assert spool.recovery.pending_records == 3
    second = DurableProducer(kafka, spool).start()
    try:
        _wait(lambda: not second.spooling)
        assert kafka.published == [b"a", b"b", b"c"]
    finally:
        second.close(timeout_s=1)


def test_close_drains_the_spool_when_kafka_is_back(tmp_path: Path, kafka: ScriptedKafka) -> None:
    kafka.up = False
    spool = FileSpool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=1 << 16)
    p = DurableProducer(kafka, spool).start()
    _submit(p, [b"a", b"b"])
    kafka.up = True
    p.close(timeout_s=1, drain_s=10)
    assert kafka.published == [b"a", b"b"]
    closed = p.submit(b"1", b"late")
    assert closed.exception(timeout=1) is not None


class HalfAcking(ScriptedKafka):
    """Acks only the first `limit` records of each batch, like a broker dying mid-batch."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def send_batch(self, records: list[tuple[bytes, bytes]], timeout_s: float) -> int:
        accepted = records[: self.limit]
        with self.lock:
            self.published.extend(value for _, value in accepted)
        return len(accepted)


def test_replay_moves_the_cursor_over_acked_records_only(tmp_path: Path) -> None:
    kafka = HalfAcking(limit=3)
    spool = FileSpool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=1 << 16)
    spool.append([(b"1", f"{i}".encode()) for i in range(10)])
    p = DurableProducer(kafka, spool, write_ahead=True).start()
    try:
        _wait(lambda: spool.pending_records == 0)
        # Each attempt acked a prefix; the next attempt started right after it: no duplicate.
        assert kafka.published == [f"{i}".encode() for i in range(10)]
    finally:
        p.close(timeout_s=1, drain_s=0)


def test_submit_many_one_future_for_all(producer: DurableProducer, kafka: ScriptedKafka) -> None:
    _wait(lambda: not producer.spooling)
    values = [f"{i}".encode() for i in range(100)]
    assert producer.submit_many([(b"1", v) for v in values]).result(timeout=10) == ["kafka"] * 100
    assert kafka.published == values
    assert producer.submit_many([]).result(timeout=1) == []
    kafka.up = False
    more = [f"m{i}".encode() for i in range(10)]
    assert producer.submit_many([(b"1", v) for v in more]).result(timeout=10) == ["spool"] * 10
    kafka.up = True
    _wait(lambda: not producer.spooling)
    assert list(dict.fromkeys(kafka.published)) == values + more


def test_submit_many_split_between_kafka_and_the_spool(tmp_path: Path) -> None:
    kafka = HalfAcking(limit=2)
    spool = FileSpool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=1 << 16)
    p = DurableProducer(kafka, spool).start()
    try:
        _wait(lambda: not p.spooling)
        group = p.submit_many([(b"1", v) for v in (b"a", b"b", b"c")])
        # Kafka acked "a" and "b"; "c" went to the spool, and was replayed from there.
        assert group.result(timeout=5) == ["kafka", "kafka", "spool"]
        _wait(lambda: spool.pending_records == 0)
        assert kafka.published == [b"a", b"b", b"c"]
    finally:
        p.close(timeout_s=1, drain_s=0)


def test_submit_many_fails_with_the_first_error(tmp_path: Path, kafka: ScriptedKafka) -> None:
    kafka.up = False
    spool = FileSpool(tmp_path / "s", max_bytes=5_000, segment_bytes=5_000)
    p = DurableProducer(kafka, spool).start()
    try:
        group = p.submit_many([(b"1", b"x" * 900) for _ in range(10)])
        assert isinstance(group.exception(timeout=10), SpoolFull)
        assert 0 < spool.pending_records < 10  # those that fit are durable all the same
    finally:
        p.close(timeout_s=1, drain_s=0)
    closed = p.submit_many([(b"1", b"late")])
    assert closed.exception(timeout=1) is not None


def test_publish_goes_to_kafka_and_spools_what_kafka_refuses(
    producer: DurableProducer, kafka: ScriptedKafka
) -> None:
    _wait(lambda: not producer.spooling)

    async def publish(values: list[bytes]) -> list[str]:
        return list(await asyncio.gather(*(producer.publish(b"1", v) for v in values)))

    assert asyncio.run(publish([b"a", b"b"])) == ["kafka", "kafka"]
    assert kafka.published == [b"a", b"b"]
    kafka.up = False
    assert asyncio.run(publish([b"c", b"d"])) == ["spool", "spool"]
    assert producer.spooling
    kafka.up = True
    _wait(lambda: not producer.spooling)
    assert list(dict.fromkeys(kafka.published)) == [b"a", b"b", b"c", b"d"]
    assert asyncio.run(publish([b"e"])) == ["kafka"]


class LateKafka(ScriptedKafka):
    """Answers a batch after `delay_s`, as a broker slow to ack does; whether it was acked is
    decided at the end (the test takes the broker down meanwhile)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__()
        self.delay_s = delay_s

    def send_batch(self, records: list[tuple[bytes, bytes]], timeout_s: float) -> int:
        time.sleep(self.delay_s)
        return super().send_batch(records, timeout_s)


def test_close_waits_for_what_publish_sent(tmp_path: Path) -> None:
    kafka = LateKafka(delay_s=0.5)
    spool = FileSpool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=1 << 16)
    p = DurableProducer(kafka, spool, delivery_timeout_s=2).start()
    _wait(lambda: not p.spooling)

    async def publish_and_close() -> str:
        sent = asyncio.ensure_future(p.publish(b"1", b"x"))
        await asyncio.sleep(0.05)
        kafka.up = False  # the answer will be a failure: the event must reach the spool
        await asyncio.to_thread(p.close, 2, 0)
        return await sent

    assert asyncio.run(publish_and_close()) == "spool"
    reopened = FileSpool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=1 << 16)
    assert [r.value for r in reopened.read(reopened.cursor, 10)] == [b"x"]


class HeldKafka(ScriptedKafka):
    """Holds every batch until the test releases them, then acks them from the sender's
    thread, a whole batch at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def send_batch(self, records: list[tuple[bytes, bytes]], timeout_s: float) -> int:
        self.release.wait(10)
        return super().send_batch(records, timeout_s)


def test_publish_answers_from_another_thread_reach_each_caller(tmp_path: Path) -> None:
    """Answers given together from the sender's thread settle every waiting caller; a caller
    that was cancelled meanwhile is skipped without disturbing the others (its event is
    durable all the same)."""
    kafka = HeldKafka()
    spool = FileSpool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=1 << 16)
    p = DurableProducer(kafka, spool, delivery_timeout_s=2).start()
    _wait(lambda: not p.spooling)

    async def scenario() -> list[str]:
        calls = [asyncio.ensure_future(p.publish(b"1", f"{i}".encode())) for i in range(200)]
        await asyncio.sleep(0.05)
        calls[7].cancel()
        kafka.release.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[7], asyncio.CancelledError)
        return [r for i, r in enumerate(results) if i != 7]  # type: ignore[misc]

    try:
        assert asyncio.run(scenario()) == ["kafka"] * 199
        assert kafka.published == [f"{i}".encode() for i in range(200)]
        # Group commit: what queued while a batch was held went as one batch (the first
        # event may have gone alone, if the sender woke before the others were queued).
        assert sum(kafka.batches) == 200
        assert len(kafka.batches) <= 2
    finally:
        p.close(timeout_s=2, drain_s=0)


def test_publish_from_two_event_loops(producer: DurableProducer, kafka: ScriptedKafka) -> None:
    """Each caller's loop gets its own answers, loops in two threads at once included."""
    _wait(lambda: not producer.spooling)

    def run_loop(tag: str, out: dict[str, list[str]]) -> None:
        async def publish() -> list[str]:
            values = [f"{tag}{i}".encode() for i in range(100)]
            return list(await asyncio.gather(*(producer.publish(b"1", v) for v in values)))

        out[tag] = asyncio.run(publish())

    out: dict[str, list[str]] = {}
    threads = [threading.Thread(target=run_loop, args=(tag, out)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert out == {"a": ["kafka"] * 100, "b": ["kafka"] * 100}
    assert sorted(kafka.published) == sorted(f"{t}{i}".encode() for t in "ab" for i in range(100))


def test_write_ahead_publish_answers_each_caller_and_ships_in_order(
    tmp_path: Path, kafka: ScriptedKafka
) -> None:
    """In write-ahead mode `publish` answers once its event is in the spool; a caller
    cancelled while waiting leaves its event durable all the same, and the replayer ships
    them all in the order they were published. A closed producer refuses."""
    spool = FileSpool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=1 << 16)
    p = DurableProducer(kafka, spool, write_ahead=True).start()

    async def scenario() -> list[object]:
        calls = [asyncio.ensure_future(p.publish(b"1", f"{i}".encode())) for i in range(100)]
        await asyncio.sleep(0)  # every call has queued its event
        calls[3].cancel()
        return list(await asyncio.gather(*calls, return_exceptions=True))

    try:
        results = asyncio.run(scenario())
        assert isinstance(results.pop(3), asyncio.CancelledError)
        assert results == ["spool"] * 99
        _wait(lambda: len(kafka.published) == 100)
        assert kafka.published == [f"{i}".encode() for i in range(100)]
    finally:
        p.close(timeout_s=1, drain_s=0)

    async def late() -> str:
        return await p.publish(b"1", b"late")

    with pytest.raises(MeteringError, match="closed"):
        asyncio.run(late())


def test_write_ahead_publish_fails_only_what_the_spool_cannot_hold(
    tmp_path: Path, kafka: ScriptedKafka
) -> None:
    kafka.up = False  # nothing leaves the spool
    spool = FileSpool(tmp_path / "s", max_bytes=8 * 1024, segment_bytes=8 * 1024)
    p = DurableProducer(kafka, spool, write_ahead=True).start()

    async def scenario() -> list[object]:
        values = [b"x" * 900 for _ in range(20)]
        return list(
            await asyncio.gather(*(p.publish(b"1", v) for v in values), return_exceptions=True)
        )

    try:
        results = asyncio.run(scenario())
        kept = results.count("spool")
        assert 0 < kept < 20
        assert all(isinstance(r, SpoolFull) for r in results[kept:])
        assert spool.pending_records == kept
    finally:
        p.close(timeout_s=1, drain_s=0)


def test_write_ahead_publish_after_the_spool_closed_is_refused(
    tmp_path: Path, kafka: ScriptedKafka
) -> None:
    """A loop whose append comes after shutdown closed the spool gets an error, not an answer
    that would let an unrecorded inference be served."""
    spool = FileSpool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=1 << 16)
    p = DurableProducer(kafka, spool, write_ahead=True).start()

    async def scenario() -> object:
        sent = asyncio.ensure_future(p.publish(b"1", b"x"))  # queued, not yet appended
        spool.close()
        return (await asyncio.gather(sent, return_exceptions=True))[0]

    try:
        assert isinstance(asyncio.run(scenario()), SpoolClosed)
    finally:
        p.close(timeout_s=1, drain_s=0)
