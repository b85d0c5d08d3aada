"""The database tailed into chDB: every row once (after FINAL), re-sends collapse, payouts."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect

from schemas import migrate
from schemas.accrual import Accrual, DeadLetter, RejectReason
from schemas.chain import ChainPosition
from schemas.engine import create_engine
from schemas.tables import metadata
from schemas.usage import UsageData, UsageEvent
from stream.sinks.clickhouse_tailer import AnalyticsTailer
from stream.sinks.sqlalchemy_accrual_store import SqlAlchemyAccrualStore

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
OP, ALICE = "0x" + "1" * 40, "0x" + "3" * 40
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
_t = metadata.tables


def _event(n: int) -> UsageEvent:
    return UsageEvent.create(
        id=f"u{n}",
        source="//m/n",
        time=datetime.fromtimestamp(1_700_000_000 + n, UTC),
        data=UsageData(model_id=1, license_id=7, units=n),
    )


def _accrual(n: int) -> Accrual:
    return Accrual(
        usage_id=f"u{n}", epoch=0, model_id=1, license_id=7, payer=ALICE,
        event_time=1_700_000_000 + n, units=n, price_per_unit_e6=3, fee_e6=3 * n,
        state_interval=ChainPosition(5, 1), operator=OP,
        operator_bps=2_000, treasury_bps=1_000, contributors_bps=7_000,
    )  # fmt: skip


def _add(url: str, numbers: range) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        store = SqlAlchemyAccrualStore(connection)
        store.add_usage([(_event(n), NOW) for n in numbers])
        store.add_accruals([_accrual(n) for n in numbers])
        store.add_dead_letters(
            [
                DeadLetter.from_raw(
                    f"bad {n}", reason=RejectReason.MALFORMED, detail="x", received_at=NOW
                )
                for n in numbers
            ]
        )
    engine.dispose()


def _count(client: object, db: str, table: str) -> int:
    query = f"SELECT count() FROM {db}.{table} FINAL"
    return int(client.query(query).result_rows[0][0])  # type: ignore[attr-defined]


def test_tailer_copies_each_row_once(sqlite_url: str, analytics_database: tuple[str, str]) -> None:
    url, db = analytics_database
    migrate.upgrade(sqlite_url)
    client = clickhouse_connect.get_client(dsn=url)
    engine = create_engine(sqlite_url)
    tailer = AnalyticsTailer(engine, client, db, batch=4)
    tailer.ensure_schema()
    _add(sqlite_url, range(1, 11))
    first = tailer.sync()
    assert (first.accruals, first.rejects, first.usage) == (10, 10, 10)
    for table in ("accruals", "rejects", "usage_raw"):
        assert _count(client, db, table) == 10
    again = tailer.sync()
    assert (again.accruals, again.rejects) == (0, 0)  # usage re-reads its slack window
    _add(sqlite_url, range(11, 14))
    assert tailer.sync().accruals == 3
    assert _count(client, db, "accruals") == 13
    # A crash after the insert, before the cursor: the same rows go again and collapse.
    with engine.begin() as connection:
        connection.execute(
            _t["checkpoints"].delete().where(_t["checkpoints"].c.component == tailer.component)
        )
    assert tailer.sync().accruals == 13
    for table in ("accruals", "rejects", "usage_raw"):
        assert _count(client, db, table) == 13
    fees = client.query(f"SELECT sum(fee_e6) FROM {db}.accruals FINAL").result_rows[0][0]
    assert fees == 3 * sum(range(1, 14))
    engine.dispose()


def test_tailer_sends_epochs_and_payouts(
    sqlite_url: str, analytics_database: tuple[str, str]
) -> None:
    url, db = analytics_database
    migrate.upgrade(sqlite_url)
    client = clickhouse_connect.get_client(dsn=url)
    engine = create_engine(sqlite_url)
    with engine.begin() as c:
        c.execute(
            _t["epochs"].insert(),
            [
                {"id": 0, "start_time": 0, "end_time": 60, "status": "computed",
                 "root": "0x" + "ab" * 32, "total": 10**30},
                {"id": 1, "start_time": 60, "end_time": 120, "status": "open", "total": None,
                 "root": None},
            ],
        )  # fmt: skip
        c.execute(
            _t["epoch_allocations"].insert(),
            [
                {"epoch_id": 0, "leaf_index": 0, "account": ALICE, "amount": 10**30 - 1},
                {"epoch_id": 0, "leaf_index": 1, "account": OP, "amount": 1},
            ],
        )
    tailer = AnalyticsTailer(engine, client, db)
    tailer.ensure_schema()
    report = tailer.sync()
    assert (report.epochs, report.payouts) == (2, 2)
    assert tailer.sync().payouts == 0  # sent once per computed epoch
    with engine.begin() as c:
        c.execute(_t["epochs"].update().where(_t["epochs"].c.id == 0).values(status="committed"))
    tailer.sync()
    rows = client.query(f"SELECT epoch, status FROM {db}.epochs FINAL ORDER BY epoch").result_rows
    assert [tuple(r) for r in rows] == [(0, "committed"), (1, "open")]
    total = client.query(f"SELECT sum(amount) FROM {db}.payouts FINAL").result_rows[0][0]
    assert total == 10**30
    payouts, per_epoch = (
        client.query(q.format(db=db)).result_rows
        for q in re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)[4:]
    )
    assert [tuple(r) for r in payouts] == [(ALICE, 10**30 - 1, 1), (OP, 1, 1)]
    assert [tuple(r)[:4] for r in per_epoch] == [(0, "committed", None, 10**30)]
    engine.dispose()
