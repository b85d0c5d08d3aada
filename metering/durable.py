"""The durable producer: every acknowledged usage event reaches Kafka, whatever fails.

An event is *acknowledged* (the gateway answers its client) only once it is durable: acked by
Kafka (`acks=all`), or written and fsync'd in the local spool. Two delivery modes:

- `kafka` (default): events go straight to Kafka. When Kafka fails to ack one (down, timed
  out), that event and every later one go to the spool instead, and a background replayer
  ships the spool, in order, once Kafka answers again; only when the spool is empty do events
  go straight to Kafka again. Latency: one Kafka round trip.
- `spool` (write-ahead): every event is fsync'd to the spool first and shipped by the
  replayer. Latency: one fsync (group-committed across concurrent requests). The replayer
  waits up to `replay_linger_s` for fewer than `replay_batch` pending events to gather, so
  that serial traffic is not shipped one event per Kafka request and cursor write.

A crash loses nothing acknowledged: the spool keeps what Kafka has not acked, and the
replayer's cursor moves only over what Kafka acked. A replay may duplicate an event (Kafka
acked it but the cursor had not moved yet, or a direct send that timed out was delivered
late); duplicates keep their id and are removed downstream.

Threads: the caller's (`submit` and `publish` only queue), one direct sender (group commit to
Kafka: it sends whatever queued up meanwhile as one batch and waits for its acks), one spool
writer (group commit: one fsync per batch), one replayer. `publish` (asyncio callers: the
gateway) is answered through asyncio futures settled in bulk on the caller's event loop: one
wake-up of the loop per batch, not one per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Literal, Protocol, cast

import structlog

from metering.errors import MeteringError, SpoolClosed, SpoolFull
from metering.metrics import MeteringMetrics
from metering.spool import Position, SpooledRecord

log = structlog.get_logger(__name__)

Delivery = Literal["kafka", "spool"]

# Room kept free in the spool per inference in flight, so an admitted inference always finds
# space for its event (a usage event is well under a kilobyte).
EVENT_RESERVE_BYTES = 4096
_WRITER_BATCH = 2048
_DIRECT_BATCH = 2048


class UsagePublisher(Protocol):
    """Port: sends encoded events to the usage topic (`KafkaUsagePublisher`)."""

    def probe(self) -> bool:
        """True when the broker answers now."""
        ...

    def send_batch(self, records: Sequence[tuple[bytes, bytes]], timeout_s: float) -> int:
        """Send records in order, wait; return how many from the first were acked."""
        ...

    def flush(self, timeout_s: float) -> None:
        """Wait for what is queued to be acked or failed."""
        ...

    def close(self, timeout_s: float = 5.0) -> None:
        """Release the connection."""
        ...


class Spool(Protocol):
    """Port: the local append-only log (`FileSpool`)."""

    max_bytes: int

    @property
    def pending_records(self) -> int: ...

    @property
    def pending_bytes(self) -> int: ...

    @property
    def cursor(self) -> Position: ...

    def usage_ratio(self) -> float: ...

    def has_room(self, reserve: int) -> bool: ...

    def append(self, records: list[tuple[bytes, bytes]]) -> None: ...

    def read(self, start: Position, limit: int) -> list[SpooledRecord]: ...

    def ack(self, position: Position, records: int) -> None: ...

    def close(self) -> None: ...


class _Pending:
    """An event on its way to Kafka or the spool; tells its submitter where it went."""

    __slots__ = ("key", "value")

    def __init__(self, key: bytes, value: bytes) -> None:
        self.key = key
        self.value = value

    def ok(self, delivery: Delivery) -> None:
        raise NotImplementedError

    def fail(self, error: BaseException) -> None:
        raise NotImplementedError


class _Single(_Pending):
    """An event submitted alone: its own future."""

    __slots__ = ("future",)

    def __init__(self, key: bytes, value: bytes, future: Future[Delivery]) -> None:
        super().__init__(key, value)
        self.future = future

    def ok(self, delivery: Delivery) -> None:
        self.future.set_result(delivery)

    def fail(self, error: BaseException) -> None:
        self.future.set_exception(error)


class _LoopAnswers:
    """Answers for the asyncio futures of one event loop, handed over from other threads in
    bulk: one wake-up of the loop for all the answers that arrive together (a batch's), instead
    of a `concurrent.futures.Future`, a `wrap_future` and a wake-up per event."""

    __slots__ = ("_items", "_lock", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the producer keeps one of these per loop, and must not keep the loop alive.
        self._loop = weakref.ref(loop)
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Future[Delivery], Delivery | None, BaseException | None]]
        self._items = []

    def put(
        self,
        waiter: asyncio.Future[Delivery],
        delivery: Delivery | None,
        error: BaseException | None,
    ) -> None:
        """Settle `waiter` on its loop, from any thread."""
        with self._lock:
            first = not self._items
            self._items.append((waiter, delivery, error))
        if first and (loop := self._loop()) is not None:
            # A closed loop raises: nobody waits on it any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for waiter, delivery, error in items:
            if waiter.done():  # the caller was cancelled
                continue
            if error is not None:
                waiter.set_exception(error)
            else:
                waiter.set_result(cast(Delivery, delivery))


class _Awaited(_Pending):
    """An event `publish` queued: its caller awaits an asyncio future."""

    __slots__ = ("answers", "waiter")

    def __init__(
        self, key: bytes, value: bytes, answers: _LoopAnswers, waiter: asyncio.Future[Delivery]
    ) -> None:
        super().__init__(key, value)
        self.answers = answers
        self.waiter = waiter

    def ok(self, delivery: Delivery) -> None:
        self.answers.put(self.waiter, delivery, None)

    def fail(self, error: BaseException) -> None:
        self.answers.put(self.waiter, None, error)


class _Group:
    """The events of one `submit_many` call: one future for them all."""

    __slots__ = ("deliveries", "future", "lock", "waiting")

    def __init__(self, size: int) -> None:
        self.future: Future[list[Delivery]] = Future()
        self.deliveries: list[Delivery | None] = [None] * size
        self.waiting = size
        # Members are settled by the direct sender and the spool writer, maybe both.
        self.lock = threading.Lock()

    def settle(self, index: int, delivery: Delivery | None, error: BaseException | None) -> None:
        with self.lock:
            self.waiting -= 1
            if error is not None:
                if not self.future.done():
                    self.future.set_exception(error)
                return
            self.deliveries[index] = delivery
            if self.waiting or self.future.done():
                return
            # Every member succeeded: no delivery is None any more.
            self.future.set_result(cast(list[Delivery], self.deliveries))


class _Member(_Pending):
    """One event of a `submit_many` call."""

    __slots__ = ("group", "index")

    def __init__(self, key: bytes, value: bytes, group: _Group, index: int) -> None:
        super().__init__(key, value)
        self.group = group
        self.index = index

    def ok(self, delivery: Delivery) -> None:
        self.group.settle(self.index, delivery, None)

    def fail(self, error: BaseException) -> None:
        self.group.settle(self.index, None, error)


class DurableProducer:
    """Makes usage events durable in Kafka or the spool before they are acknowledged."""

    def __init__(
        self,
        publisher: UsagePublisher,
        spool: Spool,
        *,
        write_ahead: bool = False,
        metrics: MeteringMetrics | None = None,
        replay_batch: int = 1000,
        replay_linger_s: float = 0.05,
        alarm_ratio: float = 0.8,
        delivery_timeout_s: float = 5.0,
    ) -> None:
        self.publisher = publisher
        self.spool = spool
        self.write_ahead = write_ahead
        self.metrics = metrics
        self.replay_batch = replay_batch
        self.replay_linger_s = replay_linger_s
        self.alarm_ratio = alarm_ratio
        self.delivery_timeout_s = delivery_timeout_s
        self._lock = threading.Lock()
        # Start by spooling: events go straight to Kafka only once the replayer has seen it
        # answer with an empty spool, which also replays a previous run's spool first.
        self._spooling = True
        self._unspooled = 0  # events handed to the writer, not yet appended
        # Where `publish` answers its callers, per event loop (weakly: a loop that ends goes).
        self._answers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopAnswers]
        self._answers = weakref.WeakKeyDictionary()
        self._writes: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._direct: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._accepting = True
        self._alarm = False
        self._threads: list[threading.Thread] = []
        if metrics is not None:
            metrics.spool_records.set_function(lambda: self.spool.pending_records)
            metrics.spool_bytes.set_function(lambda: self.spool.pending_bytes)
            metrics.spool_usage.set_function(self.spool.usage_ratio)
            metrics.spooling.set_function(lambda: 1.0 if self._spooling else 0.0)
            metrics.spool_alarm.set_function(lambda: 1.0 if self._alarm else 0.0)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> DurableProducer:
        """Start the spool writer and the replayer threads."""
        loops = (
            ("direct-sender", self._direct_loop),
            ("spool-writer", self._write_loop),
            ("replayer", self._replay_loop),
        )
        for name, target in loops:
            thread = threading.Thread(target=target, name=f"metering-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self, timeout_s: float = 10.0, drain_s: float = 5.0) -> None:
        """Stop accepting events, make every accepted one durable, stop the threads.

        The replayer gets up to `drain_s` to ship the spool to Kafka; what is still spooled
        after that stays there for the next start.
        """
        with self._lock:
            self._accepting = False
        # Direct sends still queued are sent; what Kafka does not ack goes to the spool.
        self._direct.put(None)
        if self._threads:
            self._threads[0].join(self.delivery_timeout_s + timeout_s)
        if drain_s > 0 and self.spool.pending_records + self._unspooled > 0:
            self.wait_drained(drain_s)
        self._stopping.set()
        self._writes.put(None)
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self.publisher.close()
        self.spool.close()

    # -- state ---------------------------------------------------------------------------

    @property
    def spooling(self) -> bool:
        """True while events go to the spool rather than straight to Kafka."""
        return self._spooling

    def has_room(self, in_flight: int = 0) -> bool:
        """Whether a new inference may start: the spool can hold the events of every
        inference in flight plus this one, should Kafka fail now."""
        return self._accepting and self.spool.has_room((in_flight + 1) * EVENT_RESERVE_BYTES)

    # -- submitting ----------------------------------------------------------------------

    def submit(self, key: bytes, value: bytes) -> Future[Delivery]:
        """Make one encoded event durable; the future says where (`kafka` or `spool`), or
        fails with `SpoolFull` / `MeteringError` when it could not be made durable."""
        future: Future[Delivery] = Future()
        self._enqueue([_Single(key, value, future)])
        return future

    def submit_many(self, records: Sequence[tuple[bytes, bytes]]) -> Future[list[Delivery]]:
        """Make encoded events durable, in order, with one future for them all (cheaper per
        event than `submit`): it says where each went, or fails with the first error; the
        other events are made durable all the same."""
        group = _Group(len(records))
        if not records:
            group.future.set_result([])
        else:
            self._enqueue([_Member(k, v, group, i) for i, (k, v) in enumerate(records)])
        return group.future

    def _enqueue(self, pendings: list[_Pending]) -> None:
        with self._lock:
            if not self._accepting:
                for pending in pendings:
                    pending.fail(MeteringError("producer closed"))
                return
            if self._spooling:
                self._unspooled += len(pendings)
                for pending in pendings:
                    self._writes.put(pending)
            else:
                for pending in pendings:
                    self._direct.put(pending)

    async def publish(self, key: bytes, value: bytes) -> Delivery:
        """`submit` for asyncio callers: returns once the event is durable."""
        loop = asyncio.get_running_loop()
        answers = self._answers.get(loop)
        if answers is None:
            answers = self._answers.setdefault(loop, _LoopAnswers(loop))
        waiter: asyncio.Future[Delivery] = loop.create_future()
        self._enqueue([_Awaited(key, value, answers, waiter)])
        return await waiter

    async def publish_many(self, records: Sequence[tuple[bytes, bytes]]) -> list[Delivery]:
        """`submit_many` for asyncio callers: returns once every event is durable."""
        return await asyncio.wrap_future(self.submit_many(records))

    # -- the direct sender ---------------------------------------------------------------

    def _direct_loop(self) -> None:
        stop = False
        while not stop:
            batch, stop = _take_batch(self._direct, _DIRECT_BATCH)
            if batch:
                self._send_direct(batch)

    def _send_direct(self, batch: list[_Pending]) -> None:
        acked = self.publisher.send_batch(
            [(p.key, p.value) for p in batch], self.delivery_timeout_s + 1.0
        )
        for pending in batch[:acked]:
            pending.ok("kafka")
        if acked == len(batch):
            return
        with self._lock:
            was_direct = not self._spooling
            self._spooling = True
            # In order: the unacked rest of this batch, then whatever queued up behind it
            # (no new event can join the direct queue once `_spooling` is set).
            leftovers, stop = _take_batch(self._direct, None, block=False)
            if stop:
                self._direct.put(None)
            spooled = batch[acked:] + leftovers
            self._unspooled += len(spooled)
            for pending in spooled:
                self._writes.put(pending)
        if self.metrics is not None:
            self.metrics.kafka_errors.inc(len(batch) - acked)
        if was_direct:
            log.warning("kafka did not ack; spooling events until it is back", failed=len(spooled))

    # -- the spool writer ----------------------------------------------------------------

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            # Group commit: everything queued meanwhile shares this batch's fsync.
            batch, stop = _take_batch(self._writes, _WRITER_BATCH)
            if batch:
                self._append(batch)

    def _append(self, batch: list[_Pending]) -> None:
        try:
            self.spool.append([(p.key, p.value) for p in batch])
            done: list[tuple[_Pending, BaseException | None]] = [(p, None) for p in batch]
        except SpoolFull:
            # Not all fit: keep as many as fit, one by one, and fail the rest.
            done = []
            for p in batch:
                try:
                    self.spool.append([(p.key, p.value)])
                    done.append((p, None))
                except SpoolFull as exc:
                    done.append((p, exc))
        except SpoolClosed as exc:
            done = [(p, exc) for p in batch]
        except OSError as exc:  # the disk failed us: nothing of this batch is durable
            log.error("spool write failed", error=str(exc))
            done = [(p, SpoolFull(f"spool write failed: {exc}")) for p in batch]
        with self._lock:
            self._unspooled -= len(batch)
        for pending, error in done:
            if error is None:
                pending.ok("spool")
            else:
                pending.fail(error)
        self._check_alarm()
        self._wake.set()

    def _check_alarm(self) -> None:
        ratio = self.spool.usage_ratio()
        if ratio >= self.alarm_ratio and not self._alarm:
            self._alarm = True
            log.error(
                "spool nearly full: inference will be refused when it is full",
                usage_ratio=round(ratio, 3),
                pending_bytes=self.spool.pending_bytes,
                max_bytes=self.spool.max_bytes,
            )
        elif ratio < self.alarm_ratio * 0.9 and self._alarm:
            # Hysteresis: one alarm per crossing, not one per event around the threshold.
            self._alarm = False
            log.warning("spool back below its alarm ratio", usage_ratio=round(ratio, 3))

    # -- the replayer --------------------------------------------------------------------

    def _replay_loop(self) -> None:
        backoff = 0.2
        connected = False
        while not self._stopping.is_set():
            if self.spool.pending_records == 0:
                if self._spooling and not self.write_ahead:
                    connected = connected or self.publisher.probe()
                    if connected and self._try_go_direct():
                        backoff = 0.2
                        continue
                    if not connected:
                        self._stopping.wait(backoff)
                        backoff = min(backoff * 2, 5.0)
                        continue
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            if not connected:
                connected = self.publisher.probe()
                if not connected:
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
            if self.spool.pending_records < self.replay_batch and self.replay_linger_s > 0:
                # Let a few more events join the batch: each replay costs a Kafka round trip
                # and a cursor write (an fsync and a rename) whatever its size, and in
                # write-ahead mode every event wakes the replayer.
                self._stopping.wait(self.replay_linger_s)
            if self._replay_batch():
                backoff = 0.2
                self._check_alarm()
            else:
                connected = False  # probe again before the next attempt
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _try_go_direct(self) -> bool:
        with self._lock:
            if self._unspooled == 0 and self.spool.pending_records == 0:
                self._spooling = False
                log.info("kafka reachable and spool empty: sending events straight to kafka")
                return True
        return False

    def _replay_batch(self) -> bool:
        """Publish one batch from the cursor; move the cursor over what Kafka acked."""
        records = self.spool.read(self.spool.cursor, self.replay_batch)
        if not records:
            return True
        acked = self.publisher.send_batch(
            [(r.key, r.value) for r in records], self.delivery_timeout_s + 5.0
        )
        if acked:
            self.spool.ack(records[acked - 1].end, acked)
            if self.metrics is not None:
                self.metrics.replayed.inc(acked)
        if acked < len(records):
            if self.metrics is not None:
                self.metrics.kafka_errors.inc(len(records) - acked)
            log.warning("spool replay incomplete; retrying", batch=len(records), acked=acked)
            return False
        return True

    def wait_drained(self, timeout_s: float) -> bool:
        """Wait until the spool is empty (tests, shutdown checks); True if it is."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.spool.pending_records == 0 and self._unspooled == 0:
                return True
            time.sleep(0.05)
        return self.spool.pending_records == 0 and self._unspooled == 0


def _take_batch(
    source: queue.SimpleQueue[_Pending | None], limit: int | None, block: bool = True
) -> tuple[list[_Pending], bool]:
    """Up to `limit` queued events (waiting for the first when `block`), and whether the
    stop sentinel (None) was among them."""
    batch: list[_Pending] = []
    stop = False
    if block:
        first = source.get()
        if first is None:
            stop = True
        else:
            batch.append(first)
    while limit is None or len(batch) < limit:
        try:
            item = source.get_nowait()
        except queue.Empty:
            break
        if item is None:
            stop = True
            break
        batch.append(item)
    return batch, stop
