"""Epochs: lifecycle, roots and totals, their allocations, and the published tree dump."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection

from api.errors import COMMON_ERRORS, NotFoundError
from api.pagination import Page, page_of
from api.routes.deps import ApiContext, Context, Db, EpochPath, PageDep, int_cursor
from schemas.tables import metadata

router = APIRouter(prefix="/v1/epochs", tags=["epochs"], responses=COMMON_ERRORS)

_epochs = metadata.tables["epochs"]
_alloc = metadata.tables["epoch_allocations"]
_claims = metadata.tables["chain_claims"]

EpochStatusName = Literal["open", "closing", "computed", "committed", "claimable", "disputed"]


class EpochTotals(BaseModel):
    """Amounts in base units (fees in 10^-6 units), decimal strings; null before computed."""

    total: str | None
    fees_e6: str | None
    leaf_count: int | None
    accrual_count: int | None
    claimed: str = Field(description="Sum of the indexed claims of the epoch.")


class EpochView(BaseModel):
    """An epoch: window, status, roots, commit transaction, totals."""

    id: int
    start_time: int
    end_time: int
    status: str
    root: str | None
    usage_root: str | None
    inputs_hash: str | None
    tx_hash: str | None
    block_number: int | None
    dispute_deadline: int | None = Field(description="claimable_at: end of the dispute window.")
    totals: EpochTotals


def _claimed_by_epoch(conn: Connection, ctx: ApiContext, epochs: list[int]) -> dict[int, int]:
    if not epochs:
        return {}
    query = sa.select(_claims.c.epoch, _claims.c.amount).where(_claims.c.epoch.in_(epochs))
    if ctx.chain_id is not None:
        query = query.where(_claims.c.chain_id == ctx.chain_id)
    sums: dict[int, int] = defaultdict(int)
    for row in conn.execute(query):  # summed here: SQLite stores uint256 as text
        sums[int(row.epoch)] += int(row.amount)
    return sums


def _view(row: Any, claimed: int) -> EpochView:
    def text(value: int | None) -> str | None:
        return None if value is None else str(int(value))

    return EpochView(
        id=row.id,
        start_time=row.start_time,
        end_time=row.end_time,
        status=row.status,
        root=row.root,
        usage_root=row.usage_root,
        inputs_hash=row.inputs_hash,
        tx_hash=row.tx_hash,
        block_number=row.block_number,
        dispute_deadline=row.claimable_at,
        totals=EpochTotals(
            total=text(row.total),
            fees_e6=text(row.fees_e6),
            leaf_count=row.leaf_count,
            accrual_count=row.accrual_count,
            claimed=str(claimed),
        ),
    )


@router.get("", response_model=Page[EpochView])
def list_epochs(
    ctx: Context,
    conn: Db,
    page: PageDep,
    status: Annotated[EpochStatusName | None, Query(description="Only this status.")] = None,
) -> Page[EpochView]:
    """Epochs by id, oldest first."""
    query = sa.select(_epochs).order_by(_epochs.c.id).limit(page.limit + 1)
    after = int_cursor(page)
    if after is not None:
        query = query.where(_epochs.c.id > after)
    if status is not None:
        query = query.where(_epochs.c.status == status)
    rows, next_cursor = page_of(conn.execute(query).all(), page.limit, lambda r: [r.id])
    claimed = _claimed_by_epoch(conn, ctx, [r.id for r in rows])
    return Page[EpochView](
        items=[_view(r, claimed.get(r.id, 0)) for r in rows], next_cursor=next_cursor
    )


def _epoch_row(conn: Connection, epoch: int) -> Any:
    row = conn.execute(sa.select(_epochs).where(_epochs.c.id == epoch)).first()
    if row is None:
        raise NotFoundError(f"epoch {epoch} does not exist")
    return row


@router.get("/{epoch_id}", response_model=EpochView)
def get_epoch(epoch_id: EpochPath, ctx: Context, conn: Db) -> EpochView:
    """One epoch."""
    row = _epoch_row(conn, epoch_id)
    return _view(row, _claimed_by_epoch(conn, ctx, [epoch_id]).get(epoch_id, 0))


class AllocationView(BaseModel):
    """A leaf `(index, account, amount)` of the epoch's tree."""

    index: int
    account: str
    amount: str


@router.get("/{epoch_id}/allocations", response_model=Page[AllocationView])
def allocations(epoch_id: EpochPath, conn: Db, page: PageDep) -> Page[AllocationView]:
    """The epoch's allocations by leaf index."""
    _epoch_row(conn, epoch_id)
    query = (
        sa.select(_alloc.c.leaf_index, _alloc.c.account, _alloc.c.amount)
        .where(_alloc.c.epoch_id == epoch_id)
        .order_by(_alloc.c.leaf_index)
        .limit(page.limit + 1)
    )
    after = int_cursor(page)
    if after is not None:
        query = query.where(_alloc.c.leaf_index > after)
    rows, next_cursor = page_of(conn.execute(query).all(), page.limit, lambda r: [r.leaf_index])
    return Page[AllocationView](
        items=[
            AllocationView(index=r.leaf_index, account=r.account, amount=str(int(r.amount)))
            for r in rows
        ],
        next_cursor=next_cursor,
    )


class TreeDump(BaseModel):
    """OpenZeppelin `StandardMerkleTree` dump (format `standard-v1`), loadable by OZ tools."""

    format: str
    leafEncoding: list[str]  # noqa: N815 - OZ's field name
    tree: list[str]
    values: list[dict[str, Any]]


@router.get("/{epoch_id}/tree", response_model=TreeDump)
def tree(epoch_id: EpochPath, ctx: Context, conn: Db) -> dict[str, object]:
    """The epoch's Merkle tree as OpenZeppelin's `standard-v1` dump."""
    row = _epoch_row(conn, epoch_id)
    if row.root is None:
        raise NotFoundError(f"epoch {epoch_id} has no tree yet (status {row.status})")
    built = ctx.trees.get(conn, epoch_id, row.root)
    if built.tree is None:
        raise NotFoundError(f"epoch {epoch_id} has no allocations")
    return built.tree.dump()
