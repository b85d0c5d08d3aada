"""The canonical encoder and the defensive decoder: orjson where it agrees, the standard library
everywhere else, with the same answers and the same refusals."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import canonical_document, canonical_json, decode, strict_json_loads
from schemas.errors import MalformedEvent
from schemas.usage import UsageEvent


def stdlib_canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


# Any text a JSON string can carry (no lone surrogates: those are not UTF-8).
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
scalars = st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | texts
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_canonical_json_is_the_standard_librarys_canonical_form(value: Any) -> None:
    assert canonical_json(value) == stdlib_canonical(value)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_a_canonical_document_reads_back_as_the_strict_parser_reads_it(value: Any) -> None:
    encoded = stdlib_canonical(value)
    document = canonical_document(encoded)  # None: left to the strict parser
    assert document is None or document == strict_json_loads(encoded.decode("utf-8")) == value


in_64_bits = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(in_64_bits)
def test_canonical_documents_within_64_bit_integers_take_the_fast_path(value: Any) -> None:
    assert canonical_document(stdlib_canonical(value)) == value


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a":1,"a":2}',  # duplicate key: orjson would keep the last one
        b'{"a":{"b":1,"b":1}}',
        b'{"a":NaN}',
        b'{"a":Infinity}',
        b'{"a":123456789012345678901234567890}',  # orjson reads it as a float
        b'{"b":1,"a":2}',  # not canonical: key order
        b'{"a": 1}',  # not canonical: whitespace
        b'{"a":"\\u00e9"}',  # not canonical: an escape the encoder does not write
    ],
)
def test_documents_outside_canonical_form_take_the_strict_parser(raw: bytes) -> None:
    assert canonical_document(raw) is None


def test_values_orjson_refuses_or_spells_differently_take_the_standard_library() -> None:
    assert canonical_json({"n": 2**64}) == b'{"n":18446744073709551616}'
    assert canonical_json({1: "x"}) == b'{"1":"x"}'
    assert canonical_json({"a": None, "b": [None]}) == b'{"a":null,"b":[null]}'
    with pytest.raises(ValueError, match="not JSON compliant"):
        canonical_json({"x": math.nan})  # orjson would write null
    with pytest.raises(TypeError, match="not JSON serializable"):
        canonical_json({"x": object()})


def test_the_decoder_refuses_what_it_always_refused() -> None:
    with pytest.raises(MalformedEvent, match="duplicate key"):
        decode(UsageEvent, b'{"id":"a","id":"b"}')
    with pytest.raises(MalformedEvent, match="not valid UTF-8"):
        decode(UsageEvent, b'{"id":"\xff"}')
    with pytest.raises(MalformedEvent, match="not valid UTF-8"):
        decode(UsageEvent, '{"id":"\ud800"}')
    with pytest.raises(MalformedEvent, match="NaN is not JSON"):
        decode(UsageEvent, b'{"units":NaN}')
    with pytest.raises(MalformedEvent, match="must be a JSON object"):
        decode(UsageEvent, b"[1]")
