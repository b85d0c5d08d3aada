"""One typed payload per contract event of docs/chain-events.md, tagged by `kind`.

Field names are the Solidity parameter names in snake_case (`pricePerUnitE6` →
`price_per_unit_e6`); `kind` is the Solidity event name, except where two Solidity events carry
the same fact (`Transfer` of the LicenseNFT → `LicenseTransferred`, `VoteCastWithParams` →
`VoteCast` with `params`; see `SOLIDITY_EVENTS`). Chain events are facts already accepted by
the chain: the models check types, not taste (no length caps on strings), so the indexer never
stalls on a legitimate log.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import ConfigDict, Field, StrictBool, model_validator

from schemas.base import Record
from schemas.evm import Address, Bytes32, HexData
from schemas.money import BPS_TOTAL, Bps, Uint8, Uint64, Uint256


def _kind_is_required(schema: dict[str, Any]) -> None:
    # `kind` has a default for convenient construction, but the discriminator needs it on
    # the wire, and we always emit it: publish it as required.
    required = schema.setdefault("required", [])
    if "kind" not in required:
        required.insert(0, "kind")


class EventPayload(Record):
    """Base of the typed payloads: the decoded arguments of one contract event."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_kind_is_required)


# --- ModelRegistry -----------------------------------------------------------------------------


class ModelRegistered(EventPayload):
    """A model was registered with its operator and metadata URI."""

    kind: Literal["ModelRegistered"] = "ModelRegistered"
    model_id: Uint256
    operator: Address
    metadata_uri: str


class ModelOperatorTransferred(EventPayload):
    """A model's operator (receiver of the operator share, revoker of licenses) changed."""

    kind: Literal["ModelOperatorTransferred"] = "ModelOperatorTransferred"
    model_id: Uint256
    previous_operator: Address
    new_operator: Address


class ModelMetadataUpdated(EventPayload):
    """A model's metadata URI changed."""

    kind: Literal["ModelMetadataUpdated"] = "ModelMetadataUpdated"
    model_id: Uint256
    metadata_uri: str


# --- LicenseNFT --------------------------------------------------------------------------------


class LicenseMinted(EventPayload):
    """A license NFT was minted with its immutable terms (`expires_at` 0 = never)."""

    kind: Literal["LicenseMinted"] = "LicenseMinted"
    license_id: Uint256
    model_id: Uint256
    to: Address
    price_per_unit_e6: Uint256
    expires_at: Uint64


class LicenseTransferred(EventPayload):
    """ERC-721 `Transfer` of a license: mint (from zero), transfer, or burn (to zero).

    The payer of usage at time t is the owner at t, so every transfer matters to billing.
    """

    kind: Literal["LicenseTransferred"] = "LicenseTransferred"
    from_address: Address
    to_address: Address
    license_id: Uint256


class LicenseRevoked(EventPayload):
    """The model's operator revoked a license; usage after this is rejected as `revoked`."""

    kind: Literal["LicenseRevoked"] = "LicenseRevoked"
    license_id: Uint256
    model_id: Uint256
    by: Address


class LicenseOfferSet(EventPayload):
    """A model's public license offer (sale price, usage price, duration 0 = never expires)."""

    kind: Literal["LicenseOfferSet"] = "LicenseOfferSet"
    model_id: Uint256
    sale_price: Uint256
    price_per_unit_e6: Uint256
    duration: Uint64
    active: StrictBool


# --- Staking -----------------------------------------------------------------------------------


class Staked(EventPayload):
    """A contributor staked on a model; `stake_after`/`total_after` are the new balances."""

    kind: Literal["Staked"] = "Staked"
    model_id: Uint256
    staker: Address
    amount: Uint256
    stake_after: Uint256
    total_after: Uint256


class Unstaked(EventPayload):
    """A contributor unstaked; the stake stops counting for splits at this event."""

    kind: Literal["Unstaked"] = "Unstaked"
    model_id: Uint256
    staker: Address
    amount: Uint256
    stake_after: Uint256
    total_after: Uint256


class Withdrawn(EventPayload):
    """Unstaked tokens left the staking contract (after any cooldown); no effect on splits."""

    kind: Literal["Withdrawn"] = "Withdrawn"
    model_id: Uint256
    staker: Address
    amount: Uint256


# --- RoyaltyPolicy -----------------------------------------------------------------------------


class PolicySet(EventPayload):
    """A model's split in basis points (model 0 = the default policy); the three sum to 10000."""

    kind: Literal["PolicySet"] = "PolicySet"
    model_id: Uint256
    operator_bps: Bps
    treasury_bps: Bps
    contributors_bps: Bps

    @model_validator(mode="after")
    def _sums_to_total(self) -> PolicySet:
        total = self.operator_bps + self.treasury_bps + self.contributors_bps
        if total != BPS_TOTAL:
            raise ValueError(f"operator + treasury + contributors bps = {total}, not {BPS_TOTAL}")
        return self


class TreasurySet(EventPayload):
    """The treasury address (receiver of the treasury share) changed."""

    kind: Literal["TreasurySet"] = "TreasurySet"
    treasury: Address


# --- Governance --------------------------------------------------------------------------------


class ProposalCreated(EventPayload):
    """A governance proposal: calls (`targets`, `values`, `calldatas`) and its voting window."""

    kind: Literal["ProposalCreated"] = "ProposalCreated"
    proposal_id: Uint256
    proposer: Address
    targets: tuple[Address, ...]
    values: tuple[Uint256, ...]
    signatures: tuple[str, ...]
    calldatas: tuple[HexData, ...]
    vote_start: Uint256
    vote_end: Uint256
    description: str

    @model_validator(mode="after")
    def _one_entry_per_call(self) -> ProposalCreated:
        lengths = {len(self.targets), len(self.values), len(self.signatures), len(self.calldatas)}
        if len(lengths) != 1:
            raise ValueError("targets, values, signatures and calldatas differ in length")
        return self


class VoteCast(EventPayload):
    """A vote (`support` 0 against, 1 for, 2 abstain); `params` set for `VoteCastWithParams`."""

    kind: Literal["VoteCast"] = "VoteCast"
    voter: Address
    proposal_id: Uint256
    support: Uint8
    weight: Uint256
    reason: str
    params: HexData | None = None


class ProposalQueued(EventPayload):
    """A passed proposal was queued in the timelock, executable from `eta_seconds`."""

    kind: Literal["ProposalQueued"] = "ProposalQueued"
    proposal_id: Uint256
    eta_seconds: Uint256


class ProposalExecuted(EventPayload):
    """A proposal's calls were executed."""

    kind: Literal["ProposalExecuted"] = "ProposalExecuted"
    proposal_id: Uint256


class ProposalCanceled(EventPayload):
    """A proposal was canceled."""

    kind: Literal["ProposalCanceled"] = "ProposalCanceled"
    proposal_id: Uint256


# --- RoyaltyDistributor ------------------------------------------------------------------------


class EpochCommitted(EventPayload):
    """An epoch's Merkle root was committed and funded with `total`."""

    kind: Literal["EpochCommitted"] = "EpochCommitted"
    epoch: Uint256
    merkle_root: Bytes32
    total: Uint256
    inputs_hash: Bytes32
    usage_root: Bytes32
    claimable_at: Uint64
    funder: Address


class EpochDisputed(EventPayload):
    """A guardian disputed an epoch within its window; `refunded` went back to the funder."""

    kind: Literal["EpochDisputed"] = "EpochDisputed"
    epoch: Uint256
    guardian: Address
    refunded: Uint256


class Claimed(EventPayload):
    """Leaf `index` of an epoch was claimed by `account`."""

    kind: Literal["Claimed"] = "Claimed"
    epoch: Uint256
    index: Uint256
    account: Address
    amount: Uint256


class Swept(EventPayload):
    """Unclaimed funds of an epoch were swept to `to`."""

    kind: Literal["Swept"] = "Swept"
    epoch: Uint256
    to: Address
    amount: Uint256


class Paused(EventPayload):
    """A contract was paused (OpenZeppelin Pausable)."""

    kind: Literal["Paused"] = "Paused"
    account: Address


class Unpaused(EventPayload):
    """A contract was unpaused (OpenZeppelin Pausable)."""

    kind: Literal["Unpaused"] = "Unpaused"
    account: Address


ChainPayload = Annotated[
    ModelRegistered
    | ModelOperatorTransferred
    | ModelMetadataUpdated
    | LicenseMinted
    | LicenseTransferred
    | LicenseRevoked
    | LicenseOfferSet
    | Staked
    | Unstaked
    | Withdrawn
    | PolicySet
    | TreasurySet
    | ProposalCreated
    | VoteCast
    | ProposalQueued
    | ProposalExecuted
    | ProposalCanceled
    | EpochCommitted
    | EpochDisputed
    | Claimed
    | Swept
    | Paused
    | Unpaused,
    Field(discriminator="kind"),
]
"""Any typed chain event payload, discriminated by `kind`."""

PAYLOAD_MODELS: dict[str, type[EventPayload]] = {
    model.model_fields["kind"].default: model for model in get_args(get_args(ChainPayload)[0])
}
"""Payload model by `kind`."""

_RENAMED_EVENTS = {"Transfer": "LicenseTransferred", "VoteCastWithParams": "VoteCast"}

SOLIDITY_EVENTS: dict[str, str] = {
    **{kind: kind for kind in PAYLOAD_MODELS if kind not in _RENAMED_EVENTS.values()},
    "VoteCast": "VoteCast",
    **_RENAMED_EVENTS,
}
"""`kind` by Solidity event name: what the indexer decodes each log into."""
