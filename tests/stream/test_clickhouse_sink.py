"""The ClickHouse sink on chDB: redelivery collapses, money stays exact, and the analyst
queries of docs/analytics.md run and give the expected figures."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import clickhouse_connect

from schemas.accrual import Accrual, DeadLetter, RejectReason
from schemas.chain import ChainPosition
from schemas.usage import UsageData, UsageEvent
from stream.sinks.clickhouse_sink import ClickHouseSink

DOC = Path(__file__).resolve().parents[2] / "docs" / "analytics.md"
ALICE, BOB, OP = "0x" + "3" * 40, "0x" + "4" * 40, "0x" + "1" * 40
DAY = 86_400
BIG = 2**200


def _accrual(n: int, model: int, payer: str, t: int, units: int, price: int) -> Accrual:
    return Accrual(
        usage_id=f"u{n}", epoch=t // DAY, model_id=model, license_id=model * 10,
        payer=payer, event_time=t, units=units, price_per_unit_e6=price,
        fee_e6=units * price, state_interval=ChainPosition(5, 1), operator=OP,
        operator_bps=2_000, treasury_bps=1_000, contributors_bps=7_000,
    )  # fmt: skip


def test_sink_and_documented_queries(analytics_database: tuple[str, str]) -> None:
    url, db = analytics_database
    client = clickhouse_connect.get_client(dsn=url)
    sink = ClickHouseSink(client, db)
    sink.ensure_schema()
    sink.ensure_schema()  # idempotent
    t0 = 1_700_000_000 - 1_700_000_000 % DAY
    accruals = [
        _accrual(1, 1, ALICE, t0 + 10, 3, 1_500_000),
        _accrual(2, 1, BOB, t0 + 20, 1, BIG),
        _accrual(3, 1, ALICE, t0 + DAY, 2, 1_000_000),
        _accrual(4, 2, BOB, t0 + 30, 5, 7),
    ]
    usage = [
        UsageEvent.create(
            id=a.usage_id, source="//m/n", time=datetime.fromtimestamp(a.event_time, UTC),
            data=UsageData(model_id=a.model_id, license_id=a.license_id, units=a.units),
        )
        for a in accruals
    ]  # fmt: skip
    now = datetime(2024, 1, 1, tzinfo=UTC)
    letters = [
        DeadLetter.from_raw(b"{", reason=RejectReason.MALFORMED, detail="x", received_at=now),
        DeadLetter.from_raw(b"{}", reason=RejectReason.EXPIRED, detail="y", received_at=now),
        DeadLetter.from_raw(b"{ }", reason=RejectReason.EXPIRED, detail="z", received_at=now),
    ]
    sink.write(usage, accruals, letters)
    sink.write(usage[:2], accruals[:2], letters[:1])  # a redelivered batch
    queries = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)[:4]
    assert len(queries) == 4
    revenue, top, reasons, contributors = (
        client.query(q.format(db=db)).result_rows for q in queries
    )
    day0, day1 = (datetime.fromtimestamp(t0 + d, UTC).date() for d in (0, DAY))
    assert [(m, d, fee, n) for m, d, fee, _, n in revenue] == [
        (1, day0, 4_500_000 + BIG, 2),
        (1, day1, 2_000_000, 1),
        (2, day0, 35, 1),
    ]
    assert revenue[0][3] == (4_500_000 + BIG) // 1_000_000
    assert [(payer, fee) for payer, fee, _, _ in top] == [(BOB, BIG + 35), (ALICE, 6_500_000)]
    assert [(r, n) for r, n, _ in reasons] == [("expired", 2), ("malformed", 1)]
    assert contributors[0][:3] == (
        1,
        t0 // DAY,
        4_500_000 * 7_000 // 10_000 + BIG * 7_000 // 10_000,
    )
    raw = client.query(f"SELECT count() FROM {db}.usage_raw FINAL").result_rows
    assert raw == [(4,)]


def test_accrual_row_is_the_table_row() -> None:
    """The flat row both sinks write matches the `accruals` table, column by column."""
    from schemas.accrual import ACCRUAL_ROW_COLUMNS, accrual_row
    from schemas.tables import metadata

    accrual = _accrual(9, 3, ALICE, 1_700_000_000, 4, BIG)
    row = dict(zip(ACCRUAL_ROW_COLUMNS, accrual_row(accrual), strict=True))
    assert set(ACCRUAL_ROW_COLUMNS) <= set(metadata.tables["accruals"].c.keys())
    assert row["state_block_number"] == 5
    assert row["state_log_index"] == 1
    assert row["fee_e6"] == 4 * BIG
    assert row["payer"] == accrual.payer
    flat = accrual.model_dump(exclude={"state_interval"})
    assert {k: v for k, v in row.items() if k in flat} == {k: flat[k] for k in row if k in flat}
