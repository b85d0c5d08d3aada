"""Chain state from the indexer's projections: models, licenses, stakes, policies, governance.

These read the latest indexed state (finalized or not: the API shows what the indexer saw);
settlement itself reads finalized state only, through `indexer.asof`.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from api.errors import COMMON_ERRORS, NotFoundError
from api.pagination import Page, keyset_page, page_of
from api.routes.deps import (
    ADDRESS_PATTERN,
    UINT_PATTERN,
    ApiContext,
    Context,
    Db,
    PageDep,
    UintPath,
    checksummed,
    int_cursor,
    int_pair_cursor,
    parse_uint,
)
from indexer.asof import AsOf, ChainState
from schemas.money import UINT256_MAX
from schemas.tables import metadata

router = APIRouter(prefix="/v1", tags=["chain"], responses=COMMON_ERRORS)

_models = metadata.tables["chain_models"]
_operators = metadata.tables["chain_model_operators"]
_metadata = metadata.tables["chain_model_metadata"]
_terms = metadata.tables["chain_license_terms"]
_owners = metadata.tables["chain_license_owners"]
_revocations = metadata.tables["chain_license_revocations"]
_stakes = metadata.tables["chain_stakes"]
_policies = metadata.tables["chain_policies"]
_proposals = metadata.tables["chain_proposals"]
_proposal_transitions = metadata.tables["chain_proposal_transitions"]
_votes = metadata.tables["chain_votes"]
_accruals = metadata.tables["accruals"]

_LATEST = AsOf.at_block(2**62)

UintQuery = Annotated[str | None, Query(pattern=UINT_PATTERN, description="uint256, decimal.")]
AddressQuery = Annotated[str | None, Query(pattern=ADDRESS_PATTERN, description="0x address.")]


def _on_chain(table: sa.Table, ctx: ApiContext) -> list[sa.ColumnElement[bool]]:
    return [] if ctx.chain_id is None else [table.c.chain_id == ctx.chain_id]


def _query_uint(value: str | None) -> int | None:
    """A uint256 filter; above the range nothing can match, so -1 (matches no row)."""
    if value is None:
        return None
    number = int(value)
    return number if number <= UINT256_MAX else -1


class Position(BaseModel):
    """Where on the chain a fact was logged."""

    block_number: int
    log_index: int
    block_timestamp: int


def _position(row: Any) -> Position:
    return Position(
        block_number=row.block_number, log_index=row.log_index, block_timestamp=row.block_timestamp
    )


def _latest(conn: Connection, table: sa.Table, *where: Any) -> Any:
    query = (
        sa.select(table)
        .where(*where)
        .order_by(table.c.block_number.desc(), table.c.log_index.desc())
        .limit(1)
    )
    return conn.execute(query).first()


# --- models ------------------------------------------------------------------------------------


class PolicyView(BaseModel):
    """A split in basis points; `model_id` "0" when it is the default policy."""

    model_id: str
    operator_bps: int
    treasury_bps: int
    contributors_bps: int


class ModelView(BaseModel):
    """A registered model with its current operator, metadata, split and total stake."""

    model_id: str
    operator: str
    metadata_uri: str
    registered: Position
    policy: PolicyView | None = Field(description="The split in force now (own or default).")
    total_staked: str


def _model_view(conn: Connection, row: Any) -> ModelView:
    model_id = int(row.model_id)
    on_chain = (_operators.c.chain_id == row.chain_id, _operators.c.model_id == model_id)
    operator = _latest(conn, _operators, *on_chain)
    metadata = _latest(
        conn, _metadata, _metadata.c.chain_id == row.chain_id, _metadata.c.model_id == model_id
    )
    state = ChainState(conn, row.chain_id, finalized_only=False)
    policy = state.policy(model_id, _LATEST)
    return ModelView(
        model_id=str(model_id),
        operator=operator.operator if operator is not None else row.operator,
        metadata_uri=metadata.metadata_uri if metadata is not None else row.metadata_uri,
        registered=_position(row),
        policy=None
        if policy is None
        else PolicyView(
            model_id=str(policy.model_id),
            operator_bps=policy.operator_bps,
            treasury_bps=policy.treasury_bps,
            contributors_bps=policy.contributors_bps,
        ),
        total_staked=str(state.total_staked(model_id, _LATEST)),
    )


@router.get("/models", response_model=Page[ModelView], tags=["models"])
def list_models(ctx: Context, conn: Db, page: PageDep) -> Page[ModelView]:
    """Registered models by id."""
    query = (
        sa.select(_models)
        .where(*_on_chain(_models, ctx))
        .order_by(_models.c.model_id)
        .limit(page.limit + 1)
    )
    after = int_cursor(page, UINT256_MAX)
    if after is not None:
        query = query.where(_models.c.model_id > after)
    rows, next_cursor = page_of(conn.execute(query).all(), page.limit, lambda r: [int(r.model_id)])
    return Page[ModelView](items=[_model_view(conn, r) for r in rows], next_cursor=next_cursor)


@router.get("/models/{model_id}", response_model=ModelView, tags=["models"])
def get_model(model_id: UintPath, ctx: Context, conn: Db) -> ModelView:
    """One model."""
    number = parse_uint(model_id, "model")
    row = conn.execute(
        sa.select(_models).where(_models.c.model_id == number, *_on_chain(_models, ctx))
    ).first()
    if row is None:
        raise NotFoundError(f"model {model_id} does not exist")
    return _model_view(conn, row)


# --- licenses ----------------------------------------------------------------------------------


class Revocation(BaseModel):
    """When and by whom a license was revoked."""

    revoked_by: str
    at: Position


class LicenseView(BaseModel):
    """A license: immutable terms, current holder, revocation."""

    license_id: str
    model_id: str
    price_per_unit_e6: str
    expires_at: int = Field(description="Unix seconds; 0 = never.")
    owner: str | None
    minted: Position
    revocation: Revocation | None


class OwnerChange(BaseModel):
    """A transfer of the license NFT."""

    previous_owner: str
    owner: str
    at: Position


class EpochCharge(BaseModel):
    """Usage billed against the license in one epoch."""

    epoch: int
    accruals: int
    units: str
    fees_e6: str


class LicenseDetail(LicenseView):
    """A license with its owner history and its charges per epoch."""

    owner_history: list[OwnerChange]
    charges: list[EpochCharge]


def _license_view(conn: Connection, row: Any) -> LicenseView:
    license_id = int(row.license_id)
    owner = _latest(
        conn, _owners, _owners.c.chain_id == row.chain_id, _owners.c.license_id == license_id
    )
    revoked = conn.execute(
        sa.select(_revocations).where(
            _revocations.c.chain_id == row.chain_id, _revocations.c.license_id == license_id
        )
    ).first()
    return LicenseView(
        license_id=str(license_id),
        model_id=str(int(row.model_id)),
        price_per_unit_e6=str(int(row.price_per_unit_e6)),
        expires_at=row.expires_at,
        owner=None if owner is None else owner.owner,
        minted=_position(row),
        revocation=None
        if revoked is None
        else Revocation(revoked_by=revoked.revoked_by, at=_position(revoked)),
    )


@router.get("/licenses", response_model=Page[LicenseView], tags=["licenses"])
def list_licenses(
    ctx: Context, conn: Db, page: PageDep, model_id: UintQuery = None
) -> Page[LicenseView]:
    """Licenses by id, optionally of one model."""
    query = (
        sa.select(_terms)
        .where(*_on_chain(_terms, ctx))
        .order_by(_terms.c.license_id)
        .limit(page.limit + 1)
    )
    model = _query_uint(model_id)
    if model is not None:
        if model < 0:
            return Page[LicenseView](items=[])
        query = query.where(_terms.c.model_id == model)
    after = int_cursor(page, UINT256_MAX)
    if after is not None:
        query = query.where(_terms.c.license_id > after)
    rows, next_cursor = page_of(
        conn.execute(query).all(), page.limit, lambda r: [int(r.license_id)]
    )
    return Page[LicenseView](items=[_license_view(conn, r) for r in rows], next_cursor=next_cursor)


def _charges(conn: Connection, license_id: int) -> list[EpochCharge]:
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    rows = conn.execute(
        sa.select(_accruals.c.epoch, _accruals.c.units, _accruals.c.fee_e6).where(
            _accruals.c.license_id == license_id
        )
    )
    for r in rows:  # summed here: SQLite stores uint256 as text
        c = counts[r.epoch]
        c[0] += 1
        c[1] += int(r.units)
        c[2] += int(r.fee_e6)
    return [
        EpochCharge(epoch=epoch, accruals=c[0], units=str(c[1]), fees_e6=str(c[2]))
        for epoch, c in sorted(counts.items())
    ]


@router.get("/licenses/{license_id}", response_model=LicenseDetail, tags=["licenses"])
def get_license(license_id: UintPath, ctx: Context, conn: Db) -> LicenseDetail:
    """One license with its owner history and per-epoch charges."""
    number = parse_uint(license_id, "license")
    row = conn.execute(
        sa.select(_terms).where(_terms.c.license_id == number, *_on_chain(_terms, ctx))
    ).first()
    if row is None:
        raise NotFoundError(f"license {license_id} does not exist")
    view = _license_view(conn, row)
    history = conn.execute(
        sa.select(_owners)
        .where(_owners.c.chain_id == row.chain_id, _owners.c.license_id == number)
        .order_by(_owners.c.block_number, _owners.c.log_index)
    )
    return LicenseDetail(
        **view.model_dump(),
        owner_history=[
            OwnerChange(previous_owner=h.previous_owner, owner=h.owner, at=_position(h))
            for h in history
        ],
        charges=_charges(conn, number),
    )


# --- stakes and policies -----------------------------------------------------------------------


class StakeView(BaseModel):
    """A staker's current stake on a model (zero after a full unstake)."""

    model_id: str
    staker: str
    stake: str
    updated: Position


@router.get("/stakes", response_model=Page[StakeView], tags=["stakes"])
def list_stakes(
    ctx: Context,
    conn: Db,
    page: PageDep,
    model_id: UintQuery = None,
    staker: AddressQuery = None,
) -> Page[StakeView]:
    """Current stakes by model and staker."""
    query = sa.select(_stakes).where(*_on_chain(_stakes, ctx))
    model = _query_uint(model_id)
    if model is not None:
        if model < 0:
            return Page[StakeView](items=[])
        query = query.where(_stakes.c.model_id == model)
    if staker is not None:
        query = query.where(_stakes.c.staker == checksummed(staker))
    latest: dict[tuple[int, str], Any] = {}
    for row in conn.execute(query.order_by(_stakes.c.block_number, _stakes.c.log_index)):
        latest[(int(row.model_id), row.staker)] = row
    views = [
        StakeView(
            model_id=str(key[0]),
            staker=key[1],
            stake=str(int(row.stake_after)),
            updated=_position(row),
        )
        for key, row in sorted(latest.items())
    ]
    items, next_cursor = keyset_page(views, page, lambda v: (int(v.model_id), v.staker), arity=2)
    return Page[StakeView](items=items, next_cursor=next_cursor)


class PolicyChange(PolicyView):
    """A `PolicySet`: the model's split from this log on."""

    at: Position


@router.get("/policies", response_model=Page[PolicyChange], tags=["policies"])
def list_policies(
    ctx: Context, conn: Db, page: PageDep, model_id: UintQuery = None
) -> Page[PolicyChange]:
    """Policy changes in chain order (model 0 is the default policy)."""
    query = (
        sa.select(_policies)
        .where(*_on_chain(_policies, ctx))
        .order_by(_policies.c.block_number, _policies.c.log_index)
        .limit(page.limit + 1)
    )
    model = _query_uint(model_id)
    if model is not None:
        if model < 0:
            return Page[PolicyChange](items=[])
        query = query.where(_policies.c.model_id == model)
    after = int_pair_cursor(page)
    if after is not None:
        query = query.where(
            sa.tuple_(_policies.c.block_number, _policies.c.log_index) > sa.tuple_(*after)
        )
    rows, next_cursor = page_of(
        conn.execute(query).all(), page.limit, lambda r: [r.block_number, r.log_index]
    )
    return Page[PolicyChange](
        items=[
            PolicyChange(
                model_id=str(int(r.model_id)),
                operator_bps=r.operator_bps,
                treasury_bps=r.treasury_bps,
                contributors_bps=r.contributors_bps,
                at=_position(r),
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )


# --- governance --------------------------------------------------------------------------------


class ProposalView(BaseModel):
    """A governance proposal: its calls, window, latest transition and vote tally."""

    proposal_id: str
    proposer: str
    targets: list[str]
    values: list[str]
    calldatas: list[str]
    description: str
    vote_start: str
    vote_end: str
    status: str = Field(description="created, queued, executed or canceled (indexed events).")
    votes_for: str
    votes_against: str
    votes_abstain: str
    created: Position


def _proposal_view(conn: Connection, row: Any) -> ProposalView:
    proposal_id = int(row.proposal_id)
    transition = _latest(
        conn,
        _proposal_transitions,
        _proposal_transitions.c.chain_id == row.chain_id,
        _proposal_transitions.c.proposal_id == proposal_id,
    )
    tally = [0, 0, 0]  # against, for, abstain: Governor's VoteType order
    for vote in conn.execute(
        sa.select(_votes.c.support, _votes.c.weight).where(
            _votes.c.chain_id == row.chain_id, _votes.c.proposal_id == proposal_id
        )
    ):
        if 0 <= vote.support < 3:
            tally[vote.support] += int(vote.weight)
    return ProposalView(
        proposal_id=str(proposal_id),
        proposer=row.proposer,
        targets=[str(t) for t in row.targets],
        values=[str(v) for v in row.values],
        calldatas=[str(c) for c in row.calldatas],
        description=row.description,
        vote_start=str(int(row.vote_start)),
        vote_end=str(int(row.vote_end)),
        status="created" if transition is None else transition.status,
        votes_for=str(tally[1]),
        votes_against=str(tally[0]),
        votes_abstain=str(tally[2]),
        created=_position(row),
    )


@router.get("/governance/proposals", response_model=Page[ProposalView], tags=["governance"])
def list_proposals(ctx: Context, conn: Db, page: PageDep) -> Page[ProposalView]:
    """Proposals in the order they were created."""
    query = (
        sa.select(_proposals)
        .where(*_on_chain(_proposals, ctx))
        .order_by(_proposals.c.block_number, _proposals.c.log_index)
        .limit(page.limit + 1)
    )
    after = int_pair_cursor(page)
    if after is not None:
        query = query.where(
            sa.tuple_(_proposals.c.block_number, _proposals.c.log_index) > sa.tuple_(*after)
        )
    rows, next_cursor = page_of(
        conn.execute(query).all(), page.limit, lambda r: [r.block_number, r.log_index]
    )
    return Page[ProposalView](
        items=[_proposal_view(conn, r) for r in rows], next_cursor=next_cursor
    )


class VoteView(BaseModel):
    """A vote: support 0 against, 1 for, 2 abstain; weight in votes (token base units)."""

    voter: str
    support: int
    weight: str
    reason: str
    at: Position


@router.get(
    "/governance/proposals/{proposal_id}/votes",
    response_model=Page[VoteView],
    tags=["governance"],
)
def list_votes(proposal_id: UintPath, ctx: Context, conn: Db, page: PageDep) -> Page[VoteView]:
    """The votes on a proposal in chain order."""
    number = parse_uint(proposal_id, "proposal")
    exists = conn.execute(
        sa.select(_proposals.c.proposal_id).where(
            _proposals.c.proposal_id == number, *_on_chain(_proposals, ctx)
        )
    ).first()
    if exists is None:
        raise NotFoundError(f"proposal {proposal_id} does not exist")
    query = (
        sa.select(_votes)
        .where(_votes.c.proposal_id == number, *_on_chain(_votes, ctx))
        .order_by(_votes.c.block_number, _votes.c.log_index)
        .limit(page.limit + 1)
    )
    after = int_pair_cursor(page)
    if after is not None:
        query = query.where(
            sa.tuple_(_votes.c.block_number, _votes.c.log_index) > sa.tuple_(*after)
        )
    rows, next_cursor = page_of(
        conn.execute(query).all(), page.limit, lambda r: [r.block_number, r.log_index]
    )
    return Page[VoteView](
        items=[
            VoteView(
                voter=r.voter,
                support=r.support,
                weight=str(int(r.weight)),
                reason=r.reason,
                at=_position(r),
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )
