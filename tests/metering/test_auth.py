"""Credentials: hashed API keys, operator tokens, wallet-signed requests (pure)."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from eth_account import Account

from metering.auth import (
    ApiKeyRecord,
    ApiKeyStore,
    api_key_from_headers,
    hash_key,
    issue_key,
)
from metering.billing import ModelBilling
from metering.errors import AuthenticationFailed, Forbidden
from metering.operators import OperatorStore, issue_operator_token
from metering.wallet_auth import (
    LicenseInfo,
    StaticLicenseDirectory,
    WalletVerifier,
    sign_request,
)

PEPPER = b"pepper-for-tests"


def test_issued_keys_authenticate_to_their_license() -> None:
    plain, record = issue_key(PEPPER, license_id=42, model_id=7, label="acme")
    store = ApiKeyStore([record], PEPPER)
    grant = store.authenticate(plain)
    assert (grant.license_id, grant.model_id, grant.principal) == (42, 7, f"key:{record.kid}")
    grant.authorize(ModelBilling("llm", 7))
    with pytest.raises(Forbidden, match="model 7"):
        grant.authorize(ModelBilling("other", 8))


def test_only_a_hash_is_stored() -> None:
    plain, record = issue_key(PEPPER, 1, 1)
    stored = json.dumps(record.to_json())
    secret = plain.split("_", 2)[2]
    assert secret not in stored
    assert record.hash == hash_key(PEPPER, record.kid, secret)
    # Without the pepper the hash is not a plain sha256 of the key.
    assert record.hash != hashlib.sha256(plain.encode()).hexdigest()
    assert ApiKeyRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize(
    "presented",
    ["", "garbage", "rk__", "rk_abc", "rk_000000000000_x", "Bearer rk_x_y", "rk_{kid}_wrong"],
)
def test_bad_keys_fail_with_one_message(presented: str) -> None:
    _, record = issue_key(PEPPER, 1, 1)
    store = ApiKeyStore([record], PEPPER)
    with pytest.raises(AuthenticationFailed, match="invalid or revoked API key"):
        store.authenticate(presented.format(kid=record.kid))


def test_revoked_keys_and_other_peppers_fail() -> None:
    plain, record = issue_key(PEPPER, 1, 1)
    revoked = ApiKeyRecord(**{**record.__dict__, "revoked": True})
    with pytest.raises(AuthenticationFailed):
        ApiKeyStore([revoked], PEPPER).authenticate(plain)
    with pytest.raises(AuthenticationFailed):
        ApiKeyStore([record], b"another pepper").authenticate(plain)
    with pytest.raises(ValueError, match="pepper"):
        ApiKeyStore([record], b"")


def test_keys_come_from_bearer_or_x_api_key() -> None:
    assert api_key_from_headers({"authorization": "Bearer abc"}) == "abc"
    assert api_key_from_headers({"authorization": "bearer  abc "}) == "abc"
    assert api_key_from_headers({"x-api-key": "k"}) == "k"
    assert api_key_from_headers({"authorization": "Basic abc"}) is None
    assert api_key_from_headers({"authorization": "Bearer "}) is None
    assert api_key_from_headers({}) is None


def test_operator_tokens() -> None:
    token, record = issue_operator_token(PEPPER, "acme", ["node-a-1"])
    store = OperatorStore([record], PEPPER)
    assert store.authenticate(token).keyids == frozenset({"node-a-1"})
    with pytest.raises(AuthenticationFailed):
        store.authenticate(token + "x")
    with pytest.raises(AuthenticationFailed):
        store.authenticate("rk_" + token[3:])


class TestWalletSignedRequests:
    owner = Account.create()
    body = b'{"inputs": []}'

    def verifier(self, now: float | None = None, **info: object) -> WalletVerifier:
        license_info = LicenseInfo(
            **{"license_id": 42, "model_id": 7, "owner": self.owner.address, **info}  # type: ignore[arg-type]
        )
        clock = (lambda: now) if now is not None else time.time
        return WalletVerifier(StaticLicenseDirectory({42: license_info}), 300, clock)

    def test_owner_signature_is_accepted_once(self) -> None:
        verifier = self.verifier()
        headers = sign_request(self.owner.key.hex(), "llm", 42, self.body)
        grant = verifier.authenticate(headers, "llm", self.body)
        assert (grant.license_id, grant.model_id, grant.method) == (42, 7, "wallet")
        with pytest.raises(AuthenticationFailed, match="replayed"):
            verifier.authenticate(headers, "llm", self.body)

    def test_malleated_signature_is_still_a_replay(self) -> None:
        verifier = self.verifier()
        headers = sign_request(self.owner.key.hex(), "llm", 42, self.body)
        verifier.authenticate(headers, "llm", self.body)
        sig = bytes.fromhex(headers["x-royalty-signature"][2:])
        n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
        s = n - int.from_bytes(sig[32:64], "big")
        # (r, n - s) with the other recovery id recovers the same owner: a valid signature.
        flipped = sig[:32] + s.to_bytes(32, "big") + bytes([55 - sig[64]])
        headers["x-royalty-signature"] = "0x" + flipped.hex()
        with pytest.raises(AuthenticationFailed, match="replayed"):
            verifier.authenticate(headers, "llm", self.body)

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            ({"body": b"other"}, "not from the owner"),
            ({"model": "other-model"}, "not from the owner"),
            ({"signer": "stranger"}, "not from the owner"),
            ({"license": "43"}, "unknown license"),
            ({"skew": 1000}, "timestamp"),
            ({"signature": "0xzz"}, "needs"),
            ({"signature": "0x" + "00" * 65}, "malformed|not from"),
        ],
    )
    def test_refusals(self, change: dict[str, object], message: str) -> None:
        key = Account.create().key.hex() if change.get("signer") else self.owner.key.hex()
        headers = sign_request(key, "llm", 42, self.body)
        if "license" in change:
            headers["x-royalty-license"] = str(change["license"])
        if "signature" in change:
            headers["x-royalty-signature"] = str(change["signature"])
        now = time.time() + float(change.get("skew", 0))  # type: ignore[arg-type]
        body = change.get("body", self.body)
        model = str(change.get("model", "llm"))
        with pytest.raises(AuthenticationFailed, match=message):
            self.verifier(now).authenticate(headers, model, body)  # type: ignore[arg-type]

    def test_revoked_or_expired_license(self) -> None:
        headers = sign_request(self.owner.key.hex(), "llm", 42, self.body)
        with pytest.raises(AuthenticationFailed, match="revoked or expired"):
            self.verifier(revoked=True).authenticate(headers, "llm", self.body)
        with pytest.raises(AuthenticationFailed, match="revoked or expired"):
            self.verifier(expires_at=1).authenticate(headers, "llm", self.body)
