"""Settlement: the billing epoch of each accrual, signed settlement transactions, API keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24

`accruals.settled_epoch` is set by the settler in the transaction that computes an epoch, so an
accrual committed after its epoch was computed is billed by the next one and never twice.
`settlement_txs` keeps each signed transaction before it is broadcast (crash-safe commits);
`api_keys` holds hashed operator keys with their scopes. Epochs gain their computed totals.

Migrations are frozen snapshots: spell column types out with plain SQLAlchemy types (see
0001's `UINT256`) instead of importing the application's, which may change later.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UINT256 = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("key_hash", sa.String(length=128), nullable=False),
        sa.Column("scopes", sa.String(length=500), nullable=False),
        sa.Column("rate_limit_per_s", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
    )
    op.create_table(
        "settlement_txs",
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("epoch_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("sender", sa.String(length=42), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("raw_tx", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("gas_used", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('approve', 'commit', 'dispute')", name=op.f("ck_settlement_txs_kind")
        ),
        sa.CheckConstraint(
            "state IN ('signed', 'sent', 'mined', 'failed', 'replaced')",
            name=op.f("ck_settlement_txs_state"),
        ),
        sa.ForeignKeyConstraint(
            ["epoch_id"], ["epochs.id"], name=op.f("fk_settlement_txs_epoch_id_epochs")
        ),
        sa.PrimaryKeyConstraint("tx_hash", name=op.f("pk_settlement_txs")),
        sa.UniqueConstraint(
            "sender", "nonce", "tx_hash", name=op.f("uq_settlement_txs_sender_nonce_tx_hash")
        ),
    )
    with op.batch_alter_table("settlement_txs", schema=None) as batch_op:
        batch_op.create_index("ix_settlement_txs_epoch_id_kind", ["epoch_id", "kind"], unique=False)

    with op.batch_alter_table("accruals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("settled_epoch", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_accruals_settled_epoch", ["settled_epoch"], unique=False)

    with op.batch_alter_table("epochs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("leaf_count", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("accrual_count", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("fees_e6", UINT256, nullable=True))
        batch_op.add_column(sa.Column("computed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("committed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("epochs", schema=None) as batch_op:
        batch_op.drop_column("committed_at")
        batch_op.drop_column("computed_at")
        batch_op.drop_column("fees_e6")
        batch_op.drop_column("accrual_count")
        batch_op.drop_column("leaf_count")

    with op.batch_alter_table("accruals", schema=None) as batch_op:
        batch_op.drop_index("ix_accruals_settled_epoch")
        batch_op.drop_column("settled_epoch")

    with op.batch_alter_table("settlement_txs", schema=None) as batch_op:
        batch_op.drop_index("ix_settlement_txs_epoch_id_kind")

    op.drop_table("settlement_txs")
    op.drop_table("api_keys")
