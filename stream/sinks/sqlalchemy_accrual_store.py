"""The join's outputs in the settlement database: usage, accruals, dead letters, checkpoint.

Writes through the caller's connection and never commits: the runner commits one batch's
accruals, dead letters, decided usage ids and its input position in ONE transaction, so after
a crash it resumes exactly where its committed outputs end. Inserts of usage and accruals are
idempotent (`ON CONFLICT (usage_id) DO NOTHING`), the unique constraints being the last line
against billing one usage id twice.

One statement per table and batch, never one per event: the dedupe lookup is one `IN (...)`
query, and the usage and accrual rows go in as one executemany (SQLite) or one COPY into a
transaction-scoped staging table followed by one `INSERT ... SELECT ... ON CONFLICT DO
NOTHING` (PostgreSQL).
"""

from __future__ import annotations

import select
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import pq
from psycopg import sql as psql
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from schemas.accrual import ACCRUAL_ROW_COLUMNS, Accrual, DeadLetter, accrual_row
from schemas.chain import ChainPosition
from schemas.tables import metadata
from schemas.usage import UsageEvent, encode_usage_event
from stream.errors import CheckpointConflict, InvalidInput

_usage = metadata.tables["usage_events"]
_accruals = metadata.tables["accruals"]
_dead_letters = metadata.tables["dead_letters"]
_checkpoints = metadata.tables["checkpoints"]

_USAGE_COLUMNS = (
    "usage_id",
    "source",
    "event_time",
    "model_id",
    "license_id",
    "units",
    "keyid",
    "payload",
    "received_at",
)
_ACCRUAL_COLUMNS = ACCRUAL_ROW_COLUMNS

# Ids per dedupe lookup, a whole batch usually in one query. SQLite binds one parameter per id
# (it allows 32766 variables: stay well below); PostgreSQL takes them as one array parameter.
_LOOKUP_CHUNK = {"sqlite": 10_000, "postgresql": 50_000}


@dataclass(frozen=True)
class JoinPosition:
    """Where the join is in its input: the last offset consumed, and the events it holds.

    `held` lists `(offset, payload)` of consumed events still waiting for the finalized chain;
    they are part of the checkpoint so a crash cannot lose them.
    """

    offset: int = -1
    held: tuple[tuple[int, str], ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "held": [[o, p] for o, p in self.held]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> JoinPosition:
        try:
            held = tuple((int(o), str(p)) for o, p in doc.get("held", []))
            return cls(offset=int(doc["offset"]), held=held)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInput(f"corrupt join checkpoint: {exc}") from exc


_DECIDED_ANY = sa.select(_usage.c.usage_id).where(
    _usage.c.usage_id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.String)))
)


def _insert(connection: Connection) -> Any:
    # The dialect's insert: the one that has `on_conflict_do_nothing`.
    if connection.dialect.name == "postgresql":
        return postgresql.insert
    if connection.dialect.name == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"no idempotent insert for {connection.dialect.name}")


def _error(message: str, sqlstate: str) -> psycopg.Error:
    """The psycopg exception of SQLSTATE `sqlstate` (a plain `DatabaseError` when unknown)."""
    try:
        return psycopg.errors.lookup(sqlstate)(message)
    except KeyError:
        return psycopg.DatabaseError(message)


def _chunks(values: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class SqlAlchemyAccrualStore:
    """The join's tables through the caller's connection (the caller owns the transaction).

    `defer_inserts` (PostgreSQL; ignored elsewhere): the usage and accrual rows are copied into
    their staging tables at once, but the statements that insert them into the tables (the
    bulk of the database's work: the indexes) wait for `send_deferred`, which starts them on
    the server without waiting, and `finish_deferred`, which waits for them and raises what
    they raised. In between the caller may work (read the next input) while the server
    writes; nothing may use the connection until `finish_deferred` has returned, and the
    transaction must not be committed before it."""

    def __init__(self, connection: Connection, *, defer_inserts: bool = False) -> None:
        self.connection = connection
        self._insert = _insert(connection)
        self._lookup_chunk = _LOOKUP_CHUNK.get(connection.dialect.name, 500)
        self._defer = defer_inserts and connection.dialect.name == "postgresql"
        self._deferred: list[psql.Composable] = []
        self._staged: dict[str, int] = {}
        """Rows staged so far per table for the deferred inserts."""
        self._running: psycopg.Connection[Any] | None = None

    # --- dedupe --------------------------------------------------------------------------------

    def decided(self, usage_ids: Collection[str]) -> set[str]:
        """The ids among `usage_ids` already decided (a committed `usage_events` row).

        PostgreSQL gets the ids as ONE array parameter (`= ANY(:ids)`): a statement compiled
        once, instead of one bound parameter per id to render and parse for every batch."""
        found: set[str] = set()
        as_array = self.connection.dialect.name == "postgresql"
        for chunk in _chunks(sorted(set(usage_ids)), self._lookup_chunk):
            rows = (
                self.connection.execute(_DECIDED_ANY, {"ids": chunk})
                if as_array
                else self.connection.execute(
                    sa.select(_usage.c.usage_id).where(_usage.c.usage_id.in_(chunk))
                )
            )
            found.update(row[0] for row in rows)
        return found

    # --- outputs -------------------------------------------------------------------------------

    def add_usage(
        self,
        events: list[tuple[UsageEvent, datetime]],
        *,
        payloads: Sequence[str] | None = None,
    ) -> None:
        """Record decided usage events (first occurrences; a repeat is ignored).

        `payloads` are the events' canonical encodings (`encode_usage_event`, as text) when
        the caller already has them, one per event."""
        if not events:
            return
        if payloads is None:
            payloads = [encode_usage_event(event).decode("utf-8") for event, _ in events]
        elif len(payloads) != len(events):
            raise ValueError("one payload per usage event")
        rows = [
            (
                event.id,
                event.source,
                event.unix_time,
                event.data.model_id,
                event.data.license_id,
                event.data.units,
                event.keyid,
                payload,
                received_at,
            )
            for (event, received_at), payload in zip(events, payloads, strict=True)
        ]
        self._insert_rows(_usage, _USAGE_COLUMNS, rows, conflict="")

    def add_accruals(self, accruals: list[Accrual]) -> None:
        """Insert accruals; one already stored for the same usage id is kept as it is."""
        if not accruals:
            return
        rows = [accrual_row(a) for a in accruals]
        self._insert_rows(_accruals, _ACCRUAL_COLUMNS, rows, conflict="(usage_id)")

    def _insert_rows(
        self, table: sa.Table, columns: tuple[str, ...], rows: list[tuple[Any, ...]], conflict: str
    ) -> None:
        """`INSERT ... ON CONFLICT <conflict> DO NOTHING` of `rows`, in their order.

        PostgreSQL: the rows are COPYed into a transaction-scoped temporary table and inserted
        from it in one statement (COPY has no ON CONFLICT of its own), instead of one bound
        execution per row. Deferred inserts stage all the rows of a table first (several
        partitions' batches, say) and insert them with one statement. Other databases: one
        executemany."""
        if self.connection.dialect.name != "postgresql":
            insert = self._insert(table).on_conflict_do_nothing(
                index_elements=[conflict.strip("()")] if conflict else None
            )
            self.connection.execute(insert, [dict(zip(columns, r, strict=True)) for r in rows])
            return
        names = psql.SQL(", ").join(psql.Identifier(c) for c in columns)
        target = psql.Identifier(table.name)
        staging = psql.Identifier(f"_stream_in_{table.name}")
        on_conflict = psql.SQL(conflict)  # one of this module's constants, never input
        driver = self.connection.connection.driver_connection
        assert driver is not None
        staged = self._staged.get(table.name)
        with driver.cursor() as cursor:
            if staged is None:
                cursor.execute(
                    psql.SQL(
                        "CREATE TEMPORARY TABLE IF NOT EXISTS {} ON COMMIT DELETE ROWS AS "
                        "SELECT {}, 0::bigint AS _n FROM {} WITH NO DATA"
                    ).format(staging, names, target)
                )
                cursor.execute(psql.SQL("TRUNCATE {}").format(staging))
            first = staged or 0
            copy_sql = psql.SQL("COPY {} ({}, _n) FROM STDIN").format(staging, names)
            with cursor.copy(copy_sql) as copy:
                for n, row in enumerate(rows, start=first):
                    copy.write_row((*row, n))
            insert = psql.SQL(
                "INSERT INTO {} ({}) SELECT {} FROM {} ORDER BY _n ON CONFLICT {} DO NOTHING"
            ).format(target, names, names, staging, on_conflict)
            if not self._defer:
                cursor.execute(insert)
                return
            # The staged rows wait for `send_deferred`: the next batch of this table goes
            # after them, and the one statement inserts them all.
            self._staged[table.name] = first + len(rows)
            if staged is None:
                self._deferred.append(insert)

    def send_deferred(self) -> None:
        """Start the deferred inserts on the server, in the order they were made, as one query
        without waiting for it (nothing to do when none is deferred)."""
        if not self._deferred:
            return
        if self._running is not None:
            raise RuntimeError("the previous deferred inserts are still running")
        driver = self.connection.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        query = psql.SQL("; ").join(self._deferred).as_bytes(driver)
        self._deferred = []
        self._staged.clear()
        pgconn = driver.pgconn
        pgconn.send_query(query)
        while pgconn.flush():  # psycopg keeps its connections non-blocking: send it all
            select.select([], [pgconn.socket], [])
        self._running = driver

    def finish_deferred(self) -> None:
        """Wait until the inserts started by `send_deferred` are done; raise the database's
        error when one failed (the transaction is then aborted: roll it back)."""
        if self._deferred:
            raise RuntimeError("deferred inserts were never sent")
        driver, self._running = self._running, None
        if driver is None:
            return
        pgconn = driver.pgconn
        failure: psycopg.Error | None = None
        while True:
            while pgconn.is_busy():
                select.select([pgconn.socket], [], [])
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                break
            if result.status == pq.ExecStatus.FATAL_ERROR and failure is None:
                message = (result.error_message or b"").decode("utf-8", "replace").strip()
                sqlstate = (result.error_field(pq.DiagnosticField.SQLSTATE) or b"").decode()
                failure = _error(message, sqlstate)
        if failure is not None:
            raise failure

    def add_dead_letters(self, letters: list[DeadLetter]) -> None:
        """Append dead letters (exactly once per consumed message, by the checkpoint)."""
        if letters:
            self.connection.execute(
                _dead_letters.insert(), [letter.model_dump() for letter in letters]
            )

    # --- checkpoint ----------------------------------------------------------------------------

    def load_position(self, component: str) -> tuple[JoinPosition, datetime | None]:
        """The component's position and its version (None: never saved)."""
        row = self.connection.execute(
            sa.select(_checkpoints.c.position, _checkpoints.c.updated_at).where(
                _checkpoints.c.component == component
            )
        ).one_or_none()
        if row is None:
            return JoinPosition(), None
        return JoinPosition.from_json(row.position), row.updated_at

    def save_position(
        self, component: str, position: JoinPosition, version: datetime | None, now: datetime
    ) -> None:
        """Move the checkpoint from `version` to `position`; `CheckpointConflict` when
        another runner moved it meanwhile (compare-and-set, so two runners never both win)."""
        values = {"position": position.to_json(), "updated_at": now}
        if version is None:
            insert = self._insert(_checkpoints).values(component=component, **values)
            done = self.connection.execute(
                insert.on_conflict_do_nothing().returning(_checkpoints.c.component)
            )
            moved = done.first() is not None
        else:
            done = self.connection.execute(
                _checkpoints.update()
                .where(_checkpoints.c.component == component, _checkpoints.c.updated_at == version)
                .values(**values)
            )
            moved = done.rowcount == 1
        if not moved:
            raise CheckpointConflict(f"checkpoint {component} moved under this batch")

    # --- reads (tests, API) --------------------------------------------------------------------

    def accruals(self) -> list[Accrual]:
        """Every stored accrual, in insertion order."""
        rows = self.connection.execute(sa.select(_accruals).order_by(_accruals.c.id))
        out = []
        for row in rows:
            doc = dict(row._mapping)
            doc.pop("id")
            doc.pop("settled_epoch")
            doc["state_interval"] = ChainPosition(
                doc.pop("state_block_number"), doc.pop("state_log_index")
            )
            out.append(Accrual.model_validate(doc))
        return out

    def dead_letter_counts(self) -> dict[str, int]:
        """Dead letters per reason code."""
        rows = self.connection.execute(
            sa.select(_dead_letters.c.reason, sa.func.count()).group_by(_dead_letters.c.reason)
        )
        return {str(reason): int(count) for reason, count in rows}

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter, in insertion order."""
        rows = self.connection.execute(sa.select(_dead_letters).order_by(_dead_letters.c.id))
        return [
            DeadLetter.model_validate({k: v for k, v in r._mapping.items() if k != "id"})
            for r in rows
        ]
