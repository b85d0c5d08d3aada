"""Requests signed by the license holder's wallet (an alternative to API keys).

The caller signs, with the wallet that owns the license NFT (EIP-191 `personal_sign`)::

    royalty-inference:v1
    model:<triton model name>
    license:<license id>
    timestamp:<unix seconds>
    body-sha256:<hex sha256 of the request body>

and sends `x-royalty-license`, `x-royalty-timestamp` and `x-royalty-signature` (0x hex). The
gateway recovers the signer, checks it owns the license (`LicenseDirectory`), that the time is
within the allowed skew, and that this exact signature was not used before within that window
(a captured request cannot be replayed to bill its owner twice).

The directory is a port: a static file today, the indexer's projection of `LicenseNFT` later.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from eth_account import Account
from eth_account.messages import encode_defunct

from metering.auth import LicenseGrant
from metering.errors import AuthenticationFailed

LICENSE_HEADER = "x-royalty-license"
TIMESTAMP_HEADER = "x-royalty-timestamp"
SIGNATURE_HEADER = "x-royalty-signature"
_MAX_REMEMBERED = 100_000
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@dataclass(frozen=True)
class LicenseInfo:
    """What the gateway needs to know about a license: its model and current owner."""

    license_id: int
    model_id: int
    owner: str
    revoked: bool = False
    expires_at: int = 0
    """Unix seconds; 0 = never (the LicenseNFT convention)."""


class LicenseDirectory(Protocol):
    """Port: license facts by id."""

    def get(self, license_id: int) -> LicenseInfo | None:
        """The license, or None when it does not exist."""
        ...


class StaticLicenseDirectory:
    """Licenses from a fixed mapping (the `licenses_file` adapter builds one)."""

    def __init__(self, licenses: Mapping[int, LicenseInfo]) -> None:
        self._licenses = dict(licenses)

    def get(self, license_id: int) -> LicenseInfo | None:
        """The license, or None."""
        return self._licenses.get(license_id)


def signing_message(model: str, license_id: int, timestamp: int, body: bytes) -> str:
    """The text a wallet signs to authorise one inference request."""
    return (
        "royalty-inference:v1\n"
        f"model:{model}\n"
        f"license:{license_id}\n"
        f"timestamp:{timestamp}\n"
        f"body-sha256:{hashlib.sha256(body).hexdigest()}"
    )


def sign_request(private_key: str, model: str, license_id: int, body: bytes) -> dict[str, str]:
    """The headers of a wallet-signed request (for clients and tests)."""
    timestamp = int(time.time())
    message = encode_defunct(text=signing_message(model, license_id, timestamp, body))
    signed = Account.sign_message(message, private_key=private_key)
    return {
        LICENSE_HEADER: str(license_id),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: "0x" + bytes(signed.signature).hex(),
    }


def is_wallet_signed(headers: Mapping[str, str]) -> bool:
    """Whether a request carries a wallet signature (then the body is needed to verify it)."""
    return SIGNATURE_HEADER in headers


class WalletVerifier:
    """Verifies wallet-signed requests against a license directory (thread-safe)."""

    def __init__(
        self,
        directory: LicenseDirectory,
        max_skew_s: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self.max_skew_s = max_skew_s
        self.clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def authenticate(self, headers: Mapping[str, str], model: str, body: bytes) -> LicenseGrant:
        """The grant of a signed request, or `AuthenticationFailed` saying what is wrong."""
        try:
            license_id = int(headers[LICENSE_HEADER])
            timestamp = int(headers[TIMESTAMP_HEADER])
            signature = bytes.fromhex(headers[SIGNATURE_HEADER].removeprefix("0x"))
        except (KeyError, ValueError) as exc:
            raise AuthenticationFailed(
                f"a wallet-signed request needs {LICENSE_HEADER}, {TIMESTAMP_HEADER} (unix "
                f"seconds) and {SIGNATURE_HEADER} (hex)"
            ) from exc
        now = self.clock()
        if abs(now - timestamp) > self.max_skew_s:
            raise AuthenticationFailed(
                f"signed request timestamp is more than {self.max_skew_s}s from server time"
            )
        info = self.directory.get(license_id)
        if info is None:
            raise AuthenticationFailed(f"unknown license {license_id}")
        if info.revoked or (info.expires_at and now >= info.expires_at):
            raise AuthenticationFailed(f"license {license_id} is revoked or expired")
        message = encode_defunct(text=signing_message(model, license_id, timestamp, body))
        try:
            signer = Account.recover_message(message, signature=signature)
        except Exception as exc:  # eth_keys raises several types for malformed signatures
            raise AuthenticationFailed("malformed wallet signature") from exc
        if signer.lower() != info.owner.lower():
            raise AuthenticationFailed(f"signature is not from the owner of license {license_id}")
        self._remember(_replay_key(signature), now)
        return LicenseGrant(license_id, info.model_id, f"wallet:{signer}", "wallet")

    def _remember(self, signature: str, now: float) -> None:
        with self._lock:
            while self._seen and (
                next(iter(self._seen.values())) < now or len(self._seen) > _MAX_REMEMBERED
            ):
                self._seen.popitem(last=False)
            if signature in self._seen:
                raise AuthenticationFailed("replayed signed request")
            self._seen[signature] = now + 2 * self.max_skew_s


def _replay_key(signature: bytes) -> str:
    # ECDSA signatures are malleable: (r, s) and (r, n - s) both verify. Keying the replay
    # cache on (r, low s) stops a replay that merely flips s.
    r = signature[:32]
    s = int.from_bytes(signature[32:64], "big")
    return r.hex() + format(min(s, _SECP256K1_N - s), "064x")
