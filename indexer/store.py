"""SQLAlchemy adapter of the indexer's state: blocks, events, projections, raw logs, outbox,
checkpoint and lease.

`IndexerStore` works on a `Connection` inside the caller's transaction and never commits: the
follower commits a block range's events, projection rows, outbox entries and the checkpoint
together, or nothing of them (see `indexer.follower`). The messages of a range's events are
queued as one `EventRange` entry, which the relay reads back as the stored events' messages
(`range_messages`); a rollback expands the entries reaching the blocks it deletes first
(`expand_outbox_above`). Inserts are bulk (`indexer.bulk`: `COPY`
on PostgreSQL, `executemany` elsewhere), which is what keeps a backfill at thousands of events
per second.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from indexer.blocks import BlockHeader
from indexer.bulk import JsonText, PreparedInsert, bulk_insert, insert_prepared
from indexer.checkpoint import Checkpoint, component_name
from indexer.decoding import Undecoded
from indexer.lease import Lease, lease_name
from indexer.messages import ChainMessage, encoded_event
from indexer.projections import PROJECTION_TABLES
from schemas.chain import ChainEvent
from schemas.tables import metadata

_blocks = metadata.tables["chain_blocks"]
_events = metadata.tables["chain_events"]
_raw_logs = metadata.tables["chain_raw_logs"]
_outbox = metadata.tables["chain_outbox"]
_checkpoints = metadata.tables["checkpoints"]

#: Everything derived from blocks, i.e. everything a reorg rolls back (by block number).
DERIVED_TABLES: tuple[sa.Table, ...] = (
    _events,
    _raw_logs,
    *(metadata.tables[name] for name in PROJECTION_TABLES),
)


EVENT_RANGE_TYPE = "indexer.event-range"
"""`message_type` of an outbox row that stands for the messages of the chain's stored events
in a block range (`EventRange`), rather than holding one message."""


@dataclass(frozen=True)
class EventRange:
    """An outbox entry: the messages of every event stored in blocks `from_block` to
    `to_block`, in chain order (written with those events, in the same transaction)."""

    from_block: int
    to_block: int

    def to_json(self) -> str:
        return json.dumps({"from_block": self.from_block, "to_block": self.to_block})

    @classmethod
    def from_json(cls, text: str) -> EventRange:
        document = json.loads(text)
        return cls(int(document["from_block"]), int(document["to_block"]))


OutboxEntry = ChainMessage | EventRange


def _upsert_insert(connection: Connection) -> Any:
    """The dialect's `insert` construct (the one with `on_conflict_do_nothing`)."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert
    if connection.dialect.name == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"no upsert for {connection.dialect.name}")


class IndexerStore:
    """The indexer's tables for one chain, through the caller's connection."""

    def __init__(self, connection: Connection, chain_id: int) -> None:
        self.connection = connection
        self.chain_id = chain_id
        self.saved_checkpoint: Checkpoint | None = None  # by `save_checkpoint`, if called

    # --- checkpoint ----------------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint | None:
        """The committed position, or None before the first commit."""
        document = self.connection.execute(
            sa.select(_checkpoints.c.position).where(
                _checkpoints.c.component == component_name(self.chain_id)
            )
        ).scalar_one_or_none()
        return None if document is None else Checkpoint.from_json(document)

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Write the position (insert or replace)."""
        name = component_name(self.chain_id)
        values = {"position": checkpoint.to_json(), "updated_at": datetime.now(UTC)}
        updated = self.connection.execute(
            _checkpoints.update().where(_checkpoints.c.component == name).values(**values)
        )
        if updated.rowcount == 0:
            self.connection.execute(_checkpoints.insert().values(component=name, **values))
        self.saved_checkpoint = checkpoint

    # --- lease (see `indexer.lease`) ------------------------------------------------------------

    def lease(self) -> tuple[Lease, datetime] | None:
        """The lease of this chain and its version (the row's `updated_at`), or None."""
        row = self.connection.execute(
            sa.select(_checkpoints.c.position, _checkpoints.c.updated_at).where(
                _checkpoints.c.component == lease_name(self.chain_id)
            )
        ).one_or_none()
        return None if row is None else (Lease.from_json(row.position), row.updated_at)

    def write_lease(self, lease: Lease, version: datetime | None, stamp: datetime) -> bool:
        """Compare-and-set: write `lease` at version `stamp` if the row is still at `version`
        (None: if there is no row). False when another writer got there first.

        The update locks the row until the caller's transaction ends, so nobody can take the
        lease between this write and the commit of the outputs it guards.
        """
        name = lease_name(self.chain_id)
        values = {"position": lease.to_json(), "updated_at": stamp}
        if version is None:
            # Nothing was there when we looked: insert, unless another follower just did.
            insert = _upsert_insert(self.connection)(_checkpoints).values(component=name, **values)
            inserted = self.connection.execute(
                insert.on_conflict_do_nothing().returning(_checkpoints.c.component)
            )
            return inserted.first() is not None
        updated = self.connection.execute(
            _checkpoints.update()
            .where(_checkpoints.c.component == name, _checkpoints.c.updated_at == version)
            .values(**values)
        )
        return updated.rowcount == 1

    def release_lease(self, version: datetime) -> None:
        """Drop the lease if it is still at `version` (ours): a clean stop."""
        self.connection.execute(
            _checkpoints.delete().where(
                _checkpoints.c.component == lease_name(self.chain_id),
                _checkpoints.c.updated_at == version,
            )
        )

    # --- blocks --------------------------------------------------------------------------------

    def stored_hashes(self) -> dict[int, str]:
        """Hash by height of every block kept for reorg detection."""
        rows = self.connection.execute(
            sa.select(_blocks.c.number, _blocks.c.hash).where(_blocks.c.chain_id == self.chain_id)
        )
        return {number: block_hash for number, block_hash in rows}

    def stored_header(self, number: int) -> BlockHeader | None:
        """The kept header at `number`, if any."""
        row = self.connection.execute(
            sa.select(_blocks).where(
                _blocks.c.chain_id == self.chain_id, _blocks.c.number == number
            )
        ).one_or_none()
        if row is None:
            return None
        return BlockHeader(row.number, row.hash, row.parent_hash, row.timestamp)

    def add_blocks(self, headers: Iterable[BlockHeader], finalized_upto: int) -> None:
        """Keep `headers` (new heights only) for reorg detection."""
        rows = [
            {
                "chain_id": self.chain_id,
                "number": h.number,
                "hash": h.hash,
                "parent_hash": h.parent_hash,
                "timestamp": h.timestamp,
                "finalized": h.number <= finalized_upto,
            }
            for h in headers
        ]
        bulk_insert(self.connection, _blocks, rows)

    def finalize_blocks(self, upto: int) -> None:
        """Flag the kept blocks at or below `upto` as final."""
        self.connection.execute(
            _blocks.update()
            .where(
                _blocks.c.chain_id == self.chain_id,
                _blocks.c.number <= upto,
                _blocks.c.finalized == sa.false(),
            )
            .values(finalized=True)
        )

    def prune_blocks(self, below: int) -> None:
        """Forget kept blocks below `below` (final long ago: no reorg reaches them)."""
        self.connection.execute(
            _blocks.delete().where(_blocks.c.chain_id == self.chain_id, _blocks.c.number < below)
        )

    # --- events, projections, raw logs ---------------------------------------------------------

    def add_events(
        self, events: Sequence[ChainEvent], payloads: Sequence[str] | None = None
    ) -> None:
        """Insert decoded events (`chain_events`); `payloads`, when given, are the JSON texts
        of their payloads (`indexer.messages.encoded_event`), so they are not dumped again."""
        bulk_insert(self.connection, _events, event_rows(events, payloads))

    def insert_prepared(self, prepared: Iterable[PreparedInsert]) -> None:
        """Insert rows prepared ahead of the transaction (`indexer.bulk.prepare_insert`)."""
        for insert in prepared:
            insert_prepared(self.connection, insert)

    def add_projection_rows(self, grouped: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Insert projection rows grouped by table (see `indexer.projections.project_all`)."""
        for table_name, rows in grouped.items():
            bulk_insert(self.connection, metadata.tables[table_name], rows)

    def add_raw_logs(self, undecoded: Sequence[Undecoded]) -> None:
        """Keep logs that are not chain events, with the reason."""
        bulk_insert(self.connection, _raw_logs, raw_log_rows(self.chain_id, undecoded))

    def events_above(self, number: int) -> list[ChainEvent]:
        """The stored events in blocks above `number`, newest first (what a rollback retracts)."""
        rows = self.connection.execute(
            sa.select(_events)
            .where(_events.c.chain_id == self.chain_id, _events.c.block_number > number)
            .order_by(_events.c.block_number.desc(), _events.c.log_index.desc())
        )
        return [_stored_event(r) for r in rows]

    def events_between(self, from_block: int, to_block: int) -> list[ChainEvent]:
        """The stored events in blocks `from_block` to `to_block`, in chain order."""
        rows = self.connection.execute(
            sa.select(_events)
            .where(
                _events.c.chain_id == self.chain_id,
                _events.c.block_number >= from_block,
                _events.c.block_number <= to_block,
            )
            .order_by(_events.c.block_number, _events.c.log_index)
        )
        return [_stored_event(r) for r in rows]

    def roll_back_above(self, number: int) -> None:
        """Delete everything derived from blocks above `number`, and those blocks."""
        for table in DERIVED_TABLES:
            self.connection.execute(
                table.delete().where(
                    table.c.chain_id == self.chain_id, table.c.block_number > number
                )
            )
        self.connection.execute(
            _blocks.delete().where(_blocks.c.chain_id == self.chain_id, _blocks.c.number > number)
        )

    # --- outbox --------------------------------------------------------------------------------

    def add_outbox(self, entries: Sequence[OutboxEntry]) -> None:
        """Queue messages (and event ranges, see `EventRange`) for the relay, in order."""
        rows = [_outbox_row(self.chain_id, entry) for entry in entries]
        bulk_insert(self.connection, _outbox, rows)

    def outbox_batch(self, limit: int) -> list[tuple[int, OutboxEntry]]:
        """The oldest `limit` queued entries with their outbox ids."""
        rows = self.connection.execute(
            sa.select(_outbox)
            .where(_outbox.c.chain_id == self.chain_id)
            .order_by(_outbox.c.id)
            .limit(limit)
        )
        return [(r.id, _outbox_entry(r)) for r in rows]

    def range_messages(self, entry: EventRange) -> list[ChainMessage]:
        """The messages an `EventRange` entry stands for (byte-identical to those published
        from memory when it was committed)."""
        return [encoded_event(e)[0] for e in self.events_between(entry.from_block, entry.to_block)]

    def expand_outbox_above(self, number: int) -> None:
        """Replace every queued `EventRange` reaching above block `number` by the messages it
        stands for, keeping the outbox's order (before a rollback deletes those events).

        The entries from the first such range on are read, deleted and queued again, expanded:
        new ids are higher than every earlier one, so the order is what it was.
        """
        ranges = self.connection.execute(
            sa.select(_outbox.c.id, _outbox.c.value)
            .where(_outbox.c.chain_id == self.chain_id, _outbox.c.message_type == EVENT_RANGE_TYPE)
            .order_by(_outbox.c.id)
        ).all()
        first = next(
            (r.id for r in ranges if EventRange.from_json(r.value).to_block > number), None
        )
        if first is None:
            return
        tail = self.connection.execute(
            sa.select(_outbox)
            .where(_outbox.c.chain_id == self.chain_id, _outbox.c.id >= first)
            .order_by(_outbox.c.id)
        ).all()
        expanded: list[OutboxEntry] = []
        for row in tail:
            entry = _outbox_entry(row)
            if isinstance(entry, EventRange):
                expanded.extend(self.range_messages(entry))
            else:
                expanded.append(entry)
        self.connection.execute(
            _outbox.delete().where(_outbox.c.chain_id == self.chain_id, _outbox.c.id >= first)
        )
        self.add_outbox(expanded)

    def outbox_extent(self) -> tuple[int, int | None]:
        """How many messages of this chain are queued, and the highest id among them."""
        count, last = self.connection.execute(
            sa.select(sa.func.count(), sa.func.max(_outbox.c.id)).where(
                _outbox.c.chain_id == self.chain_id
            )
        ).one()
        return int(count), None if last is None else int(last)

    def relax_durability(self) -> None:
        """Let this transaction's commit return before it is on disk (PostgreSQL's
        `synchronous_commit = off`, for this transaction only): for writes a crash may lose,
        such as forgetting published outbox entries (they are then published again)."""
        if self.connection.dialect.name == "postgresql":
            self.connection.execute(sa.text("SET LOCAL synchronous_commit = off"))

    def outbox_delete_upto(self, last_id: int) -> None:
        """Forget every queued message of this chain with an id up to `last_id` (published)."""
        self.connection.execute(
            _outbox.delete().where(_outbox.c.chain_id == self.chain_id, _outbox.c.id <= last_id)
        )

    def outbox_delete(self, ids: Sequence[int]) -> None:
        """Forget published messages."""
        for start in range(0, len(ids), 1000):
            chunk = list(ids[start : start + 1000])
            self.connection.execute(_outbox.delete().where(_outbox.c.id.in_(chunk)))

    def outbox_size(self) -> int:
        """Entries waiting (a message, or an `EventRange` of many)."""
        count = self.connection.execute(
            sa.select(sa.func.count())
            .select_from(_outbox)
            .where(_outbox.c.chain_id == self.chain_id)
        ).scalar_one()
        return int(count)


def _stored_event(row: Any) -> ChainEvent:
    """A `chain_events` row as the (validated) event it stores."""
    return ChainEvent(
        chain_id=row.chain_id,
        block_number=row.block_number,
        block_hash=row.block_hash,
        block_timestamp=row.block_timestamp,
        tx_hash=row.tx_hash,
        log_index=row.log_index,
        contract=row.contract,
        payload=row.payload,
    )


def _outbox_row(chain_id: int, entry: OutboxEntry) -> dict[str, Any]:
    if isinstance(entry, EventRange):
        return {
            "chain_id": chain_id,
            "message_type": EVENT_RANGE_TYPE,
            "key": f"{entry.from_block}-{entry.to_block}",
            "value": entry.to_json(),
            "broadcast": False,
        }
    return {
        "chain_id": entry.chain_id,
        "message_type": entry.message_type,
        "key": entry.key,
        "value": entry.value.decode("utf-8"),
        "broadcast": entry.broadcast,
    }


def _outbox_entry(row: Any) -> OutboxEntry:
    if row.message_type == EVENT_RANGE_TYPE:
        return EventRange.from_json(row.value)
    return ChainMessage(
        row.chain_id, row.message_type, row.key, row.value.encode("utf-8"), row.broadcast
    )


EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "chain_id",
    "block_number",
    "block_hash",
    "block_timestamp",
    "tx_hash",
    "log_index",
    "contract",
    "kind",
    "payload",
    "removed",
)
"""The `chain_events` columns the indexer writes, in the order of `event_rows`' keys."""


def event_rows(
    events: Sequence[ChainEvent], payloads: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """The `chain_events` rows of `events` (see `IndexerStore.add_events`)."""
    if payloads is None:
        payloads = [JsonText(e.payload.model_dump_json()) for e in events]
    return [
        {
            "event_id": e.event_id,
            "chain_id": e.chain_id,
            "block_number": e.block_number,
            "block_hash": e.block_hash,
            "block_timestamp": e.block_timestamp,
            "tx_hash": e.tx_hash,
            "log_index": e.log_index,
            "contract": e.contract,
            "kind": e.kind,
            "payload": JsonText(payload),
            "removed": False,
        }
        for e, payload in zip(events, payloads, strict=True)
    ]


def raw_log_rows(chain_id: int, undecoded: Sequence[Undecoded]) -> list[dict[str, Any]]:
    """The `chain_raw_logs` rows of logs that are not chain events."""
    return [
        {
            "chain_id": chain_id,
            "block_number": u.log.block_number,
            "log_index": u.log.log_index,
            "block_hash": u.log.block_hash,
            "block_timestamp": u.log.block_timestamp or 0,
            "tx_hash": u.log.tx_hash,
            "contract": u.log.address,
            "topics": list(u.log.topics),
            "data": u.log.data,
            "reason": u.reason,
            "detail": u.detail,
        }
        for u in undecoded
    ]
