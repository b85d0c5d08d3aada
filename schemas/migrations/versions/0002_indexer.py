"""Indexer projections: chain state as append-only history per log, raw logs, the outbox.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Every projection table shares the log position columns (`chain_id`, `block_number`,
`log_index` as the primary key, `block_hash`, `block_timestamp`), so a reorg rolls back with one
delete per table and "as of" queries are a newest-position lookup. Types are spelled out with
plain SQLAlchemy types, as in 0001, so this migration never changes with the application's.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UINT256 = sa.Numeric(78, 0).with_variant(sa.String(78), "sqlite")
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
SURROGATE_KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ADDRESS = sa.String(42)
HASH = sa.String(66)

TABLES = (
    "chain_claims",
    "chain_distributor_epochs",
    "chain_epoch_transitions",
    "chain_license_offers",
    "chain_license_owners",
    "chain_license_revocations",
    "chain_license_terms",
    "chain_model_metadata",
    "chain_model_operators",
    "chain_models",
    "chain_outbox",
    "chain_pauses",
    "chain_policies",
    "chain_proposal_transitions",
    "chain_proposals",
    "chain_raw_logs",
    "chain_stake_withdrawals",
    "chain_stakes",
    "chain_treasuries",
    "chain_votes",
)
"""The tables this revision creates, in creation order."""


def _create_positioned(name: str, *items: sa.schema.SchemaItem) -> None:
    """A projection table: its own columns plus the log position, which is its key."""
    op.create_table(
        name,
        *items,
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", HASH, nullable=False),
        sa.Column("block_timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "block_number", "log_index", name=op.f(f"pk_{name}")),
    )


def upgrade() -> None:
    _create_positioned(
        "chain_claims",
        sa.Column("epoch", UINT256, nullable=False),
        sa.Column("leaf_index", UINT256, nullable=False),
        sa.Column("account", ADDRESS, nullable=False),
        sa.Column("amount", UINT256, nullable=False),
        sa.UniqueConstraint(
            "chain_id",
            "epoch",
            "leaf_index",
            name=op.f("uq_chain_claims_chain_id_epoch_leaf_index"),
        ),
    )
    op.create_index("ix_chain_claims_account", "chain_claims", ["account"])

    _create_positioned(
        "chain_distributor_epochs",
        sa.Column("epoch", UINT256, nullable=False),
        sa.Column("merkle_root", HASH, nullable=False),
        sa.Column("total", UINT256, nullable=False),
        sa.Column("inputs_hash", HASH, nullable=False),
        sa.Column("usage_root", HASH, nullable=False),
        sa.Column("claimable_at", sa.BigInteger(), nullable=False),
        sa.Column("funder", ADDRESS, nullable=False),
        sa.UniqueConstraint(
            "chain_id", "epoch", name=op.f("uq_chain_distributor_epochs_chain_id_epoch")
        ),
    )

    _create_positioned(
        "chain_epoch_transitions",
        sa.Column("epoch", UINT256, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("account", ADDRESS, nullable=False),
        sa.Column("amount", UINT256, nullable=False),
    )
    op.create_index(
        "ix_chain_epoch_transitions_chain_id_epoch",
        "chain_epoch_transitions",
        ["chain_id", "epoch"],
    )

    _create_positioned(
        "chain_license_offers",
        sa.Column("model_id", UINT256, nullable=False),
        sa.Column("sale_price", UINT256, nullable=False),
        sa.Column("price_per_unit_e6", UINT256, nullable=False),
        sa.Column("duration", sa.BigInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
    )
    op.create_index(
        "ix_chain_license_offers_asof",
        "chain_license_offers",
        ["chain_id", "model_id", "block_number", "log_index"],
    )

    _create_positioned(
        "chain_license_owners",
        sa.Column("license_id", UINT256, nullable=False),
        sa.Column("previous_owner", ADDRESS, nullable=False),
        sa.Column("owner", ADDRESS, nullable=False),
    )
    op.create_index(
        "ix_chain_license_owners_asof",
        "chain_license_owners",
        ["chain_id", "license_id", "block_number", "log_index"],
    )
    op.create_index("ix_chain_license_owners_owner", "chain_license_owners", ["owner"])

    _create_positioned(
        "chain_license_revocations",
        sa.Column("license_id", UINT256, nullable=False),
        sa.Column("model_id", UINT256, nullable=False),
        sa.Column("revoked_by", ADDRESS, nullable=False),
        sa.UniqueConstraint(
            "chain_id", "license_id", name=op.f("uq_chain_license_revocations_chain_id_license_id")
        ),
    )

    _create_positioned(
        "chain_license_terms",
        sa.Column("license_id", UINT256, nullable=False),
        sa.Column("model_id", UINT256, nullable=False),
        sa.Column("price_per_unit_e6", UINT256, nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint(
            "chain_id", "license_id", name=op.f("uq_chain_license_terms_chain_id_license_id")
        ),
    )
    op.create_index(
        "ix_chain_license_terms_chain_id_model_id", "chain_license_terms", ["chain_id", "model_id"]
    )

    _create_positioned(
        "chain_model_metadata",
        sa.Column("model_id", UINT256, nullable=False),
        sa.Column("metadata_uri", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_chain_model_metadata_asof",
        "chain_model_metadata",
        ["chain_id", "model_id", "block_number", "log_index"],
    )

    _create_positioned(
        "chain_model_operators",
        sa.Column("model_id", UINT256, nullable=False),
        sa.Column("operator", ADDRESS, nullable=False),
    )
    op.create_index(
        "ix_chain_model_operators_asof",
        "chain_model_operators",
        ["chain_id", "model_id", "block_number", "log_index"],
    )

    _create_positioned(
        "chain_models",
        sa.Column("model_id", UINT256, nullable=False),
        sa.Column("operator", ADDRESS, nullable=False),
        sa.Column("metadata_uri", sa.Text(), nullable=False),
        sa.UniqueConstraint("chain_id", "model_id", name=op.f("uq_chain_models_chain_id_model_id")),
    )

    op.create_table(
        "chain_outbox",
        sa.Column("id", SURROGATE_KEY, autoincrement=True, nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("message_type", sa.String(64), nullable=False),
        sa.Column("key", sa.String(256), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("broadcast", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_outbox")),
    )

    _create_positioned(
        "chain_pauses",
        sa.Column("contract", ADDRESS, nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("account", ADDRESS, nullable=False),
    )

    _create_positioned(
        "chain_policies",
        sa.Column("model_id", UINT256, nullable=False),
        sa.Column("operator_bps", sa.Integer(), nullable=False),
        sa.Column("treasury_bps", sa.Integer(), nullable=False),
        sa.Column("contributors_bps", sa.Integer(), nullable=False),
    )
    op.create_index(
        "ix_chain_policies_asof",
        "chain_policies",
        ["chain_id", "model_id", "block_number", "log_index"],
    )

    _create_positioned(
        "chain_proposal_transitions",
        sa.Column("proposal_id", UINT256, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("eta_seconds", UINT256, nullable=True),
    )
    op.create_index(
        "ix_chain_proposal_transitions_chain_id_proposal_id",
        "chain_proposal_transitions",
        ["chain_id", "proposal_id"],
    )

    _create_positioned(
        "chain_proposals",
        sa.Column("proposal_id", UINT256, nullable=False),
        sa.Column("proposer", ADDRESS, nullable=False),
        sa.Column("targets", JSON_DOCUMENT, nullable=False),
        sa.Column("values", JSON_DOCUMENT, nullable=False),
        sa.Column("signatures", JSON_DOCUMENT, nullable=False),
        sa.Column("calldatas", JSON_DOCUMENT, nullable=False),
        sa.Column("vote_start", UINT256, nullable=False),
        sa.Column("vote_end", UINT256, nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.UniqueConstraint(
            "chain_id", "proposal_id", name=op.f("uq_chain_proposals_chain_id_proposal_id")
        ),
    )

    _create_positioned(
        "chain_raw_logs",
        sa.Column("tx_hash", HASH, nullable=False),
        sa.Column("contract", ADDRESS, nullable=False),
        sa.Column("topics", JSON_DOCUMENT, nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_chain_raw_logs_reason", "chain_raw_logs", ["reason"])

    _create_positioned(
        "chain_stake_withdrawals",
        sa.Column("model_id", UINT256, nullable=False),
        sa.Column("staker", ADDRESS, nullable=False),
        sa.Column("amount", UINT256, nullable=False),
    )

    _create_positioned(
        "chain_stakes",
        sa.Column("model_id", UINT256, nullable=False),
        sa.Column("staker", ADDRESS, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", UINT256, nullable=False),
        sa.Column("stake_after", UINT256, nullable=False),
        sa.Column("total_after", UINT256, nullable=False),
    )
    op.create_index(
        "ix_chain_stakes_asof",
        "chain_stakes",
        ["chain_id", "model_id", "block_number", "log_index"],
    )
    op.create_index(
        "ix_chain_stakes_staker_asof",
        "chain_stakes",
        ["chain_id", "model_id", "staker", "block_number", "log_index"],
    )

    _create_positioned(
        "chain_treasuries",
        sa.Column("treasury", ADDRESS, nullable=False),
    )

    _create_positioned(
        "chain_votes",
        sa.Column("proposal_id", UINT256, nullable=False),
        sa.Column("voter", ADDRESS, nullable=False),
        sa.Column("support", sa.Integer(), nullable=False),
        sa.Column("weight", UINT256, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("params", sa.Text(), nullable=True),
    )
    op.create_index(
        "ix_chain_votes_chain_id_proposal_id", "chain_votes", ["chain_id", "proposal_id"]
    )


def downgrade() -> None:
    # Dropping a table drops its indexes; nothing refers to these tables.
    for table in reversed(TABLES):
        op.drop_table(table)
