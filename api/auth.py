"""Operator API keys: created once, stored as an HMAC only, checked per request with scopes.

A key reads `rk_<key_id>_<secret>`. The database keeps `key_hash` = HMAC-SHA256(pepper, key) in
hex, never the key: a leaked table without the server's pepper reveals nothing usable. The
key id locates the row; the hash comparison is constant-time, and an unknown id still costs
one HMAC so response times do not tell which ids exist.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemas.tables import metadata

KEY_PREFIX = "rk_"
SCOPES = frozenset({"admin", "settle", "ingest", "read"})
_KEY_FORMAT = re.compile(r"^rk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,128})$")
_table = metadata.tables["api_keys"]


@dataclass(frozen=True)
class ApiKey:
    """A stored key's public part: who it is and what it may do."""

    key_id: str
    name: str
    scopes: frozenset[str]
    rate_limit_per_s: int | None
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class CreatedKey:
    """A newly created key: `secret` is the full key, shown once and stored nowhere."""

    key: ApiKey
    secret: str


class InvalidScopeError(ValueError):
    """A scope that is not one of `SCOPES`."""


def hash_key(presented: str, pepper: bytes) -> str:
    """HMAC-SHA256 of the presented key under the pepper, hex."""
    return hmac.new(pepper, presented.encode(), hashlib.sha256).hexdigest()


def parse_scopes(scopes: list[str] | tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    """Validated scopes; raises InvalidScopeError for an unknown one."""
    unknown = sorted(set(scopes) - SCOPES)
    if unknown:
        raise InvalidScopeError(f"unknown scopes {unknown}; known: {sorted(SCOPES)}")
    return frozenset(scopes)


def _to_key(row: Any) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        name=row.name,
        scopes=frozenset(row.scopes.split()),
        rate_limit_per_s=row.rate_limit_per_s,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def create_key(
    connection: Connection,
    *,
    name: str,
    scopes: list[str] | tuple[str, ...] | frozenset[str],
    pepper: bytes,
    rate_limit_per_s: int | None = None,
    now: datetime | None = None,
) -> CreatedKey:
    """Store a new key (its hash only) and return it with its secret. The caller commits."""
    checked = parse_scopes(scopes)
    key_id = secrets.token_hex(8)
    secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    created_at = now or datetime.now(UTC)
    connection.execute(
        _table.insert().values(
            key_id=key_id,
            name=name,
            key_hash=hash_key(secret, pepper),
            scopes=" ".join(sorted(checked)),
            rate_limit_per_s=rate_limit_per_s,
            created_at=created_at,
            revoked_at=None,
            last_used_at=None,
        )
    )
    key = ApiKey(key_id, name, checked, rate_limit_per_s, created_at, None)
    return CreatedKey(key, secret)


# Hashed when the presented id is unknown, so both paths cost one HMAC.
_DUMMY_HASH = "0" * 64


def verify_key(connection: Connection, presented: str, pepper: bytes) -> ApiKey | None:
    """The key `presented` stands for, or None if it is malformed, unknown, wrong or revoked."""
    match = _KEY_FORMAT.match(presented)
    if match is None:
        return None
    row = connection.execute(sa.select(_table).where(_table.c.key_id == match.group(1))).first()
    expected = row.key_hash if row is not None else _DUMMY_HASH
    good = hmac.compare_digest(hash_key(presented, pepper), expected)
    if row is None or not good or row.revoked_at is not None:
        return None
    return _to_key(row)


def touch_key(connection: Connection, key_id: str, now: datetime | None = None) -> None:
    """Record that the key was used (the caller commits)."""
    connection.execute(
        _table.update()
        .where(_table.c.key_id == key_id)
        .values(last_used_at=now or datetime.now(UTC))
    )


def revoke_key(connection: Connection, key_id: str, now: datetime | None = None) -> ApiKey | None:
    """Revoke the key (idempotent); None when there is no such key. The caller commits."""
    row = connection.execute(sa.select(_table).where(_table.c.key_id == key_id)).first()
    if row is None:
        return None
    if row.revoked_at is None:
        when = now or datetime.now(UTC)
        connection.execute(_table.update().where(_table.c.key_id == key_id).values(revoked_at=when))
        row = connection.execute(sa.select(_table).where(_table.c.key_id == key_id)).one()
    return _to_key(row)


def list_keys(connection: Connection) -> list[ApiKey]:
    """Every key, oldest first (no secrets: there are none to show)."""
    rows = connection.execute(sa.select(_table).order_by(_table.c.created_at, _table.c.key_id))
    return [_to_key(row) for row in rows]
