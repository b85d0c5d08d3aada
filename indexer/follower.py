"""The follower: from the checkpoint to the chain head, one committed block range at a time.

One `step`:

1. read the checkpoint (last indexed block and its hash) and the head;
2. fetch the logs of the next range (its size adapts: `indexer.ranges`), then the headers it
   needs: the range's first block (its parent hash must be the checkpoint's hash, or the chain
   reorganised under us), every block near the head (kept for reorg detection), the range's
   last block (the new checkpoint), the new finalized block (the watermark);
3. check that logs and headers are one chain (else the chain moved between two calls: retry);
4. in ONE transaction: events, projection rows, raw logs, kept headers, outbox messages
   (events, and the watermark when it advanced) and the checkpoint.

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
logs (`indexer.ranges`), and while a deep range is decoded and written, the logs of the next one
are fetched in a background thread (the node works while we write). Only the fetch runs ahead:
the prefetched logs are used by the next step only for exactly the range it would fetch, after
the same header checks, and commits stay one range at a time, in order. Near the head nothing
is fetched ahead, so a reorg there is always seen by the checks of the step that indexes it.

The finalized watermark is `head - confirmations` (never beyond what was indexed): chain state
at or below it is what joins and settlement read.
"""

from __future__ import annotations

import gc
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
from indexer.blocks import BlockHeader, ChainSource, RawLog
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
from indexer.messages import ChainMessage, event_messages, retraction_message, watermark_message
from indexer.projections import project_all
from indexer.publisher import ChainPublisher
from indexer.ranges import AdaptiveRange
from indexer.relay import relay_committed, relay_outbox
from indexer.reorg import BlockRef, common_ancestor, first_broken_link, inconsistent_logs
from indexer.store import IndexerStore
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


StepKind = Literal["indexed", "reorg", "idle", "retry"]


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
        self._prefetched: tuple[int, int, Future[list[RawLog]]] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lease = Lease.for_this_process()
        self._lease_version: datetime | None = None  # the lease row as we last committed it
        self._lease_expires_at = 0.0
        self._committed: tuple[list[ChainMessage], int] | None = None  # for `relay`

    # --- state ---------------------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """The committed position (before the start block when nothing is indexed yet)."""
        with self.engine.connect() as connection:
            stored = IndexerStore(connection, self.chain_id).checkpoint()
        return stored or Checkpoint(self.config.start_block - 1, None)

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
    def _unit_of_work(self) -> Iterator[IndexerStore]:
        """One write transaction, holding the lease: outputs, checkpoint and lease commit
        together or not at all."""
        self._committed = None  # whatever `relay` may publish from memory is no longer all
        with self.engine.begin() as connection:
            store = IndexerStore(connection, self.chain_id)
            version, expires_at = self._hold_lease(store)
            yield store
        self._lease_version, self._lease_expires_at = version, expires_at

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
        checkpoint = self.checkpoint()
        head = self.source.head()
        metrics.HEAD.set(head)
        if checkpoint.block_number >= head:
            return self._at_head(checkpoint, head)
        start = checkpoint.block_number + 1
        end = self.range.end(start, head)
        metrics.RANGE_SIZE.set(self.range.size)
        try:
            logs = self._logs(start, end)
        except RangeRefusedError as exc:
            if not self.range.refused(end - start + 1):
                raise  # one block refused: nothing smaller to try, the caller retries later
            log.info("log range refused, shrinking", start=start, end=end, error=str(exc)[:200])
            return StepResult("retry", head, checkpoint.block_number)
        self.range.succeeded(end - start + 1, len(logs))

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
        if broken is not None or inconsistent_logs(logs, headers):
            log.info("chain moved during the fetch, retrying", start=start, end=end)
            return StepResult("retry", head, checkpoint.block_number)
        self._prefetch(end + 1, head)
        return self._commit(checkpoint, head, start, end, logs, headers, tip_from, finalized_target)

    def _logs(self, start: int, end: int) -> list[RawLog]:
        """The logs of the range: those fetched ahead if they are of exactly this range."""
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
        return self.source.logs(start, end, self.decoder.addresses)

    def _prefetch(self, start: int, head: int) -> None:
        """Start fetching the logs of the range from `start` if it lies deeper than the reorg
        window (nearer the head, each step fetches its own logs after the previous commit)."""
        end = self.range.end(start, head)
        if not self.config.prefetch or start > end or end > head - self.config.reorg_window:
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="indexer-prefetch")
        future = self._executor.submit(self.source.logs, start, end, self.decoder.addresses)
        self._prefetched = (start, end, future)

    def close(self) -> None:
        """Stop the fetch-ahead thread (stepping again starts a new one)."""
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is not None:
            prefetched[2].cancel()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def _commit(
        self,
        checkpoint: Checkpoint,
        head: int,
        start: int,
        end: int,
        logs: list[RawLog],
        headers: dict[int, BlockHeader],
        tip_from: int,
        finalized_target: int,
    ) -> StepResult:
        with _gc_paused():
            timestamps = {n: h.timestamp for n, h in headers.items()}
            events, undecoded = self.decoder.decode_all(logs, timestamps)
            watermark = self._watermark(checkpoint, finalized_target, headers)
            kept = [h for n, h in headers.items() if start <= n and (n >= tip_from or n == end)]
            messages, payloads = event_messages(events)
            if watermark is not None:
                messages.append(watermark_message(watermark))
            new_finalized = watermark or checkpoint.finalized
            with self._unit_of_work() as store:
                store.add_events(events, payloads)
                store.add_projection_rows(project_all(events))
                store.add_raw_logs(undecoded)
                store.add_blocks(kept, finalized_target)
                store.add_outbox(messages)
                if watermark is not None:
                    store.finalize_blocks(watermark.block_number)
                    store.prune_blocks(watermark.block_number - self.config.reorg_window)
                store.save_checkpoint(Checkpoint(end, headers[end].hash, new_finalized))
                committed = self._relayable(store, messages)
            self._committed = committed
        metrics.BLOCKS.inc(end - start + 1)
        for kind, count in Counter(event.kind for event in events).items():
            metrics.EVENTS.labels(kind).inc(count)
        for reason, count in Counter(entry.reason for entry in undecoded).items():
            metrics.RAW_LOGS.labels(reason).inc(count)
        self._report(head, end, new_finalized)
        return StepResult(
            "indexed",
            head,
            end,
            blocks=end - start + 1,
            events=len(events),
            finalized=new_finalized,
        )

    def _relayable(
        self, store: IndexerStore, messages: list[ChainMessage]
    ) -> tuple[list[ChainMessage], int] | None:
        """`messages` and the last outbox id, when they are the whole of the chain's outbox
        (so `relay` may publish them from memory); None otherwise."""
        if self.publisher is None or not messages:
            return None
        queued, last_id = store.outbox_extent()
        if queued != len(messages) or last_id is None:
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
            with self._unit_of_work() as store:
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
        with self._unit_of_work() as store:
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


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block.

    Decoding a backfill range creates hundreds of thousands of long-lived objects (events,
    messages, rows) and no reference cycles; the collector's full passes over them took about
    40% of the decoding time. Reference counting still frees everything as usual; cycles, if
    any, are collected after the block. The previous state is restored (a caller that keeps
    the collector off keeps it off).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
