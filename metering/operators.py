"""Operators allowed to push usage over the HTTP ingest, with hashed tokens.

An operator token reads `ro_<kid>_<secret>` and is stored, like API keys, as an HMAC under the
server pepper. Each operator may submit only events signed under its own signing key ids:
an operator cannot inject usage in another metering node's name even with a valid token.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from metering.auth import hash_key
from metering.errors import AuthenticationFailed

OPERATOR_PREFIX = "ro"
_DUMMY_HASH = "0" * 64  # see auth._DUMMY_HASH: equal timing for unknown ids


@dataclass(frozen=True)
class OperatorRecord:
    """One operator: its token id and hash, and the signing key ids it may submit under."""

    operator: str
    kid: str
    hash: str
    keyids: frozenset[str]
    revoked: bool = False

    def to_json(self) -> dict[str, Any]:
        """The operators file's form."""
        return {
            "operator": self.operator,
            "kid": self.kid,
            "hash": self.hash,
            "keyids": sorted(self.keyids),
            "revoked": self.revoked,
        }

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> OperatorRecord:
        """Parse one entry; raise `ValueError` naming what is wrong."""
        try:
            keyids = entry["keyids"]
            if not isinstance(keyids, list) or not all(isinstance(k, str) for k in keyids):
                raise ValueError("operator keyids must be a list of key ids")
            return cls(
                operator=str(entry["operator"]),
                kid=str(entry["kid"]),
                hash=str(entry["hash"]),
                keyids=frozenset(keyids),
                revoked=bool(entry.get("revoked", False)),
            )
        except KeyError as exc:
            raise ValueError(f"operator entry without {exc.args[0]!r}") from exc


def issue_operator_token(
    pepper: bytes, operator: str, keyids: Iterable[str]
) -> tuple[str, OperatorRecord]:
    """A new operator token (plain text, shown once) and the record to store."""
    kid = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = OperatorRecord(operator, kid, hash_key(pepper, kid, secret), frozenset(keyids))
    return f"{OPERATOR_PREFIX}_{kid}_{secret}", record


class OperatorStore:
    """Operator records by token id (immutable)."""

    def __init__(self, records: Iterable[OperatorRecord], pepper: bytes) -> None:
        if not pepper:
            raise ValueError("an operator store needs a non-empty pepper")
        self._pepper = pepper
        self._records = {r.kid: r for r in records}

    def records(self) -> list[OperatorRecord]:
        """Every stored record."""
        return list(self._records.values())

    def authenticate(self, token: str) -> OperatorRecord:
        """The operator presenting `token`, or `AuthenticationFailed`."""
        parts = token.strip().split("_", 2)
        valid = len(parts) == 3 and parts[0] == OPERATOR_PREFIX
        kid, secret = (parts[1], parts[2]) if valid else ("", token)
        record = self._records.get(kid)
        expected = record.hash if record is not None else _DUMMY_HASH
        matches = hmac.compare_digest(expected, hash_key(self._pepper, kid, secret))
        if record is None or not matches or record.revoked:
            raise AuthenticationFailed("invalid or revoked operator token")
        return record
