"""Tables of settlement: epochs, their allocations (Merkle leaves), recipients' carries."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from schemas.epoch import CARRY_SCALE, EpochStatus
from schemas.tables.types import ADDRESS_LENGTH, HASH_LENGTH, Base, Uint256, UtcDateTime

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
    leaf_count: Mapped[int | None] = mapped_column(BigInteger)
    accrual_count: Mapped[int | None] = mapped_column(BigInteger)
    fees_e6: Mapped[int | None] = mapped_column(Uint256)
    """Sum of the fees (10^-6 units) of the accruals this epoch bills."""
    computed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    committed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


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


_TX_KINDS = "'approve', 'commit', 'dispute'"
_TX_STATES = "'signed', 'sent', 'mined', 'failed', 'replaced'"


class SettlementTxRow(Base):
    """A transaction the settler signed for an epoch, recorded BEFORE it is broadcast.

    The signed raw transaction is kept so a settler killed between send and record can
    re-broadcast the very same transaction (same nonce, same hash) or find its receipt, and
    never sign a second commit for the epoch. `state` moves signed → sent → mined | failed
    (or replaced, when another transaction took its nonce).
    """

    __tablename__ = "settlement_txs"
    __table_args__ = (
        Index("ix_settlement_txs_epoch_id_kind", "epoch_id", "kind"),
        UniqueConstraint("sender", "nonce", "tx_hash"),
        CheckConstraint(f"kind IN ({_TX_KINDS})", name="kind"),
        CheckConstraint(f"state IN ({_TX_STATES})", name="state"),
    )

    tx_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), primary_key=True)
    epoch: Mapped[int] = mapped_column("epoch_id", BigInteger, ForeignKey("epochs.id"))
    kind: Mapped[str] = mapped_column(String(16))
    chain_id: Mapped[int] = mapped_column(BigInteger)
    sender: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    nonce: Mapped[int] = mapped_column(BigInteger)
    raw_tx: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    gas_used: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiKeyRow(Base):
    """An operator API key: only a hash of the secret is stored, with its scopes.

    The presented key is `rk_<key_id>_<secret>`; `key_hash` is the hex SHA-256 of the whole
    key with the server's pepper (HMAC). `scopes` is a space-separated list (e.g. `admin`,
    `settle`, `ingest`). A revoked key (`revoked_at` set) authenticates nothing.
    """

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hash: Mapped[str] = mapped_column(String(128))
    scopes: Mapped[str] = mapped_column(String(500))
    rate_limit_per_s: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
