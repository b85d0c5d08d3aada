"""One batch of one usage partition, decided and written inside the caller's transaction.

The unit of work of both the stream worker (`stream.app`, chain state folded from the `chain`
topic) and the embedded runner (`stream.embedded`, chain state read from the indexer's tables):
the chain state is passed in. Every decision is `stream.join`'s; this module only
orders the steps: load the partition's checkpoint (last offset, held events), skip what it
already covers, decide held + fresh messages, write usage ids, accruals, dead letters and the
new checkpoint through `SqlAlchemyAccrualStore`. The caller commits, so outputs and checkpoint
land together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Connection

from metering.signing import KeyRing
from schemas.accrual import Accrual, DeadLetter, RejectReason
from schemas.usage import UsageEvent
from stream.dedupe import BatchDedupe
from stream.epochs import EpochClock
from stream.join import Accepted, Held, Rejected, join, parse, signature_verdict
from stream.sinks.sqlalchemy_accrual_store import JoinPosition, SqlAlchemyAccrualStore
from stream.state import ChainView

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
) -> PartitionOutcome:
    """Decide the partition's held events plus `batch` and write the outputs and the new
    checkpoint (compare-and-set: `CheckpointConflict` when another worker moved it)."""
    store = SqlAlchemyAccrualStore(connection)
    position, version = store.load_position(component)
    fresh = [m for m in batch if m[0] > position.offset]
    inputs: list[tuple[int, bytes | str]] = [*position.held, *fresh]
    parsed = [(offset, raw, parse(raw)) for offset, raw in inputs]
    dedupe = BatchDedupe(store, [p.id for _, _, p in parsed if isinstance(p, UsageEvent)])
    usage: list[tuple[UsageEvent, datetime]] = []
    held: list[tuple[int, str]] = []
    outcome = PartitionOutcome(position=position, consumed=len(fresh))
    for offset, raw, item in parsed:
        if isinstance(item, Rejected):
            decision: Accepted | Rejected | Held = item
        else:
            decision = join(
                item,
                signature_error=signature_verdict(key_ring, item),
                seen=dedupe.seen(item.id),
                state=state,
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
            usage.append((decided, received_at))
    store.add_usage(usage)
    store.add_accruals(outcome.accruals)
    store.add_dead_letters(outcome.letters)
    last = fresh[-1][0] if fresh else position.offset
    outcome.position = JoinPosition(offset=last, held=tuple(held))
    store.save_position(component, outcome.position, version, received_at)
    return outcome
