"""The stream worker (`royalty worker`, `python -m stream.app`): usage ⨝ chain → accruals.

Consumes `usage` (key = model id) in a consumer group and the whole `chain` topic (a
`TopicChainView` replicated in every worker; why, in `stream.topic_chain_view`), decides each
usage event with `stream.join` (through `stream.partition_batch`, the same steps as the embedded
runner), writes the database through `SqlAlchemyAccrualStore`, and publishes accruals to
`accruals` and rejects to `usage.dead-letter`.

Written on kafka-python's consumers; the loop is synchronous, as the database work is anyway.
Its outputs go out through aiokafka (`stream.loop_outputs`, the faust worker's producer) on an
event loop of their own thread: a partition batch's encoded records are handed over once and
appended to one record batch per partition by aiokafka's compiled builder, about 2 µs of CPU per
record against 21-24 µs through kafka-python's `send()` and `flush()`
(`bench/worker_outputs_bench.py`). The same join runs on faust too (`stream.faust_app`, `royalty
worker --engine faust`; aiokafka reads the publishers' lz4 batches through `cramjam`), with the
same checkpoints and guarantees: there faust's own offset commits are switched off for `usage`,
as faust commits when a batch is handed over, not in our database transaction. This engine stays
the default: it seeks to the checkpoint at assignment and commits consumer offsets for lag
tools.

Delivery guarantees, and why:

- **Database: exactly once in effect.** Each usage partition's checkpoint (last offset decided
  and the events held for the chain) is a row of `checkpoints`, written in the SAME transaction
  as that batch's usage ids, accruals and dead letters. On assignment the worker seeks every
  partition to its checkpoint + 1 and ignores Kafka's committed offsets, which it commits only
  so that lag tools work. The partition batches of one poll share one transaction (one commit,
  their outputs acknowledged before it), each with its own checkpoint row. A crash anywhere
  rolls back the batch; the restart re-reads exactly the undecided messages. The checkpoint
  write is compare-and-set, so a worker that lost its partition in a rebalance cannot commit
  over the new owner; and `ON CONFLICT (usage_id) DO NOTHING` plus the unique constraints remain
  the last line against billing an id twice.
- **Topics `accruals` / `usage.dead-letter`: at least once.** A batch's outputs are produced
  and acknowledged (`acks=all`, idempotent producer) *before* its database commit, so none is
  lost; a crash between the two re-produces them. Consumers dedupe on the usage id (the
  ClickHouse tables are ReplacingMergeTree on it).
- **Held events** (time not before the finalized chain's newest block) stay in the checkpoint,
  not only in memory, and are decided again when the chain watermark moves. Their number is
  bounded by `max_held`: beyond it the usage partitions are paused (back-pressure, never
  dropping); `royalty_stream_held_events` exposes the gauge.

One batch in flight (PostgreSQL). Most of the database's work on a batch is inserting its rows
into the tables and their indexes; the worker does not sit waiting for it. A batch is decided,
handed to the producer, its rows copied into staging tables and its checkpoint moved (the
compare-and-set answered there and then), and the statements that insert the staged rows are
started without waiting. The worker then polls and parses the next records and checks their
signatures, which needs neither the database nor the chain, while the server writes; only then
does it wait for the inserts and the producer's acknowledgements and commit, before it decides
the next batch against the committed state. So there is never more than one uncommitted batch,
the next one is decided only after it commits, and a crash at any point loses the uncommitted
batch as a whole, as before. A rolled-back batch (Kafka did not acknowledge) drops the records
polled meanwhile and seeks back to the checkpoints. On SQLite each batch commits at once.

A consumer that stops fetching is replaced. kafka-python (3.0) clients have been seen to stop
for good: polls that return nothing at once, forever, while the topic holds records past the
checkpoints (the group on the broker empty, the client unaware). When a poll has brought
nothing for `stall_s` (30 s) and records wait on the worker's assigned partitions (end offsets
read through the chain consumer, a separate client, against the checkpoints), the worker
settles its batch, drops that consumer and joins the group with a new one, which resumes from
the checkpoints like any rebalance (`royalty_stream_usage_consumer_replaced_total` counts it).
Consumption paused by back-pressure is not a stall.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import structlog
from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MetadataEmptyBrokerList,
)
from kafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from sqlalchemy.engine import Connection, Engine, RootTransaction, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from metering.kafka_usage_publisher import LEAN_CLIENT
from metering.keyfiles import load_key_ring
from metering.signing import KeyRing
from schemas.engine import create_engine
from stream.epochs import EpochClock
from stream.errors import BrokerUnavailable, CheckpointConflict, OutputsNotAcknowledged
from stream.loop_outputs import LoopOutputProducer, OutputLoop, Outputs
from stream.partition_batch import (
    Message,
    ParsedMessage,
    PartitionOutcome,
    checkpoint_component,
    decide_partition_batch,
    parse_messages,
)
from stream.sinks.sqlalchemy_accrual_store import SqlAlchemyAccrualStore
from stream.state import ChainView
from stream.topic_chain_view import TopicChainView

log = structlog.get_logger("royalty.worker")

REGISTRY = CollectorRegistry()
HELD = Gauge(
    "royalty_stream_held_events", "Usage events waiting for the finalized chain.", registry=REGISTRY
)
DECIDED = Counter(
    "royalty_stream_decided_total",
    "Usage events decided, by outcome.",
    ["outcome"],
    registry=REGISTRY,
)

CHECK_USAGE_CRCS = importlib.util.find_spec("crc32c") is not None
"""Whether the usage consumer checks record batch CRCs: only with the C `crc32c` module, since
kafka-python's pure-Python CRC-32C costs more per event than the whole join. Without it the
check is left to the broker (it validates every batch it accepts) and TCP, and every usage
event still carries its own signature: a payload damaged on the way fails verification and
is dead-lettered, never billed. The small `chain` topic is always checked."""

_FETCH_MAX_BYTES = 64 * 1024 * 1024
_PARTITION_FETCH_BYTES = 8 * 1024 * 1024
"""Fetch sizes: a batch of `max_records` usage events (~0.5 KiB each) in one round trip."""

FINALIZED_BLOCK = Gauge(
    "royalty_stream_chain_finalized_block", "Newest finalized block folded in.", registry=REGISTRY
)
USAGE_CONSUMER_REPLACED = Counter(
    "royalty_stream_usage_consumer_replaced_total",
    "Usage consumers replaced because they stopped fetching while records were waiting.",
    registry=REGISTRY,
)


@dataclass(frozen=True)
class WorkerConfig:
    """Everything one worker needs; built from `royalty.config` by `royalty worker`."""

    bootstrap_servers: str
    db_url: str
    chain_id: int
    key_ring: KeyRing
    clock: EpochClock
    usage_topic: str = "usage"
    chain_topic: str = "chain"
    accruals_topic: str = "accruals"
    dead_letter_topic: str = "usage.dead-letter"
    group_id: str = "royalty-worker"
    component: str = "stream.worker"
    partitions: int = 3
    max_records: int = 500
    max_held: int = 10_000
    poll_ms: int = 200
    client_id: str = "royalty-worker"
    instance_id: str | None = None
    """Static group membership: a worker restarted with the same id gets its partitions back
    at once instead of waiting for the session of its dead predecessor to time out."""
    session_timeout_ms: int = 10_000
    connect_timeout_s: float = 120.0
    """How long `start()` keeps retrying, with backoff, while the broker is unreachable."""
    stall_s: float = 30.0
    """Records waiting on an assigned partition, and none fetched for this long (back-pressure
    aside): the usage consumer is replaced by a new one (`KafkaJoinWorker.check_stalled`)."""


_UNREACHABLE = (
    KafkaConnectionError,
    KafkaTimeoutError,
    MetadataEmptyBrokerList,
    OutputsNotAcknowledged,  # the output producer could not start
)
"""What a client raises while no broker answers: retried until the start deadline."""

_BACKOFF_S = (0.1, 5.0)
"""First and longest pause between two attempts to reach the broker."""

_IN_FLIGHT_POLL_MS = 20
"""The poll's wait while a batch is in flight. Not 0: kafka-python (3.0) polled with no wait
never finishes a group rebalance, and the consumer then stops receiving records for good."""

T = TypeVar("T")


def freeze_startup_objects() -> None:
    """Move everything allocated so far (modules, clients, the folded chain) out of the
    garbage collector's reach.

    It lives as long as the worker, and a full collection otherwise walks it every time: about
    200,000 objects, ~0.12 s per collection, a few dozen times a minute under load (pauses
    that land on the events of that moment). Cycles created later are collected as before."""
    gc.collect()
    gc.freeze()


def until_reachable(what: str, deadline: float, attempt: Callable[[float], T]) -> T:
    """`attempt(seconds_left)` until it stops failing for want of a broker, with exponential
    backoff; `BrokerUnavailable` naming `what` and the last error once `deadline` (a
    `time.monotonic()` instant) has passed."""
    delay = _BACKOFF_S[0]
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrokerUnavailable(f"Kafka unreachable: could not {what} before the deadline")
        try:
            return attempt(left)
        except _UNREACHABLE as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerUnavailable(
                    f"Kafka unreachable: could not {what} before the deadline ({exc!r})"
                ) from exc
            log.warning("Kafka unreachable; retrying", doing=what, error=repr(exc), retry_in=delay)
            time.sleep(min(delay, left))
            delay = min(delay * 2, _BACKOFF_S[1])


def _bootstrap_ms(left_s: float) -> int:
    # One attempt to bootstrap a client waits at most this long (the rest of the deadline,
    # capped so that the backoff loop, not the client, paces the retries).
    return max(100, int(min(left_s, 10.0) * 1000))


def worker_engine(url: str, connections: int) -> Engine:
    """The worker's database engine: `connections` kept connections, each checked before use
    (opening a PostgreSQL connection per batch costs more than a small batch's work); SQLite
    opens its file per use, as it is cheap there."""
    if make_url(url).get_backend_name() == "sqlite":
        return create_engine(url, poolclass=NullPool)
    return create_engine(url, pool_size=connections, max_overflow=1, pool_pre_ping=True)


class _SeekToCheckpoint(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, position each usage partition after its database checkpoint."""

    def __init__(self, worker: KafkaJoinWorker) -> None:
        self.worker = worker
        self.active = True
        """False once its consumer is being replaced: that consumer's closing revocation
        must not touch the worker's state, which belongs to the new consumer."""

    def on_partitions_revoked(self, revoked: Any) -> None:
        # Runs on the consumer's network thread: nothing here may wait. A batch in flight is
        # settled by the loop after this poll; until then its uncommitted checkpoint rows
        # stay locked, so a new owner's batch waits for it, then sees the moved checkpoint.
        if not self.active:
            return
        for tp in revoked:
            self.worker.held.pop(tp, None)

    def on_partitions_assigned(self, assigned: Any) -> None:
        if not self.active:
            return
        for tp in assigned:
            self.worker.seek_to_checkpoint(tp)


def _close_quietly(consumer: KafkaConsumer) -> None:
    """Close a replaced consumer, whatever it raises (it is being dropped)."""
    with contextlib.suppress(Exception):
        consumer.close(autocommit=False)


def abandon(connection: Connection, transaction: RootTransaction) -> None:
    """Roll back after a failure and give the connection back; a connection that cannot roll
    back (a statement of it still running, the server gone) is discarded instead, which rolls
    back on the server's side."""
    try:
        transaction.rollback()
    except Exception:
        connection.invalidate()
    connection.close()


@dataclass
class _InFlight:
    """A batch decided and handed over, waiting for its inserts, acknowledgements and commit."""

    connection: Connection
    transaction: RootTransaction
    store: SqlAlchemyAccrualStore
    outcomes: dict[TopicPartition, PartitionOutcome]
    sent: list[Future[None]]


class KafkaJoinWorker:
    """One stream worker: `start()`, `run(stop)`, `close()`."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.engine: Engine = worker_engine(config.db_url, connections=1)
        self.chain: TopicChainView | None = None
        self.held: dict[TopicPartition, int] = {}
        """Held events per assigned usage partition (as committed)."""
        self._usage: KafkaConsumer | None = None
        self._chain: KafkaConsumer | None = None
        self._outputs = OutputLoop(
            LoopOutputProducer(
                config.bootstrap_servers,
                accruals_topic=config.accruals_topic,
                dead_letter_topic=config.dead_letter_topic,
                client_id=f"{config.client_id}-out",
            )
        )
        """The output producer: aiokafka on an event loop of its own thread."""
        self._tried_at_block: dict[TopicPartition, int] = {}
        self._defer_inserts = self.engine.dialect.name == "postgresql"
        """Whether a batch's inserts run on the database while the next poll is read (the
        batch committed in the next step), or are waited for at once (SQLite)."""
        self._in_flight: _InFlight | None = None
        self._listener: _SeekToCheckpoint | None = None
        self._fetched_at = time.monotonic()
        """When the usage consumer last returned records (or was created, or paused)."""
        self._stall_checked_at = 0.0

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect, create missing topics, fold the chain topic up to its end, join the group.

        A broker that does not answer yet is waited for, with backoff, up to
        `connect_timeout_s`; then `BrokerUnavailable` says which step could not reach it."""
        c = self.config
        servers = c.bootstrap_servers.split(",")
        deadline = time.monotonic() + c.connect_timeout_s
        chain_partitions = until_reachable("create the topics", deadline, self._ensure_topics)
        producer = self._outputs.start()
        until_reachable("connect the producer", deadline, lambda left: producer.connect())
        self._chain = until_reachable(
            "connect the chain consumer",
            deadline,
            lambda left: KafkaConsumer(
                bootstrap_servers=servers,
                client_id=f"{c.client_id}-chain",
                group_id=None,
                enable_auto_commit=False,
                fetch_max_bytes=_FETCH_MAX_BYTES,
                max_partition_fetch_bytes=_PARTITION_FETCH_BYTES,
                bootstrap_timeout_ms=_bootstrap_ms(left),
                **LEAN_CLIENT,
            ),
        )
        partitions = [TopicPartition(c.chain_topic, p) for p in range(chain_partitions)]
        self.chain = TopicChainView(c.chain_id, len(partitions))
        self._chain.assign(partitions)
        self._chain.seek_to_beginning(*partitions)
        until_reachable(
            "read the chain topic", deadline, lambda _: self._catch_up_chain(partitions)
        )
        self._connect_usage(deadline)
        freeze_startup_objects()

    def _connect_usage(self, deadline: float) -> None:
        """Create the usage consumer and subscribe it: the group assigns its partitions at the
        next poll, and each is positioned after its checkpoint then."""
        c = self.config
        consumer = until_reachable(
            "connect the usage consumer",
            deadline,
            lambda left: KafkaConsumer(
                bootstrap_servers=c.bootstrap_servers.split(","),
                client_id=f"{c.client_id}-usage",
                group_id=c.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=c.max_records,
                check_crcs=CHECK_USAGE_CRCS,
                fetch_max_bytes=_FETCH_MAX_BYTES,
                max_partition_fetch_bytes=_PARTITION_FETCH_BYTES,
                group_instance_id=c.instance_id,
                session_timeout_ms=c.session_timeout_ms,
                heartbeat_interval_ms=max(1000, c.session_timeout_ms // 4),
                # A group joined before the topic's metadata arrived is assigned nothing, and
                # rejoins only at the next metadata refresh: keep that refresh short.
                metadata_max_age_ms=5_000,
                **LEAN_CLIENT,
                bootstrap_timeout_ms=_bootstrap_ms(left),
            ),
        )
        self._wait_for_partitions(
            consumer, c.usage_topic, timeout_s=max(0.0, deadline - time.monotonic())
        )
        self._listener = _SeekToCheckpoint(self)
        consumer.subscribe([c.usage_topic], listener=self._listener)
        self._usage = consumer
        self._fetched_at = time.monotonic()

    # --- a consumer that stopped fetching ------------------------------------------------------

    def check_stalled(self, now: float) -> bool:
        """Replace the usage consumer when it has returned nothing for `stall_s` while records
        wait on a partition assigned to it; True when it was replaced.

        kafka-python (3.0) clients have been seen to stop fetching for good: the member
        dropped from its group without noticing, or a partition never fetched again after a
        rebalance, the poll returning nothing at once, forever. Nothing is lost then, but
        nothing moves either. The lag is read from the topic's end offsets (through the chain
        consumer, a separate client) against the database's checkpoints, at most once per
        `stall_s`. A replaced consumer is closed on a thread of its own, since a wedged client
        may not close promptly; its revocations no longer touch this worker."""
        stall_s = self.config.stall_s
        if now - self._fetched_at < stall_s or now - self._stall_checked_at < stall_s:
            return False
        self._stall_checked_at = now
        waiting = self.waiting_records()
        if not waiting:
            return False
        log.error(
            "usage consumer stopped fetching while records wait; replacing it",
            waiting={f"{tp.topic}[{tp.partition}]": n for tp, n in waiting.items()},
            idle_s=round(now - self._fetched_at, 1),
        )
        USAGE_CONSUMER_REPLACED.inc()
        self.settle()
        old, listener = self._usage, self._listener
        if listener is not None:
            listener.active = False
        self._usage = None
        if old is not None:
            threading.Thread(
                target=_close_quietly, args=(old,), name="usage-consumer-close", daemon=True
            ).start()
        self.held.clear()
        self._tried_at_block.clear()
        HELD.set(0)
        self._connect_usage(time.monotonic() + self.config.connect_timeout_s)
        return True

    def waiting_records(self) -> dict[TopicPartition, int]:
        """Records past the checkpoint on each usage partition assigned to this worker; empty
        while back-pressure pauses consumption (the only reason it pauses), and when the broker
        or the database cannot say (the loop meets those errors itself)."""
        assert self._usage is not None
        assert self._chain is not None
        if sum(self.held.values()) >= self.config.max_held:
            return {}
        partitions = list(self._usage.assignment())
        if not partitions:
            return {}
        waiting: dict[TopicPartition, int] = {}
        try:
            ends = self._chain.end_offsets(partitions)
            with self.engine.connect() as connection:
                store = SqlAlchemyAccrualStore(connection)
                for tp in partitions:
                    component = checkpoint_component(self.config.component, tp.topic, tp.partition)
                    position, _ = store.load_position(component)
                    behind = ends.get(tp, 0) - (position.offset + 1)
                    if behind > 0:
                        waiting[tp] = behind
        except (KafkaError, SQLAlchemyError) as exc:
            log.warning(
                "could not compare the usage partitions with their checkpoints", error=repr(exc)
            )
            return {}
        return waiting

    @staticmethod
    def _wait_for_partitions(consumer: KafkaConsumer, topic: str, timeout_s: float = 30) -> None:
        """Block until `consumer` knows `topic`'s partitions, so the first join assigns them.

        An unreachable broker is retried with backoff until `timeout_s`, then reported as
        `BrokerUnavailable`; a reachable one without the topic's metadata by then, as
        `RuntimeError`."""
        deadline = time.monotonic() + timeout_s
        delay = _BACKOFF_S[0]
        while True:
            try:
                if consumer.partitions_for_topic(topic):
                    return
            except _UNREACHABLE as exc:
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(
                        f"Kafka unreachable: no metadata for topic {topic!r} after {timeout_s}s"
                        f" ({exc!r})"
                    ) from exc
                log.warning("Kafka unreachable; retrying", topic=topic, error=repr(exc))
                time.sleep(delay)
                delay = min(delay * 2, _BACKOFF_S[1])
                continue
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic!r} has no partition metadata after {timeout_s}s")
            time.sleep(0.1)

    def close(self) -> None:
        """Leave the group and release connections (a batch still in flight is abandoned: its
        transaction never commits, and its records are read again by whoever resumes)."""
        flight, self._in_flight = self._in_flight, None
        if flight is not None:
            with contextlib.suppress(Exception):
                flight.connection.invalidate()
        for client in (self._usage, self._chain):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self._outputs.close()
        self.engine.dispose()

    def _ensure_topics(self, left_s: float = 30.0) -> int:
        """Create missing topics (the worker may start first); the `chain` partition count."""
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        c = self.config
        admin = KafkaAdminClient(
            bootstrap_servers=c.bootstrap_servers.split(","),
            bootstrap_timeout_ms=_bootstrap_ms(left_s),
        )
        try:
            names = (c.usage_topic, c.chain_topic, c.accruals_topic, c.dead_letter_topic)
            existing = set(admin.list_topics())
            for name in (n for n in names if n not in existing):
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(name, c.partitions, 1)])
            (described,) = admin.describe_topics([c.chain_topic])
            if not described["partitions"]:
                # Just created on a broker still settling: retried by `until_reachable`.
                raise KafkaTimeoutError(f"topic {c.chain_topic!r} has no partitions yet")
            return len(described["partitions"])
        finally:
            admin.close()

    def _catch_up_chain(self, partitions: list[TopicPartition]) -> None:
        # Not needed for correctness (a stale view only holds events longer), but deciding
        # against the chain as published saves holding everything on the first batches.
        assert self._chain is not None
        end = self._chain.end_offsets(partitions)
        while any(self._chain.position(tp) < end[tp] for tp in partitions):
            self._fold_chain(self._chain.poll(timeout_ms=500))

    def _fold_chain(self, records: dict[TopicPartition, list[Any]]) -> None:
        assert self.chain is not None
        for tp, messages in records.items():
            for m in messages:
                ce_type = dict(m.headers or ()).get("ce_type")
                self.chain.apply(tp.partition, m.value, ce_type.decode() if ce_type else None)
        FINALIZED_BLOCK.set(self.chain.finalized_block)

    def seek_to_checkpoint(self, tp: TopicPartition) -> None:
        """Position `tp` after its committed checkpoint (the database, not Kafka, decides)."""
        assert self._usage is not None
        component = checkpoint_component(self.config.component, tp.topic, tp.partition)
        with self.engine.connect() as connection:
            position, _ = SqlAlchemyAccrualStore(connection).load_position(component)
        self._usage.seek(tp, position.offset + 1)
        self.held[tp] = len(position.held)
        self._tried_at_block.pop(tp, None)
        HELD.set(sum(self.held.values()))

    # --- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Consume until `stop` is set; the batch still in flight is then finished."""
        assert self._usage is not None
        assert self._chain is not None
        delay = _BACKOFF_S[0]
        while not stop.is_set():
            try:
                self._fold_chain(self._chain.poll(timeout_ms=0))
                # With a batch in flight, wait only briefly: that batch commits as soon as a
                # poll brings nothing, instead of after a whole quiet poll.
                wait_ms = (
                    min(_IN_FLIGHT_POLL_MS, self.config.poll_ms)
                    if self._in_flight is not None
                    else self.config.poll_ms
                )
                records = self._usage.poll(timeout_ms=wait_ms)
            except _UNREACHABLE as exc:
                # A broker restarting: nothing was taken from the topics; poll again.
                log.warning("Kafka unreachable; polling again", error=repr(exc), retry_in=delay)
                self.settle()
                stop.wait(delay)
                delay = min(delay * 2, _BACKOFF_S[1])
                continue
            delay = _BACKOFF_S[0]
            now = time.monotonic()
            if records:
                self._fetched_at = now
            elif self.check_stalled(now):
                continue
            self.step(records)
        self.settle()

    def step(self, records: dict[TopicPartition, list[Any]]) -> None:
        """Decide the polled records, plus the held events the chain may now release.

        The records are parsed and their signatures checked first, while the database may
        still be writing the batch in flight; then that batch is committed, and these are
        decided and started the same way. On PostgreSQL the batch then stays in flight until
        the next step (or `settle`); elsewhere it is committed at once."""
        assert self._usage is not None
        assert self.chain is not None
        polled = {tp: [(m.offset, m.value) for m in messages] for tp, messages in records.items()}
        parsed = {tp: parse_messages(batch, self.config.key_ring) for tp, batch in polled.items()}
        if not self.settle():
            # Rolled back: these records were polled past the checkpoints too. Seek them
            # back as well, or the next batch of their partitions would skip them.
            self._reseek(polled)
            return
        block = self.chain.finalized_block
        retry = [
            tp
            for tp, n in self.held.items()
            if n and tp not in polled and self._tried_at_block.get(tp) != block
        ]
        batches = {tp: polled.get(tp, []) for tp in [*polled, *retry]}
        if batches and self._process(batches, parsed):
            for tp in batches:
                self._tried_at_block[tp] = block
        if not self._defer_inserts:
            self.settle()
        # Back-pressure: a full hold buffer stops consumption until the watermark moves.
        assigned = list(self._usage.assignment())
        if sum(self.held.values()) >= self.config.max_held:
            self._usage.pause(*assigned)
            self._fetched_at = time.monotonic()  # paused on purpose: not a stall
        else:
            self._usage.resume(*assigned)

    def _process(
        self,
        batches: dict[TopicPartition, list[Message]],
        parsed: dict[TopicPartition, list[ParsedMessage]],
    ) -> bool:
        """Decide one poll's partition batches in ONE transaction: each partition's outputs
        and checkpoint (compare-and-set, as always), handed to the producer, the database's
        inserts started. True once in flight: `settle` waits for both and commits.

        A moved checkpoint (`CheckpointConflict`) rolls the whole poll back and seeks every
        partition of it back to its checkpoint, so nothing is skipped: the batch is decided
        again."""
        assert self._usage is not None
        assert self.chain is not None
        sent: list[Future[None]] = []
        outcomes: dict[TopicPartition, PartitionOutcome] = {}
        connection = self.engine.connect()
        transaction = connection.begin()
        store = SqlAlchemyAccrualStore(connection, defer_inserts=self._defer_inserts)
        try:
            for tp, batch in batches.items():
                outcomes[tp] = decide_usage(
                    self.config,
                    connection,
                    checkpoint_component(self.config.component, tp.topic, tp.partition),
                    batch,
                    self.chain.view,
                    lambda decided: sent.extend(self._send(decided)),
                    parsed=parsed.get(tp),
                    store=store,
                )
            store.send_deferred()
        except CheckpointConflict:
            abandon(connection, transaction)
            log.warning(
                "checkpoint moved by another worker; re-seeking",
                partitions=[str(tp) for tp in batches],
            )
            self._reseek(batches)
            return False
        except (KafkaError, OutputsNotAcknowledged) as exc:
            abandon(connection, transaction)
            self._refused_by_kafka(batches, exc)
            return False
        except BaseException:
            abandon(connection, transaction)
            raise
        self._in_flight = _InFlight(connection, transaction, store, outcomes, sent)
        return True

    def settle(self) -> bool:
        """Finish the batch in flight, if any: wait for the database's inserts and for Kafka's
        acknowledgement of its outputs, then commit. True when committed (or none was in
        flight).

        Outputs Kafka did not acknowledge (a broker restarting) roll the batch back and seek
        every partition of it back to its checkpoint (a new producer for the next batch);
        False then, and records polled meanwhile must be dropped: they are read again."""
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return True
        try:
            flight.store.finish_deferred()
            # Produced and acknowledged before the commit: at least once on the topics.
            confirm_sent(self._outputs.producer, flight.sent)
            flight.transaction.commit()
        except (KafkaError, OutputsNotAcknowledged) as exc:
            abandon(flight.connection, flight.transaction)
            self._refused_by_kafka(flight.outcomes, exc)
            return False
        except BaseException:
            abandon(flight.connection, flight.transaction)
            raise
        flight.connection.close()
        self._committed(flight.outcomes)
        return True

    def _refused_by_kafka(self, partitions: Iterable[TopicPartition], error: Exception) -> None:
        """After rolling back a batch whose outputs Kafka did not take: the partitions sought
        back to their checkpoints (read again). The producer that failed was dropped; the next
        batch starts a fresh one."""
        partitions = list(partitions)
        log.warning(
            "outputs not acknowledged by Kafka; batch rolled back, re-seeking",
            partitions=[str(tp) for tp in partitions],
            error=repr(error),
        )
        self._reseek(partitions)
        time.sleep(_BACKOFF_S[0])

    def _reseek(self, partitions: Iterable[TopicPartition]) -> None:
        """Seek the partitions still assigned back to their checkpoints (a rolled-back batch);
        in a rebalance the others' new owners start from the checkpoints anyway."""
        assert self._usage is not None
        assigned = self._usage.assignment()
        for tp in partitions:
            if tp in assigned:
                self.seek_to_checkpoint(tp)

    def _committed(self, outcomes: dict[TopicPartition, PartitionOutcome]) -> None:
        """After a batch's commit: hold counts, metrics, log lines, consumer offsets."""
        assert self._usage is not None
        offsets = {}
        assigned = self._usage.assignment()
        for tp, outcome in outcomes.items():
            if tp in assigned:  # a partition revoked while its batch was in flight is not ours
                self.held[tp] = len(outcome.position.held)
            # One line per batch, not per event: rendering a log line costs as much as
            # deciding.
            log.debug(
                "usage batch committed",
                partition=str(tp),
                offset=outcome.position.offset,
                billed=len(outcome.accruals),
                rejected=len(outcome.letters),
                held=len(outcome.position.held),
            )
            for d in outcome.letters:
                log.info(
                    "usage rejected", usage_id=d.usage_id, reason=d.reason.value, detail=d.detail
                )
            DECIDED.labels("accepted").inc(len(outcome.accruals))
            DECIDED.labels("rejected").inc(len(outcome.letters))
            if outcome.consumed and tp in assigned:
                offsets[tp] = OffsetAndMetadata(outcome.position.offset + 1, "", -1)
        HELD.set(sum(self.held.values()))
        if offsets:
            # Only for lag monitoring: positions come from the database checkpoint.
            with contextlib.suppress(Exception):
                self._usage.commit(offsets)

    def _send(self, outcome: PartitionOutcome) -> list[Future[None]]:
        """Hand the batch's accruals and dead letters to the producer (not yet acknowledged)."""
        return send_outcome(self._outputs.producer, outcome)


def decide_usage(
    config: WorkerConfig,
    connection: Connection,
    component: str,
    batch: list[Message],
    view: ChainView,
    on_decided: Callable[[PartitionOutcome], None],
    *,
    parsed: Sequence[ParsedMessage] | None = None,
    store: SqlAlchemyAccrualStore | None = None,
) -> PartitionOutcome:
    """`decide_partition_batch` for a worker: its key ring and epoch clock, received now."""
    return decide_partition_batch(
        connection,
        component,
        batch,
        state=view,
        key_ring=config.key_ring,
        clock=config.clock,
        received_at=datetime.now(UTC),
        on_decided=on_decided,
        parsed=parsed,
        store=store,
    )


def send_outcome(producer: LoopOutputProducer, outcome: PartitionOutcome) -> list[Future[None]]:
    """Start producing a batch's accruals and dead letters (accruals keyed by model id, dead
    letters by usage id, each to the partition Kafka's default partitioner picks); the answer
    to wait on, not yet acknowledged."""
    outputs = Outputs()
    outputs.add(outcome)
    return [producer.submit(outputs)] if outputs else []


def confirm_sent(producer: LoopOutputProducer, futures: list[Future[None]]) -> None:
    """Wait until every output in `futures` is acknowledged; raise `OutputsNotAcknowledged`
    when one was not (the batch then rolls back; the producer that failed is dropped)."""
    for future in futures:
        producer.wait(future)


def serve(config: WorkerConfig, stop: threading.Event | None = None) -> None:
    """Run one worker until `stop` (set by SIGTERM / SIGINT when not given)."""
    if stop is None:
        stop = threading.Event()
        stopper = stop

        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            stopper.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    worker = KafkaJoinWorker(config)
    try:
        worker.start()
        log.info("worker started", group=config.group_id, usage=config.usage_topic)
        worker.run(stop)
    finally:
        worker.close()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m stream.app", description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--db-url", required=True)
    p.add_argument("--chain-id", type=int, required=True)
    p.add_argument("--key-ring", type=Path, required=True)
    p.add_argument("--epoch-length", type=int, required=True)
    p.add_argument("--epoch-genesis", type=int, default=0)
    p.add_argument("--usage-topic", default="usage")
    p.add_argument("--chain-topic", default="chain")
    p.add_argument("--accruals-topic", default="accruals")
    p.add_argument("--dead-letter-topic", default="usage.dead-letter")
    p.add_argument("--group-id", default="royalty-worker")
    p.add_argument("--component", default="stream.worker")
    p.add_argument("--max-records", type=int, default=500)
    p.add_argument("--max-held", type=int, default=10_000)
    p.add_argument("--instance-id", default=None, help="static group membership id")
    p.add_argument("--session-timeout-ms", type=int, default=10_000)
    p.add_argument(
        "--connect-timeout-s",
        type=float,
        default=120.0,
        help="how long to wait for an unreachable broker at start",
    )
    p.add_argument(
        "--stall-s",
        type=float,
        default=30.0,
        help="replace the usage consumer after this long without records while some wait",
    )
    p.add_argument("--metrics-port", type=int, default=None)
    return p


def config_from_args(
    argv: Sequence[str] | None, prog: str = "python -m stream.app"
) -> tuple[WorkerConfig, int | None]:
    """The worker options (both engines take the same) → the worker's configuration and the
    metrics port."""
    p = _parser()
    p.prog = prog
    a = p.parse_args(argv)
    config = WorkerConfig(
        bootstrap_servers=a.bootstrap_servers,
        db_url=a.db_url,
        chain_id=a.chain_id,
        key_ring=load_key_ring(a.key_ring),
        clock=EpochClock(a.epoch_length, a.epoch_genesis),
        usage_topic=a.usage_topic,
        chain_topic=a.chain_topic,
        accruals_topic=a.accruals_topic,
        dead_letter_topic=a.dead_letter_topic,
        group_id=a.group_id,
        component=a.component,
        max_records=a.max_records,
        max_held=a.max_held,
        instance_id=a.instance_id,
        session_timeout_ms=a.session_timeout_ms,
        connect_timeout_s=a.connect_timeout_s,
        stall_s=a.stall_s,
    )
    return config, a.metrics_port


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `python -m stream.app`."""
    config, metrics_port = config_from_args(argv)
    if metrics_port:
        start_http_server(metrics_port, registry=REGISTRY)
    serve(config)


if __name__ == "__main__":
    main(sys.argv[1:])
