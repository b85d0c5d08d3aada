"""The embedded runner: the join core and the database sink driven in one process, no Kafka.

Input is an ordered log of `(offset, raw message)` (an in-process queue, a replayed file, a
test list). Each batch runs in ONE database transaction: read the checkpoint, read finalized
chain state through the same connection, decide every message, write usage ids, accruals,
dead letters and the new checkpoint, commit. A crash anywhere rolls the whole batch back and
the next run resumes after the last committed offset: no message decided twice, none skipped.
Held events (beyond the finalized chain) are carried in the checkpoint itself. The chain
state is read through one `SqlAlchemyChainView` kept across batches while the finalized
watermark does not move (each batch still reads the watermark in its own transaction).
"""

from __future__ import annotations

import queue
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice

from sqlalchemy.engine import Connection, Engine

from metering.signing import KeyRing
from stream.epochs import EpochClock
from stream.errors import HoldBufferFull
from stream.partition_batch import Message, decide_partition_batch
from stream.sinks.sqlalchemy_accrual_store import JoinPosition, SqlAlchemyAccrualStore
from stream.sqlalchemy_chain_state import SqlAlchemyChainView

DEFAULT_COMPONENT = "stream.join"


@dataclass
class BatchResult:
    """What one committed batch did."""

    consumed: int = 0
    accrued: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    held: int = 0
    offset: int = -1


class EmbeddedJoinRunner:
    """Decides usage messages against the indexed, finalized chain and stores the outputs.

    `max_held` bounds the events waiting for the chain: when full, no new input is consumed
    until the watermark releases some (back-pressure, never dropping). `min_epoch` returns
    the earliest epoch still open (late events are billed there); 0 by default.
    """

    def __init__(
        self,
        engine: Engine,
        chain_id: int,
        key_ring: KeyRing,
        clock: EpochClock,
        *,
        component: str = DEFAULT_COMPONENT,
        batch_size: int = 500,
        max_held: int = 10_000,
        min_epoch: Callable[[Connection], int] = lambda _connection: 0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if batch_size <= 0 or max_held <= 0:
            raise ValueError("batch_size and max_held must be positive")
        self.engine = engine
        self.chain_id = chain_id
        self.key_ring = key_ring
        self.clock = clock
        self.component = component
        self.batch_size = batch_size
        self.max_held = max_held
        self.min_epoch = min_epoch
        self.now = now
        self.held_count = 0
        """Events waiting for the finalized chain after the last batch (a gauge)."""
        self._view: SqlAlchemyChainView | None = None

    def position(self) -> JoinPosition:
        """The committed position (last offset consumed, held events)."""
        with self.engine.connect() as connection:
            return SqlAlchemyAccrualStore(connection).load_position(self.component)[0]

    def process(self, messages: Iterable[Message]) -> list[BatchResult]:
        """Consume `messages` (offsets at or below the checkpoint are skipped, so a replaying
        source is fine) in committed batches, ending with one that only retries held events.
        Raise `HoldBufferFull` when the held events fill the buffer and the watermark does not
        release any: the rest of `messages` stays unconsumed for a later call."""
        results = []
        committed = self.position()
        self.held_count = len(committed.held)
        pending = (m for m in messages if m[0] > committed.offset)
        while True:
            room = self._room()
            if room == 0:
                results.append(self.run_batch([]))
                room = self._room()
                if room == 0:
                    raise HoldBufferFull(
                        f"{self.held_count} usage events wait for the finalized chain"
                    )
            results.append(self.run_batch(list(islice(pending, room))))
            if results[-1].consumed == 0:
                return results

    def _room(self) -> int:
        # Back-pressure: take no more than the hold buffer could keep if all were held.
        return max(0, min(self.batch_size, self.max_held - self.held_count))

    def run_queue(self, source: queue.Queue[Message | None], idle_s: float = 0.5) -> None:
        """Consume from an in-process queue until a `None` sentinel arrives; after `idle_s`
        of silence (or with a full hold buffer) retry the held events as the chain moves."""
        self.held_count = len(self.position().held)
        stop = False
        while not stop:
            batch: list[Message] = []
            room = self._room()
            try:
                while len(batch) < room:
                    item = source.get(timeout=idle_s if not batch else 0.001)
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
            except queue.Empty:
                pass
            self.run_batch(batch)
            if room == 0:
                time.sleep(idle_s)

    def run_batch(self, batch: list[Message]) -> BatchResult:
        """Decide held events plus `batch` in one transaction and commit."""
        with self.engine.begin() as connection:
            return self._decide(connection, batch)

    def _decide(self, connection: Connection, batch: list[Message]) -> BatchResult:
        # The chain histories loaded by earlier batches are kept while the watermark stays.
        if self._view is None:
            self._view = SqlAlchemyChainView(connection, self.chain_id)
        else:
            self._view = self._view.for_transaction(connection)
        outcome = decide_partition_batch(
            connection,
            self.component,
            batch,
            state=self._view,
            key_ring=self.key_ring,
            clock=self.clock,
            received_at=self.now(),
            min_epoch=self.min_epoch(connection),
        )
        rejected = Counter(letter.reason.value for letter in outcome.letters)
        self.held_count = len(outcome.position.held)
        return BatchResult(
            consumed=outcome.consumed,
            accrued=len(outcome.accruals),
            rejected=dict(rejected),
            held=self.held_count,
            offset=outcome.position.offset,
        )


def numbered(messages: Iterable[bytes], start: int = 0) -> Iterator[Message]:
    """`messages` with consecutive offsets from `start` (an in-process log's positions)."""
    return ((start + i, m) for i, m in enumerate(messages))
