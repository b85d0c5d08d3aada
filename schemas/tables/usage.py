"""Tables of the usage path: accepted usage, accruals (what is billed), dead letters."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from schemas.accrual import RejectReason
from schemas.tables.types import ADDRESS_LENGTH, Base, Uint256, UtcDateTime

# SQLite makes only INTEGER PRIMARY KEY an auto-incrementing rowid alias.
SurrogateKey = BigInteger().with_variant(Integer(), "sqlite")


class UsageEventRow(Base):
    """A usage event that passed parsing and signature checks, kept as received (canonical JSON).

    Unique on the usage id: the first line of deduplication, and the public input the usage
    root of an epoch commits to.
    """

    __tablename__ = "usage_events"
    __table_args__ = (
        Index("ix_usage_events_model_id_event_time", "model_id", "event_time"),
        Index("ix_usage_events_event_time", "event_time"),
    )

    usage_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    source: Mapped[str] = mapped_column(String(2048))
    event_time: Mapped[int] = mapped_column(BigInteger)
    model_id: Mapped[int] = mapped_column(Uint256)
    license_id: Mapped[int] = mapped_column(Uint256)
    units: Mapped[int] = mapped_column(Uint256)
    keyid: Mapped[str | None] = mapped_column(String(256))
    payload: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AccrualRow(Base):
    """An `Accrual`: one billed usage event. Unique on `usage_id`, the last line against billing
    the same usage twice. `id` is the insertion order, for sinks that tail the table."""

    __tablename__ = "accruals"
    __table_args__ = (
        Index(
            "ix_accruals_epoch_model_id_state",
            "epoch",
            "model_id",
            "state_block_number",
            "state_log_index",
        ),
        Index("ix_accruals_license_id", "license_id"),
        Index("ix_accruals_settled_epoch", "settled_epoch"),
        Index("ix_accruals_payer", "payer"),
        CheckConstraint("operator_bps + treasury_bps + contributors_bps = 10000", name="bps_total"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True, autoincrement=True)
    usage_id: Mapped[str] = mapped_column(String(128), unique=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
    model_id: Mapped[int] = mapped_column(Uint256)
    license_id: Mapped[int] = mapped_column(Uint256)
    payer: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    event_time: Mapped[int] = mapped_column(BigInteger)
    units: Mapped[int] = mapped_column(Uint256)
    price_per_unit_e6: Mapped[int] = mapped_column(Uint256)
    fee_e6: Mapped[int] = mapped_column(Uint256)
    state_block_number: Mapped[int] = mapped_column(BigInteger)
    state_log_index: Mapped[int] = mapped_column(BigInteger)
    operator: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    operator_bps: Mapped[int] = mapped_column(Integer)
    treasury_bps: Mapped[int] = mapped_column(Integer)
    contributors_bps: Mapped[int] = mapped_column(Integer)
    settled_epoch: Mapped[int | None] = mapped_column(BigInteger, default=None)
    """The epoch whose distribution bills this accrual, set by the settler in the transaction
    that computes that epoch (NULL until then). Usually `epoch`; a later one for an accrual
    committed after its own epoch was computed (a late event, billed in the next epoch
    computed, priced at its own time). Never changes once set."""


_REASONS = ", ".join(f"'{reason.value}'" for reason in RejectReason)


class DeadLetterRow(Base):
    """A `DeadLetter`: a rejected usage event with its reason code and raw payload."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        Index("ix_dead_letters_reason_received_at", "reason", "received_at"),
        Index("ix_dead_letters_usage_id", "usage_id"),
        CheckConstraint(f"reason IN ({_REASONS})", name="reason"),
    )

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True, autoincrement=True)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    payload_truncated: Mapped[bool]
    usage_id: Mapped[str | None] = mapped_column(String(128))
    source: Mapped[str | None] = mapped_column(String(2048))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
