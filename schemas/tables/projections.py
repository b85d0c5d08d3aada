"""Tables of the indexer's projections: chain state as append-only history, one row per log.

Every row carries the position of the log it was derived from (`chain_id`, `block_number`,
`log_index`, plus `block_hash` and `block_timestamp`), and that position is its primary key:

- applying a log twice is impossible (the second insert violates the key);
- rolling back a reorg is one `DELETE ... WHERE block_number > ancestor` per table;
- "as of" a block or a time is the newest row at or before it (positions order the chain,
  timestamps never decrease along it).

No row is ever updated: current state is the newest row, history is the rest. Rows whose
identity is unique on chain (a license's terms, an epoch's commit, a claimed leaf) carry a
unique constraint as well, so a projection bug shows up as an integrity error, not as a double
count.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from schemas.tables.types import ADDRESS_LENGTH, HASH_LENGTH, Base, JsonDocument, Uint256
from schemas.tables.usage import SurrogateKey


class LogPosition:
    """The columns every projection row shares: where on the chain its log is."""

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    log_index: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    block_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    block_timestamp: Mapped[int] = mapped_column(BigInteger)


# --- ModelRegistry -----------------------------------------------------------------------------


class ModelRegistrationRow(LogPosition, Base):
    """`ModelRegistered`: a model id came into existence."""

    __tablename__ = "chain_models"
    __table_args__ = (UniqueConstraint("chain_id", "model_id"),)

    model_id: Mapped[int] = mapped_column(Uint256)
    operator: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    metadata_uri: Mapped[str] = mapped_column(Text)


class ModelOperatorRow(LogPosition, Base):
    """A model's operator from this log on (`ModelRegistered`, `ModelOperatorTransferred`)."""

    __tablename__ = "chain_model_operators"
    __table_args__ = (
        Index(
            "ix_chain_model_operators_asof",
            "chain_id",
            "model_id",
            "block_number",
            "log_index",
        ),
    )

    model_id: Mapped[int] = mapped_column(Uint256)
    operator: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))


class ModelMetadataRow(LogPosition, Base):
    """A model's metadata URI from this log on (`ModelRegistered`, `ModelMetadataUpdated`)."""

    __tablename__ = "chain_model_metadata"
    __table_args__ = (
        Index(
            "ix_chain_model_metadata_asof",
            "chain_id",
            "model_id",
            "block_number",
            "log_index",
        ),
    )

    model_id: Mapped[int] = mapped_column(Uint256)
    metadata_uri: Mapped[str] = mapped_column(Text)


# --- LicenseNFT --------------------------------------------------------------------------------


class LicenseTermsRow(LogPosition, Base):
    """`LicenseMinted`: a license's immutable terms (`expires_at` 0 = never)."""

    __tablename__ = "chain_license_terms"
    __table_args__ = (
        UniqueConstraint("chain_id", "license_id"),
        Index("ix_chain_license_terms_chain_id_model_id", "chain_id", "model_id"),
    )

    license_id: Mapped[int] = mapped_column(Uint256)
    model_id: Mapped[int] = mapped_column(Uint256)
    price_per_unit_e6: Mapped[int] = mapped_column(Uint256)
    expires_at: Mapped[int] = mapped_column(BigInteger)


class LicenseOwnerRow(LogPosition, Base):
    """A license's holder from this `Transfer` on (the zero address after a burn)."""

    __tablename__ = "chain_license_owners"
    __table_args__ = (
        Index(
            "ix_chain_license_owners_asof",
            "chain_id",
            "license_id",
            "block_number",
            "log_index",
        ),
        Index("ix_chain_license_owners_owner", "owner"),
    )

    license_id: Mapped[int] = mapped_column(Uint256)
    previous_owner: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    owner: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))


class LicenseRevocationRow(LogPosition, Base):
    """`LicenseRevoked`: usage of the license after this log is rejected."""

    __tablename__ = "chain_license_revocations"
    __table_args__ = (UniqueConstraint("chain_id", "license_id"),)

    license_id: Mapped[int] = mapped_column(Uint256)
    model_id: Mapped[int] = mapped_column(Uint256)
    revoked_by: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))


class LicenseOfferRow(LogPosition, Base):
    """`LicenseOfferSet`: a model's public offer from this log on."""

    __tablename__ = "chain_license_offers"
    __table_args__ = (
        Index(
            "ix_chain_license_offers_asof",
            "chain_id",
            "model_id",
            "block_number",
            "log_index",
        ),
    )

    model_id: Mapped[int] = mapped_column(Uint256)
    sale_price: Mapped[int] = mapped_column(Uint256)
    price_per_unit_e6: Mapped[int] = mapped_column(Uint256)
    duration: Mapped[int] = mapped_column(BigInteger)
    active: Mapped[bool] = mapped_column(Boolean)


# --- Staking -----------------------------------------------------------------------------------


class StakeChangeRow(LogPosition, Base):
    """`Staked` / `Unstaked`: the staker's stake and the model's total right after this log."""

    __tablename__ = "chain_stakes"
    __table_args__ = (
        Index(
            "ix_chain_stakes_staker_asof",
            "chain_id",
            "model_id",
            "staker",
            "block_number",
            "log_index",
        ),
        Index(
            "ix_chain_stakes_asof",
            "chain_id",
            "model_id",
            "block_number",
            "log_index",
        ),
    )

    model_id: Mapped[int] = mapped_column(Uint256)
    staker: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[int] = mapped_column(Uint256)
    stake_after: Mapped[int] = mapped_column(Uint256)
    total_after: Mapped[int] = mapped_column(Uint256)


class StakeWithdrawalRow(LogPosition, Base):
    """`Withdrawn`: unstaked tokens left the contract (no effect on splits)."""

    __tablename__ = "chain_stake_withdrawals"

    model_id: Mapped[int] = mapped_column(Uint256)
    staker: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    amount: Mapped[int] = mapped_column(Uint256)


# --- RoyaltyPolicy -----------------------------------------------------------------------------


class PolicyRow(LogPosition, Base):
    """`PolicySet`: a model's split from this log on (model 0 = the default)."""

    __tablename__ = "chain_policies"
    __table_args__ = (
        Index(
            "ix_chain_policies_asof",
            "chain_id",
            "model_id",
            "block_number",
            "log_index",
        ),
    )

    model_id: Mapped[int] = mapped_column(Uint256)
    operator_bps: Mapped[int] = mapped_column(Integer)
    treasury_bps: Mapped[int] = mapped_column(Integer)
    contributors_bps: Mapped[int] = mapped_column(Integer)


class TreasuryRow(LogPosition, Base):
    """`TreasurySet`: the treasury address from this log on."""

    __tablename__ = "chain_treasuries"

    treasury: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))


# --- Governance --------------------------------------------------------------------------------


class ProposalRow(LogPosition, Base):
    """`ProposalCreated`: the proposal's calls (JSON lists, amounts as strings) and window."""

    __tablename__ = "chain_proposals"
    __table_args__ = (UniqueConstraint("chain_id", "proposal_id"),)

    proposal_id: Mapped[int] = mapped_column(Uint256)
    proposer: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    targets: Mapped[list[Any]] = mapped_column(JsonDocument)
    values: Mapped[list[Any]] = mapped_column(JsonDocument)
    signatures: Mapped[list[Any]] = mapped_column(JsonDocument)
    calldatas: Mapped[list[Any]] = mapped_column(JsonDocument)
    vote_start: Mapped[int] = mapped_column(Uint256)
    vote_end: Mapped[int] = mapped_column(Uint256)
    description: Mapped[str] = mapped_column(Text)


class ProposalTransitionRow(LogPosition, Base):
    """`ProposalQueued` / `ProposalExecuted` / `ProposalCanceled` (`eta_seconds` if queued)."""

    __tablename__ = "chain_proposal_transitions"
    __table_args__ = (
        Index("ix_chain_proposal_transitions_chain_id_proposal_id", "chain_id", "proposal_id"),
    )

    proposal_id: Mapped[int] = mapped_column(Uint256)
    status: Mapped[str] = mapped_column(String(16))
    eta_seconds: Mapped[int | None] = mapped_column(Uint256)


class VoteRow(LogPosition, Base):
    """`VoteCast` / `VoteCastWithParams` (`params` set for the latter)."""

    __tablename__ = "chain_votes"
    __table_args__ = (Index("ix_chain_votes_chain_id_proposal_id", "chain_id", "proposal_id"),)

    proposal_id: Mapped[int] = mapped_column(Uint256)
    voter: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    support: Mapped[int] = mapped_column(Integer)
    weight: Mapped[int] = mapped_column(Uint256)
    reason: Mapped[str] = mapped_column(Text)
    params: Mapped[str | None] = mapped_column(Text)


# --- RoyaltyDistributor ------------------------------------------------------------------------


class DistributorEpochRow(LogPosition, Base):
    """`EpochCommitted`: an epoch's root, funded total and audit hashes."""

    __tablename__ = "chain_distributor_epochs"
    __table_args__ = (UniqueConstraint("chain_id", "epoch"),)

    epoch: Mapped[int] = mapped_column(Uint256)
    merkle_root: Mapped[str] = mapped_column(String(HASH_LENGTH))
    total: Mapped[int] = mapped_column(Uint256)
    inputs_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    usage_root: Mapped[str] = mapped_column(String(HASH_LENGTH))
    claimable_at: Mapped[int] = mapped_column(BigInteger)
    funder: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))


class EpochTransitionRow(LogPosition, Base):
    """`EpochDisputed` (account = guardian, amount refunded) or `Swept` (account = recipient)."""

    __tablename__ = "chain_epoch_transitions"
    __table_args__ = (Index("ix_chain_epoch_transitions_chain_id_epoch", "chain_id", "epoch"),)

    epoch: Mapped[int] = mapped_column(Uint256)
    status: Mapped[str] = mapped_column(String(16))
    account: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    amount: Mapped[int] = mapped_column(Uint256)


class ClaimRow(LogPosition, Base):
    """`Claimed`: leaf `leaf_index` of an epoch was paid to `account`."""

    __tablename__ = "chain_claims"
    __table_args__ = (
        UniqueConstraint("chain_id", "epoch", "leaf_index"),
        Index("ix_chain_claims_account", "account"),
    )

    epoch: Mapped[int] = mapped_column(Uint256)
    leaf_index: Mapped[int] = mapped_column(Uint256)
    account: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    amount: Mapped[int] = mapped_column(Uint256)


class PauseRow(LogPosition, Base):
    """`Paused` / `Unpaused` of a contract."""

    __tablename__ = "chain_pauses"

    contract: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    paused: Mapped[bool] = mapped_column(Boolean)
    account: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))


# --- What the indexer could not or would not decode, and what it has still to publish ----------


class RawLogRow(LogPosition, Base):
    """A log of an indexed contract that is not a chain event, kept with the reason.

    Reasons: `not_indexed` (an event of the ABI that no projection needs, e.g. `Approval`),
    `unknown_topic` (not in the contract's ABI), `undecodable` (ABI decoding or validation
    failed). Kept so nothing the contracts said is silently dropped.
    """

    __tablename__ = "chain_raw_logs"
    __table_args__ = (Index("ix_chain_raw_logs_reason", "reason"),)

    tx_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    contract: Mapped[str] = mapped_column(String(ADDRESS_LENGTH))
    topics: Mapped[list[Any]] = mapped_column(JsonDocument)
    data: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)


class ChainOutboxRow(Base):
    """A message for the `chain` topic, or a block range's event messages, written in the
    transaction that produced them.

    A row of `message_type` `indexer.event-range` (value `{"from_block", "to_block"}`)
    stands for the `chain` messages of every event indexed in that range, in chain order: the
    relay rebuilds them from `chain_events` (byte for byte what was published, or would have
    been, from memory) and expands such rows into one row per message before a rollback
    deletes events. The relay publishes rows in `id` order and deletes them once Kafka
    acknowledged them, so a crash between commit and publication re-sends (consumers dedupe
    on the CloudEvent `(type, id)`) instead of losing. `broadcast` rows (finalized
    watermarks) go to every partition, so each partition's consumer sees the watermark after
    the events it covers.
    """

    __tablename__ = "chain_outbox"

    id: Mapped[int] = mapped_column(SurrogateKey, primary_key=True, autoincrement=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    message_type: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(256))
    value: Mapped[str] = mapped_column(Text)
    broadcast: Mapped[bool] = mapped_column(Boolean)
