"""Tables of the indexer: the block chain it follows (for reorgs) and the decoded events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Index, String, UniqueConstraint, false
from sqlalchemy.orm import Mapped, mapped_column

from schemas.tables.types import ADDRESS_LENGTH, HASH_LENGTH, Base, JsonDocument


class ChainBlockRow(Base):
    """A block the indexer has seen, by height: its hash and parent for walking back a reorg,
    and whether it is deep enough to be final. A reorg replaces the rows above the fork."""

    __tablename__ = "chain_blocks"
    __table_args__ = (
        UniqueConstraint("chain_id", "hash"),
        Index("ix_chain_blocks_chain_id_finalized_number", "chain_id", "finalized", "number"),
    )

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    parent_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    timestamp: Mapped[int] = mapped_column(BigInteger)
    finalized: Mapped[bool] = mapped_column(default=False, server_default=false())


class ChainEventRow(Base):
    """A `ChainEvent`: one decoded log, keyed by its `event_id`; `payload` is the typed payload
    in its JSON form (amounts as decimal strings). `removed` marks a retracted event."""

    __tablename__ = "chain_events"
    __table_args__ = (
        Index(
            "ix_chain_events_chain_id_block_number_log_index",
            "chain_id",
            "block_number",
            "log_index",
        ),
        Index("ix_chain_events_kind_block_number", "kind", "block_number"),
        Index("ix_chain_events_block_hash", "block_hash"),
    )

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    block_timestamp: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    log_index: Mapped[int] = mapped_column(BigInteger)
    contract: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    removed: Mapped[bool] = mapped_column(default=False, server_default=false())
