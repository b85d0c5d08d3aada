"""The settlement database tailed into ClickHouse: usage, accruals, rejects, epochs, payouts.

The database is the source of truth; analytics is a copy that may lag but never invents or
loses a row. `AnalyticsTailer.sync()` reads what is new since its cursor and inserts it through
`ClickHouseSink`, then advances the cursor (the `checkpoints` row `analytics.clickhouse:<db>`).
A crash between the insert and the cursor re-inserts the same rows next time, and every
ClickHouse table is a `ReplacingMergeTree` on its id, so they collapse (read with `FINAL`).

Cursors: accruals and dead letters by their insertion id; usage events by `received_at` (with a
slack window re-read each time, since concurrent writers commit out of order); epochs are small
and re-sent whole while not final; payouts (epoch allocations) are sent once per computed epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from schemas.accrual import Accrual, DeadLetter, RejectReason
from schemas.chain import ChainPosition
from schemas.tables import metadata
from schemas.usage import parse_usage_event
from stream.sinks.clickhouse_sink import ClickHouseClient, ClickHouseSink

_t = metadata.tables

#: Usage events committed up to this long after a later one are still picked up.
USAGE_SLACK = timedelta(minutes=5)


@dataclass
class SyncReport:
    """Rows sent by one `sync()`."""

    usage: int = 0
    accruals: int = 0
    rejects: int = 0
    epochs: int = 0
    payouts: int = 0

    @property
    def total(self) -> int:
        return self.usage + self.accruals + self.rejects + self.epochs + self.payouts


class AnalyticsTailer:
    """Copies new database rows into the analytics database, at least once, idempotently."""

    def __init__(
        self, engine: Engine, client: ClickHouseClient, database: str, *, batch: int = 10_000
    ) -> None:
        self.engine = engine
        self.sink = ClickHouseSink(client, database)
        self.client = client
        self.component = f"analytics.clickhouse:{database}"
        self.batch = batch

    def ensure_schema(self) -> None:
        """Create the analytics tables (idempotent)."""
        self.sink.ensure_schema()

    def sync(self) -> SyncReport:
        """Send everything new; returns how many rows went out."""
        report = SyncReport()
        while self._sync_once(report) >= self.batch:
            pass
        self._sync_usage(report)
        return report

    # --- one round --------------------------------------------------------------------------

    def _sync_once(self, report: SyncReport) -> int:
        with self.engine.connect() as connection:
            cursor = self._load(connection)
            accruals, last_accrual = self._accruals(connection, cursor["accrual_id"])
            letters, last_letter = self._letters(connection, cursor["dead_letter_id"])
            epochs, payouts, paid = self._epochs(connection, set(cursor["paid_epochs"]))
        self.sink.write([], accruals, letters)
        self.sink.write_settlement(epochs, payouts)
        report.accruals += len(accruals)
        report.rejects += len(letters)
        report.epochs += len(epochs)
        report.payouts += len(payouts)
        cursor = {
            **cursor,
            "accrual_id": last_accrual,
            "dead_letter_id": last_letter,
            "paid_epochs": sorted(set(cursor["paid_epochs"]) | paid),
        }
        with self.engine.begin() as connection:
            self._save(connection, cursor)
        return max(len(accruals), len(letters))

    def _sync_usage(self, report: SyncReport) -> None:
        """Usage events from the cursor time minus the slack, in pages; then the cursor."""
        with self.engine.connect() as connection:
            cursor = self._load(connection)
        since = datetime.fromisoformat(cursor["usage_received_at"]) - USAGE_SLACK
        newest = datetime.fromisoformat(cursor["usage_received_at"])
        after: tuple[datetime, str] | None = None
        while True:
            with self.engine.connect() as connection:
                page = self._usage(connection, since, after)
            if not page:
                break
            self.sink.write([parse_usage_event(payload) for _, _, payload in page], [], [])
            report.usage += len(page)
            after = (page[-1][0], page[-1][1])
            newest = max(newest, after[0])
            if len(page) < self.batch:
                break
        with self.engine.begin() as connection:
            current = self._load(connection)
            self._save(connection, {**current, "usage_received_at": newest.isoformat()})

    def _load(self, connection: Connection) -> dict[str, Any]:
        table = _t["checkpoints"]
        row = connection.execute(
            sa.select(table.c.position).where(table.c.component == self.component)
        ).scalar_one_or_none()
        start = datetime(1970, 1, 1, tzinfo=UTC).isoformat()
        default: dict[str, Any] = {
            "accrual_id": 0,
            "dead_letter_id": 0,
            "usage_received_at": start,
            "paid_epochs": [],
        }
        return {**default, **(row or {})}

    def _save(self, connection: Connection, cursor: dict[str, Any]) -> None:
        table = _t["checkpoints"]
        now = datetime.now(UTC)
        updated = connection.execute(
            table.update()
            .where(table.c.component == self.component)
            .values(position=cursor, updated_at=now)
        )
        if updated.rowcount == 0:
            connection.execute(
                table.insert().values(component=self.component, position=cursor, updated_at=now)
            )

    def _accruals(self, connection: Connection, after: int) -> tuple[list[Accrual], int]:
        table = _t["accruals"]
        rows = connection.execute(
            sa.select(table).where(table.c.id > after).order_by(table.c.id).limit(self.batch)
        ).all()
        out = []
        for row in rows:
            doc = dict(row._mapping)
            doc.pop("id")
            doc.pop("settled_epoch")
            doc["state_interval"] = ChainPosition(
                doc.pop("state_block_number"), doc.pop("state_log_index")
            )
            out.append(Accrual.model_validate(doc))
        return out, int(rows[-1].id) if rows else after

    def _letters(self, connection: Connection, after: int) -> tuple[list[DeadLetter], int]:
        table = _t["dead_letters"]
        rows = connection.execute(
            sa.select(table).where(table.c.id > after).order_by(table.c.id).limit(self.batch)
        ).all()
        out = [
            DeadLetter(
                reason=RejectReason(row.reason),
                detail=row.detail,
                payload=row.payload,
                payload_truncated=bool(row.payload_truncated),
                usage_id=row.usage_id,
                source=row.source,
                received_at=row.received_at,
            )
            for row in rows
        ]
        return out, int(rows[-1].id) if rows else after

    def _usage(
        self, connection: Connection, since: datetime, after: tuple[datetime, str] | None
    ) -> list[tuple[datetime, str, str]]:
        table = _t["usage_events"]
        query = sa.select(table.c.received_at, table.c.usage_id, table.c.payload).where(
            table.c.received_at >= since
        )
        if after is not None:
            query = query.where(
                sa.or_(
                    table.c.received_at > after[0],
                    sa.and_(table.c.received_at == after[0], table.c.usage_id > after[1]),
                )
            )
        rows = connection.execute(
            query.order_by(table.c.received_at, table.c.usage_id).limit(self.batch)
        ).all()
        return [(row.received_at, str(row.usage_id), str(row.payload)) for row in rows]

    def _epochs(
        self, connection: Connection, paid: set[int]
    ) -> tuple[list[dict[str, Any]], list[list[Any]], set[int]]:
        epochs = _t["epochs"]
        rows = [dict(r._mapping) for r in connection.execute(sa.select(epochs))]
        computed = {
            int(r["id"]) for r in rows if r["status"] not in ("open", "closing") and r["root"]
        }
        todo = sorted(computed - paid)
        payouts: list[list[Any]] = []
        if todo:
            allocations = _t["epoch_allocations"]
            for row in connection.execute(
                sa.select(allocations).where(allocations.c.epoch_id.in_(todo))
            ):
                payouts.append(
                    [int(row.epoch_id), int(row.leaf_index), row.account, int(row.amount)]
                )
        return rows, payouts, set(todo)
