"""Signing and verifying usage events: both algorithms, key ids, rotation, both backends."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metering import ed25519
from metering.ed25519 import (
    Ed25519Backend,
    NativeEd25519,
    OpenSSLEd25519,
    PyCryptodomeEd25519,
    SodiumEd25519,
    default_backend,
)
from metering.errors import BadSignature
from metering.signing import KeyRing, Signer, SigningKey, VerificationKey
from schemas.usage import (
    UsageData,
    UsageEvent,
    encode_usage_event,
    parse_usage_event,
    signing_payload,
)


def _event(keyid: str, units: int = 3, when: datetime | None = None) -> UsageEvent:
    return UsageEvent.create(
        id="node-1:abc:1",
        source="//metering/node-1",
        time=when or datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=UTC),
        keyid=keyid,
        data=UsageData(model_id=1, license_id=42, units=units),
    )


@pytest.mark.parametrize("algorithm", ["ed25519", "hmac-sha256"])
def test_sign_then_verify_survives_the_wire(algorithm: str) -> None:
    key = SigningKey.generate(algorithm, prefix="node-1")  # type: ignore[arg-type]
    ring = KeyRing([key.verification_key()])
    signed = Signer(key).sign(_event(key.keyid))
    assert signed.signature is not None
    # Through the topic's encoder and decoder: the signature still verifies.
    ring.verify(parse_usage_event(encode_usage_event(signed)))


@pytest.mark.parametrize("algorithm", ["ed25519", "hmac-sha256"])
def test_tampering_is_detected(algorithm: str) -> None:
    key = SigningKey.generate(algorithm)  # type: ignore[arg-type]
    ring = KeyRing([key.verification_key()])
    signed = Signer(key).sign(_event(key.keyid))
    tampered = UsageEvent.model_validate(
        {**signed.model_dump(), "data": {**signed.data.model_dump(), "units": 300}}
    )
    with pytest.raises(BadSignature, match="does not verify"):
        ring.verify(tampered)
    with pytest.raises(BadSignature, match="unsigned"):
        ring.verify(_event(key.keyid))
    other = SigningKey.generate(algorithm)  # type: ignore[arg-type]
    with pytest.raises(BadSignature, match="unknown key id"):
        ring.verify(Signer(other).sign(_event(other.keyid)))


def test_keyid_is_part_of_what_is_signed() -> None:
    key = SigningKey.generate()
    with pytest.raises(ValueError, match="keyid"):
        Signer(key).sign(_event("someone-else"))


def test_rotation_keeps_old_events_verifiable_until_retired() -> None:
    old, new = SigningKey.generate(prefix="n"), SigningKey.generate(prefix="n")
    ring = KeyRing([old.verification_key()]).with_key(new.verification_key())
    early = Signer(old).sign(_event(old.keyid, when=datetime(2026, 1, 1, tzinfo=UTC)))
    late = Signer(old).sign(_event(old.keyid, when=datetime(2026, 6, 1, tzinfo=UTC)))
    fresh = Signer(new).sign(_event(new.keyid, when=datetime(2026, 6, 1, tzinfo=UTC)))
    retired = ring.retire(old.keyid, int(datetime(2026, 3, 1, tzinfo=UTC).timestamp()))
    retired.verify(early)
    retired.verify(fresh)
    with pytest.raises(BadSignature, match="retired"):
        retired.verify(late)
    ring.verify(late)  # rings are immutable: the original is unchanged


def test_key_ring_round_trips_and_refuses_conflicts() -> None:
    a, b = SigningKey.generate(), SigningKey.generate("hmac-sha256")
    ring = KeyRing([a.verification_key(), b.verification_key()]).retire(a.keyid, 123)
    doc = ring.to_json()
    assert "secret" not in doc["keys"][0]  # Ed25519 entries hold public keys only
    again = KeyRing.from_json(doc)
    assert dict(again) == dict(ring)
    with pytest.raises(ValueError, match="different key"):
        ring.with_key(VerificationKey(a.keyid, "ed25519", b"\x01" * 32))
    with pytest.raises(ValueError, match="twice"):
        KeyRing([a.verification_key(), a.verification_key()])
    assert SigningKey.from_json(a.to_json()) == a
    with pytest.raises(ValueError, match="unknown signing algorithm"):
        KeyRing.from_json({"keys": [{"keyid": "x", "algorithm": "rsa"}]})


def test_default_backend_is_the_native_library_where_cargo_built_it() -> None:
    # The bootstrap builds metering/native whenever cargo is on the machine.
    cargo = shutil.which("cargo") or (Path.home() / ".cargo" / "bin" / "cargo").is_file()
    expected = "native" if cargo else "libsodium"
    assert default_backend().name == expected


@pytest.mark.parametrize("native", [NativeEd25519, SodiumEd25519, OpenSSLEd25519])
@settings(max_examples=60, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=2000))
def test_native_backends_and_pycryptodome_agree(
    native: Callable[[], Ed25519Backend], seed: bytes, message: bytes
) -> None:
    fast, portable = native(), PyCryptodomeEd25519()
    public = portable.public_key(seed)
    assert fast.public_key(seed) == public
    signature = portable.sign(seed, message)
    assert fast.sign(seed, message) == signature
    assert fast.verify(public, message, signature)
    assert portable.verify(public, message, fast.sign(seed, message))
    assert not fast.verify(public, message + b"x", signature)
    assert not fast.verify(public, message, signature[:-1] + bytes([signature[-1] ^ 1]))
    assert not fast.verify(public, message, signature[:10])
    other = portable.public_key(bytes([seed[0] ^ 1]) + seed[1:])
    assert not fast.verify(other, message, signature)


def test_a_backend_that_accepts_a_forgery_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    class Lenient(SodiumEd25519):
        def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
            return True

    with pytest.raises(ValueError, match="another message"):
        ed25519._checked(Lenient)
    monkeypatch.setattr(ed25519, "_default", None)
    monkeypatch.setattr(ed25519, "SodiumEd25519", Lenient)
    monkeypatch.setenv(ed25519.NATIVE_LIBRARY_ENV, "/nonexistent/libroyalty_ed25519.so")
    assert ed25519.default_backend().name == "openssl"


def test_without_the_native_library_libsodium_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ed25519, "_default", None)
    monkeypatch.setenv(ed25519.NATIVE_LIBRARY_ENV, "/nonexistent/libroyalty_ed25519.so")
    with pytest.raises(OSError, match="not built"):
        NativeEd25519()
    assert ed25519.default_backend().name == "libsodium"


@pytest.mark.parametrize(
    "backend", [NativeEd25519, SodiumEd25519, OpenSSLEd25519, PyCryptodomeEd25519]
)
@pytest.mark.parametrize("size", [5, 300])  # below and above the batch size that uses threads
def test_batch_verdicts_are_verify_one_by_one(
    backend: Callable[[], Ed25519Backend], size: int
) -> None:
    ed, mac, retired, unknown = (
        SigningKey.generate("ed25519", prefix="ed"),
        SigningKey.generate("hmac-sha256", prefix="mac"),
        SigningKey.generate("ed25519", prefix="old"),
        SigningKey.generate("ed25519", prefix="unknown"),
    )
    when = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    ring = KeyRing(
        [ed.verification_key(), mac.verification_key(), retired.verification_key()],
        backend(),
    ).retire(retired.keyid, int(when.timestamp()) - 1)
    events: list[UsageEvent] = []
    for i in range(size):
        key = (ed, ed, ed, mac, retired, unknown)[i % 6]
        signed = Signer(key).sign(_event(key.keyid, units=1 + i, when=when))
        if i % 7 == 3:  # tampered after signing
            signed = UsageEvent.model_validate(
                {**signed.model_dump(), "data": {**signed.data.model_dump(), "units": 10**6}}
            )
        events.append(_event(ed.keyid) if i % 11 == 5 else signed)  # some unsigned
    expected: list[str | None] = []
    for event in events:
        try:
            ring.verify(event)
            expected.append(None)
        except BadSignature as exc:
            expected.append(str(exc))
    got = ring.verdicts([(event, signing_payload(event)) for event in events])
    assert got == expected
    assert None in got
    if size < 64:
        return
    reasons = {g.split(": ", 1)[1].split(" ")[0] for g in got if g is not None}
    assert {"unsigned", "unknown", "key", "signature"} <= reasons


def test_a_forked_child_verifies_batches_with_its_own_threads() -> None:
    key = SigningKey.generate("ed25519", prefix="fork")
    ring = KeyRing([key.verification_key()], SodiumEd25519())
    events = [Signer(key).sign(_event(key.keyid, units=1 + i)) for i in range(200)]
    items = [(event, signing_payload(event)) for event in events]
    assert ring.verdicts(items) == [None] * 200  # the parent's pool now has threads
    pid = os.fork()
    if pid == 0:  # the child: a pool inherited without its threads would hang here
        os._exit(0 if ring.verdicts(items) == [None] * 200 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
