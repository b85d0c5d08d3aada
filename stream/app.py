"""The stream worker (`royalty worker`, `python -m stream.app`): usage ⨝ chain → accruals.

Consumes `usage` (key = model id) in a consumer group and the whole `chain` topic (a
`TopicChainView` replicated in every worker; why, in `stream.topic_chain_view`), decides each
usage event with `stream.join` (through `stream.partition_batch`, the same steps as the embedded
runner), writes the database through `SqlAlchemyAccrualStore`, and publishes accruals to
`accruals` and rejects to `usage.dead-letter`.

Written on kafka-python's consumer and producer; the loop is synchronous, as the database work
is anyway. The same join runs on faust too (`stream.faust_app`, `royalty worker --engine
faust`; aiokafka reads the publishers' lz4 batches through `cramjam`), with the same
checkpoints and guarantees: there faust's own offset commits are switched off for `usage`, as
faust commits when a batch is handed over, not in our database transaction. This engine stays
the default: it seeks to the checkpoint at assignment and commits consumer offsets for lag
tools.

Delivery guarantees, and why:

- **Database: exactly once in effect.** Each usage partition's checkpoint (last offset decided
  and the events held for the chain) is a row of `checkpoints`, written in the SAME transaction
  as that batch's usage ids, accruals and dead letters. On assignment the worker seeks every
  partition to its checkpoint + 1 and ignores Kafka's committed offsets, which it commits only
  so that lag tools work. A crash anywhere rolls back the batch; the restart re-reads exactly
  the undecided messages. The checkpoint write is compare-and-set, so a worker that lost its
  partition in a rebalance cannot commit over the new owner; and `ON CONFLICT (usage_id) DO
  NOTHING` plus the unique constraints remain the last line against billing an id twice.
- **Topics `accruals` / `usage.dead-letter`: at least once.** A batch's outputs are produced
  and acknowledged (`acks=all`, idempotent producer) *before* its database commit, so none is
  lost; a crash between the two re-produces them. Consumers dedupe on the usage id (the
  ClickHouse tables are ReplacingMergeTree on it).
- **Held events** (time not before the finalized chain's newest block) stay in the checkpoint,
  not only in memory, and are decided again when the chain watermark moves. Their number is
  bounded by `max_held`: beyond it the usage partitions are paused (back-pressure, never
  dropping); `royalty_stream_held_events` exposes the gauge.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from metering.keyfiles import load_key_ring
from metering.signing import KeyRing
from schemas.accrual import kafka_key as accrual_key
from schemas.codec import encode
from schemas.engine import create_engine
from stream.epochs import EpochClock
from stream.errors import CheckpointConflict
from stream.partition_batch import (
    Message,
    PartitionOutcome,
    checkpoint_component,
    decide_partition_batch,
)
from stream.sinks.sqlalchemy_accrual_store import SqlAlchemyAccrualStore
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
FINALIZED_BLOCK = Gauge(
    "royalty_stream_chain_finalized_block", "Newest finalized block folded in.", registry=REGISTRY
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


class _SeekToCheckpoint(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, position each usage partition after its database checkpoint."""

    def __init__(self, worker: KafkaJoinWorker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: Any) -> None:
        # Nothing in flight survives a batch: each one commits (or not) as a whole.
        for tp in revoked:
            self.worker.held.pop(tp, None)

    def on_partitions_assigned(self, assigned: Any) -> None:
        for tp in assigned:
            self.worker.seek_to_checkpoint(tp)


class KafkaJoinWorker:
    """One stream worker: `start()`, `run(stop)`, `close()`."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.engine: Engine = create_engine(config.db_url, poolclass=NullPool)
        self.chain: TopicChainView | None = None
        self.held: dict[TopicPartition, int] = {}
        """Held events per assigned usage partition (as committed)."""
        self._usage: KafkaConsumer | None = None
        self._chain: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._tried_at_block: dict[TopicPartition, int] = {}

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Connect, create missing topics, fold the chain topic up to its end, join the group."""
        c = self.config
        servers = c.bootstrap_servers.split(",")
        chain_partitions = self._ensure_topics()
        self._producer = KafkaProducer(
            bootstrap_servers=servers,
            client_id=f"{c.client_id}-out",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
        )
        self._chain = KafkaConsumer(
            bootstrap_servers=servers,
            client_id=f"{c.client_id}-chain",
            group_id=None,
            enable_auto_commit=False,
        )
        partitions = [TopicPartition(c.chain_topic, p) for p in range(chain_partitions)]
        self.chain = TopicChainView(c.chain_id, len(partitions))
        self._chain.assign(partitions)
        self._chain.seek_to_beginning(*partitions)
        self._catch_up_chain(partitions)
        self._usage = KafkaConsumer(
            bootstrap_servers=servers,
            client_id=f"{c.client_id}-usage",
            group_id=c.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=c.max_records,
            group_instance_id=c.instance_id,
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=max(1000, c.session_timeout_ms // 4),
            # A group joined before the topic's metadata arrived is assigned nothing, and
            # rejoins only at the next metadata refresh: keep that refresh short.
            metadata_max_age_ms=5_000,
        )
        self._wait_for_partitions(self._usage, c.usage_topic)
        self._usage.subscribe([c.usage_topic], listener=_SeekToCheckpoint(self))

    @staticmethod
    def _wait_for_partitions(consumer: KafkaConsumer, topic: str, timeout_s: float = 30) -> None:
        """Block until `consumer` knows `topic`'s partitions, so the first join assigns them."""
        deadline = time.monotonic() + timeout_s
        while not consumer.partitions_for_topic(topic):
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {topic!r} has no partition metadata after {timeout_s}s")
            time.sleep(0.1)

    def close(self) -> None:
        """Leave the group and release connections."""
        for client in (self._usage, self._chain, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()
        self.engine.dispose()

    def _ensure_topics(self) -> int:
        """Create missing topics (the worker may start first); the `chain` partition count."""
        from kafka.admin import KafkaAdminClient, NewTopic
        from kafka.errors import TopicAlreadyExistsError

        c = self.config
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
        """Consume until `stop` is set."""
        assert self._usage is not None
        assert self._chain is not None
        while not stop.is_set():
            self._fold_chain(self._chain.poll(timeout_ms=0))
            self.step(self._usage.poll(timeout_ms=self.config.poll_ms))

    def step(self, records: dict[TopicPartition, list[Any]]) -> None:
        """Decide the polled records, plus the held events the chain may now release."""
        assert self._usage is not None
        assert self.chain is not None
        block = self.chain.finalized_block
        retry = [
            tp
            for tp, n in self.held.items()
            if n and tp not in records and self._tried_at_block.get(tp) != block
        ]
        for tp in [*records, *retry]:
            self._process(tp, [(m.offset, m.value) for m in records.get(tp, [])])
            self._tried_at_block[tp] = block
        # Back-pressure: a full hold buffer stops consumption until the watermark moves.
        assigned = list(self._usage.assignment())
        if sum(self.held.values()) >= self.config.max_held:
            self._usage.pause(*assigned)
        else:
            self._usage.resume(*assigned)

    def _process(self, tp: TopicPartition, batch: list[Message]) -> None:
        assert self._usage is not None
        assert self.chain is not None
        component = checkpoint_component(self.config.component, tp.topic, tp.partition)
        with self.engine.connect() as connection:
            transaction = connection.begin()
            try:
                outcome = decide_partition_batch(
                    connection,
                    component,
                    batch,
                    state=self.chain.view,
                    key_ring=self.config.key_ring,
                    clock=self.config.clock,
                    received_at=datetime.now(UTC),
                )
                # Produced and acknowledged before the commit: at least once on the topics.
                self._publish(outcome)
                transaction.commit()
            except CheckpointConflict:
                transaction.rollback()
                log.warning("checkpoint moved by another worker; re-seeking", partition=str(tp))
                self.seek_to_checkpoint(tp)
                return
            except BaseException:
                transaction.rollback()
                raise
        self.held[tp] = len(outcome.position.held)
        HELD.set(sum(self.held.values()))
        for a in outcome.accruals:
            log.debug("usage billed", usage_id=a.usage_id, epoch=a.epoch, fee_e6=str(a.fee_e6))
        for d in outcome.letters:
            log.info("usage rejected", usage_id=d.usage_id, reason=d.reason.value, detail=d.detail)
        DECIDED.labels("accepted").inc(len(outcome.accruals))
        DECIDED.labels("rejected").inc(len(outcome.letters))
        if outcome.consumed:
            # Only for lag monitoring: positions come from the database checkpoint.
            with contextlib.suppress(Exception):
                self._usage.commit({tp: OffsetAndMetadata(outcome.position.offset + 1, "", -1)})

    def _publish(self, outcome: PartitionOutcome) -> None:
        assert self._producer is not None
        c = self.config
        futures = [
            self._producer.send(c.accruals_topic, encode(a), key=accrual_key(a))
            for a in outcome.accruals
        ]
        futures += [
            self._producer.send(c.dead_letter_topic, encode(d), key=(d.usage_id or "").encode())
            for d in outcome.letters
        ]
        if futures:
            self._producer.flush(timeout=30)
            for future in futures:
                future.get(timeout=0)  # raises when not acknowledged: the batch rolls back


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
    p.add_argument("--metrics-port", type=int, default=None)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `python -m stream.app`."""
    a = _parser().parse_args(argv)
    if a.metrics_port:
        start_http_server(a.metrics_port, registry=REGISTRY)
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
    )
    serve(config)


if __name__ == "__main__":
    main(sys.argv[1:])
