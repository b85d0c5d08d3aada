"""SQLAlchemy models of the settlement database (the source of truth), one module per concept.

Rows mirror the pydantic records of `schemas` (attribute names are the record's field names);
adapters convert between the two. The schema itself is created only by the Alembic migrations
of `schemas.migrations` (`schemas.migrate.upgrade`), never by `metadata.create_all`, and
`schemas.migrate.check` proves the two agree.
"""

from schemas.tables.chain import ChainBlockRow, ChainEventRow
from schemas.tables.checkpoints import CheckpointRow
from schemas.tables.epochs import (
    ApiKeyRow,
    EpochAllocationRow,
    EpochRow,
    RecipientCarryRow,
    SettlementTxRow,
)
from schemas.tables.projections import (
    ChainOutboxRow,
    ClaimRow,
    DistributorEpochRow,
    EpochTransitionRow,
    LicenseOfferRow,
    LicenseOwnerRow,
    LicenseRevocationRow,
    LicenseTermsRow,
    ModelMetadataRow,
    ModelOperatorRow,
    ModelRegistrationRow,
    PauseRow,
    PolicyRow,
    ProposalRow,
    ProposalTransitionRow,
    RawLogRow,
    StakeChangeRow,
    StakeWithdrawalRow,
    TreasuryRow,
    VoteRow,
)
from schemas.tables.types import (
    NAMING_CONVENTION,
    Base,
    JsonDocument,
    Uint256,
    UtcDateTime,
    metadata,
)
from schemas.tables.usage import AccrualRow, DeadLetterRow, UsageEventRow

__all__ = [
    "NAMING_CONVENTION",
    "AccrualRow",
    "ApiKeyRow",
    "Base",
    "ChainBlockRow",
    "ChainEventRow",
    "ChainOutboxRow",
    "CheckpointRow",
    "ClaimRow",
    "DeadLetterRow",
    "DistributorEpochRow",
    "EpochAllocationRow",
    "EpochRow",
    "EpochTransitionRow",
    "JsonDocument",
    "LicenseOfferRow",
    "LicenseOwnerRow",
    "LicenseRevocationRow",
    "LicenseTermsRow",
    "ModelMetadataRow",
    "ModelOperatorRow",
    "ModelRegistrationRow",
    "PauseRow",
    "PolicyRow",
    "ProposalRow",
    "ProposalTransitionRow",
    "RawLogRow",
    "RecipientCarryRow",
    "SettlementTxRow",
    "StakeChangeRow",
    "StakeWithdrawalRow",
    "TreasuryRow",
    "Uint256",
    "UsageEventRow",
    "UtcDateTime",
    "VoteRow",
    "metadata",
]
