"""Column types and constraints on both databases: exact uint256, UTC times, uniqueness."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from schemas import migrate
from schemas.accrual import Accrual
from schemas.engine import create_engine
from schemas.tables import (
    AccrualRow,
    ChainEventRow,
    CheckpointRow,
    EpochAllocationRow,
    EpochRow,
    RecipientCarryRow,
)
from tests.schemas.schema_factories import OPERATOR, PAYER, accrual_doc

EDGE_VALUES = [0, 1, 2**53 + 1, 2**63, 2**64, 10**77, 2**256 - 1]
NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    migrate.upgrade(db_url)
    engine = create_engine(db_url, poolclass=NullPool)
    with Session(engine) as session:
        yield session
    engine.dispose()


def _accrual_row(usage_id: str, fee_e6: int = 0, **changes: object) -> AccrualRow:
    accrual = Accrual.model_validate(
        accrual_doc(usage_id=usage_id, units=1, price_per_unit_e6=str(fee_e6), fee_e6=str(fee_e6))
    )
    fields = accrual.model_dump(exclude={"state_interval"})
    block, log = accrual.state_interval
    fields.update(state_block_number=block, state_log_index=log, **changes)
    return AccrualRow(**fields)


def _epoch(session: Session, epoch_id: int = 1) -> None:
    session.add(EpochRow(id=epoch_id, start_time=0, end_time=3600, status="open"))
    session.flush()


def test_uint256_round_trips_exactly(session: Session) -> None:
    _epoch(session)
    for index, value in enumerate(EDGE_VALUES):
        session.add(
            EpochAllocationRow(epoch=1, index=index, account=f"0x{index:040x}", amount=value)
        )
    session.commit()
    session.expire_all()
    rows = session.scalars(sa.select(EpochAllocationRow).order_by(EpochAllocationRow.index)).all()
    assert [row.amount for row in rows] == EDGE_VALUES
    assert all(type(row.amount) is int for row in rows)


def test_uint256_orders_and_compares_numerically(session: Session) -> None:
    _epoch(session)
    shuffled = [2**64, 0, 2**256 - 1, 9, 10, 2**63, 1]
    for index, value in enumerate(shuffled):
        session.add(
            EpochAllocationRow(epoch=1, index=index, account=f"0x{index:040x}", amount=value)
        )
    session.commit()
    ordered = session.scalars(
        sa.select(EpochAllocationRow.amount).order_by(EpochAllocationRow.amount)
    ).all()
    assert list(ordered) == sorted(shuffled)
    above = session.scalars(
        sa.select(EpochAllocationRow.amount).where(EpochAllocationRow.amount > 2**63)
    ).all()
    assert sorted(above) == [2**64, 2**256 - 1]
    exact = session.scalars(
        sa.select(EpochAllocationRow.index).where(EpochAllocationRow.amount == 2**256 - 1)
    ).one()
    assert exact == 2


def test_sqlite_stores_uint256_as_padded_text_never_as_a_float(sqlite_url: str) -> None:
    migrate.upgrade(sqlite_url)
    engine = create_engine(sqlite_url, poolclass=NullPool)
    with Session(engine) as session:
        _epoch(session)
        session.add(EpochAllocationRow(epoch=1, index=0, account=PAYER, amount=2**256 - 1))
        session.commit()
        stored_type, stored = session.execute(
            sa.text("SELECT typeof(amount), amount FROM epoch_allocations")
        ).one()
    engine.dispose()
    assert stored_type == "text"
    assert stored == str(2**256 - 1).zfill(78)


@pytest.mark.parametrize("value", [-1, 2**256, 1.5, True])
def test_uint256_refuses_to_bind_out_of_range_values(session: Session, value: object) -> None:
    _epoch(session)
    session.add(EpochAllocationRow(epoch=1, index=0, account=PAYER, amount=value))
    with pytest.raises(StatementError):
        session.flush()


def test_accruals_reject_a_second_row_for_the_same_usage(session: Session) -> None:
    session.add(_accrual_row("u-1", fee_e6=2**256 - 1))
    session.commit()
    session.add(_accrual_row("u-1", fee_e6=5))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()
    assert session.scalars(sa.select(AccrualRow.fee_e6)).all() == [2**256 - 1]


def test_accruals_check_the_policy_split(session: Session) -> None:
    session.add(_accrual_row("u-1", operator_bps=1))
    with pytest.raises(IntegrityError):
        session.commit()


def test_allocations_are_unique_per_epoch_account_and_index(session: Session) -> None:
    _epoch(session)
    session.add(EpochAllocationRow(epoch=1, index=0, account=PAYER, amount=1))
    session.commit()
    for duplicate in (
        EpochAllocationRow(epoch=1, index=1, account=PAYER, amount=1),
        EpochAllocationRow(epoch=1, index=0, account=OPERATOR, amount=1),
    ):
        session.add(duplicate)
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()


def test_foreign_keys_and_carry_range_are_enforced(session: Session) -> None:
    session.add(EpochAllocationRow(epoch=404, index=0, account=PAYER, amount=1))
    with pytest.raises(IntegrityError):
        session.commit()
    session.rollback()
    _epoch(session)
    session.add(RecipientCarryRow(account=PAYER, epoch=1, carry_e6=1_000_000))
    with pytest.raises(IntegrityError):
        session.commit()


def test_epoch_status_is_checked(session: Session) -> None:
    session.add(EpochRow(id=1, start_time=0, end_time=10, status="settled"))
    with pytest.raises(IntegrityError):
        session.commit()


def test_times_come_back_aware_utc_and_json_documents_intact(session: Session) -> None:
    local = NOW.astimezone(timezone(timedelta(hours=9)))
    position = {"block": 12, "offsets": {"usage-0": 41}, "amount": str(2**256 - 1)}
    session.add(CheckpointRow(component="indexer", position=position, updated_at=local))
    session.add(
        ChainEventRow(
            event_id="1:0xab:0",
            chain_id=1,
            block_number=1,
            block_hash="0x" + "ab" * 32,
            block_timestamp=0,
            tx_hash="0x" + "cd" * 32,
            log_index=0,
            contract=OPERATOR,
            kind="Paused",
            payload={"kind": "Paused", "account": OPERATOR},
        )
    )
    session.commit()
    session.expire_all()
    checkpoint = session.get_one(CheckpointRow, "indexer")
    assert checkpoint.updated_at == NOW
    assert checkpoint.updated_at.tzinfo is UTC
    assert checkpoint.position == position
    event = session.get_one(ChainEventRow, "1:0xab:0")
    assert event.removed is False
    assert event.payload["account"] == OPERATOR


def test_naive_datetimes_are_refused(session: Session) -> None:
    session.add(CheckpointRow(component="x", position={}, updated_at=datetime(2024, 1, 1)))
    with pytest.raises(StatementError, match="naive"):
        session.flush()
