"""The workers' output producer: aiokafka on an event loop, fed from the join's thread.

Both workers decide a batch in a thread that blocks on the database, and must have its
accruals and dead letters acknowledged by Kafka before they commit. Their outputs go out
through aiokafka, the client faust itself runs on: from faust's event loop in the faust
worker, from an event loop on a thread of its own (`OutputLoop`) in the kafka-python worker.
The join's thread hands a batch's encoded records over once (`publish`, or `submit` and later
`wait`), they are appended to one record batch per partition (aiokafka's compiled batch
builder) and sent, and the thread waits for every batch's acknowledgement. About 2 µs of CPU
per record here, against 21-24 µs through kafka-python's `send()` and `flush()`
(`bench/worker_outputs_bench.py`).

Rules:

- `acks=all`, idempotent: what is acknowledged is on every replica, once per producer;
- records go to the partition Kafka's default partitioner (Java's, kafka-python's and
  aiokafka's) picks for their key: accruals by model id, dead letters by usage id; each
  partition's records keep their order;
- `publish` raises `OutputsNotAcknowledged` when anything was not acknowledged within
  `timeout_s`, when the producer cannot start (no broker), or when the producer is closing.
  The producer that failed is dropped (stopped in the background) and the next `publish`
  starts a fresh one. Records it still held may reach Kafka later: outputs are at least once,
  consumers drop duplicates by usage id.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError as AIOKafkaError

from metering.kafka_usage_publisher import KeyPartitions
from schemas.accrual import encode_accrual
from schemas.accrual import kafka_key as accrual_key
from schemas.codec import encode
from stream.errors import OutputsNotAcknowledged
from stream.partition_batch import PartitionOutcome

log = structlog.get_logger("royalty.worker.outputs")

_T = TypeVar("_T")

Record = tuple[bytes, bytes]
"""An output record: key, value."""

MAX_BATCH_BYTES = 1024 * 1024
"""One record batch per partition holds up to this much (aiokafka's default: 16 KiB, a few
dozen accruals); a take's records for one partition usually fit one batch."""


@dataclass
class Outputs:
    """A take's outputs, in decision order."""

    accruals: list[Record] = field(default_factory=list)
    """Keyed by model id: few distinct keys, their partitions memoized."""
    letters: list[Record] = field(default_factory=list)
    """Keyed by usage id: every key new."""

    def __len__(self) -> int:
        return len(self.accruals) + len(self.letters)

    def add(self, outcome: PartitionOutcome) -> None:
        """Encode a decided partition batch's accruals and dead letters onto these."""
        self.accruals.extend((accrual_key(a), encode_accrual(a)) for a in outcome.accruals)
        self.letters.extend(((d.usage_id or "").encode(), encode(d)) for d in outcome.letters)


class LoopOutputProducer:
    """Produces `Outputs` to two topics through an aiokafka producer on one event loop.

    `attach(loop)` once the loop runs; then `publish` (or `submit`, later `wait`) from any
    other thread, `produce` on the loop; `close()` on the loop at shutdown."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        accruals_topic: str,
        dead_letter_topic: str,
        client_id: str,
        timeout_s: float = 30.0,
        max_batch_bytes: int = MAX_BATCH_BYTES,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.accruals_topic = accruals_topic
        self.dead_letter_topic = dead_letter_topic
        self.client_id = client_id
        self.timeout_s = timeout_s
        self.max_batch_bytes = max_batch_bytes
        self._loop: asyncio.AbstractEventLoop | None = None
        self._producer: AIOKafkaProducer | None = None
        self._starting: asyncio.Lock | None = None
        self._closing = threading.Event()
        self._stopping: set[asyncio.Task[None]] = set()
        self._partitions = KeyPartitions()

    @property
    def started(self) -> bool:
        """Whether a producer is running now (none before the first `produce`, none after
        one failed until the next)."""
        return self._producer is not None

    @property
    def closed(self) -> bool:
        """Whether `close()` was called: every `publish` is refused from then on."""
        return self._closing.is_set()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Produce on `loop` from now on. A producer started on another loop is dropped (it
        cannot be used from this one)."""
        if loop is not self._loop:
            self._loop = loop
            self._producer = None
            self._starting = None

    # --- from the join's thread ----------------------------------------------------------------

    def publish(self, outputs: Outputs) -> None:
        """From a thread other than the loop's: produce `outputs` and wait until Kafka has
        acknowledged every one; raise `OutputsNotAcknowledged` otherwise."""
        self.wait(self.submit(outputs))

    def submit(self, outputs: Outputs) -> Future[None]:
        """From a thread other than the loop's: start producing `outputs` without waiting;
        `wait` on the answer. Raises `OutputsNotAcknowledged` when the producer is not running
        (never attached, closing, its loop gone)."""
        if not outputs:
            done: Future[None] = Future()
            done.set_result(None)
            return done
        return self._on_loop(lambda: self.produce(outputs))

    def connect(self) -> None:
        """From a thread other than the loop's: start the producer now, if none is running;
        raise `OutputsNotAcknowledged` when it cannot start (no broker within `timeout_s`)."""
        self.wait(cast("Future[None]", self._on_loop(self._running)))

    def _on_loop(self, work: Callable[[], Coroutine[Any, Any, _T]]) -> Future[_T]:
        """Run `work()` on the attached loop, from another thread; raise
        `OutputsNotAcknowledged` when the producer is not running (never attached, closing,
        its loop gone)."""
        loop = self._loop
        if loop is None or self._closing.is_set():
            raise OutputsNotAcknowledged("the output producer is not running")
        try:
            return asyncio.run_coroutine_threadsafe(work(), loop)
        except RuntimeError as exc:  # the loop is closed
            raise OutputsNotAcknowledged(f"the worker's event loop is gone: {exc}") from exc

    def wait(self, future: Future[None]) -> None:
        """Wait until the outputs `submit` started are acknowledged; raise
        `OutputsNotAcknowledged` when they fail, when the producer closes meanwhile, or when
        no answer comes in time (a little longer than `produce` gives itself, which fails
        first while the loop runs)."""
        deadline = time.monotonic() + self.timeout_s + 5
        while True:
            try:
                future.result(timeout=0.25)
                return
            except TimeoutError:
                if self._closing.is_set() or time.monotonic() > deadline:
                    future.cancel()
                    why = "closing" if self._closing.is_set() else "no answer in time"
                    raise OutputsNotAcknowledged(f"outputs not acknowledged: {why}") from None
            except CancelledError as exc:
                raise OutputsNotAcknowledged("outputs not acknowledged: cancelled") from exc

    # --- on the loop ---------------------------------------------------------------------------

    async def produce(self, outputs: Outputs) -> None:
        """Send `outputs` and wait for every acknowledgement (on the attached loop)."""
        producer = await self._running()
        try:
            async with asyncio.timeout(self.timeout_s):
                sent: list[asyncio.Future[Any]] = []
                if outputs.accruals:
                    await self._send(producer, self.accruals_topic, outputs.accruals, True, sent)
                if outputs.letters:
                    await self._send(producer, self.dead_letter_topic, outputs.letters, False, sent)
                await asyncio.gather(*sent)
        except BaseException as exc:  # cancelled too: the waiting thread gave up
            self._drop(producer)
            if isinstance(exc, AIOKafkaError | TimeoutError | OSError):
                raise OutputsNotAcknowledged(f"outputs not acknowledged: {exc!r}") from exc
            raise

    async def _send(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        records: Sequence[Record],
        memoize: bool,
        sent: list[asyncio.Future[Any]],
    ) -> None:
        """Append `records` to one batch per partition (a full one is sent and replaced) and
        send the batches, adding their acknowledgement futures to `sent`. A record always fits
        an empty batch (aiokafka's builder takes one of any size)."""
        count = len(await producer.partitions_for(topic))  # at least one, or it raised
        pick = self._partitions.of if memoize else KeyPartitions.pick
        batches: dict[int, Any] = {}
        for key, value in records:
            partition = cast(int, pick(key, count))
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                sent.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
        for partition, batch in batches.items():
            sent.append(await producer.send_batch(batch, topic, partition=partition))

    async def _running(self) -> AIOKafkaProducer:
        if self._closing.is_set():
            raise OutputsNotAcknowledged("the output producer is closing")
        if self._producer is not None:
            return self._producer
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers.split(","),
                    client_id=self.client_id,
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=0,
                    max_batch_size=self.max_batch_bytes,
                    max_request_size=max(8 * self.max_batch_bytes, 8 * MAX_BATCH_BYTES),
                    request_timeout_ms=int(self.timeout_s * 1000),
                )
                try:
                    async with asyncio.timeout(self.timeout_s):
                        await producer.start()
                except BaseException as exc:  # cancelled too: the waiting thread gave up
                    self._drop(producer)
                    if isinstance(exc, AIOKafkaError | TimeoutError | OSError):
                        raise OutputsNotAcknowledged(f"no output producer: {exc!r}") from exc
                    raise
                self._producer = producer
            return self._producer

    def _drop(self, producer: AIOKafkaProducer) -> None:
        """Stop `producer` in the background; the next `produce` starts a fresh one."""
        if self._producer is producer:
            self._producer = None
        log.warning("output producer dropped; the next take starts a fresh one")
        task = asyncio.get_running_loop().create_task(self._stop(producer))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop(self, producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await producer.stop()

    async def close(self) -> None:
        """Stop producing: threads waiting in `publish` give up at once (their takes roll
        back), the producer stops."""
        self._closing.set()
        producer, self._producer = self._producer, None
        if producer is not None:
            await self._stop(producer)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)


class OutputLoop:
    """An event loop on a thread of its own, running a `LoopOutputProducer` for a worker whose
    own loop is synchronous (the kafka-python worker): `start()`, then the producer's
    `publish` / `submit` / `connect` from the worker's thread, `close()` at the end."""

    def __init__(self, producer: LoopOutputProducer, name: str = "royalty-worker-outputs") -> None:
        self.producer = producer
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> LoopOutputProducer:
        """Run the loop and attach the producer to it."""
        self.producer.attach(self._loop)
        self._thread.start()
        return self.producer

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def close(self, timeout_s: float = 10.0) -> None:
        """Close the producer on its loop (threads waiting in `publish` give up, their takes
        roll back), then stop the loop and its thread."""
        if self._thread.is_alive():
            closing = asyncio.run_coroutine_threadsafe(self.producer.close(), self._loop)
            with contextlib.suppress(Exception):
                closing.result(timeout=timeout_s)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=timeout_s)
        if not self._thread.is_alive():
            self._loop.close()
