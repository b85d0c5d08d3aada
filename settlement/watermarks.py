"""The two watermarks that close an epoch: finalized chain time and usage time.

An epoch `[start, end)` may close once both are >= `end`:

- the **chain watermark** is the timestamp of the newest finalized block the indexer has
  published: chain state up to that time will not change any more;
- the **usage watermark** is the greatest event time among decided usage (accruals and
  `usage_events`) minus the allowed lateness, optionally raised to `now - allowed lateness`
  (the wall-clock watermark, so epochs close through idle periods), and never beyond the
  oldest event the stream still holds undecided (waiting for the finalized chain): an epoch
  never closes under an event the join has consumed but not yet billed.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from indexer.asof import ChainState
from schemas.tables import metadata
from schemas.usage import parse_usage_event
from stream.sinks.sqlalchemy_accrual_store import JoinPosition

_accruals = metadata.tables["accruals"]
_usage = metadata.tables["usage_events"]
_checkpoints = metadata.tables["checkpoints"]

#: Checkpoint rows of the stream join (one per input partition) start with this.
STREAM_COMPONENT_PREFIX = "stream."


@dataclass(frozen=True)
class Watermarks:
    """Both watermarks (unix seconds; None while unknown) and what bounds the usage one."""

    chain: int | None
    usage: int | None
    decided_max: int | None
    """Greatest event time of decided usage."""
    held_min: int | None
    """Oldest event time the stream still holds undecided."""

    def passed(self, end_time: int) -> bool:
        """Whether both watermarks reached `end_time`: the epoch ending there may close."""
        return (
            self.chain is not None
            and self.usage is not None
            and self.chain >= end_time
            and self.usage >= end_time
        )


def chain_watermark(connection: Connection, chain_id: int) -> int | None:
    """The finalized block's timestamp the indexer published for `chain_id` (None before)."""
    watermark = ChainState(connection, chain_id, finalized_only=False).watermark()
    return None if watermark is None else int(watermark.block_timestamp)


def decided_max_event_time(connection: Connection) -> int | None:
    """The greatest event time among decided usage: accruals and recorded usage events."""
    values = [
        connection.execute(sa.select(sa.func.max(_accruals.c.event_time))).scalar(),
        connection.execute(sa.select(sa.func.max(_usage.c.event_time))).scalar(),
    ]
    known = [int(v) for v in values if v is not None]
    return max(known) if known else None


def held_min_event_time(connection: Connection) -> int | None:
    """The oldest event time among the usage events the stream holds undecided."""
    query = sa.select(_checkpoints.c.position).where(
        _checkpoints.c.component.startswith(STREAM_COMPONENT_PREFIX)
    )
    oldest: int | None = None
    for (document,) in connection.execute(query):
        if not isinstance(document, dict) or "offset" not in document:
            continue
        for _offset, payload in JoinPosition.from_json(document).held:
            try:
                event_time = parse_usage_event(payload).unix_time
            except ValueError:
                continue  # malformed: dead-lettered when decided, never billed
            oldest = event_time if oldest is None else min(oldest, event_time)
    return oldest


def usage_watermark(
    decided_max: int | None,
    held_min: int | None,
    *,
    allowed_lateness_s: int,
    now: int | None = None,
) -> int | None:
    """The usage watermark: decided event time (or `now`, when given) minus the lateness,
    capped at the oldest held event. Pure."""
    candidates = [t - allowed_lateness_s for t in (decided_max, now) if t is not None]
    if not candidates:
        return None
    watermark = max(candidates)
    return watermark if held_min is None else min(watermark, held_min)


def read_watermarks(
    connection: Connection,
    chain_id: int,
    *,
    allowed_lateness_s: int,
    now: int | None = None,
) -> Watermarks:
    """Both watermarks as the database has them; `now` enables the wall-clock watermark."""
    decided = decided_max_event_time(connection)
    held = held_min_event_time(connection)
    return Watermarks(
        chain=chain_watermark(connection, chain_id),
        usage=usage_watermark(decided, held, allowed_lateness_s=allowed_lateness_s, now=now),
        decided_max=decided,
        held_min=held,
    )
