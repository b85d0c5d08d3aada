"""Who is calling: API keys mapped to licenses, stored hashed.

An API key reads `rk_<kid>_<secret>`. The key file stores, per `kid`, only
HMAC-SHA256(pepper, kid + secret) and the license it stands for; the pepper is a server
setting kept out of that file, so a leaked key file alone does not let anyone test guesses.
The plain key is shown once, when it is issued.

A license is for exactly one model (LicenseNFT terms are immutable), so a key grants
inference on the Triton models billed against that model id and nothing else.

Pure apart from the random generator used to issue keys.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from metering.billing import ModelBilling
from metering.errors import AuthenticationFailed, Forbidden

KEY_PREFIX = "rk"
_KID_BYTES = 6


@dataclass(frozen=True)
class LicenseGrant:
    """An authenticated caller: the license its usage is billed to, and for which model."""

    license_id: int
    model_id: int
    principal: str
    """Who proved it: `key:<kid>` or `wallet:<address>` (for logs, never for billing)."""
    method: Literal["api_key", "wallet"] = "api_key"

    def authorize(self, billing: ModelBilling) -> None:
        """Raise `Forbidden` unless this license covers `billing`'s model."""
        if billing.model_id != self.model_id:
            raise Forbidden(
                f"license {self.license_id} is for model {self.model_id}, not for "
                f"{billing.name!r} (model {billing.model_id})"
            )


@dataclass(frozen=True)
class ApiKeyRecord:
    """One issued API key as stored: its id, its hash, and the license it stands for."""

    kid: str
    hash: str
    license_id: int
    model_id: int
    label: str = ""
    revoked: bool = False

    def to_json(self) -> dict[str, Any]:
        """The key file's form (license and model ids as decimal strings)."""
        return {
            "kid": self.kid,
            "hash": self.hash,
            "license_id": str(self.license_id),
            "model_id": str(self.model_id),
            "label": self.label,
            "revoked": self.revoked,
        }

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> ApiKeyRecord:
        """Parse one key file entry; raise `ValueError` naming what is wrong."""
        try:
            return cls(
                kid=str(entry["kid"]),
                hash=str(entry["hash"]),
                license_id=_uint(entry["license_id"], "license_id"),
                model_id=_uint(entry["model_id"], "model_id"),
                label=str(entry.get("label", "")),
                revoked=bool(entry.get("revoked", False)),
            )
        except KeyError as exc:
            raise ValueError(f"API key entry without {exc.args[0]!r}") from exc


def _uint(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{what} must be a decimal string")
    number = int(value)
    if number < 0:
        raise ValueError(f"{what} must not be negative")
    return number


def hash_key(pepper: bytes, kid: str, secret: str) -> str:
    """The stored form of a key: HMAC-SHA256 under the server pepper, hex."""
    return hmac.new(pepper, f"{kid}:{secret}".encode(), hashlib.sha256).hexdigest()


def split_key(presented: str) -> tuple[str, str] | None:
    """(kid, secret) of a well-formed key, or None."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


def issue_key(
    pepper: bytes, license_id: int, model_id: int, label: str = ""
) -> tuple[str, ApiKeyRecord]:
    """A new key: the plain text to hand to the licensee once, and the record to store."""
    kid = secrets.token_hex(_KID_BYTES)
    secret = secrets.token_urlsafe(32)
    record = ApiKeyRecord(kid, hash_key(pepper, kid, secret), license_id, model_id, label)
    return f"{KEY_PREFIX}_{kid}_{secret}", record


# Compared against when the kid is unknown, so that an unknown key costs the same time as a
# known one with a wrong secret: response timing must not tell which key ids exist.
_DUMMY_HASH = "0" * 64


class ApiKeyStore:
    """The issued keys, by kid (immutable: reloading builds a new store)."""

    def __init__(self, records: Iterable[ApiKeyRecord], pepper: bytes) -> None:
        if not pepper:
            raise ValueError("an API key store needs a non-empty pepper")
        self._pepper = pepper
        self._records: dict[str, ApiKeyRecord] = {}
        for record in records:
            if record.kid in self._records:
                raise ValueError(f"API key id {record.kid!r} appears twice")
            self._records[record.kid] = record

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[ApiKeyRecord]:
        """Every stored record."""
        return list(self._records.values())

    def authenticate(self, presented: str) -> LicenseGrant:
        """The grant of a presented key; `AuthenticationFailed` when it is malformed, unknown,
        revoked or wrong (one message for all: the caller learns nothing about which)."""
        parts = split_key(presented.strip())
        kid, secret = parts if parts is not None else ("", presented)
        record = self._records.get(kid)
        expected = record.hash if record is not None else _DUMMY_HASH
        actual = hash_key(self._pepper, kid, secret)
        # compare_digest: no early exit on the first differing byte.
        matches = hmac.compare_digest(expected, actual)
        if record is None or not matches or record.revoked:
            raise AuthenticationFailed("invalid or revoked API key")
        return LicenseGrant(record.license_id, record.model_id, f"key:{kid}")


def api_key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The API key of a request: `Authorization: Bearer <key>` or `x-api-key: <key>`
    (header names lower-case, as ASGI gives them)."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None
