"""The stream worker on faust (`royalty worker --engine faust`, `python -m stream.faust_app`).

The same join as `stream.app` (`KafkaJoinWorker`, on kafka-python), on faust-streaming (asyncio,
aiokafka). faust runs the group membership, the assignment, the consumer thread and its
fetches, the timers and the tasks; the usage records it fetches skip its per-record stream
machinery: the consumer hands each fetch's usage records over in bulk (`UsageRecords`), and a
task (`_join_usage`) takes what has queued, splits it by partition and decides all of a take's
partition batches with `stream.partition_batch.decide_partition_batch` in ONE database
transaction (each partition's checkpoint compare-and-set, as always), publishing accruals and
dead letters (`acks=all`, idempotent producer) and waiting for their acknowledgement BEFORE the
one commit, as `stream.app` does per poll. The database work is blocking: it runs in a thread
executor, so the event loop keeps fetching the next records and heartbeating the group while a
take is decided; one lock serialises the takes (the usage task's and the held-event retries')
and the folding of the chain. The outputs go out through aiokafka on the event loop
(`stream.loop_outputs`): the join's thread hands a take's encoded records over once and waits
for their acknowledgement.

One take in flight (PostgreSQL), as in `stream.app`: a take is decided, its outputs handed to
the producer, its rows copied into staging tables and its checkpoints moved (the
compare-and-set answered there and then), and the statements that insert the staged rows are
started without waiting. The next step parses the next take's records and checks their
signatures while the server writes, then waits for the inserts and the acknowledgements and
commits, and only then decides the next take against the committed state. When no records come
within `IN_FLIGHT_WAIT_S`, the take is committed alone; so are the held-event retries, and at
shutdown the take in flight is committed before the producer stops. A take in flight that is
rolled back (outputs not acknowledged) seeks its partitions back to their checkpoints, and the
next take's records of those partitions go back with it. On SQLite each take commits at once.

Why not an agent on a faust stream: that path costs a message object, an event, a queue hand-off,
a take-buffer processor and a pair of tasks awaited for every record, about 100 µs of the event
loop per usage event on this machine, more than the join itself. The join needs only each
record's offset and bytes.

Delivery guarantees rest on the database checkpoint of each usage partition, never on faust's
consumer offsets, exactly as in `stream.app`:

- **Faust never commits `usage` offsets.** The topic is declared with `acks=False` and its
  records never reach faust's acknowledgement tracking, so faust's committed position for the
  group stays empty and, after every assignment, faust positions the partitions itself (it
  re-seeks them to the committed offsets once its recovery ends, overriding any seek made in
  `on_partitions_assigned`): that is, at the beginning. Records fetched while faust suspends
  the flow (a rebalance) are not queued, as faust yields none of them either.
- **The checkpoint positions the stream.** The first batch of a partition after an assignment
  finds its offsets at or below the checkpoint: the checkpoint skips them (`offsets ≤
  checkpoint` are never decided twice) and the worker seeks the partition to checkpoint + 1
  (`app.consumer.seek`), so only a few already-decided records are read again. A batch that
  starts AFTER checkpoint + 1 (records lost in flight, e.g. by a revoked and reassigned
  partition) is not decided: the partition is sought back to checkpoint + 1. Three gaps in a
  row at the same position, starting at the same offset each time, are taken for a real hole
  in the offsets (transaction markers) and decided. A seek drops the partition's queued
  records, but a fetch already on its way still delivers records from past a sought-back
  position: those are gaps at ever new offsets, never decided, and the partition is sought
  back again until the records read from the checkpoint arrive.
- **Database: exactly once in effect; `accruals` / `usage.dead-letter`: at least once.** As in
  `stream.app`: compare-and-set checkpoint, outputs acknowledged before the commit. A batch
  whose checkpoint moved under it (`CheckpointConflict`, another worker owns the partition now)
  is dropped, and the take's other partitions are sought back to their checkpoints (their
  work was rolled back with it). Any other failure stops the worker with an error: its restart
  re-reads from the checkpoint, as after a SIGKILL.
- **Chain view.** Every worker needs the WHOLE finalized chain state, so the `chain` topic is
  not a faust table (tables are partitioned over the workers) but a `TopicChainView` fed by a
  plain aiokafka consumer without a group (all partitions, from the beginning) in an `app.task`.
  Usage is not decided before that consumer has caught up with the topic's end at start.
- **Held events** stay in the checkpoint; a timer (`app.timer`, every `poll_ms`) decides them
  again when the chain watermark has moved, and once for every newly assigned partition. Past
  `max_held` the usage partitions are paused until the watermark releases events.

Faust's committed offsets being empty, consumer-lag tools show no lag for this group: the
checkpoint rows are the position. The group id is the faust app id; faust's assignor protocol
differs from kafka-python's, so the two engines cannot share one group.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, cast

import faust
import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition as AIOTopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from prometheus_client import start_http_server
from sqlalchemy.engine import Connection, Engine, RootTransaction

from stream.app import (
    DECIDED,
    FINALIZED_BLOCK,
    HELD,
    REGISTRY,
    WorkerConfig,
    abandon,
    decide_usage,
    freeze_startup_objects,
    worker_engine,
)
from stream.app import config_from_args as app_config_from_args
from stream.errors import CheckpointConflict, OutputsNotAcknowledged
from stream.loop_outputs import LoopOutputProducer, Outputs
from stream.partition_batch import (
    Message,
    ParsedMessage,
    PartitionOutcome,
    checkpoint_component,
    parse_messages,
)
from stream.sinks.sqlalchemy_accrual_store import SqlAlchemyAccrualStore
from stream.topic_chain_view import TopicChainView

log = structlog.get_logger("royalty.worker.faust")

GAP_RETRIES = 3
"""Gaps in a row starting at the same offset (each followed by a seek back to checkpoint + 1)
before that hole in the offsets is taken as real."""

IN_FLIGHT_WAIT_S = 0.02
"""How long the usage task waits for records while a take is in flight before it commits that
take without starting the next one."""

FETCH_MAX_WAIT_MS = 100
"""How long the broker may hold a usage fetch that finds no records (faust's own: 1,500 ms).

aiokafka sends one fetch at a time per broker, and only for the partitions whose records have
all been consumed. Once the busy partitions' records are buffered, the next fetch often asks
only for an idle one, and the broker holds it until this wait runs out: meanwhile the busy
partitions, read in the meantime, cannot be fetched again. With faust's 1,500 ms, a worker
draining a backlog on two of three partitions spent close to half its time waiting so."""


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """faust's aiokafka consumer thread, its group consumer fetching with `FETCH_MAX_WAIT_MS`
    (faust hard-codes 1,500 ms; aiokafka reads the setting when the consumer starts)."""

    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class UsageRecords:
    """Usage records fetched by faust's consumer, queued per partition for the join.

    The consumer hands each fetch's usage records over in bulk (`put`), and the join takes
    what has queued (`take`). faust's own path costs far more per record than the join
    itself: a message object, an event, a stream queue, a take buffer, and a task pair to
    await every record's delivery. The join only needs the offsets and the bytes.

    Bounded: past `limit` queued records, the consumer waits for the join before it fetches
    again. Records of a partition sought back (or revoked) are dropped (`drop`); any that
    still arrive from a fetch made before the seek start past the position and are treated
    as a gap (see the module's notes)."""

    def __init__(self, topic: str, limit: int) -> None:
        self.topic = topic
        self.limit = limit
        self._queued: dict[TP, list[Message]] = {}
        self._count = 0
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()

    def __len__(self) -> int:
        return self._count

    def put(self, records: Mapping[Any, Sequence[Any]]) -> None:
        """Queue a fetch's records (aiokafka `ConsumerRecord`s, per partition)."""
        for tp, batch in records.items():
            if batch:
                queued = self._queued.setdefault(TP(tp.topic, tp.partition), [])
                queued.extend((r.offset, r.value or b"") for r in batch)
                self._count += len(batch)
        if self._count:
            self._ready.set()
        if self._count >= self.limit:
            self._space.clear()

    def take(self, max_records: int) -> dict[TP, list[Message]]:
        """Up to `max_records` queued records (about: whole partitions first), per partition,
        in offset order; empty when none are queued."""
        taken: dict[TP, list[Message]] = {}
        room = max_records
        for tp in list(self._queued):
            if room <= 0:
                break
            queued = self._queued[tp]
            if len(queued) <= room:
                taken[tp] = self._queued.pop(tp)
            else:
                taken[tp], self._queued[tp] = queued[:room], queued[room:]
            room -= len(taken[tp])
        self._settle_count(sum(len(b) for b in taken.values()))
        return taken

    def drop(self, tp: TP) -> None:
        """Forget the records queued for `tp` (sought elsewhere, or revoked)."""
        self._settle_count(len(self._queued.pop(tp, ())))

    def _settle_count(self, removed: int) -> None:
        self._count -= removed
        if not self._count:
            self._ready.clear()
        if self._count < self.limit:
            self._space.set()

    async def wait_records(self) -> None:
        await self._ready.wait()

    async def wait_space(self) -> None:
        await self._space.wait()


class _Consumer(faust_aiokafka.Consumer):
    usage: UsageRecords | None = None
    """Where the usage topic's records go (set by the worker); faust's stream gets the rest."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:  # noqa: ASYNC109 - faust's signature
        records, active = await super()._wait_next_records(timeout)
        usage = self.usage
        if not records or usage is None:
            return records, active
        mine = {tp: batch for tp, batch in records.items() if tp.topic == usage.topic}
        if not mine:
            return records, active
        if self.flow_active:
            # While the flow is suspended (a rebalance) faust yields nothing it fetched: the
            # records are read again from the checkpoints afterwards, and so are these.
            usage.put(mine)
        while len(usage) >= usage.limit and self.flow_active and not self.should_stop:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(usage.wait_space(), 0.5)
        return {tp: b for tp, b in records.items() if tp.topic != usage.topic}, active


class _Transport(faust_aiokafka.Transport):
    """faust's aiokafka transport with `_ConsumerThread` and the usage hand-over."""

    Consumer = _Consumer


@dataclass(frozen=True)
class _Decided:
    """Decided: committed already, or (`committed` False) in flight, committed by the next
    step unless it is rolled back then."""

    outcome: PartitionOutcome
    committed: bool = True


@dataclass(frozen=True)
class _Committed:
    """The take that was in flight committed: its partition batch counts now."""

    outcome: PartitionOutcome


@dataclass(frozen=True)
class _Seek:
    """Not decided: position the partition at `offset` (a gap starting at `first`, or only
    stale records)."""

    offset: int
    gap: bool
    first: int = -1


@dataclass(frozen=True)
class _Conflict:
    pass


_Result = _Decided | _Seek | _Conflict | _Committed


@dataclass
class _InFlight:
    """A take decided, its rows' inserts running on the server and its outputs on their way to
    Kafka: committed by the next step, or rolled back there if either failed."""

    connection: Connection
    transaction: RootTransaction
    store: SqlAlchemyAccrualStore
    outputs: Future[None]
    items: Sequence[tuple[TP, list[Message], int | None]]
    positions: dict[TP, int]
    """Checkpoint offset of each partition, as read when the take was decided."""
    decided: dict[TP, PartitionOutcome]


def ensure_topics(config: WorkerConfig) -> int:
    """Create the worker's missing topics; return the `chain` topic's partition count."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    c = config
    admin = KafkaAdminClient(bootstrap_servers=c.bootstrap_servers.split(","))
    try:
        names = (c.usage_topic, c.chain_topic, c.accruals_topic, c.dead_letter_topic)
        existing = set(admin.list_topics())
        for name in (n for n in names if n not in existing):
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, c.partitions, 1)])
        (described,) = admin.describe_topics([c.chain_topic])
        return len(described["partitions"])
    finally:
        admin.close()


class FaustJoinWorker:
    """One faust worker: `run()` blocks until SIGTERM / SIGINT (or a crash) and returns the
    exit status. `app` is the faust app (usage and chain tasks, retry timer) for tests to
    drive."""

    def __init__(self, config: WorkerConfig, *, loglevel: str = "WARNING") -> None:
        self.config = config
        self.loglevel = loglevel
        self.engine: Engine = worker_engine(config.db_url, connections=2)
        self.chain: TopicChainView | None = None
        self.chain_ready = asyncio.Event()
        self.held: dict[TP, int] = {}
        """Held events per assigned usage partition, as committed (absent: not known yet)."""
        self._next: dict[TP, int] = {}
        """Per partition, the first offset not decided yet (absent: ask the checkpoint)."""
        self._gaps: dict[TP, tuple[int, int]] = {}
        """Per partition, the first offset of its last gap, and how many gaps in a row started
        there."""
        self._tried_at_block: dict[TP, int] = {}
        self._batch_lock = asyncio.Lock()
        self._view_lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="faust-join")
        self.usage = UsageRecords(config.usage_topic, limit=4 * config.max_records)
        self.outputs = LoopOutputProducer(
            config.bootstrap_servers,
            accruals_topic=config.accruals_topic,
            dead_letter_topic=config.dead_letter_topic,
            client_id=f"{config.client_id}-out",
        )
        self._stopping = False
        self._pipelined = self.engine.dialect.name == "postgresql"
        """Whether a take's inserts run on the database while the next take is parsed (the
        take committed by the next step), or are waited for at once (SQLite)."""
        self._in_flight: _InFlight | None = None
        self._datadir = tempfile.TemporaryDirectory(prefix="royalty-faust-")
        self.app = self._build_app()

    # --- the faust app -------------------------------------------------------------------------

    def _build_app(self) -> faust.App:
        c = self.config
        app = faust.App(
            c.group_id,
            broker=[f"kafka://{server}" for server in c.bootstrap_servers.split(",")],
            store="memory://",
            topic_partitions=c.partitions,
            datadir=self._datadir.name,
            autodiscover=False,
            web_enabled=False,
            topic_disable_leader=True,
            topic_allow_declare=False,
            consumer_auto_offset_reset="earliest",
            consumer_group_instance_id=c.instance_id,
            broker_client_id=c.client_id,
            broker_session_timeout=c.session_timeout_ms / 1000,
            broker_heartbeat_interval=max(1.0, c.session_timeout_ms / 4000),
            broker_max_poll_records=c.max_records,
            # A group that joins while the usage topic is missing from the metadata (just
            # created, or a broker just restarted) is assigned nothing and rejoins only when a
            # metadata refresh shows the topic: every 5 s, not aiokafka's default 5 minutes.
            consumer_metadata_max_age_ms=5_000,
            stream_wait_empty=False,
        )
        app.transport = _Transport(app.conf.broker_consumer, app)
        # Subscribed through faust (group membership, assignment, pause, seek), its records
        # handed over to `_join_usage` in bulk by `_Consumer`.
        app.topics.add(
            app.topic(
                c.usage_topic, key_type=bytes, value_type=bytes, value_serializer="raw", acks=False
            )
        )
        cast(_Consumer, app.consumer).usage = self.usage
        poll_s = c.poll_ms / 1000
        app.task(self._join_usage)
        app.task(self._follow_chain)
        app.timer(poll_s)(self._retry_held)
        app.on_partitions_assigned.connect(cast(Any, self._on_assigned))
        app.on_partitions_revoked.connect(cast(Any, self._on_revoked))
        app.on_before_shutdown.connect(cast(Any, self._on_shutdown))
        return app

    async def _on_assigned(self, _sender: Any, *args: Any, **_: Any) -> None:
        assigned: set[TP] = args[0]
        # Positions come from the checkpoints at the first batch (faust re-seeks afterwards).
        for tp in assigned:
            self._forget(tp)

    async def _on_revoked(self, _sender: Any, *args: Any, **_: Any) -> None:
        revoked: set[TP] = args[0]
        for tp in revoked:
            self._forget(tp)
        HELD.set(sum(self.held.values()))

    async def _on_shutdown(self, _sender: Any, **_: Any) -> None:
        """Let the take being decided finish and commit the one in flight (their outputs need
        the producer), then stop producing."""
        self._stopping = True
        await self.settle_in_flight()
        async with self._batch_lock:
            await self.outputs.close()

    async def _join_usage(self) -> None:
        """Decide the usage records as they queue up, a take of at most `max_records` at a
        time (what queued while the last one was decided)."""
        await self.chain_ready.wait()
        while True:
            if self._in_flight is not None:
                try:
                    await asyncio.wait_for(self.usage.wait_records(), IN_FLIGHT_WAIT_S)
                except TimeoutError:
                    await self.settle_in_flight()  # nothing came: commit it now
                    continue
            else:
                await self.usage.wait_records()
            await self.process(self.usage.take(self.config.max_records))

    def _forget(self, tp: TP) -> None:
        self.usage.drop(tp)
        self.held.pop(tp, None)
        self._next.pop(tp, None)
        self._gaps.pop(tp, None)
        self._tried_at_block.pop(tp, None)

    # --- chain ---------------------------------------------------------------------------------

    async def _follow_chain(self) -> None:
        c = self.config
        loop = asyncio.get_running_loop()
        partitions = await loop.run_in_executor(self._executor, ensure_topics, c)
        self.chain = TopicChainView(c.chain_id, partitions)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=c.bootstrap_servers.split(","),
            client_id=f"{c.client_id}-chain",
            group_id=None,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            tps = [AIOTopicPartition(c.chain_topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            while not self.chain_ready.is_set():
                await self._fold(await consumer.getmany(timeout_ms=500))
                positions = [await consumer.position(tp) for tp in tps]
                if all(p >= end[tp] for p, tp in zip(positions, tps, strict=True)):
                    self.chain_ready.set()
                    log.info("chain caught up", finalized_block=self.chain.finalized_block)
                    freeze_startup_objects()
            while True:
                await self._fold(await consumer.getmany(timeout_ms=c.poll_ms))
        finally:
            await consumer.stop()

    async def _fold(self, records: dict[AIOTopicPartition, list[Any]]) -> None:
        if records:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self._fold_sync, records
            )

    def _fold_sync(self, records: dict[AIOTopicPartition, list[Any]]) -> None:
        assert self.chain is not None
        with self._view_lock:
            for tp, messages in records.items():
                for m in messages:
                    ce_type = dict(m.headers or ()).get("ce_type")
                    self.chain.apply(tp.partition, m.value, ce_type.decode() if ce_type else None)
        FINALIZED_BLOCK.set(self.chain.finalized_block)

    # --- usage ---------------------------------------------------------------------------------

    def _usage_assignment(self) -> set[TP]:
        return {tp for tp in self.app.consumer.assignment() if tp.topic == self.config.usage_topic}

    async def _retry_held(self) -> None:
        """Decide again the held events the chain may now release, and once per assignment
        the partitions whose held count is not known yet."""
        if not self.chain_ready.is_set() or self.chain is None:
            return
        block = self.chain.finalized_block
        retry: dict[TP, list[Message]] = {
            tp: []
            for tp in sorted(self._usage_assignment())
            if (held := self.held.get(tp)) is None
            or (held and self._tried_at_block.get(tp) != block)
        }
        if retry:
            await self.process(retry)
            # Committed at once: the usage task, waiting for records, would not.
            await self.settle_in_flight()
        # Back-pressure: a full hold buffer stops consumption until the watermark moves.
        assigned = self._usage_assignment()
        if sum(self.held.values()) >= self.config.max_held:
            self.app.consumer.pause_partitions(assigned)
        else:
            self.app.consumer.resume_partitions(assigned)

    async def process(self, batches: Mapping[TP, list[Message]]) -> None:
        """Decide one take's partition batches (empty ones: only their held events) and
        commit them together."""
        async with self._batch_lock:
            if self._stopping:
                return
            assignment = self.app.consumer.assignment()
            items: list[tuple[TP, list[Message], int | None]] = []
            for tp, batch in batches.items():
                if tp not in assignment:
                    continue  # revoked while queued: its new owner decides it
                fresh = _increasing(batch, self._next.get(tp))
                if batch and not fresh:
                    continue  # only records already decided (read again after a seek)
                first, gaps = self._gaps.get(tp, (-1, 0))
                items.append((tp, fresh, first if gaps >= GAP_RETRIES - 1 else None))
            if not items:
                return
            await self._run(functools.partial(self._step, items), [tp for tp, _, _ in items])

    async def settle_in_flight(self) -> None:
        """Commit the take in flight, if any (no new records came to start the next one)."""
        async with self._batch_lock:
            if self._in_flight is not None:
                await self._run(self._settle_in_flight, [])

    async def _run(
        self, step: Callable[[], list[tuple[TP, _Result]]], partitions: list[TP]
    ) -> None:
        """Run `step` in the executor (holding the batch lock) and take note of its results;
        stop the worker with an error when it fails."""
        assert self.chain is not None
        block = self.chain.finalized_block
        loop = asyncio.get_running_loop()
        self.outputs.attach(loop)
        try:
            results = await loop.run_in_executor(self._executor, step)
        except Exception as exc:
            log.error(
                "usage batch failed; stopping",
                partitions=[str(tp) for tp in partitions],
                error=repr(exc),
            )
            await self.app.crash(exc)
            return
        for tp, result in results:
            await self._settle(tp, result, block)
        HELD.set(sum(self.held.values()))

    async def _settle(self, tp: TP, result: _Result, block: int) -> None:
        """Take note of how one partition batch of a take ended."""
        if isinstance(result, _Committed):
            _count(result.outcome)
            return
        if isinstance(result, _Conflict):
            log.warning("checkpoint moved by another worker; batch dropped", partition=str(tp))
            self._forget(tp)
            return
        if isinstance(result, _Seek):
            if result.gap:
                first, gaps = self._gaps.get(tp, (-1, 0))
                self._gaps[tp] = (result.first, gaps + 1 if first == result.first else 1)
                log.warning(
                    "gap in usage offsets; seeking back",
                    partition=str(tp),
                    checkpoint_next=result.offset,
                    batch_starts_at=result.first,
                )
            else:
                self._gaps.pop(tp, None)
            self._next[tp] = result.offset
            self.usage.drop(tp)
            if tp in self.app.consumer.assignment():
                await self.app.consumer.seek(tp, result.offset)
            return
        outcome = result.outcome
        self._gaps.pop(tp, None)
        self._next[tp] = outcome.position.offset + 1
        self.held[tp] = len(outcome.position.held)
        self._tried_at_block[tp] = block
        if result.committed:
            _count(outcome)

    def _step(
        self, items: Sequence[tuple[TP, list[Message], int | None]]
    ) -> list[tuple[TP, _Result]]:
        """In the executor: parse the take's records and check their signatures (neither
        needs the database, which may still be writing the take in flight), commit the take
        in flight, then decide this one.

        When the take in flight is rolled back (Kafka did not acknowledge its outputs), this
        take's partitions that were in it are sought back to their checkpoints with it: their
        records here follow the rolled-back ones. The others are decided."""
        parsed = {tp: parse_messages(batch, self.config.key_ring) for tp, batch, _ in items}
        results = self._settle_in_flight()
        back = {tp: r for tp, r in results if isinstance(r, _Seek)}
        results.extend((tp, back[tp]) for tp, _, _ in items if tp in back)
        rest = [item for item in items if item[0] not in back]
        if rest:
            results.extend(self._decide(rest, parsed).items())
        return results

    def _settle_in_flight(self) -> list[tuple[TP, _Result]]:
        """In the executor: wait for the take in flight's inserts and outputs, and commit it
        (`_Committed` per partition); or roll it back when Kafka did not acknowledge its
        outputs (`_Seek` to each partition's checkpoint)."""
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return []
        try:
            flight.store.finish_deferred()
            # Produced and acknowledged before the commit: at least once on the topics.
            self.outputs.wait(flight.outputs)
            flight.transaction.commit()
        except OutputsNotAcknowledged as exc:
            abandon(flight.connection, flight.transaction)
            log.warning(
                "outputs not acknowledged by Kafka; batch rolled back, re-seeking",
                partitions=[str(p) for p, _, _ in flight.items],
                error=str(exc),
            )
            return list(_rolled_back(flight.items, flight.positions, conflict=None).items())
        except BaseException:
            abandon(flight.connection, flight.transaction)
            raise
        flight.connection.close()
        return [(tp, _Committed(outcome)) for tp, outcome in flight.decided.items()]

    def _decide(
        self,
        items: Sequence[tuple[TP, list[Message], int | None]],
        parsed: Mapping[TP, list[ParsedMessage]] | None = None,
    ) -> dict[TP, _Result]:
        """In the executor: one transaction for a take's partition batches (each with the
        offset where a hole before it is accepted, if any; `parsed`: their records parsed
        already), outputs acknowledged before the commit.

        On PostgreSQL the take is left in flight (`_InFlight`): its rows' inserts started on
        the server, its outputs handed to the producer; the next step commits it. Elsewhere
        it commits here.

        A partition whose batch cannot be decided yet (stale records, a gap) gets a `_Seek`
        and the others go on. A moved checkpoint drops its partition's batch (`_Conflict`);
        that, or outputs Kafka did not acknowledge, rolls the whole take back and seeks every
        other partition of it back to its checkpoint."""
        assert self.chain is not None
        assert self._in_flight is None
        outputs = Outputs()
        results: dict[TP, _Result] = {}
        decided: dict[TP, PartitionOutcome] = {}
        positions: dict[TP, int] = {}  # checkpoint offset of each partition looked at
        connection = self.engine.connect()
        transaction = connection.begin()
        store = SqlAlchemyAccrualStore(connection, defer_inserts=self._pipelined)
        tp: TP | None = None
        try:
            with self._view_lock:
                for tp, batch, hole_at in items:
                    component = checkpoint_component(self.config.component, tp.topic, tp.partition)
                    position, _ = store.load_position(component)
                    positions[tp] = position.offset
                    fresh = [m for m in batch if m[0] > position.offset]
                    if batch and not fresh:
                        results[tp] = _Seek(position.offset + 1, gap=False)
                        continue
                    if fresh and fresh[0][0] > position.offset + 1 and fresh[0][0] != hole_at:
                        results[tp] = _Seek(position.offset + 1, gap=True, first=fresh[0][0])
                        continue
                    mine = parsed.get(tp) if parsed is not None else None
                    decided[tp] = decide_usage(
                        self.config,
                        connection,
                        component,
                        fresh,
                        self.chain.view,
                        outputs.add,
                        parsed=None
                        if mine is None
                        else [m for m in mine if m.offset > position.offset],
                        store=store,
                    )
                    results[tp] = _Decided(decided[tp], committed=not self._pipelined)
            tp = None
            if not decided:
                abandon(connection, transaction)
                return results
            if self._pipelined:
                submitted = self.outputs.submit(outputs)
                store.send_deferred()
                self._in_flight = _InFlight(
                    connection, transaction, store, submitted, items, positions, decided
                )
                return results
            # Produced and acknowledged before the commit: at least once on the topics.
            self.outputs.publish(outputs)
            transaction.commit()
        except CheckpointConflict:
            abandon(connection, transaction)
            return _rolled_back(items, positions, conflict=tp)
        except OutputsNotAcknowledged as exc:
            # Outputs not acknowledged (a broker restarting): roll back, read the batches
            # again from their checkpoints, produce them with a fresh producer.
            abandon(connection, transaction)
            log.warning(
                "outputs not acknowledged by Kafka; batch rolled back, re-seeking",
                partitions=[str(p) for p, _, _ in items],
                error=str(exc),
            )
            return _rolled_back(items, positions, conflict=None)
        except BaseException:
            abandon(connection, transaction)
            raise
        connection.close()
        return results

    # --- lifecycle -----------------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM / SIGINT; 0 after a graceful stop, 1 after a crash."""
        worker = faust.Worker(self.app, loglevel=self.loglevel, redirect_stdouts=False)
        try:
            worker.execute_from_commandline()
        except SystemExit as done:
            return int(done.code or 0)
        finally:
            self.close()
        return 0  # pragma: no cover (execute_from_commandline always exits)

    def close(self) -> None:
        """Wait for the executor's work, roll back a take still in flight (the app stopped
        without committing it: it is read again after the restart), release the database.
        (The output producer stops with the app, on its event loop.)"""
        self._executor.shutdown(wait=True)
        flight, self._in_flight = self._in_flight, None
        if flight is not None:
            abandon(flight.connection, flight.transaction)
        self.engine.dispose()
        self._datadir.cleanup()


def _count(outcome: PartitionOutcome) -> None:
    """Count a committed partition batch's decisions."""
    DECIDED.labels("accepted").inc(len(outcome.accruals))
    DECIDED.labels("rejected").inc(len(outcome.letters))


def _rolled_back(
    items: Sequence[tuple[TP, list[Message], int | None]],
    positions: Mapping[TP, int],
    conflict: TP | None,
) -> dict[TP, _Result]:
    """After a take was rolled back: the partition whose checkpoint moved is dropped, the
    others are read again from their checkpoints (dropped too where none was read)."""
    return {
        tp: _Seek(positions[tp] + 1, gap=False)
        if tp != conflict and tp in positions
        else _Conflict()
        for tp, _, _ in items
    }


def _increasing(batch: list[Message], first: int | None) -> list[Message]:
    """`batch` from offset `first` on, each offset once (a seek can deliver records twice)."""
    out: list[Message] = []
    last = -1 if first is None else first - 1
    for offset, raw in batch:
        if offset > last:
            out.append((offset, raw))
            last = offset
    return out


def config_from_args(argv: Sequence[str] | None) -> tuple[WorkerConfig, int | None]:
    """The `python -m stream.app` options (same parser) → the worker's configuration and the
    metrics port."""
    return app_config_from_args(argv, prog="python -m stream.faust_app")


def serve(config: WorkerConfig, loglevel: str = "WARNING") -> int:
    """Run one faust worker until SIGTERM / SIGINT; its exit status."""
    return FaustJoinWorker(config, loglevel=loglevel).run()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `python -m stream.faust_app`."""
    config, metrics_port = config_from_args(argv)
    if metrics_port:
        start_http_server(metrics_port, registry=REGISTRY)
    logging.basicConfig(level=logging.INFO)
    sys.exit(serve(config, loglevel="INFO"))


if __name__ == "__main__":
    main(sys.argv[1:])
