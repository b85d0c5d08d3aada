"""The JSON files metering reads: signing key, key ring, API keys, operators, licenses.

Written atomically (temp file, fsync, rename) with owner-only permissions, because three of
them hold secrets or hashes of secrets. The API key and operator files are re-read when they
change, so issuing or revoking a key needs no restart (`Reloading`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog

from metering.auth import ApiKeyRecord, ApiKeyStore
from metering.errors import ConfigurationError
from metering.operators import OperatorRecord, OperatorStore
from metering.signing import KeyRing, SigningKey
from metering.wallet_auth import LicenseInfo, StaticLicenseDirectory

log = structlog.get_logger(__name__)

T = TypeVar("T")


def read_json(path: Path) -> Any:
    """Parse a JSON file; `ConfigurationError` naming the file when it is unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc


def write_json_atomic(path: Path, doc: Any, mode: int = 0o600) -> None:
    """Replace `path` with `doc`, never leaving a half-written file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def load_signing_key(path: Path) -> SigningKey:
    """The node's signing key; `ConfigurationError` when missing or invalid."""
    if not path.is_file():
        raise ConfigurationError(
            f"no signing key at {path}: create one with `royalty metering keygen`"
        )
    try:
        return SigningKey.from_json(read_json(path))
    except ValueError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc


def load_key_ring(path: Path) -> KeyRing:
    """The key ring (empty when the file does not exist)."""
    if not path.is_file():
        return KeyRing()
    try:
        return KeyRing.from_json(read_json(path))
    except ValueError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc


def load_api_key_records(path: Path) -> list[ApiKeyRecord]:
    """The stored API keys (none when the file does not exist)."""
    if not path.is_file():
        return []
    doc = read_json(path)
    try:
        return [ApiKeyRecord.from_json(e) for e in doc.get("keys", [])]
    except (ValueError, AttributeError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc


def save_api_key_records(path: Path, records: list[ApiKeyRecord]) -> None:
    """Write the API key file."""
    write_json_atomic(path, {"keys": [r.to_json() for r in records]})


def load_operator_records(path: Path) -> list[OperatorRecord]:
    """The stored operators (none when the file does not exist)."""
    if not path.is_file():
        return []
    doc = read_json(path)
    try:
        return [OperatorRecord.from_json(e) for e in doc.get("operators", [])]
    except (ValueError, AttributeError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc


def save_operator_records(path: Path, records: list[OperatorRecord]) -> None:
    """Write the operators file."""
    write_json_atomic(path, {"operators": [r.to_json() for r in records]})


def load_license_directory(path: Path) -> StaticLicenseDirectory:
    """The license directory file: `{"licenses": [{license_id, model_id, owner, ...}]}`."""
    doc = read_json(path)
    try:
        infos = [
            LicenseInfo(
                license_id=int(e["license_id"]),
                model_id=int(e["model_id"]),
                owner=str(e["owner"]),
                revoked=bool(e.get("revoked", False)),
                expires_at=int(e.get("expires_at", 0)),
            )
            for e in doc.get("licenses", [])
        ]
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ConfigurationError(f"{path}: bad license entry: {exc}") from exc
    return StaticLicenseDirectory({i.license_id: i for i in infos})


class Reloading(Generic[T]):
    """A value built from a file, rebuilt when the file's mtime changes (checked at most once
    per `interval_s`). A file that fails to load keeps the previous value and logs why, so a
    half-edited file never locks every caller out."""

    def __init__(self, path: Path, build: Callable[[Path], T], interval_s: float = 1.0) -> None:
        self.path = path
        self._build = build
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._mtime = self._stat()
        self._value = build(path)
        self._checked = time.monotonic()

    def _stat(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def get(self) -> T:
        """The current value."""
        now = time.monotonic()
        if now - self._checked >= self.interval_s:
            with self._lock:
                self._checked = now
                mtime = self._stat()
                if mtime != self._mtime:
                    try:
                        self._value = self._build(self.path)
                        self._mtime = mtime
                        log.info("reloaded", path=str(self.path))
                    except (ConfigurationError, ValueError) as exc:
                        log.error("reload failed; keeping the previous version", error=str(exc))
        return self._value


def reloading_api_keys(
    path: Path, pepper: bytes, interval_s: float = 1.0
) -> Reloading[ApiKeyStore]:
    """The API key store of `path`, kept current."""
    return Reloading(path, lambda p: ApiKeyStore(load_api_key_records(p), pepper), interval_s)


def reloading_operators(
    path: Path, pepper: bytes, interval_s: float = 1.0
) -> Reloading[OperatorStore]:
    """The operator store of `path`, kept current."""
    return Reloading(path, lambda p: OperatorStore(load_operator_records(p), pepper), interval_s)
