"""One batch of one usage partition, decided and written inside the caller's transaction.

The unit of work of both the stream worker (`stream.app`, chain state folded from the `chain`
topic) and the embedded runner (`stream.embedded`, chain state read from the indexer's tables):
the chain state is passed in. Every decision is `stream.join`'s; this module only
orders the steps: load the partition's checkpoint (last offset, held events), skip what it
already covers, decide held + fresh messages, write usage ids, accruals, dead letters and the
new checkpoint through `SqlAlchemyAccrualStore`. The caller commits, so outputs and checkpoint
land together or not at all.

Per batch, not per event: one checkpoint read, one dedupe lookup, one multi-row insert per
output table, one checkpoint write; chain-state answers are remembered for the batch
(`MemoizedChainView`); each event is dumped once, for both its signing payload and its stored
canonical form. A held event still beyond the watermark is not decided again: only its time
is read back (so a batch's cost does not grow with the hold buffer's parsing).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.engine import Connection

from metering.signing import KeyRing
from schemas.accrual import Accrual, DeadLetter, RejectReason
from schemas.timestamps import unix_seconds
from schemas.usage import ReadUsage, UsageEvent
from stream.dedupe import BatchDedupe
from stream.epochs import EpochClock
from stream.join import Accepted, Held, Rejected, join, read
from stream.sinks.sqlalchemy_accrual_store import JoinPosition, SqlAlchemyAccrualStore
from stream.state import ChainView, MemoizedChainView

Message = tuple[int, bytes]
"""One usage message: its offset (strictly increasing) and its raw bytes."""

# Rejections decided before chain state do not claim the event's id (a forged copy must not
# block the genuine event; a duplicate repeats a decided one).
_PRE_CHAIN = frozenset({RejectReason.MALFORMED, RejectReason.BAD_SIGNATURE, RejectReason.DUPLICATE})


@dataclass
class PartitionOutcome:
    """What one batch decided (already written, not yet committed)."""

    position: JoinPosition
    accruals: list[Accrual] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    consumed: int = 0


def checkpoint_component(prefix: str, topic: str, partition: int) -> str:
    """The checkpoint row of one input partition: ``f"{prefix}:{topic}:{partition}"``."""
    return f"{prefix}:{topic}:{partition}"


def held_time(payload: str) -> int | None:
    """The unix time of a held event's payload, read without validating it again (it was
    validated when it was held); None when it cannot be read that way."""
    try:
        doc = json.loads(payload)
        instant = datetime.fromisoformat(doc["time"])
    except (ValueError, KeyError, TypeError):
        return None
    if instant.tzinfo is None or instant.utcoffset():
        return None
    return unix_seconds(instant.replace(tzinfo=UTC))


def split_held(
    held: Iterable[tuple[int, str]], finalized: int | None
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(events that stay held as they are, events to decide again) for watermark `finalized`.

    An event stays held while its time is not strictly before the finalized time (`join`'s
    rule); one whose time cannot be read back is decided again, which is always correct."""
    waiting: list[tuple[int, str]] = []
    retry: list[tuple[int, str]] = []
    for entry in held:
        if finalized is None:
            waiting.append(entry)
            continue
        t = held_time(entry[1])
        (waiting if t is not None and t >= finalized else retry).append(entry)
    return waiting, retry


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """One message parsed and its signature checked: the part of deciding it that needs
    neither chain state nor the database (so a worker can do it while the database still
    writes the previous batch)."""

    offset: int
    raw: bytes | str
    item: UsageEvent | Rejected
    encoded: bytes | None
    """The event's canonical bytes, its stored form (None when rejected)."""
    signature_error: str | None
    """Why the signature does not verify; None when it does (or the message is rejected)."""


def parse_messages(
    messages: Sequence[tuple[int, bytes | str]], key_ring: KeyRing
) -> list[ParsedMessage]:
    """Parse `messages` and verify their signatures, in order.

    `read_usage_event` gives each event's canonical bytes (its stored form) and signing
    payload, both slices of the message itself when a metering node wrote it. The signatures
    of the whole batch are verified at once (on several cores when the backend allows it)."""
    parsed = [(offset, raw, read(raw)) for offset, raw in messages]
    verdicts = iter(
        key_ring.verdicts([(p.event, p.signed) for _, _, p in parsed if isinstance(p, ReadUsage)])
    )
    return [
        ParsedMessage(offset, raw, item, None, None)
        if isinstance(item, Rejected)
        else ParsedMessage(offset, raw, item.event, item.encoded, next(verdicts))
        for offset, raw, item in parsed
    ]


def decide_partition_batch(
    connection: Connection,
    component: str,
    batch: list[Message],
    *,
    state: ChainView,
    key_ring: KeyRing,
    clock: EpochClock,
    received_at: datetime,
    min_epoch: int = 0,
    on_decided: Callable[[PartitionOutcome], None] | None = None,
    parsed: Sequence[ParsedMessage] | None = None,
    store: SqlAlchemyAccrualStore | None = None,
) -> PartitionOutcome:
    """Decide the partition's held events plus `batch` and write the outputs and the new
    checkpoint (compare-and-set: `CheckpointConflict` when another worker moved it).

    `on_decided(outcome)` runs once everything is decided, before the writes (a worker starts
    producing the outcome to Kafka there, so the acknowledgements arrive while the database
    works); an exception from it aborts the batch like any other.

    `parsed`: `parse_messages(batch, key_ring)` when the caller has already done it. `store`:
    the store to write through (one deferring its inserts, say); by default a plain one on
    `connection`."""
    if store is None:
        store = SqlAlchemyAccrualStore(connection)
    position, version = store.load_position(component)
    fresh = [m for m in batch if m[0] > position.offset]
    view = MemoizedChainView(state)
    held, retry = split_held(position.held, view.finalized_time())
    if parsed is None:
        parsed_fresh = parse_messages(fresh, key_ring)
    else:
        if [m.offset for m in parsed] != [offset for offset, _ in batch]:
            raise ValueError("parsed messages do not match the batch")
        parsed_fresh = [m for m in parsed if m.offset > position.offset]
    inputs = [*parse_messages(retry, key_ring), *parsed_fresh]
    dedupe = BatchDedupe(store, [m.item.id for m in inputs if isinstance(m.item, UsageEvent)])
    usage: list[tuple[UsageEvent, datetime]] = []
    payloads: list[str] = []
    outcome = PartitionOutcome(position=position, consumed=len(fresh))
    for message in inputs:
        offset, raw, item, encoded = message.offset, message.raw, message.item, message.encoded
        if isinstance(item, Rejected):
            decision: Accepted | Rejected | Held = item
        else:
            decision = join(
                item,
                signature_error=message.signature_error,
                seen=dedupe.seen(item.id),
                state=view,
                clock=clock,
                min_epoch=min_epoch,
            )
        if isinstance(decision, Held):
            held.append((offset, raw if isinstance(raw, str) else raw.decode("utf-8")))
            continue
        if isinstance(decision, Accepted):
            outcome.accruals.append(decision.accrual)
            decided: UsageEvent | None = decision.event
        else:
            outcome.letters.append(decision.dead_letter(raw, received_at))
            decided = None if decision.reason in _PRE_CHAIN else decision.event
        if decided is not None:
            dedupe.mark(decided.id)
            assert encoded is not None  # a decided event was parsed
            usage.append((decided, received_at))
            payloads.append(encoded.decode("utf-8"))
    last = fresh[-1][0] if fresh else position.offset
    outcome.position = JoinPosition(offset=last, held=tuple(held))
    if on_decided is not None:
        on_decided(outcome)
    store.add_usage(usage, payloads=payloads)
    store.add_accruals(outcome.accruals)
    store.add_dead_letters(outcome.letters)
    store.save_position(component, outcome.position, version, received_at)
    return outcome
