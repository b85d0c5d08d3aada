"""The usage event's fast path (`trusted_usage_event`) against full decoding and validation.

The fast path reads the bytes a metering node writes without pydantic. Wherever it answers,
its answer must be exactly what `decode` and `encode` give (the same event, the same fields
set, the message its own canonical bytes, the same signing payload); where it declines, full
validation judges. The documents here are generated to sit on every edge of the model's rules
(text alphabets and lengths, number spellings and ranges, time spellings, nulls, extra and
missing keys, key order, whitespace) and then mutated byte by byte.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import MAX_EVENT_BYTES, canonical_json, decode
from schemas.errors import MalformedEvent
from schemas.timestamps import format_rfc3339
from schemas.usage import (
    UsageData,
    UsageEvent,
    encode_usage_event,
    parse_usage_event,
    read_usage_event,
    signing_payload,
    trusted_usage_event,
)

_PLAIN = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\')
_ANY_TEXT = st.one_of(
    st.text(_PLAIN, min_size=1, max_size=8),
    st.text(min_size=0, max_size=8),  # quotes, backslashes, controls, non-ASCII, empty
    st.sampled_from(['a"b', "a\\b", '\\"', "a\nb", "\x7f", "\x1f", "é", " ", "a b", "\u2028"]),
    st.text(_PLAIN, min_size=126, max_size=130),  # around the id's limit
    st.text(_PLAIN, min_size=255, max_size=257),  # around short text's limit
)
_DECIMALS = st.one_of(
    st.integers(0, 2**256 + 5).map(str),
    st.sampled_from(["", "00", "01", "-1", "+1", "1.0", " 1", "1e3", "٣"]),
    st.just(str(2**256 - 1)),
    st.just(str(2**256)),
)
_INTEGERS = st.one_of(
    st.integers(-2, 2**64 + 2),
    st.sampled_from([0, 1, 2**64 - 1, 2**64, True, False, 1.0, "5"]),
)
_INSTANTS = st.datetimes(
    min_value=datetime(1969, 12, 31, 23, 59), max_value=datetime(2200, 1, 1)
).map(lambda naive: naive.replace(tzinfo=UTC))
_TIMES = st.one_of(
    _INSTANTS.map(format_rfc3339),
    _INSTANTS.map(lambda t: t.isoformat()),  # +00:00
    _INSTANTS.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.000000Z")),
    _INSTANTS.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
    _INSTANTS.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"),
    st.sampled_from(
        [
            "2024-02-30T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:60Z",
            "0000-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999Z",
            "1970-01-01T00:00:00Z",
            "1970-01-01T00:00:00.000001Z",
            "2024-05-01t12:00:00Z",
            "2024-05-01T12:00:00z",
        ]
    ),
    st.integers(0, 2**40),
)
_SIGNATURES = st.one_of(
    st.binary(max_size=70).map(lambda b: "0x" + b.hex()),
    st.binary(min_size=1, max_size=8).map(lambda b: "0x" + b.hex().upper()),
    st.sampled_from(["0x", "0x0", "0xabc", "0x" + "e" * 131, "ee" * 4, "0xgg", "0X00"]),
)


_HOSTILE = {
    "model_id": st.one_of(_DECIMALS, _INTEGERS),
    "license_id": st.one_of(_DECIMALS, _INTEGERS),
    "units": _INTEGERS,
    "model_version": _ANY_TEXT,
    "request_id": _ANY_TEXT,
    "latency_ms": _INTEGERS,
    "billing_metric": _ANY_TEXT,
    "specversion": st.sampled_from(["1.1", 1.0, "1.0 "]),
    "id": _ANY_TEXT,
    "source": _ANY_TEXT,
    "type": st.sampled_from(["ai.royalty.usage.v2", "ai.royalty.usage.v1 "]),
    "time": _TIMES,
    "datacontenttype": st.sampled_from(["text/plain", "application/JSON"]),
    "subject": _ANY_TEXT,
    "keyid": _ANY_TEXT,
    "signature": _SIGNATURES,
}
_DATA_FIELDS = frozenset(UsageData.model_fields)


@st.composite
def _documents(draw: st.DrawFn) -> dict[str, Any]:
    """A metering node's event as JSON, with a few of its fields changed: to a hostile or an
    edge value, to null, removed, or joined by an unknown field."""
    document = json.loads(encode_usage_event(draw(_node_events())))
    changes = draw(
        st.one_of(
            st.sets(st.sampled_from([*_HOSTILE, "data", "extension"]), min_size=1, max_size=1),
            st.sets(st.sampled_from([*_HOSTILE, "data", "extension"]), min_size=2, max_size=3),
        )
    )
    for name in sorted(changes, key=lambda n: n == "data"):  # the data object's own last
        target = document["data"] if name in _DATA_FIELDS else document
        how = draw(st.sampled_from(["hostile"] * 6 + ["null", "absent"]))
        if name == "extension":
            target[name] = "x"
        elif how == "absent":
            target.pop(name, None)
        elif how == "null" or name == "data":
            target[name] = None
        else:
            target[name] = draw(_HOSTILE[name])
    return document


def _spellings(document: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """`document` in its canonical bytes, mostly, or spelled otherwise."""
    return st.one_of(
        st.just(canonical_json(document)),
        st.just(canonical_json(document)),
        st.just(canonical_json(document)),
        st.just(canonical_json(document)),
        st.just(json.dumps(document).encode()),  # key order and spaces as given
        st.just(json.dumps(document, sort_keys=True, ensure_ascii=True).encode()),
    )


def _assert_agrees(raw: bytes) -> bool:
    """The fast path's answer on `raw` is full decoding's; True when it answered."""
    trusted = trusted_usage_event(raw)
    try:
        expected: UsageEvent | None = decode(UsageEvent, raw)
    except MalformedEvent:
        expected = None
    read = read_usage_event(raw) if expected is not None else None
    if trusted is None:
        return False
    event, signed = trusted
    assert expected is not None, raw
    assert event == expected
    assert hash(event) == hash(expected)
    assert event.model_fields_set == expected.model_fields_set
    assert event.data.model_fields_set == expected.data.model_fields_set
    assert event.model_dump() == expected.model_dump()
    assert event.time.tzinfo is UTC
    assert encode_usage_event(expected) == raw
    assert signed == signing_payload(expected)
    assert read is not None
    assert (read.event, read.encoded, read.signed) == (event, raw, signed)
    return True


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_fast_path_answers_only_as_full_validation_does(data: st.DataObject) -> None:
    raw = data.draw(_spellings(data.draw(_documents())))
    _assert_agrees(raw)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_byte_changed_anywhere_never_slips_past_validation(data: st.DataObject) -> None:
    raw = encode_usage_event(data.draw(_node_events()))
    assert _assert_agrees(raw)
    at = data.draw(st.integers(0, len(raw)))
    cut = data.draw(st.integers(0, 2))
    changed = raw[:at] + data.draw(st.binary(max_size=3)) + raw[at + cut :]
    _assert_agrees(changed)


_NODE_TEXT = st.text(_PLAIN, min_size=1, max_size=40)


@st.composite
def _node_events(draw: st.DrawFn) -> UsageEvent:
    """An event as a metering node builds and signs it, its text in plain ASCII."""

    def maybe(value: st.SearchStrategy[Any]) -> Any:
        return draw(st.one_of(st.none(), value))

    event = UsageEvent.create(
        id=draw(st.text(_PLAIN, min_size=1, max_size=128)),
        source=draw(st.text(_PLAIN.filter(lambda c: c != " "), min_size=1, max_size=60)),
        time=draw(_INSTANTS.filter(lambda t: t.year >= 1970)),
        subject=maybe(_NODE_TEXT),
        keyid=maybe(_NODE_TEXT),
        data=UsageData(
            model_id=draw(st.integers(0, 2**256 - 1)),
            license_id=draw(st.integers(0, 2**256 - 1)),
            units=draw(st.integers(1, 2**64 - 1)),
            model_version=maybe(_NODE_TEXT),
            request_id=maybe(_NODE_TEXT),
            latency_ms=maybe(st.integers(0, 2**64 - 1)),
            billing_metric=maybe(_NODE_TEXT),
        ),
    )
    signature = maybe(st.binary(max_size=80).map(lambda b: "0x" + b.hex()))
    return event if signature is None else event.with_signature(signature)


@settings(max_examples=400)
@given(_node_events())
def test_what_a_metering_node_writes_takes_the_fast_path(event: UsageEvent) -> None:
    raw = encode_usage_event(event)
    assert _assert_agrees(raw)
    assert parse_usage_event(raw) == event
    assert parse_usage_event(raw.decode()) == event  # a str message reads the same


def test_an_oversized_message_is_refused_even_when_its_shape_is_plain() -> None:
    event = UsageEvent.create(
        id="a",
        source="//m",
        time=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=1),
        data=UsageData(model_id=1, license_id=2, units=3),
    ).with_signature("0x" + "ab" * MAX_EVENT_BYTES)
    raw = encode_usage_event(event)
    assert len(raw) > MAX_EVENT_BYTES
    assert trusted_usage_event(raw) is not None  # the shape alone would pass
    with pytest.raises(MalformedEvent, match="more than the"):
        read_usage_event(raw)
    with pytest.raises(MalformedEvent, match="more than the"):
        parse_usage_event(raw)


_ABSENT = object()
_EDGES: list[tuple[str, object]] = [
    *[("signature", v) for v in ["0x", "0x0", "0xabc", "0xAB", "0X00", "ab", None, _ABSENT]],
    *[
        ("time", v)
        for v in [
            "1969-12-31T23:59:59.999999Z",
            "1970-01-01T00:00:00Z",
            "1970-01-01T00:00:00.000001Z",
            "2024-05-01T12:00:00.000000Z",
            "2024-05-01T12:00:00.250Z",
            "2024-05-01T12:00:00+00:00",
            "2024-05-01T12:00:00",
            "2024-02-30T00:00:00Z",
            "2024-05-01T12:00:60Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01 12:00:00Z",
            1714564800,
        ]
    ],
    *[("id", v) for v in ["a" * 128, "a" * 129, "a\\b", 'a"b', "", " ", "é", "\x7f", "\t"]],
    *[("source", v) for v in ["a" * 2048, "a" * 2049, "a b", "a\\b", "", "é"]],
    *[(name, v) for name in ["subject", "keyid"] for v in ["a" * 256, "a" * 257, "", None]],
    ("specversion", "1.1"),
    ("type", "ai.royalty.usage.v2"),
    ("datacontenttype", _ABSENT),
    ("datacontenttype", "text/plain"),
    ("extension", "x"),
    *[("data.units", v) for v in [0, 1, 2**64 - 1, 2**64, -1, True, "5", 1.5, None]],
    *[("data.latency_ms", v) for v in [0, 2**64 - 1, 2**64, -1, False, "5", None, _ABSENT]],
    *[
        (f"data.{name}", v)
        for name in ["model_id", "license_id"]
        for v in ["0", "01", "", "-1", str(2**256 - 1), str(2**256), "9" * 79, 7, None, _ABSENT]
    ],
    *[
        (f"data.{name}", v)
        for name in ["model_version", "request_id", "billing_metric"]
        for v in ["a" * 256, "a" * 257, "", "a\\b", "é", None, _ABSENT]
    ],
    ("data.extension", "x"),
]


@pytest.mark.parametrize(("field", "value"), _EDGES, ids=[f"{f}={v!r:.20}" for f, v in _EDGES])
def test_each_rule_s_edge_is_judged_as_full_validation_judges_it(field: str, value: object) -> None:
    document = json.loads(
        encode_usage_event(
            UsageEvent.create(
                id="node-1:1",
                source="//metering/node-1",
                time=datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC),
                subject="s",
                keyid="node-1",
                data=UsageData(
                    model_id=7,
                    license_id=42,
                    units=3,
                    model_version="3",
                    request_id="r",
                    latency_ms=9,
                    billing_metric="tokens",
                ),
            ).with_signature("0x" + "ab" * 64)
        )
    )
    target = document["data"] if field.startswith("data.") else document
    name = field.removeprefix("data.")
    if value is _ABSENT:
        del target[name]
    else:
        target[name] = value
    _assert_agrees(canonical_json(document))
