"""Projections, pure: what rows each chain event adds to the history tables.

Every projection is append-only and keyed by the event's log position (see
`schemas.tables.projections`), so applying an event needs no read of the current state: the
rows follow from the event alone. That is what makes the indexer's unit of work simple —
insert the rows of a batch of events, or delete the rows above a reorg's ancestor — and what
makes "apply twice" impossible (the position is the primary key).

The SQLAlchemy side (`indexer.store`) inserts these rows into the tables named here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from schemas.chain import (
    ChainEvent,
    Claimed,
    EpochCommitted,
    EpochDisputed,
    LicenseMinted,
    LicenseOfferSet,
    LicenseRevoked,
    LicenseTransferred,
    ModelMetadataUpdated,
    ModelOperatorTransferred,
    ModelRegistered,
    Paused,
    PolicySet,
    ProposalCanceled,
    ProposalCreated,
    ProposalExecuted,
    ProposalQueued,
    Staked,
    Swept,
    TreasurySet,
    Unpaused,
    Unstaked,
    VoteCast,
    Withdrawn,
)

#: Every table the projections write, i.e. every table a reorg rolls back.
PROJECTION_TABLES: tuple[str, ...] = (
    "chain_models",
    "chain_model_operators",
    "chain_model_metadata",
    "chain_license_terms",
    "chain_license_owners",
    "chain_license_revocations",
    "chain_license_offers",
    "chain_stakes",
    "chain_stake_withdrawals",
    "chain_policies",
    "chain_treasuries",
    "chain_proposals",
    "chain_proposal_transitions",
    "chain_votes",
    "chain_distributor_epochs",
    "chain_epoch_transitions",
    "chain_claims",
    "chain_pauses",
)


@dataclass(frozen=True)
class ProjectionRow:
    """One row for one projection table."""

    table: str
    values: dict[str, Any]


Rows = list[tuple[str, dict[str, Any]]]


def _model_registered(p: ModelRegistered) -> Rows:
    return [
        (
            "chain_models",
            {"model_id": p.model_id, "operator": p.operator, "metadata_uri": p.metadata_uri},
        ),
        ("chain_model_operators", {"model_id": p.model_id, "operator": p.operator}),
        ("chain_model_metadata", {"model_id": p.model_id, "metadata_uri": p.metadata_uri}),
    ]


def _operator_transferred(p: ModelOperatorTransferred) -> Rows:
    return [("chain_model_operators", {"model_id": p.model_id, "operator": p.new_operator})]


def _metadata_updated(p: ModelMetadataUpdated) -> Rows:
    return [("chain_model_metadata", {"model_id": p.model_id, "metadata_uri": p.metadata_uri})]


def _license_minted(p: LicenseMinted) -> Rows:
    terms = {
        "license_id": p.license_id,
        "model_id": p.model_id,
        "price_per_unit_e6": p.price_per_unit_e6,
        "expires_at": p.expires_at,
    }
    return [("chain_license_terms", terms)]


def _license_transferred(p: LicenseTransferred) -> Rows:
    owner = {"license_id": p.license_id, "previous_owner": p.from_address, "owner": p.to_address}
    return [("chain_license_owners", owner)]


def _license_revoked(p: LicenseRevoked) -> Rows:
    revocation = {"license_id": p.license_id, "model_id": p.model_id, "revoked_by": p.by}
    return [("chain_license_revocations", revocation)]


def _offer_set(p: LicenseOfferSet) -> Rows:
    offer = {
        "model_id": p.model_id,
        "sale_price": p.sale_price,
        "price_per_unit_e6": p.price_per_unit_e6,
        "duration": p.duration,
        "active": p.active,
    }
    return [("chain_license_offers", offer)]


def _stake_change(p: Staked | Unstaked) -> Rows:
    change = {
        "model_id": p.model_id,
        "staker": p.staker,
        "kind": "stake" if isinstance(p, Staked) else "unstake",
        "amount": p.amount,
        "stake_after": p.stake_after,
        "total_after": p.total_after,
    }
    return [("chain_stakes", change)]


def _withdrawn(p: Withdrawn) -> Rows:
    withdrawal = {"model_id": p.model_id, "staker": p.staker, "amount": p.amount}
    return [("chain_stake_withdrawals", withdrawal)]


def _policy_set(p: PolicySet) -> Rows:
    policy = {
        "model_id": p.model_id,
        "operator_bps": p.operator_bps,
        "treasury_bps": p.treasury_bps,
        "contributors_bps": p.contributors_bps,
    }
    return [("chain_policies", policy)]


def _treasury_set(p: TreasurySet) -> Rows:
    return [("chain_treasuries", {"treasury": p.treasury})]


def _proposal_created(p: ProposalCreated) -> Rows:
    proposal = {
        "proposal_id": p.proposal_id,
        "proposer": p.proposer,
        "targets": list(p.targets),
        # Amounts as decimal strings in JSON, as everywhere.
        "values": [str(v) for v in p.values],
        "signatures": list(p.signatures),
        "calldatas": list(p.calldatas),
        "vote_start": p.vote_start,
        "vote_end": p.vote_end,
        "description": p.description,
    }
    return [("chain_proposals", proposal)]


def _proposal_transition(p: ProposalQueued | ProposalExecuted | ProposalCanceled) -> Rows:
    status = {ProposalQueued: "queued", ProposalExecuted: "executed", ProposalCanceled: "canceled"}
    eta = p.eta_seconds if isinstance(p, ProposalQueued) else None
    transition = {"proposal_id": p.proposal_id, "status": status[type(p)], "eta_seconds": eta}
    return [("chain_proposal_transitions", transition)]


def _vote_cast(p: VoteCast) -> Rows:
    vote = {
        "proposal_id": p.proposal_id,
        "voter": p.voter,
        "support": p.support,
        "weight": p.weight,
        "reason": p.reason,
        "params": p.params,
    }
    return [("chain_votes", vote)]


def _epoch_committed(p: EpochCommitted) -> Rows:
    epoch = {
        "epoch": p.epoch,
        "merkle_root": p.merkle_root,
        "total": p.total,
        "inputs_hash": p.inputs_hash,
        "usage_root": p.usage_root,
        "claimable_at": p.claimable_at,
        "funder": p.funder,
    }
    return [("chain_distributor_epochs", epoch)]


def _epoch_disputed(p: EpochDisputed) -> Rows:
    transition = {
        "epoch": p.epoch,
        "status": "disputed",
        "account": p.guardian,
        "amount": p.refunded,
    }
    return [("chain_epoch_transitions", transition)]


def _swept(p: Swept) -> Rows:
    transition = {"epoch": p.epoch, "status": "swept", "account": p.to, "amount": p.amount}
    return [("chain_epoch_transitions", transition)]


def _claimed(p: Claimed) -> Rows:
    claim = {"epoch": p.epoch, "leaf_index": p.index, "account": p.account, "amount": p.amount}
    return [("chain_claims", claim)]


_APPLIERS: dict[type[Any], Callable[[Any], Rows]] = {
    ModelRegistered: _model_registered,
    ModelOperatorTransferred: _operator_transferred,
    ModelMetadataUpdated: _metadata_updated,
    LicenseMinted: _license_minted,
    LicenseTransferred: _license_transferred,
    LicenseRevoked: _license_revoked,
    LicenseOfferSet: _offer_set,
    Staked: _stake_change,
    Unstaked: _stake_change,
    Withdrawn: _withdrawn,
    PolicySet: _policy_set,
    TreasurySet: _treasury_set,
    ProposalCreated: _proposal_created,
    ProposalQueued: _proposal_transition,
    ProposalExecuted: _proposal_transition,
    ProposalCanceled: _proposal_transition,
    VoteCast: _vote_cast,
    EpochCommitted: _epoch_committed,
    EpochDisputed: _epoch_disputed,
    Swept: _swept,
    Claimed: _claimed,
}


def project(event: ChainEvent) -> list[ProjectionRow]:
    """The projection rows `event` adds, each with the event's log position."""
    position = {
        "chain_id": event.chain_id,
        "block_number": event.block_number,
        "log_index": event.log_index,
        "block_hash": event.block_hash,
        "block_timestamp": event.block_timestamp,
    }
    payload = event.payload
    if isinstance(payload, Paused | Unpaused):
        values = {
            "contract": event.contract,
            "paused": isinstance(payload, Paused),
            "account": payload.account,
        }
        return [ProjectionRow("chain_pauses", {**values, **position})]
    applier = _APPLIERS[type(payload)]
    return [ProjectionRow(table, {**values, **position}) for table, values in applier(payload)]


def project_all(events: Iterable[ChainEvent]) -> dict[str, list[dict[str, Any]]]:
    """The rows of many events grouped by table, in event order (for bulk inserts)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        for row in project(event):
            grouped.setdefault(row.table, []).append(row.values)
    return grouped
