"""Tables of settlement: epochs, their allocations (Merkle leaves), recipients' carries."""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from schemas.epoch import CARRY_SCALE, EpochStatus
from schemas.tables.types import ADDRESS_LENGTH, HASH_LENGTH, Base, Uint256

_STATUSES = ", ".join(f"'{status.value}'" for status in EpochStatus)


class EpochRow(Base):
    """An `Epoch`: window, lifecycle status, and from `computed` on its root and totals."""

    __tablename__ = "epochs"
    __table_args__ = (
        Index("ix_epochs_status", "status"),
        CheckConstraint(f"status IN ({_STATUSES})", name="status"),
        CheckConstraint("end_time > start_time", name="window"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    start_time: Mapped[int] = mapped_column(BigInteger, unique=True)
    end_time: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16))
    root: Mapped[str | None] = mapped_column(String(HASH_LENGTH))
    total: Mapped[int | None] = mapped_column(Uint256)
    inputs_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH))
    usage_root: Mapped[str | None] = mapped_column(String(HASH_LENGTH))
    tx_hash: Mapped[str | None] = mapped_column(String(HASH_LENGTH))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    claimable_at: Mapped[int | None] = mapped_column(BigInteger)


class EpochAllocationRow(Base):
    """An `Allocation`: leaf `(index, account, amount)` of an epoch's Merkle tree.

    One leaf per account per epoch, and leaf indexes unique per epoch. The SQL columns are
    `epoch_id` and `leaf_index`; the attributes keep the record's names.
    """

    __tablename__ = "epoch_allocations"
    __table_args__ = (UniqueConstraint("epoch_id", "account"),)

    epoch: Mapped[int] = mapped_column(
        "epoch_id", BigInteger, ForeignKey("epochs.id"), primary_key=True
    )
    index: Mapped[int] = mapped_column("leaf_index", BigInteger, primary_key=True)
    account: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    amount: Mapped[int] = mapped_column(Uint256)


class RecipientCarryRow(Base):
    """A `RecipientCarry`: a recipient's sub-unit remainder (10^-6 units) after an epoch."""

    __tablename__ = "recipient_carries"
    __table_args__ = (
        Index("ix_recipient_carries_epoch_id", "epoch_id"),
        CheckConstraint(f"carry_e6 >= 0 AND carry_e6 < {CARRY_SCALE}", name="carry_range"),
    )

    account: Mapped[str] = mapped_column(String(ADDRESS_LENGTH), primary_key=True)
    epoch: Mapped[int] = mapped_column(
        "epoch_id", BigInteger, ForeignKey("epochs.id"), primary_key=True
    )
    carry_e6: Mapped[int] = mapped_column(BigInteger)
