"""Operator endpoints, behind an API key with the `admin` scope: dead letters and API keys."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from api.auth import ApiKey, InvalidScopeError, create_key, revoke_key, touch_key, verify_key
from api.errors import AUTH_ERRORS, COMMON_ERRORS, ApiError, NotFoundError
from api.pagination import Page, page_of
from api.ratelimit import retry_after_header
from api.routes.deps import Context, Db, PageDep, int_cursor
from schemas.accrual import RejectReason
from schemas.tables import metadata

_dead = metadata.tables["dead_letters"]
_bearer = HTTPBearer(auto_error=False, description="An operator API key: `rk_<id>_<secret>`.")


def require_scope(scope: str):  # type: ignore[no-untyped-def]
    """A dependency: the request's bearer key, which must hold `scope`; rate-limited per key."""

    def dependency(
        ctx: Context,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiKey:
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None or not credentials.credentials:
            raise ApiError(401, "unauthorized", "an API key is required", headers=challenge)
        presented = credentials.credentials
        if ctx.pepper is None:
            raise ApiError(401, "unauthorized", "API keys are not configured", headers=challenge)
        with ctx.engine.begin() as conn:
            key = verify_key(conn, presented.strip(), ctx.pepper)
            if key is not None:
                touch_key(conn, key.key_id, datetime.fromtimestamp(ctx.clock(), UTC))
        if key is None:
            raise ApiError(401, "unauthorized", "invalid or revoked API key", headers=challenge)
        if scope not in key.scopes:
            raise ApiError(403, "forbidden", f"this key lacks the {scope!r} scope")
        rate = key.rate_limit_per_s if key.rate_limit_per_s is not None else None
        wait = ctx.admin_limiter.acquire(key.key_id, rate)
        if wait is not None:
            raise ApiError(
                429, "rate_limited", "too many requests", headers=retry_after_header(wait)
            )
        return key

    return dependency


Admin = Annotated[ApiKey, Depends(require_scope("admin"))]

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=COMMON_ERRORS | AUTH_ERRORS)


class DeadLetterView(BaseModel):
    """A rejected usage event with its reason and the payload as received."""

    id: int
    reason: str
    detail: str
    usage_id: str | None
    source: str | None
    received_at: datetime
    payload: str
    payload_truncated: bool


@router.get("/dead-letters", response_model=Page[DeadLetterView])
def dead_letters(
    _key: Admin,
    conn: Db,
    page: PageDep,
    reason: Annotated[RejectReason | None, Query(description="Only this reason.")] = None,
) -> Page[DeadLetterView]:
    """Dead letters by id (arrival order)."""
    query = sa.select(_dead).order_by(_dead.c.id).limit(page.limit + 1)
    after = int_cursor(page)
    if after is not None:
        query = query.where(_dead.c.id > after)
    if reason is not None:
        query = query.where(_dead.c.reason == reason.value)
    rows, next_cursor = page_of(conn.execute(query).all(), page.limit, lambda r: [r.id])
    return Page[DeadLetterView](
        items=[
            DeadLetterView(
                id=r.id,
                reason=r.reason,
                detail=r.detail,
                usage_id=r.usage_id,
                source=r.source,
                received_at=r.received_at,
                payload=r.payload,
                payload_truncated=r.payload_truncated,
            )
            for r in rows
        ],
        next_cursor=next_cursor,
    )


class NewApiKey(BaseModel):
    """A key to create."""

    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(min_length=1, max_length=8)
    rate_limit_per_s: int | None = Field(None, gt=0, le=1_000_000)


class ApiKeyView(BaseModel):
    """A key's public part."""

    key_id: str
    name: str
    scopes: list[str]
    rate_limit_per_s: int | None
    created_at: datetime
    revoked_at: datetime | None


class CreatedApiKey(ApiKeyView):
    """A new key: `key` is shown this once; only its hash is stored."""

    key: str


def _view(key: ApiKey) -> ApiKeyView:
    return ApiKeyView(
        key_id=key.key_id,
        name=key.name,
        scopes=sorted(key.scopes),
        rate_limit_per_s=key.rate_limit_per_s,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
    )


@router.post("/api-keys", response_model=CreatedApiKey, status_code=201)
def create_api_key(body: NewApiKey, _key: Admin, ctx: Context) -> CreatedApiKey:
    """Create a key; the response holds the secret, which is not stored and not shown again."""
    assert ctx.pepper is not None  # the Admin dependency checked it
    try:
        with ctx.engine.begin() as conn:
            created = create_key(
                conn,
                name=body.name,
                scopes=body.scopes,
                pepper=ctx.pepper,
                rate_limit_per_s=body.rate_limit_per_s,
            )
    except InvalidScopeError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from exc
    return CreatedApiKey(**_view(created.key).model_dump(), key=created.secret)


@router.delete("/api-keys/{key_id}", response_model=ApiKeyView)
def delete_api_key(
    key_id: Annotated[str, Path(pattern=r"^[0-9a-f]{16}$")], _key: Admin, ctx: Context
) -> ApiKeyView:
    """Revoke a key (idempotent): it authenticates nothing from now on."""
    with ctx.engine.begin() as conn:
        revoked = revoke_key(conn, key_id)
    if revoked is None:
        raise NotFoundError(f"API key {key_id} does not exist")
    return _view(revoked)
