"""The usage event: round trips, canonical bytes, signing payload, and hostile input."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import MAX_EVENT_BYTES
from schemas.errors import MalformedEvent
from schemas.usage import (
    UsageData,
    UsageEvent,
    encode_usage_event,
    kafka_key,
    parse_usage_event,
    signing_payload,
)
from tests.schemas.schema_factories import usage_event_doc


def _raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def test_a_valid_event_parses_with_typed_values() -> None:
    event = parse_usage_event(_raw(usage_event_doc()))
    assert event.data.model_id == 7
    assert event.data.license_id == 42
    assert event.data.units == 128
    assert event.time == datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)
    assert event.unix_time == 1714564800  # floor of .250
    assert event.signature == "0x" + "ee" * 65


def test_encoding_is_canonical_and_round_trips() -> None:
    event = parse_usage_event(_raw(usage_event_doc()))
    encoded = encode_usage_event(event)
    assert parse_usage_event(encoded) == event
    assert encoded == json.dumps(json.loads(encoded), sort_keys=True, separators=(",", ":")).encode(
        "utf-8"
    )
    document = json.loads(encoded)
    assert document["data"]["model_id"] == "7"  # uint256 as a decimal string
    assert document["time"] == "2024-05-01T12:00:00.250000Z"  # microseconds, always 6 digits


def test_optional_attributes_are_omitted_not_null() -> None:
    doc = usage_event_doc()
    for key in ("model_version", "request_id", "latency_ms", "billing_metric"):
        del doc["data"][key]
    del doc["keyid"], doc["signature"], doc["datacontenttype"]
    event = parse_usage_event(_raw(doc))
    document = json.loads(encode_usage_event(event))
    assert "signature" not in document
    assert "subject" not in document
    assert set(document["data"]) == {"model_id", "license_id", "units"}
    assert document["datacontenttype"] == "application/json"


def test_big_ids_survive_as_strings_or_integers() -> None:
    big = 2**256 - 1
    from_string = parse_usage_event(_raw(usage_event_doc(model_id=str(big))))
    raw = _raw(usage_event_doc()).replace(b'"model_id": "7"', f'"model_id": {big}'.encode())
    assert parse_usage_event(raw).data.model_id == big == from_string.data.model_id


def test_create_builds_an_unsigned_event_and_with_signature_signs_it() -> None:
    event = UsageEvent.create(
        id="u-1",
        source="//metering/node-1",
        time=datetime(2024, 5, 1, 12, tzinfo=UTC),
        data=UsageData(model_id=1, license_id=2, units=3),
        keyid="node-1",
    )
    assert event.signature is None
    assert event.type == "ai.royalty.usage.v1"
    signed = event.with_signature("0xABCD")
    assert signed.signature == "0xabcd"
    assert signing_payload(signed) == signing_payload(event)
    with pytest.raises(ValueError, match="signature"):
        event.with_signature("not hex")


def test_signing_payload_is_canonical_and_excludes_only_the_signature() -> None:
    doc = usage_event_doc()
    event = parse_usage_event(_raw(doc))
    payload = signing_payload(event)
    assert b"signature" not in payload
    assert b'"keyid":"node-1"' in payload
    expected = {k: v for k, v in doc.items() if k != "signature"}
    assert json.loads(payload) == {**expected, "time": "2024-05-01T12:00:00.250000Z"}
    # Same event, different key order and spacing: same bytes to sign.
    reordered = json.dumps(dict(reversed(list(doc.items()))), indent=4).encode()
    assert signing_payload(parse_usage_event(reordered)) == payload
    # Any change to a signed field changes the payload.
    tampered = parse_usage_event(_raw(usage_event_doc(units=129)))
    assert signing_payload(tampered) != payload


def test_kafka_key_is_the_model_id_in_decimal_ascii() -> None:
    event = parse_usage_event(_raw(usage_event_doc(model_id=str(2**200))))
    assert kafka_key(event) == str(2**200).encode("ascii")


@given(
    model_id=st.integers(0, 2**256 - 1),
    license_id=st.integers(0, 2**256 - 1),
    units=st.integers(1, 2**64 - 1),
    micros=st.integers(0, 10**6 - 1),
)
def test_round_trip_property(model_id: int, license_id: int, units: int, micros: int) -> None:
    event = UsageEvent.create(
        id="u",
        source="urn:node",
        time=datetime(2030, 1, 1, 0, 0, 0, micros, tzinfo=UTC),
        data=UsageData(model_id=model_id, license_id=license_id, units=units),
    )
    assert parse_usage_event(encode_usage_event(event)) == event
    assert event.unix_time == 1893456000


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = doc
        for key in parents:
            target = target[key]
        target[last] = value

    return mutate


def _delete(path: str) -> Mutation:
    def mutate(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = doc
        for key in parents:
            target = target[key]
        del target[last]

    return mutate


HOSTILE: dict[str, tuple[Mutation, str]] = {
    "missing id": (_delete("id"), "id"),
    "missing source": (_delete("source"), "source"),
    "missing specversion": (_delete("specversion"), "specversion"),
    "missing type": (_delete("type"), "type"),
    "missing time": (_delete("time"), "time"),
    "missing data": (_delete("data"), "data"),
    "missing units": (_delete("data.units"), "data.units"),
    "missing model_id": (_delete("data.model_id"), "data.model_id"),
    "empty id": (_set("id", ""), "id"),
    "long id": (_set("id", "x" * 129), "id"),
    "control char in id": (_set("id", "a\nb"), "id"),
    "empty source": (_set("source", ""), "source"),
    "source with spaces": (_set("source", "my node"), "source"),
    "old specversion": (_set("specversion", "0.3"), "specversion"),
    "unknown type version": (_set("type", "ai.royalty.usage.v2"), "type"),
    "foreign type": (_set("type", "com.example.other"), "type"),
    "text content type": (_set("datacontenttype", "text/plain"), "datacontenttype"),
    "naive time": (_set("time", "2024-05-01T12:00:00"), "time"),
    "non-UTC time": (_set("time", "2024-05-01T14:00:00+02:00"), "time"),
    "numeric time": (_set("time", 1714564800), "time"),
    "garbage time": (_set("time", "noon"), "time"),
    "pre-epoch time": (_set("time", "1969-07-20T20:17:00Z"), "time"),
    "zero units": (_set("data.units", 0), "data.units"),
    "negative units": (_set("data.units", -5), "data.units"),
    "float units": (_set("data.units", 1.5), "data.units"),
    "integral float units": (_set("data.units", 2.0), "data.units"),
    "string units": (_set("data.units", "5"), "data.units"),
    "boolean units": (_set("data.units", True), "data.units"),
    "units above uint64": (_set("data.units", 2**64), "data.units"),
    "float model_id": (_set("data.model_id", 7.0), "float"),
    "negative model_id": (_set("data.model_id", "-7"), "data.model_id"),
    "exponent model_id": (_set("data.model_id", "7e0"), "data.model_id"),
    "huge license_id": (_set("data.license_id", str(2**256)), "data.license_id"),
    "hex license_id": (_set("data.license_id", "0x2a"), "data.license_id"),
    "boolean license_id": (_set("data.license_id", False), "data.license_id"),
    "float latency": (_set("data.latency_ms", 9.5), "data.latency_ms"),
    "odd-length signature": (_set("signature", "0xabc"), "signature"),
    "non-hex signature": (_set("signature", "c2lnbmF0dXJl"), "signature"),
    "unknown attribute": (_set("traceparent", "00-abc"), "traceparent"),
    "uppercase extension": (_set("Signature", "0x00"), "Signature"),
    "unknown data field": (_set("data.price", "1"), "data.price"),
    "data not an object": (_set("data", "units=5"), "data"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_events_are_malformed_with_a_reason(case: str) -> None:
    mutate, expected_in_reason = HOSTILE[case]
    doc = usage_event_doc()
    mutate(doc)
    with pytest.raises(MalformedEvent) as caught:
        parse_usage_event(_raw(doc))
    assert expected_in_reason in caught.value.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "invalid JSON"),
        (b"{", "invalid JSON"),
        (b"[]", "JSON object"),
        (b'"event"', "JSON object"),
        (b"\xff\xfe{}", "UTF-8"),
        (b'{"id": NaN}', "NaN"),
        (b'{"id": "a", "id": "b"}', "duplicate key"),
        (b"[" * 100_000 + b"]" * 100_000, "more than"),
        (b" " * (MAX_EVENT_BYTES + 1), "more than"),
        (b'{"n": 1' + b"0" * 5000 + b"}", "invalid JSON"),
    ],
)
def test_undecodable_bytes_are_malformed_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedEvent) as caught:
        parse_usage_event(raw)
    assert reason in caught.value.reason


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    raw = b'{"data":' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    with pytest.raises(MalformedEvent):
        parse_usage_event(raw)


def test_reason_lists_several_faults_in_one_line() -> None:
    doc = usage_event_doc(units=0, model_id=1.5)
    del doc["id"]
    with pytest.raises(MalformedEvent) as caught:
        parse_usage_event(_raw(doc))
    reason = caught.value.reason
    assert "\n" not in reason
    assert "id: Field required" in reason
    assert "data.units" in reason
    assert "data.model_id: floats are never accepted" in reason
