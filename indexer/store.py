"""SQLAlchemy adapter of the indexer's state: blocks, events, projections, raw logs, outbox,
checkpoint and lease.

`IndexerStore` works on a `Connection` inside the caller's transaction and never commits: the
follower commits a block range's events, projection rows, outbox messages and the checkpoint
together, or nothing of them (see `indexer.follower`). Inserts are bulk (`indexer.bulk`: `COPY`
on PostgreSQL, `executemany` elsewhere), which is what keeps a backfill at thousands of events
per second.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from indexer.blocks import BlockHeader
from indexer.bulk import JsonText, bulk_insert
from indexer.checkpoint import Checkpoint, component_name
from indexer.decoding import Undecoded
from indexer.lease import Lease, lease_name
from indexer.messages import ChainMessage
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
        if payloads is None:
            payloads = [JsonText(e.payload.model_dump_json()) for e in events]
        rows = [
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
        bulk_insert(self.connection, _events, rows)

    def add_projection_rows(self, grouped: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        """Insert projection rows grouped by table (see `indexer.projections.project_all`)."""
        for table_name, rows in grouped.items():
            bulk_insert(self.connection, metadata.tables[table_name], rows)

    def add_raw_logs(self, undecoded: Sequence[Undecoded]) -> None:
        """Keep logs that are not chain events, with the reason."""
        rows = [
            {
                "chain_id": self.chain_id,
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
        bulk_insert(self.connection, _raw_logs, rows)

    def events_above(self, number: int) -> list[ChainEvent]:
        """The stored events in blocks above `number`, newest first (what a rollback retracts)."""
        rows = self.connection.execute(
            sa.select(_events)
            .where(_events.c.chain_id == self.chain_id, _events.c.block_number > number)
            .order_by(_events.c.block_number.desc(), _events.c.log_index.desc())
        )
        return [
            ChainEvent(
                chain_id=r.chain_id,
                block_number=r.block_number,
                block_hash=r.block_hash,
                block_timestamp=r.block_timestamp,
                tx_hash=r.tx_hash,
                log_index=r.log_index,
                contract=r.contract,
                payload=r.payload,
            )
            for r in rows
        ]

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

    def add_outbox(self, messages: Sequence[ChainMessage]) -> None:
        """Queue messages for the relay, in order."""
        rows = [
            {
                "chain_id": m.chain_id,
                "message_type": m.message_type,
                "key": m.key,
                "value": m.value.decode("utf-8"),
                "broadcast": m.broadcast,
            }
            for m in messages
        ]
        bulk_insert(self.connection, _outbox, rows)

    def outbox_batch(self, limit: int) -> list[tuple[int, ChainMessage]]:
        """The oldest `limit` queued messages with their outbox ids."""
        rows = self.connection.execute(
            sa.select(_outbox)
            .where(_outbox.c.chain_id == self.chain_id)
            .order_by(_outbox.c.id)
            .limit(limit)
        )
        return [
            (
                r.id,
                ChainMessage(
                    r.chain_id, r.message_type, r.key, r.value.encode("utf-8"), r.broadcast
                ),
            )
            for r in rows
        ]

    def outbox_extent(self) -> tuple[int, int | None]:
        """How many messages of this chain are queued, and the highest id among them."""
        count, last = self.connection.execute(
            sa.select(sa.func.count(), sa.func.max(_outbox.c.id)).where(
                _outbox.c.chain_id == self.chain_id
            )
        ).one()
        return int(count), None if last is None else int(last)

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
        """Messages waiting."""
        count = self.connection.execute(
            sa.select(sa.func.count())
            .select_from(_outbox)
            .where(_outbox.c.chain_id == self.chain_id)
        ).scalar_one()
        return int(count)
