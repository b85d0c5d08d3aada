"""A contributor's royalties, proofs, and one ready-to-sign transaction claiming them all."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Literal

import sqlalchemy as sa
from eth_abi.abi import encode
from eth_utils.crypto import keccak
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from api.errors import COMMON_ERRORS, ApiError, NotFoundError, error_response
from api.pagination import Page, encode_cursor
from api.proofs import EpochTree, Leaf
from api.routes.deps import (
    BIGINT_MAX,
    AddressPath,
    ApiContext,
    Context,
    Db,
    PageDep,
    checksummed,
    int_cursor,
)
from schemas.epoch import EpochStatus
from schemas.tables import metadata
from settlement.chain.artifacts import load_artifact

router = APIRouter(prefix="/v1/contributors", tags=["contributors"], responses=COMMON_ERRORS)

_epochs = metadata.tables["epochs"]
_alloc = metadata.tables["epoch_allocations"]
_claims = metadata.tables["chain_claims"]
_transitions = metadata.tables["chain_epoch_transitions"]

StatusFilter = Literal["computed", "committed", "claimable", "disputed"]


@dataclass(frozen=True)
class EpochHead:
    """What a contributor view needs of an epoch row."""

    id: int
    status: str
    root: str | None
    claimable_at: int | None


def _epoch_heads(conn: Connection) -> list[EpochHead]:
    rows = conn.execute(
        sa.select(_epochs.c.id, _epochs.c.status, _epochs.c.root, _epochs.c.claimable_at)
        .where(_epochs.c.root.is_not(None))
        .order_by(_epochs.c.id)
    )
    return [EpochHead(r.id, r.status, r.root, r.claimable_at) for r in rows]


def _chain_filter(table: sa.Table, ctx: ApiContext) -> list[sa.ColumnElement[bool]]:
    return [] if ctx.chain_id is None else [table.c.chain_id == ctx.chain_id]


def _disputed_epochs(conn: Connection, ctx: ApiContext) -> frozenset[int]:
    rows = conn.execute(
        sa.select(_transitions.c.epoch).where(
            _transitions.c.status == "disputed", *_chain_filter(_transitions, ctx)
        )
    )
    return frozenset(int(r.epoch) for r in rows)


@dataclass(frozen=True)
class EpochSnapshot:
    """The computed epochs and the epochs disputed on-chain (indexed), read together."""

    heads: tuple[EpochHead, ...]
    disputed: frozenset[int]
    read_at: float


def epoch_snapshot(conn: Connection, ctx: ApiContext) -> EpochSnapshot:
    """The epochs as of at most `epoch_cache_s` ago: every contributor request needs them,
    and they change a few times per epoch, so one read serves many requests."""
    cached: EpochSnapshot | None = ctx.cache.get("epochs")
    now = time.monotonic()
    if cached is not None and now - cached.read_at < ctx.settings.epoch_cache_s:
        return cached
    snapshot = EpochSnapshot(tuple(_epoch_heads(conn)), _disputed_epochs(conn, ctx), now)
    ctx.cache["epochs"] = snapshot
    return snapshot


def claimed_leaves(conn: Connection, ctx: ApiContext, account: str) -> set[tuple[int, int]]:
    """`(epoch, leaf index)` of the account's indexed claims."""
    rows = conn.execute(
        sa.select(_claims.c.epoch, _claims.c.leaf_index).where(
            _claims.c.account == account, *_chain_filter(_claims, ctx)
        )
    )
    return {(int(r.epoch), int(r.leaf_index)) for r in rows}


def is_claimable(head: EpochHead, disputed: frozenset[int]) -> bool:
    """Claimable now: the settler marked it claimable (its window passed on-chain) and no
    dispute of it was indexed (a guardian's dispute wins over a stale row)."""
    return head.status == EpochStatus.CLAIMABLE.value and head.id not in disputed


class RoyaltyItem(BaseModel):
    """The contributor's allocation in one epoch."""

    epoch: int
    leaf_index: int
    amount: str = Field(description="Base units, decimal string.")
    status: str = Field(description="The epoch's status.")
    claimable_at: int | None = Field(description="End of the dispute window (unix seconds).")
    claimed: bool
    claimable: bool = Field(description="Claimable now and not claimed yet.")


class RoyaltyTotals(BaseModel):
    """Sums over every epoch (not only the page): earned excludes disputed epochs."""

    earned: str
    claimed: str
    claimable: str


class RoyaltiesPage(Page[RoyaltyItem]):
    """The contributor's allocations, a page at a time, with overall totals."""

    account: str
    totals: RoyaltyTotals


@dataclass(frozen=True)
class _Allocation:
    head: EpochHead
    index: int
    amount: int


def _allocations(conn: Connection, account: str, heads: list[EpochHead]) -> list[_Allocation]:
    by_id = {h.id: h for h in heads}
    if not by_id:
        return []
    rows = conn.execute(
        sa.select(_alloc.c.epoch_id, _alloc.c.leaf_index, _alloc.c.amount)
        .where(_alloc.c.account == account, _alloc.c.epoch_id.in_(list(by_id)))
        .order_by(_alloc.c.epoch_id)
    )
    return [_Allocation(by_id[r.epoch_id], int(r.leaf_index), int(r.amount)) for r in rows]


@router.get("/{address}/royalties", response_model=RoyaltiesPage)
def royalties(
    address: AddressPath,
    ctx: Context,
    conn: Db,
    page: PageDep,
    status: Annotated[StatusFilter | None, Query(description="Only epochs in this status.")] = None,
) -> RoyaltiesPage:
    """Per epoch: amount, leaf index, epoch status, claimed, claimable now; overall totals."""
    account = checksummed(address)
    snapshot = epoch_snapshot(conn, ctx)
    heads, disputed = list(snapshot.heads), snapshot.disputed
    claimed = claimed_leaves(conn, ctx, account)
    items: list[RoyaltyItem] = []
    earned = claimed_total = claimable_total = 0
    for a in _allocations(conn, account, heads):
        was_claimed = (a.head.id, a.index) in claimed
        claimable = is_claimable(a.head, disputed) and not was_claimed
        status_now = "disputed" if a.head.id in disputed else a.head.status
        if status_now != "disputed":
            earned += a.amount
        claimed_total += a.amount if was_claimed else 0
        claimable_total += a.amount if claimable else 0
        if status is not None and status_now != status:
            continue
        items.append(
            RoyaltyItem(
                epoch=a.head.id,
                leaf_index=a.index,
                amount=str(a.amount),
                status=status_now,
                claimable_at=a.head.claimable_at,
                claimed=was_claimed,
                claimable=claimable,
            )
        )
    after = int_cursor(page)
    if after is not None:
        items = [i for i in items if i.epoch > after]
    next_cursor = None
    if len(items) > page.limit:
        items = items[: page.limit]
        next_cursor = encode_cursor([items[-1].epoch])
    return RoyaltiesPage(
        account=account,
        items=items,
        next_cursor=next_cursor,
        totals=RoyaltyTotals(
            earned=str(earned), claimed=str(claimed_total), claimable=str(claimable_total)
        ),
    )


class ProofItem(BaseModel):
    """A leaf of a claimable epoch with its Merkle proof."""

    epoch: int
    index: int
    account: str
    amount: str
    proof: list[str] = Field(description="Sibling hashes, leaf to root, 0x hex.")
    root: str
    claimed: bool


class ProofList(BaseModel):
    """Proofs of the contributor's leaves in claimable epochs."""

    account: str
    items: list[ProofItem]


def claimable_leaves(
    conn: Connection, ctx: ApiContext, account: str, epoch: int | None = None
) -> list[tuple[Leaf, str]]:
    """The account's leaves (with proofs) in epochs claimable now, with each epoch's root."""
    snapshot = epoch_snapshot(conn, ctx)
    found: list[tuple[Leaf, str]] = []
    for head in snapshot.heads:
        if epoch is not None and head.id != epoch:
            continue
        if head.root is None or not is_claimable(head, snapshot.disputed):
            continue
        leaf = ctx.trees.get(conn, head.id, head.root).leaf_of(account)
        if leaf is not None:
            found.append((leaf, head.root))
    return found


def _proofs_from_db(ctx: ApiContext, account: str, epoch: int | None) -> ProofList:
    """The proofs with every read fresh from the database (no proof view: see `ProofViews`)."""
    with ctx.engine.connect() as conn:
        leaves = claimable_leaves(conn, ctx, account, epoch)
        if epoch is not None and not leaves:
            raise NotFoundError(f"no claimable leaf of {account} in epoch {epoch}")
        claimed = claimed_leaves(conn, ctx, account) if leaves else set()
    return ProofList(
        account=account,
        items=[
            ProofItem(
                epoch=leaf.epoch,
                index=leaf.index,
                account=leaf.account,
                amount=str(leaf.amount),
                proof=list(leaf.proof),
                root=root,
                claimed=(leaf.epoch, leaf.index) in claimed,
            )
            for leaf, root in leaves
        ],
    )


_CLAIMED = b',"claimed":true}'
_UNCLAIMED = b',"claimed":false}'


@dataclass(frozen=True)
class ProofView:
    """The claimable epochs (with their trees) and their indexed claims, read together.

    Everything a proof lookup needs, in memory: a lookup is a few dict probes and a join of
    leaf JSON serialised once per leaf (`EpochTree.fragment`).
    """

    epochs: tuple[tuple[int, bytes, EpochTree], ...]
    """Claimable epochs by id: `(epoch, its root as JSON, its tree)`."""
    claimed: frozenset[tuple[int, int]]
    """`(epoch, leaf index)` of every indexed claim in those epochs."""
    read_at: float
    """`time.monotonic()` when the read began: the view is at most this old."""

    def body(self, account: str, epoch: int | None = None) -> bytes | None:
        """The `ProofList` JSON of `account` (checksummed); None when `epoch` is given and the
        account has no leaf in it (a 404)."""
        items: list[bytes] = []
        for epoch_id, root, tree in self.epochs:
            if epoch is not None and epoch_id != epoch:
                continue
            position = tree.positions.get(account)
            if position is None:
                continue
            index = tree.leaves[position][0]
            flag = _CLAIMED if (epoch_id, index) in self.claimed else _UNCLAIMED
            items.append(tree.fragment(position) + root + flag)
        if epoch is not None and not items:
            return None
        return b"".join(
            (b'{"account":', json.dumps(account).encode(), b',"items":[', b",".join(items), b"]}")
        )


def read_proof_view(ctx: ApiContext) -> ProofView:
    """The proof view as of now: the epochs, the trees of the claimable ones (from the tree
    cache; built on first use) and their indexed claims. Blocking: run it in a thread."""
    read_at = time.monotonic()
    with ctx.engine.connect() as conn:
        heads = _epoch_heads(conn)
        disputed = _disputed_epochs(conn, ctx)
        claimable = [h for h in heads if h.root is not None and is_claimable(h, disputed)]
        epochs = tuple(
            (h.id, json.dumps(h.root).encode(), ctx.trees.get(conn, h.id, h.root))
            for h in claimable
            if h.root is not None
        )
        claimed: frozenset[tuple[int, int]] = frozenset()
        if epochs:
            rows = conn.execute(
                sa.select(_claims.c.epoch, _claims.c.leaf_index).where(
                    _claims.c.epoch.in_([e for e, _, _ in epochs]), *_chain_filter(_claims, ctx)
                )
            )
            claimed = frozenset((int(r.epoch), int(r.leaf_index)) for r in rows)
    return ProofView(epochs, claimed, read_at)


class ProofViews:
    """The current `ProofView` of an app, re-read in a worker thread at most once per
    `epoch_cache_s`: proof lookups never touch the database or block the event loop.

    A view is served while younger than `epoch_cache_s`; once half that age a fresh read starts
    in the background (one at a time), so on a busy API requests rarely wait for a read and the
    `claimed` flags and epoch statuses they show are at most `epoch_cache_s` old. Claim-all and
    royalties keep reading claims from the database per request.
    """

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._view: ProofView | None = None
        self._reading: asyncio.Task[ProofView] | None = None

    async def _read(self) -> ProofView:
        view = await run_in_threadpool(read_proof_view, self.ctx)
        if self._view is None or view.read_at >= self._view.read_at:
            self._view = view
        return view

    def _start_read(self) -> asyncio.Task[ProofView]:
        reading = self._reading
        loop = asyncio.get_running_loop()
        if reading is None or reading.done() or reading.get_loop() is not loop:
            reading = self._reading = loop.create_task(self._read())
            # Retrieve a failed background read's exception (it is raised to waiters).
            reading.add_done_callback(lambda t: t.cancelled() or t.exception())
        return reading

    async def current(self) -> ProofView:
        """A view at most `epoch_cache_s` old."""
        ttl = self.ctx.settings.epoch_cache_s
        view = self._view
        if view is not None:
            age = time.monotonic() - view.read_at
            if age < ttl:
                if age >= ttl / 2:
                    self._start_read()
                return view
        return await asyncio.shield(self._start_read())


def proof_views(ctx: ApiContext) -> ProofViews | None:
    """The app's proof views; None when the tree cache or the epoch cache is off (every
    lookup then reads the database, the reference behaviour)."""
    if ctx.trees.max_epochs <= 0 or ctx.settings.epoch_cache_s <= 0:
        return None
    views: ProofViews | None = ctx.cache.get("proof_views")
    if views is None:
        views = ctx.cache["proof_views"] = ProofViews(ctx)
    return views


@router.get("/{address}/proofs", response_model=ProofList)
async def proofs(
    address: AddressPath,
    request: Request,
    epoch: Annotated[int | None, Query(ge=0, le=BIGINT_MAX, description="Only this epoch.")] = None,
) -> Response | ProofList:
    """Merkle proofs of the contributor's leaves in claimable epochs.

    Served from memory (see `ProofViews`): `claimed` may lag the indexer by up to
    `[api] epoch_cache_s` (1 s); claim-all reads claims fresh.
    """
    ctx: ApiContext = request.app.state.context
    account = checksummed(address)
    views = proof_views(ctx)
    if views is None:
        return await run_in_threadpool(_proofs_from_db, ctx, account, epoch)
    body = (await views.current()).body(account, epoch)
    if body is None:
        raise NotFoundError(f"no claimable leaf of {account} in epoch {epoch}")
    return Response(body, media_type="application/json")


PROOFS_ROUTE = "/v1/contributors/{address}/proofs"
PROOFS_PREFIX = "/v1/contributors/"
_PROOFS_PATH = re.compile(r"/v1/contributors/(0x[0-9a-fA-F]{40})/proofs")
_EPOCH_QUERY = re.compile(rb"epoch=([0-9]{1,19})")
_JSON_HEADERS = (b"content-type", b"application/json")


async def answer_proof_lookup(ctx: ApiContext, scope: Scope, receive: Receive, send: Send) -> int:
    """Answer `GET /v1/contributors/{address}/proofs[?epoch=N]` from the proof view, before
    routing: the API's busiest request skips the router's parameter parsing and dependency
    resolution. Returns the status sent, or 0 without sending anything when the request is
    not one it answers exactly as the `proofs` route would (another method or query, a
    malformed address, proof views off, a failed read): the router then handles it.
    """
    if scope["method"] != "GET":
        return 0
    match = _PROOFS_PATH.fullmatch(scope["path"])
    if match is None:
        return 0
    views = proof_views(ctx)
    if views is None:
        return 0
    epoch = None
    query: bytes = scope.get("query_string", b"")
    if query:
        wanted = _EPOCH_QUERY.fullmatch(query)
        if wanted is None or int(wanted.group(1)) > BIGINT_MAX:
            return 0
        epoch = int(wanted.group(1))
    try:
        view = await views.current()
    except Exception:
        return 0  # the route reads again and answers the error in the API's shape
    account = checksummed(match.group(1))
    body = view.body(account, epoch)
    if body is None:
        message = f"no claimable leaf of {account} in epoch {epoch}"
        await error_response(404, "not_found", message)(scope, receive, send)
        return 404
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": 200, "headers": [length, _JSON_HEADERS]})
    await send({"type": "http.response.body", "body": body})
    return 200


class ClaimArgs(BaseModel):
    """One `Claim` struct of the `claimMany` call."""

    epoch: int
    index: int
    account: str
    amount: str
    proof: list[str]


class ClaimAllTx(BaseModel):
    """An unsigned transaction: one `claimMany` call claiming every unclaimed claimable leaf.

    Sign it with any key (the tokens go to `account` whoever sends it), add nonce and gas.
    """

    account: str
    to: str
    data: str
    value: str = "0"
    chain_id: int
    claims: list[ClaimArgs]
    total: str


@cache
def _claim_many_abi() -> tuple[bytes, str]:
    abi = load_artifact("RoyaltyDistributor").abi
    entry = next(e for e in abi if e.get("type") == "function" and e.get("name") == "claimMany")
    component_types = ",".join(c["type"] for c in entry["inputs"][0]["components"])
    arg_type = f"({component_types})[]"
    return keccak(text=f"claimMany({arg_type})")[:4], arg_type


def encode_claim_many(claims: list[Leaf]) -> str:
    """Calldata of `claimMany(claims)` (ABI from the compiled contract), 0x hex."""
    selector, arg_type = _claim_many_abi()
    structs = [
        (c.epoch, c.index, c.account, c.amount, [bytes.fromhex(p[2:]) for p in c.proof])
        for c in claims
    ]
    return "0x" + (selector + encode([arg_type], [structs])).hex()


@router.get(
    "/{address}/claim-all",
    response_model=ClaimAllTx,
    responses={404: COMMON_ERRORS[404] | {"description": "nothing to claim"}},
)
def claim_all(address: AddressPath, ctx: Context, conn: Db) -> ClaimAllTx:
    """A ready-to-sign `claimMany` transaction for every unclaimed leaf in claimable epochs.

    404 with code `nothing_to_claim` when there is none.
    """
    chain_id, distributor = ctx.require_chain()
    account = checksummed(address)
    claimed = claimed_leaves(conn, ctx, account)
    leaves = [
        leaf
        for leaf, _root in claimable_leaves(conn, ctx, account)
        if (leaf.epoch, leaf.index) not in claimed
    ]
    if not leaves:
        raise ApiError(404, "nothing_to_claim", f"{account} has nothing to claim now")
    # The contract pays each run of same-account claims with one transfer: sort by account.
    leaves.sort(key=lambda leaf: (bytes.fromhex(leaf.account[2:]), leaf.epoch, leaf.index))
    return ClaimAllTx(
        account=account,
        to=distributor,
        data=encode_claim_many(leaves),
        chain_id=chain_id,
        claims=[
            ClaimArgs(
                epoch=leaf.epoch,
                index=leaf.index,
                account=leaf.account,
                amount=str(leaf.amount),
                proof=list(leaf.proof),
            )
            for leaf in leaves
        ],
        total=str(sum(leaf.amount for leaf in leaves)),
    )
