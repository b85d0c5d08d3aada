"""Usage: a licensee's receipt for one usage id, accrued usage and rejections in aggregate."""

from __future__ import annotations

import importlib
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from api.errors import COMMON_ERRORS, NotFoundError, UnavailableError
from api.pagination import Page, keyset_page
from api.routes.deps import UINT_PATTERN, Db, PageDep
from schemas.accrual import RejectReason
from schemas.money import UINT256_MAX
from schemas.tables import metadata

router = APIRouter(prefix="/v1", tags=["usage"], responses=COMMON_ERRORS)

_accruals = metadata.tables["accruals"]
_dead = metadata.tables["dead_letters"]


class UsageReceiptView(BaseModel):
    """Proof that a usage id was billed in an epoch: its usage-tree leaf, proof and root.

    Check it without this service: hash `leaf` (encoding `leaf_encoding`) as a
    StandardMerkleTree leaf, fold `proof` into it, and compare with `root` and with the
    epoch's on-chain `EpochCommitted.usageRoot`.
    """

    usage_id: str
    epoch: str
    leaf_encoding: list[str]
    leaf: list[str]
    leaf_hash: str
    proof: list[str]
    root: str


@router.get("/usage/{usage_id}/receipt", response_model=UsageReceiptView)
def usage_receipt(
    usage_id: Annotated[str, Path(min_length=1, max_length=128, description="Usage event id.")],
    conn: Db,
) -> UsageReceiptView:
    """The receipt of a billed usage id (404 until the epoch billing it is computed)."""
    try:
        module = importlib.import_module("settlement.usage_root")
    except ImportError as exc:
        raise UnavailableError("usage receipts are not available in this version") from exc
    receipt = module.usage_receipt(conn, usage_id)
    if receipt is None:
        raise NotFoundError(f"usage {usage_id} is not billed in any computed epoch")
    return UsageReceiptView(**receipt.to_json())


class UsageGroup(BaseModel):
    """Accrued (valid, billed) usage of one model in one epoch."""

    model_id: str
    epoch: int
    accruals: int
    units: str
    fees_e6: str


UintQuery = Annotated[str | None, Query(pattern=UINT_PATTERN, description="uint256, decimal.")]
EpochQuery = Annotated[int | None, Query(ge=0, le=2**63 - 1)]


@router.get("/usage/summary", response_model=Page[UsageGroup])
def usage_summary(
    conn: Db, page: PageDep, model_id: UintQuery = None, epoch: EpochQuery = None
) -> Page[UsageGroup]:
    """Accrued usage per (epoch, model): count, units, fees (10^-6 units)."""
    query = sa.select(
        _accruals.c.model_id, _accruals.c.epoch, _accruals.c.units, _accruals.c.fee_e6
    )
    if model_id is not None:
        if int(model_id) > UINT256_MAX:
            return Page[UsageGroup](items=[])
        query = query.where(_accruals.c.model_id == int(model_id))
    if epoch is not None:
        query = query.where(_accruals.c.epoch == epoch)
    sums: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in conn.execute(query):  # summed here: SQLite stores uint256 as text
        s = sums[(row.epoch, int(row.model_id))]
        s[0] += 1
        s[1] += int(row.units)
        s[2] += int(row.fee_e6)
    groups = [
        UsageGroup(model_id=str(m), epoch=e, accruals=s[0], units=str(s[1]), fees_e6=str(s[2]))
        for (e, m), s in sorted(sums.items())
    ]
    items, next_cursor = keyset_page(groups, page, lambda g: (g.epoch, int(g.model_id)), arity=2)
    return Page[UsageGroup](items=items, next_cursor=next_cursor)


class RejectionGroup(BaseModel):
    """Dead letters of one reason on one UTC day."""

    day: date
    reason: str
    count: int


@router.get("/rejections/summary", response_model=Page[RejectionGroup])
def rejections_summary(
    conn: Db,
    page: PageDep,
    reason: Annotated[RejectReason | None, Query(description="Only this reason.")] = None,
) -> Page[RejectionGroup]:
    """Rejected usage per reason per UTC day."""
    query = sa.select(_dead.c.reason, _dead.c.received_at)
    if reason is not None:
        query = query.where(_dead.c.reason == reason.value)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for row in conn.execute(query):
        received: datetime = row.received_at
        day = received.astimezone(UTC).date() if received.tzinfo else received.date()
        counts[(day.isoformat(), row.reason)] += 1
    groups = [
        RejectionGroup(day=date.fromisoformat(d), reason=r, count=n)
        for (d, r), n in sorted(counts.items())
    ]
    items, next_cursor = keyset_page(groups, page, lambda g: (g.day.isoformat(), g.reason), arity=2)
    return Page[RejectionGroup](items=items, next_cursor=next_cursor)
