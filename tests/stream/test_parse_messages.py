"""Parsing a poll's messages with their signatures verified in batches on threads: the result
is what parsing and verifying each message alone gives, in order, whatever the backend."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from metering.ed25519 import Ed25519Backend, NativeEd25519, SodiumEd25519
from metering.errors import BadSignature
from metering.signing import KeyRing, Signer, SigningKey
from schemas.usage import UsageData, UsageEvent, encode_usage_event
from stream.join import Rejected, parse
from stream.partition_batch import parse_messages


def _messages(ring_keys: list[SigningKey], count: int) -> list[tuple[int, bytes | str]]:
    ed, mac, unknown = ring_keys
    out: list[tuple[int, bytes | str]] = []
    for i in range(count):
        key = (ed, ed, ed, mac, unknown)[i % 5]
        event = UsageEvent.create(
            id=f"node:{i}",
            source="//metering/node",
            time=datetime(2026, 5, 1, 12, 0, i % 60, tzinfo=UTC),
            keyid=key.keyid,
            data=UsageData(model_id=1 + i % 3, license_id=40 + i % 7, units=1 + i),
        )
        raw = encode_usage_event(Signer(key).sign(event))
        if i % 13 == 4:  # tampered after signing
            raw = raw.replace(b'"units":', b'"units":9', 1)
        if i % 11 == 3:  # not in canonical form: decoded and validated in full
            raw = json.dumps(json.loads(raw), indent=1).encode()
        if i % 17 == 6:
            raw = b'{"specversion": "1.0", "id": '  # malformed
        out.append((1000 + i, raw if i % 2 else raw.decode()))
    return out


@pytest.mark.parametrize("backend", [NativeEd25519, SodiumEd25519])
def test_chunked_parse_is_parse_and_verify_one_by_one(
    backend: Callable[[], Ed25519Backend],
) -> None:
    ed, mac, unknown = (
        SigningKey.generate("ed25519", prefix="ed"),
        SigningKey.generate("hmac-sha256", prefix="mac"),
        SigningKey.generate("ed25519", prefix="unknown"),
    )
    ring = KeyRing([ed.verification_key(), mac.verification_key()], backend())
    messages = _messages([ed, mac, unknown], 413)
    got = parse_messages(messages, ring)
    assert [m.offset for m in got] == [offset for offset, _ in messages]
    verdicts = {"good": 0, "bad": 0, "malformed": 0}
    for message, (offset, raw) in zip(got, messages, strict=True):
        assert message.raw is raw
        item = parse(raw)
        if isinstance(item, Rejected):
            assert message.item == item
            assert message.encoded is None
            assert message.signature_error is None
            verdicts["malformed"] += 1
            continue
        assert message.item == item
        assert message.encoded == encode_usage_event(item)
        try:
            ring.verify(item)
            expected = None
        except BadSignature as exc:
            expected = str(exc)
        assert message.signature_error == expected, offset
        verdicts["good" if expected is None else "bad"] += 1
    assert min(verdicts.values()) > 10
