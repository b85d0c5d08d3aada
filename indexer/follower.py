"""The follower: from the checkpoint to the chain head, one committed block range at a time.

One `step`:

1. take the checkpoint (last indexed block and its hash: as this follower last committed it,
   else read) and read the head;
2. fetch the logs of the next range (its size adapts: `indexer.ranges`), then the headers it
   needs: the range's first block (its parent hash must be the checkpoint's hash, or the chain
   reorganised under us), every block near the head (kept for reorg detection), the range's
   last block (the new checkpoint), the new finalized block (the watermark);
3. check that logs and headers are one chain (else the chain moved between two calls: retry);
4. in ONE transaction, which first checks that the stored checkpoint is still the one the step
   started from: events, projection rows, raw logs, kept headers, outbox entries (the range's
   events as one `EventRange`, and the watermark message when it advanced) and the
   checkpoint.

On a reorg the follower walks back to the common ancestor (`indexer.reorg`) and, in one
transaction, queues retractions of every event above it, deletes everything derived from
those blocks, and moves the checkpoint back. Whatever happens between two commits, a restart
resumes from the last one: no event is applied twice or skipped, none from an orphaned block
survives. The outbox relay publishes after each commit.

Every write transaction also takes or renews the follower's lease (`indexer.lease`), so a
second follower of the same chain and database is refused, and one whose lease was taken over
cannot commit. After a commit whose messages are the whole outbox, `relay` publishes them from
memory (`indexer.relay.relay_committed`) rather than reading them back.

Blocks deeper than `reorg_window` below the head are fetched in large ranges without their
headers; blocks within it one header each. Ranges are sized to hold about `target_range_logs`
logs (`indexer.ranges`), and while a deep range is written, the logs of the next one are
fetched in a background thread and turned into their messages and rows (`indexer.batch`: a
function of the logs alone), so the node and the decoding work while the database writes.
Only fetching and decoding run ahead: the prefetched batch is used by the next step only for
exactly the range it would fetch, after the same header checks, and commits stay one range at
a time, in order. A range fetched ahead that reaches into the reorg window also has the hash
of its last block read before its logs, and is used only if the headers the step fetches
after still have that hash there (a reorg in between changes it, even one that only added
logs to a block that had none); otherwise the step fetches the range again. A range that was
not fetched ahead (the first one, or after a retry) is decoded in chunks by a thread while the
database takes the chunks before, inside the step's transaction.

The finalized watermark is `head - confirmations` (never beyond what was indexed): chain state
at or below it is what joins and settlement read.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import structlog
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from indexer import metrics
from indexer.batch import RangeBatch, RangeBuilder
from indexer.blocks import BlockHeader, ChainSource, RawLog
from indexer.bulk import dialect_uses_copy
from indexer.checkpoint import Checkpoint
from indexer.decoding import LogDecoder
from indexer.errors import (
    ChainMovedError,
    IndexerError,
    IndexerLeaseHeldError,
    IndexerLeaseLostError,
    PublishError,
    RangeRefusedError,
    RpcError,
)
from indexer.lease import Lease, may_take
from indexer.messages import ChainMessage, retraction_message, watermark_message
from indexer.publisher import ChainPublisher
from indexer.ranges import AdaptiveRange
from indexer.relay import relay_committed, relay_outbox
from indexer.reorg import BlockRef, common_ancestor, first_broken_link, inconsistent_logs
from indexer.store import EventRange, IndexerStore, OutboxEntry
from schemas.chain import FinalizedWatermark

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class FollowerConfig:
    """How the follower walks the chain."""

    start_block: int
    """First block to index (the deployment's block)."""
    confirmations: int = 2
    """Blocks behind the head before a block is final."""
    max_block_range: int = 2000
    """Largest eth_getLogs range."""
    target_range_logs: int | None = 10_000
    """Logs per range to aim for (None: ranges grow to the maximum whatever they hold)."""
    initial_block_range: int = 20
    """First eth_getLogs range when aiming at a log count (then fitted to the density)."""
    prefetch: bool = True
    """Fetch the next deep range's logs while writing the current one."""
    poll_interval_s: float = 1.0
    """Pause when caught up with the head."""
    reorg_window: int = 64
    """Blocks below the head whose headers are fetched and kept (beyond the confirmations)."""
    retry_delay_s: float = 0.5
    """Pause after a failed step (node unavailable, chain moved, bus down)."""
    lease_ttl_s: float = 30.0
    """How long the lease outlives the follower's last write (renewed by every write, and
    at least every third of this while idle)."""


_WRITE_CHUNK_LOGS = 2500
"""Logs per chunk when a range is prepared while it is written (`Follower._write_in_chunks`)."""

StepKind = Literal["indexed", "reorg", "idle", "retry"]


class _PositionMovedError(IndexerError):
    """The stored position is not the one a step started from (nothing was written)."""


@dataclass(frozen=True)
class StepResult:
    """What one step did."""

    kind: StepKind
    head: int
    indexed_to: int
    blocks: int = 0
    events: int = 0
    retracted: int = 0
    finalized: FinalizedWatermark | None = None


_Fetched = tuple[list[RawLog], RangeBatch | None, str | None]
"""A range's logs, their batch if prepared with them, and the hash its last block had before
the logs were read (when read: see `Follower._fetch_ahead`)."""


class Follower:
    """Indexes one deployment's contracts from a `ChainSource` into the database."""

    def __init__(
        self,
        source: ChainSource,
        decoder: LogDecoder,
        engine: Engine,
        config: FollowerConfig,
        publisher: ChainPublisher | None = None,
    ) -> None:
        self.source = source
        self.decoder = decoder
        self.engine = engine
        self.config = config
        self.publisher = publisher
        self.chain_id = decoder.chain_id
        self.range = AdaptiveRange(
            maximum=config.max_block_range,
            size=(
                min(config.initial_block_range, config.max_block_range)
                if config.target_range_logs is not None
                else 0
            ),
            target_logs=config.target_range_logs,
        )
        self._prefetched: tuple[int, int, Future[_Fetched]] | None = None
        self._builder = RangeBuilder(decoder, copy=dialect_uses_copy(engine.dialect))
        self._executor: ThreadPoolExecutor | None = None
        self._chunk_executor: ThreadPoolExecutor | None = None
        self._lease = Lease.for_this_process()
        self._lease_version: datetime | None = None  # the lease row as we last committed it
        self._lease_expires_at = 0.0
        self._committed: tuple[list[ChainMessage], int] | None = None  # for `relay`
        self._position: Checkpoint | None = None  # as this follower last committed it

    # --- state ---------------------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """The committed position (before the start block when nothing is indexed yet)."""
        with self.engine.connect() as connection:
            return self._stored_checkpoint(IndexerStore(connection, self.chain_id))

    def _stored_checkpoint(self, store: IndexerStore) -> Checkpoint:
        return store.checkpoint() or Checkpoint(self.config.start_block - 1, None)

    def _position_now(self) -> Checkpoint:
        """The position a step starts from: the one this follower committed last, else the
        stored one (each write checks the stored one is still it, see `_unit_of_work`)."""
        return self._position if self._position is not None else self.checkpoint()

    def _finalized_target(self, head: int, indexed_to: int) -> int:
        return min(indexed_to, head - self.config.confirmations)

    def _watermark(
        self, checkpoint: Checkpoint, target: int, headers: dict[int, BlockHeader]
    ) -> FinalizedWatermark | None:
        """The new watermark if `target` is past the current one (its header in `headers`)."""
        current = checkpoint.finalized.block_number if checkpoint.finalized else -1
        if target <= current or target < self.config.start_block:
            return None
        header = headers[target]
        return FinalizedWatermark(
            chain_id=self.chain_id,
            block_number=header.number,
            block_hash=header.hash,
            block_timestamp=header.timestamp,
        )

    # --- the lease and the unit of work ---------------------------------------------------------

    def _hold_lease(self, store: IndexerStore) -> tuple[datetime, float]:
        """Take or renew the lease inside the caller's transaction; its new version and expiry
        (to remember once the transaction commits)."""
        now, stamp = time.time(), datetime.now(UTC)
        renewed = self._lease.renewed(now, self.config.lease_ttl_s)
        # The usual case first, and as a write (SQLite: a transaction that starts by reading
        # cannot always upgrade to writing).
        if self._lease_version is not None and store.write_lease(
            renewed, self._lease_version, stamp
        ):
            return stamp, renewed.expires_at
        current = store.lease()
        held, version = current if current is not None else (None, None)
        if held is not None and held.owner == self._lease.owner:
            pass  # ours: a commit we did not see acknowledged moved it on
        elif self._lease_version is not None:
            holder = "nobody" if held is None else held.describe()
            raise IndexerLeaseLostError(
                f"chain {self.chain_id}: this indexer's lease was taken over (now: {holder}); "
                "stopping without committing"
            )
        elif not may_take(held, self._lease, now):
            assert held is not None
            raise IndexerLeaseHeldError(
                f"chain {self.chain_id} is already being indexed into this database by "
                f"{held.describe()}: stop that indexer first (a crashed one on another host "
                "frees it when its lease expires)"
            )
        if not store.write_lease(renewed, version, stamp):
            raise IndexerLeaseHeldError(
                f"chain {self.chain_id}: another indexer took the lease at the same moment"
            )
        return stamp, renewed.expires_at

    @contextmanager
    def _unit_of_work(self, based_on: Checkpoint | None = None) -> Iterator[IndexerStore]:
        """One write transaction, holding the lease: outputs, checkpoint and lease commit
        together or not at all. `based_on`: the position the outputs were computed from,
        which must still be the stored one (else `_PositionMovedError`, nothing written)."""
        self._committed = None  # whatever `relay` may publish from memory is no longer all
        position, self._position = self._position, None  # known again once committed
        with self.engine.begin() as connection:
            store = IndexerStore(connection, self.chain_id)
            version, expires_at = self._hold_lease(store)
            if based_on is not None and self._stored_checkpoint(store) != based_on:
                raise _PositionMovedError(f"chain {self.chain_id}: the stored position moved")
            yield store
        self._lease_version, self._lease_expires_at = version, expires_at
        self._position = store.saved_checkpoint or position

    def acquire_lease(self) -> None:
        """Take (or renew) the lease now; `IndexerLeaseHeldError` if another follower has it."""
        with self._unit_of_work():
            pass

    def release_lease(self) -> None:
        """Give the lease up (a clean stop), so the next follower needs no wait."""
        if self._lease_version is None:
            return
        with self.engine.begin() as connection:
            IndexerStore(connection, self.chain_id).release_lease(self._lease_version)
        self._lease_version, self._lease_expires_at = None, 0.0

    # --- one step ------------------------------------------------------------------------------

    def step(self) -> StepResult:
        """Index the next range, roll back a reorg, or advance the watermark; commit once."""
        checkpoint = self._position_now()
        try:
            return self._step(checkpoint)
        except _PositionMovedError as exc:
            log.warning("indexer position moved under the step, retrying", error=str(exc))
            return StepResult("retry", -1, checkpoint.block_number)

    def _step(self, checkpoint: Checkpoint) -> StepResult:
        head = self.source.head()
        metrics.HEAD.set(head)
        if checkpoint.block_number >= head:
            return self._at_head(checkpoint, head)
        start = checkpoint.block_number + 1
        end = self.range.end(start, head)
        metrics.RANGE_SIZE.set(self.range.size)
        try:
            logs, batch, end_hash = self._logs(start, end, self._near_head(end, head))
        except RangeRefusedError as exc:
            if not self.range.refused(end - start + 1):
                raise  # one block refused: nothing smaller to try, the caller retries later
            log.info("log range refused, shrinking", start=start, end=end, error=str(exc)[:200])
            return StepResult("retry", head, checkpoint.block_number)
        except ChainMovedError as exc:  # the range's last block went away: a reorg
            log.info("chain moved before the fetch", error=str(exc))
            return StepResult("retry", head, checkpoint.block_number)
        self.range.succeeded(end - start + 1, len(logs))
        # Fetch (and prepare) the next range while this one is checked and written; if this
        # step does not commit, the next one starts elsewhere and ignores it.
        self._prefetch(end + 1, head)

        tip_from = max(start, head - self.config.reorg_window + 1)
        finalized_target = self._finalized_target(head, end)
        wanted = {start, end, *range(tip_from, end + 1)}
        wanted.update(entry.block_number for entry in logs if entry.block_timestamp is None)
        current = checkpoint.finalized.block_number if checkpoint.finalized else -1
        if current < finalized_target and finalized_target >= self.config.start_block:
            wanted.add(finalized_target)
        try:
            headers = self.source.headers(sorted(wanted))
        except ChainMovedError as exc:
            log.info("chain moved while fetching headers", error=str(exc))
            return StepResult("retry", head, checkpoint.block_number)

        previous = (
            BlockRef(checkpoint.block_number, checkpoint.block_hash)
            if checkpoint.block_hash is not None
            else None
        )
        consecutive = [headers[n] for n in sorted(headers) if n >= start]
        broken = first_broken_link(previous, consecutive)
        if broken == start:
            return self._roll_back(checkpoint, head)
        moved = end_hash is not None and headers[end].hash != end_hash
        if broken is not None or moved or inconsistent_logs(logs, headers):
            log.info("chain moved during the fetch, retrying", start=start, end=end)
            return StepResult("retry", head, checkpoint.block_number)
        return self._commit(
            checkpoint, head, start, end, logs, batch, headers, tip_from, finalized_target
        )

    def _near_head(self, end: int, head: int) -> bool:
        """Whether a range ending at `end` reaches into the reorg window below `head`."""
        return end > head - self.config.reorg_window

    def _logs(self, start: int, end: int, near_head: bool) -> _Fetched:
        """The logs of the range, and their batch if it was prepared with them: those fetched
        ahead if they are of exactly this range, else fetched now (after the hash of the
        range's last block when `near_head`, as `_fetch_ahead` does)."""
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None:
            fetched_start, fetched_end, future = prefetched
            if (fetched_start, fetched_end) == (start, end):
                try:
                    return future.result()
                except Exception as exc:  # fetched again below, errors and all
                    log.info("fetch ahead failed", start=start, end=end, error=str(exc)[:200])
            else:
                future.cancel()
        end_hash = self._end_hash(end) if near_head else None
        return self.source.logs(start, end, self.decoder.addresses), None, end_hash

    def _end_hash(self, end: int) -> str:
        """The hash of block `end`, read before a near-head range's logs (see `_fetch_ahead`)."""
        return self.source.headers([end])[end].hash

    def _fetch_ahead(self, start: int, end: int, near_head: bool) -> _Fetched:
        """The logs of a range, and their batch when the logs carry their block timestamps
        (else it needs the headers, fetched by the step that uses them).

        `near_head`: the range reaches into the reorg window, so the hash of its last block is
        read first. The step uses these logs only if that block still has this hash in the
        headers it fetches after them: a reorg of any block of the range in between changes
        it, even one that moved logs into a block that had none (which the logs' own block
        hashes cannot show).
        """
        end_hash = self._end_hash(end) if near_head else None
        logs = self.source.logs(start, end, self.decoder.addresses)
        if any(entry.block_timestamp is None for entry in logs):
            return logs, None, end_hash
        return logs, self._prepare_ahead(logs, {}), end_hash

    def _prepare(self, logs: list[RawLog], timestamps: dict[int, int]) -> RangeBatch:
        """Decode `logs` into their messages and rows (`indexer.batch`)."""
        with _gc_paused():
            return self._builder.build(logs, timestamps)

    def _prefetch(self, start: int, head: int) -> None:
        """Start fetching (and decoding) the logs of the range from `start`, up to `head`."""
        end = self.range.end(start, head)
        if not self.config.prefetch or start > end:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="indexer-prefetch")
        future = self._executor.submit(self._fetch_ahead, start, end, self._near_head(end, head))
        self._prefetched = (start, end, future)

    def close(self) -> None:
        """Stop the fetch-ahead thread (stepping again starts a new one)."""
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None:
            prefetched[2].cancel()
        for executor in (self._executor, self._chunk_executor):
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)
        self._executor = self._chunk_executor = None

    def _commit(
        self,
        checkpoint: Checkpoint,
        head: int,
        start: int,
        end: int,
        logs: list[RawLog],
        batch: RangeBatch | None,
        headers: dict[int, BlockHeader],
        tip_from: int,
        finalized_target: int,
    ) -> StepResult:
        with _gc_paused():
            watermark = self._watermark(checkpoint, finalized_target, headers)
            kept = [h for n, h in headers.items() if start <= n and (n >= tip_from or n == end)]
            new_finalized = watermark or checkpoint.finalized
            with self._unit_of_work(based_on=checkpoint) as store:
                if batch is None:
                    timestamps = {n: h.timestamp for n, h in headers.items()}
                    batch = self._write_in_chunks(store, logs, timestamps)
                else:
                    store.insert_prepared(batch.inserts)
                # The events' messages are queued as one entry (rebuilt from `chain_events`
                # if they are read back), and published from memory after the commit.
                entries: list[OutboxEntry] = [EventRange(start, end)] if batch.events else []
                messages = list(batch.messages)
                if watermark is not None:
                    announced = watermark_message(watermark)
                    entries.append(announced)
                    messages.append(announced)
                store.add_blocks(kept, finalized_target)
                store.add_outbox(entries)
                if watermark is not None:
                    store.finalize_blocks(watermark.block_number)
                    store.prune_blocks(watermark.block_number - self.config.reorg_window)
                store.save_checkpoint(Checkpoint(end, headers[end].hash, new_finalized))
                committed = self._relayable(store, messages, len(entries))
            self._committed = committed
        metrics.BLOCKS.inc(end - start + 1)
        for kind, count in batch.kinds.items():
            metrics.EVENTS.labels(kind).inc(count)
        for reason, count in Counter(entry.reason for entry in batch.undecoded).items():
            metrics.RAW_LOGS.labels(reason).inc(count)
        self._report(head, end, new_finalized)
        return StepResult(
            "indexed",
            head,
            end,
            blocks=end - start + 1,
            events=batch.events,
            finalized=new_finalized,
        )

    def _write_in_chunks(
        self, store: IndexerStore, logs: list[RawLog], timestamps: dict[int, int]
    ) -> RangeBatch:
        """Prepare and insert the range's rows chunk by chunk: a thread prepares the next
        chunks while the database takes one (a range that was not prepared ahead: the first,
        and those near the head). Returns the whole range's batch."""
        chunks = [logs[i : i + _WRITE_CHUNK_LOGS] for i in range(0, len(logs), _WRITE_CHUNK_LOGS)]
        if len(chunks) <= 1:
            batch = self._prepare(logs, timestamps)
            store.insert_prepared(batch.inserts)
            return batch
        if self._chunk_executor is None:
            self._chunk_executor = ThreadPoolExecutor(1, thread_name_prefix="indexer-prepare")
        executor = self._chunk_executor
        futures = [executor.submit(self._prepare_ahead, chunk, timestamps) for chunk in chunks]
        whole = RangeBatch()
        try:
            for future in futures:
                part = future.result()
                store.insert_prepared(part.inserts)
                whole.events += part.events
                whole.kinds.update(part.kinds)
                whole.messages.extend(part.messages)
                whole.undecoded.extend(part.undecoded)
        finally:
            for future in futures:
                future.cancel()
        return whole

    def _prepare_ahead(self, logs: list[RawLog], timestamps: dict[int, int]) -> RangeBatch:
        with _short_switch_interval():
            return self._prepare(logs, timestamps)

    def _relayable(
        self, store: IndexerStore, messages: list[ChainMessage], entries: int
    ) -> tuple[list[ChainMessage], int] | None:
        """`messages` and the last outbox id, when the `entries` just queued for them are the
        whole of the chain's outbox (so `relay` may publish them from memory); else None."""
        if self.publisher is None or not messages:
            return None
        queued, last_id = store.outbox_extent()
        if queued != entries or last_id is None:
            return None  # older messages still queued: the relay reads them all, in order
        return messages, last_id

    def _at_head(self, checkpoint: Checkpoint, head: int) -> StepResult:
        """Caught up: check the last indexed block is still canonical; advance the watermark."""
        if checkpoint.block_hash is None:  # nothing to index yet (head below the start)
            return StepResult("idle", head, checkpoint.block_number)
        target = self._finalized_target(head, checkpoint.block_number)
        wanted = {checkpoint.block_number}
        current = checkpoint.finalized.block_number if checkpoint.finalized else -1
        if target > current and target >= self.config.start_block:
            wanted.add(target)
        try:
            headers = self.source.headers(sorted(wanted))
        except ChainMovedError:
            return self._roll_back(checkpoint, head)  # our last block is gone: the chain shrank
        if headers[checkpoint.block_number].hash != checkpoint.block_hash:
            return self._roll_back(checkpoint, head)
        watermark = self._watermark(checkpoint, target, headers)
        if watermark is not None:
            with self._unit_of_work(based_on=checkpoint) as store:
                store.add_outbox([watermark_message(watermark)])
                store.finalize_blocks(watermark.block_number)
                store.prune_blocks(watermark.block_number - self.config.reorg_window)
                store.save_checkpoint(
                    Checkpoint(checkpoint.block_number, checkpoint.block_hash, watermark)
                )
        elif time.time() > self._lease_expires_at - 2 * self.config.lease_ttl_s / 3:
            self.acquire_lease()  # idle: keep the lease alive
        finalized = watermark or checkpoint.finalized
        self._report(head, checkpoint.block_number, finalized)
        return StepResult("idle", head, checkpoint.block_number, finalized=finalized)

    def _roll_back(self, checkpoint: Checkpoint, head: int) -> StepResult:
        """Walk back to the common ancestor and undo everything above it, in one commit."""
        with self.engine.connect() as connection:
            stored = IndexerStore(connection, self.chain_id).stored_hashes()
        if checkpoint.block_hash is not None:
            stored[checkpoint.block_number] = checkpoint.block_hash
        candidates = [n for n in stored if n <= head]
        try:
            canonical = {n: h.hash for n, h in self.source.headers(candidates).items()}
        except ChainMovedError:
            return StepResult("retry", head, checkpoint.block_number)
        ancestor = common_ancestor(stored, canonical)
        if ancestor is None:
            # Nothing we kept is canonical any more: only a full re-index is safe.
            log.error("reorg deeper than every kept block: re-indexing from the start")
            ancestor_number, ancestor_hash = self.config.start_block - 1, None
        else:
            ancestor_number, ancestor_hash = ancestor.number, ancestor.hash
        finalized = checkpoint.finalized
        if finalized is not None and ancestor_number < finalized.block_number:
            # Should never happen with a sane confirmation depth; state stays correct, but
            # consumers already trusted blocks that are now gone.
            log.error(
                "reorg below the finalized watermark",
                finalized=finalized.block_number,
                ancestor=ancestor_number,
            )
            finalized = None
        with self._unit_of_work(based_on=checkpoint) as store:
            store.expand_outbox_above(ancestor_number)  # before their events are deleted
            retracted = store.events_above(ancestor_number)
            store.add_outbox([retraction_message(e) for e in retracted])
            store.roll_back_above(ancestor_number)
            store.save_checkpoint(Checkpoint(ancestor_number, ancestor_hash, finalized))
        depth = checkpoint.block_number - ancestor_number
        metrics.REORGS.inc()
        metrics.REORG_DEPTH.observe(depth)
        metrics.RETRACTIONS.inc(len(retracted))
        log.warning(
            "reorg rolled back",
            depth=depth,
            ancestor=ancestor_number,
            retracted=len(retracted),
            head=head,
        )
        return StepResult(
            "reorg", head, ancestor_number, retracted=len(retracted), finalized=finalized
        )

    def _report(self, head: int, indexed_to: int, finalized: FinalizedWatermark | None) -> None:
        metrics.INDEXED.set(indexed_to)
        metrics.LAG.set(max(0, head - indexed_to))
        if finalized is not None:
            metrics.FINALIZED.set(finalized.block_number)
            metrics.FINALIZED_TIME.set(finalized.block_timestamp)

    # --- the loop ------------------------------------------------------------------------------

    def relay(self) -> int:
        """Publish the outbox (no-op without a publisher)."""
        if self.publisher is None:
            return 0
        committed, self._committed = self._committed, None
        if committed is not None:
            # They were the whole outbox when committed and only this lease holder adds to
            # it, so once they are published the outbox of the chain is empty.
            messages, last_id = committed
            return relay_committed(self.engine, self.chain_id, self.publisher, messages, last_id)
        return relay_outbox(self.engine, self.chain_id, self.publisher)

    def run(
        self,
        stop: threading.Event | None = None,
        *,
        stop_at_head: bool = False,
        on_step: Callable[[StepResult], None] | None = None,
    ) -> None:
        """Step until `stop` is set (or, with `stop_at_head`, until caught up and published).

        Failures of the world (node, bus) are logged and retried after a pause; the
        committed state is always consistent, so retrying is always safe.
        """
        stop = stop or threading.Event()
        self.acquire_lease()  # refuse at once when another follower runs this chain
        try:
            self._loop(stop, stop_at_head, on_step)
        finally:
            self.close()
            try:
                self.release_lease()
            except SQLAlchemyError as exc:  # the lease then expires on its own
                log.warning("could not release the indexer lease", error=str(exc)[:300])

    def _loop(
        self,
        stop: threading.Event,
        stop_at_head: bool,
        on_step: Callable[[StepResult], None] | None,
    ) -> None:
        while not stop.is_set():
            try:
                self.relay()
                result = self.step()
                self.relay()
            except (RpcError, PublishError) as exc:
                log.warning("indexer step failed, retrying", error=str(exc)[:300])
                stop.wait(self.config.retry_delay_s)
                continue
            except IndexerError:
                raise
            if on_step is not None:
                on_step(result)
            if result.kind == "idle":
                if stop_at_head:
                    return
                stop.wait(self.config.poll_interval_s)
            elif result.kind == "retry":
                stop.wait(min(self.config.retry_delay_s, 0.05))


_gc_lock = threading.Lock()
_gc_pauses = 0  # blocks inside `_gc_paused`, in every thread
_gc_was_enabled = False


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block (in any thread while one is inside).

    Decoding a backfill range creates hundreds of thousands of long-lived objects (events,
    messages, rows) and no reference cycles; the collector's full passes over them took about
    40% of the decoding time. Reference counting still frees everything as usual; cycles, if
    any, are collected after the block. The collector is switched off by the first block to
    enter (the fetch-ahead thread prepares a range while the step writes another) and its
    previous state restored by the last to leave (a caller that keeps it off keeps it off).
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


_SWITCH_INTERVAL_S = 0.0005
_switch_lock = threading.Lock()
_switch_holders = 0
_switch_previous = 0.0


@contextmanager
def _short_switch_interval() -> Iterator[None]:
    """A short interpreter switch interval inside the block (in every thread while one is
    inside).

    The fetch-ahead thread decodes in pure Python while the step's thread mostly waits on the
    database and the node; each time one of those waits ends, the step's thread needs the
    interpreter back, and by default gets it only after the decoding thread ran 5 ms more.
    With many short calls per step that delay was a large share of a backfill's time. A
    switch every 0.5 ms costs the decoding little. The previous interval is restored by the
    last block to leave (unless something else changed it meanwhile).
    """
    global _switch_holders, _switch_previous
    with _switch_lock:
        if _switch_holders == 0:
            _switch_previous = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_previous, _SWITCH_INTERVAL_S))
        _switch_holders += 1
    try:
        yield
    finally:
        with _switch_lock:
            _switch_holders -= 1
            if _switch_holders == 0 and sys.getswitchinterval() == min(
                _switch_previous, _SWITCH_INTERVAL_S
            ):
                sys.setswitchinterval(_switch_previous)
