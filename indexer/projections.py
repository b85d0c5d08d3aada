"""Projections, pure: what rows each chain event adds to the history tables.

Every projection is append-only and keyed by the event's log position (see
`schemas.tables.projections`), so applying an event needs no read of the current state: the
rows follow from the event alone. That is what makes the indexer's unit of work simple —
insert the rows of a batch of events, or delete the rows above a reorg's ancestor — and what
makes "apply twice" impossible (the position is the primary key).

Most projections are declared as data (`COLUMNS`): each row's columns come from payload
fields, from the envelope, or are constants. `project` reads them the same way for every
event, and the backfill's fast path (`indexer.batch`) compiles the same declarations into
text templates, so both write the same rows. The few projections that compute a value (a
proposal's lists) are functions.

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


@dataclass(frozen=True)
class Const:
    """A column whose value is the same for every event of a kind."""

    value: Any


@dataclass(frozen=True)
class Envelope:
    """A column taken from the event's envelope (not its payload)."""

    field: str


Source = str | Const | Envelope
"""Where a column's value comes from: a payload field (by name), a constant, the envelope."""

Declared = tuple[tuple[str, tuple[tuple[str, Source], ...]], ...]
"""The rows an event adds: (table, ((column, source), ...)) per row."""


def _same(*fields: str) -> tuple[tuple[str, Source], ...]:
    """Columns named as the payload fields they hold."""
    return tuple((field, field) for field in fields)


def _stake_change(kind: str) -> Declared:
    columns = (*_same("model_id", "staker"), ("kind", Const(kind)))
    return (("chain_stakes", (*columns, *_same("amount", "stake_after", "total_after"))),)


def _transition(status: str, eta: Source) -> Declared:
    columns = (("proposal_id", "proposal_id"), ("status", Const(status)), ("eta_seconds", eta))
    return (("chain_proposal_transitions", columns),)


def _pause(paused: bool) -> Declared:
    columns = (
        ("contract", Envelope("contract")),
        ("paused", Const(paused)),
        ("account", "account"),
    )
    return (("chain_pauses", columns),)


COLUMNS: dict[type[Any], Declared] = {
    ModelRegistered: (
        ("chain_models", _same("model_id", "operator", "metadata_uri")),
        ("chain_model_operators", _same("model_id", "operator")),
        ("chain_model_metadata", _same("model_id", "metadata_uri")),
    ),
    ModelOperatorTransferred: (
        ("chain_model_operators", (("model_id", "model_id"), ("operator", "new_operator"))),
    ),
    ModelMetadataUpdated: (("chain_model_metadata", _same("model_id", "metadata_uri")),),
    LicenseMinted: (
        (
            "chain_license_terms",
            _same("license_id", "model_id", "price_per_unit_e6", "expires_at"),
        ),
    ),
    LicenseTransferred: (
        (
            "chain_license_owners",
            (
                ("license_id", "license_id"),
                ("previous_owner", "from_address"),
                ("owner", "to_address"),
            ),
        ),
    ),
    LicenseRevoked: (
        (
            "chain_license_revocations",
            (("license_id", "license_id"), ("model_id", "model_id"), ("revoked_by", "by")),
        ),
    ),
    LicenseOfferSet: (
        (
            "chain_license_offers",
            _same("model_id", "sale_price", "price_per_unit_e6", "duration", "active"),
        ),
    ),
    Staked: _stake_change("stake"),
    Unstaked: _stake_change("unstake"),
    Withdrawn: (("chain_stake_withdrawals", _same("model_id", "staker", "amount")),),
    PolicySet: (
        (
            "chain_policies",
            _same("model_id", "operator_bps", "treasury_bps", "contributors_bps"),
        ),
    ),
    TreasurySet: (("chain_treasuries", _same("treasury")),),
    ProposalQueued: _transition("queued", "eta_seconds"),
    ProposalExecuted: _transition("executed", Const(None)),
    ProposalCanceled: _transition("canceled", Const(None)),
    VoteCast: (
        ("chain_votes", _same("proposal_id", "voter", "support", "weight", "reason", "params")),
    ),
    EpochCommitted: (
        (
            "chain_distributor_epochs",
            _same(
                "epoch",
                "merkle_root",
                "total",
                "inputs_hash",
                "usage_root",
                "claimable_at",
                "funder",
            ),
        ),
    ),
    EpochDisputed: (
        (
            "chain_epoch_transitions",
            (
                ("epoch", "epoch"),
                ("status", Const("disputed")),
                ("account", "guardian"),
                ("amount", "refunded"),
            ),
        ),
    ),
    Swept: (
        (
            "chain_epoch_transitions",
            (
                ("epoch", "epoch"),
                ("status", Const("swept")),
                ("account", "to"),
                ("amount", "amount"),
            ),
        ),
    ),
    Claimed: (
        ("chain_claims", (*_same("epoch"), ("leaf_index", "index"), *_same("account", "amount"))),
    ),
    Paused: _pause(True),
    Unpaused: _pause(False),
}
"""The declared projection of each payload type (see `Source`)."""

POSITION_COLUMNS: tuple[str, ...] = (
    "chain_id",
    "block_number",
    "log_index",
    "block_hash",
    "block_timestamp",
)
"""The columns every projection row ends with: the event's log position (its key)."""

Rows = list[tuple[str, dict[str, Any]]]


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


_COMPUTED: dict[type[Any], Callable[[Any], Rows]] = {
    ProposalCreated: _proposal_created,
}
"""Projections that compute values (not only copy them)."""


def _value(source: Source, event: ChainEvent) -> Any:
    if isinstance(source, Const):
        return source.value
    if isinstance(source, Envelope):
        return getattr(event, source.field)
    return getattr(event.payload, source)


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
    declared = COLUMNS.get(type(payload))
    if declared is None:
        rows = _COMPUTED[type(payload)](payload)
    else:
        rows = [
            (table, {column: _value(source, event) for column, source in columns})
            for table, columns in declared
        ]
    return [ProjectionRow(table, {**values, **position}) for table, values in rows]


def project_all(events: Iterable[ChainEvent]) -> dict[str, list[dict[str, Any]]]:
    """The rows of many events grouped by table, in event order (for bulk inserts)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        for row in project(event):
            grouped.setdefault(row.table, []).append(row.values)
    return grouped
