"""Billing rules and the KServe v2 body reader (pure)."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering.billing import BillingTable, ModelBilling
from metering.errors import BillingError, InvalidInput, UnknownModel
from metering.kserve import InferenceBody

TOKENS = ModelBilling("llm", 7, "tokens", "tokens")
BATCH = ModelBilling("vision", 8, "batch_items", batch_input="image")
REQUESTS = ModelBilling("plain", 9)


def _body(doc: object) -> InferenceBody:
    return InferenceBody.parse(json.dumps(doc).encode())


def _binary_response(outputs: list[tuple[str, str, bytes]], extra: bytes = b"") -> InferenceBody:
    header = {
        "outputs": [
            {"name": n, "datatype": t, "shape": [1], "parameters": {"binary_data_size": len(d)}}
            for n, t, d in outputs
        ]
    }
    head = json.dumps(header).encode()
    return InferenceBody.parse(head + b"".join(d for _, _, d in outputs) + extra, len(head))


def test_requests_metric_is_one_per_request() -> None:
    assert REQUESTS.units(None, None) == 1
    assert not REQUESTS.reads_request
    assert not REQUESTS.reads_response


def test_batch_items_reads_the_named_input() -> None:
    request = _body(
        {
            "inputs": [
                {"name": "meta", "shape": [1], "datatype": "INT32", "data": [0]},
                {"name": "image", "shape": [5, 3, 2], "datatype": "FP32", "data": []},
            ]
        }
    )
    assert BATCH.units(request, None) == 5
    first_input = ModelBilling("m", 1, "batch_items")
    assert first_input.units(request, None) == 1


@given(st.lists(st.lists(st.integers(0, 10_000), max_size=4), max_size=6))
def test_tokens_sum_json_data(rows: list[list[int]]) -> None:
    response = _body({"outputs": [{"name": "tokens", "datatype": "INT64", "data": rows}]})
    assert TOKENS.units(None, response) == sum(map(sum, rows))


@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=16), st.binary(max_size=50))
def test_tokens_sum_binary_data(values: list[int], before: bytes) -> None:
    data = struct.pack(f"<{len(values)}q", *values)
    response = _binary_response([("completion", "BYTES", before), ("tokens", "INT64", data)])
    assert TOKENS.units(None, response) == sum(values)


@pytest.mark.parametrize(
    ("datatype", "code"), [("INT32", "i"), ("UINT16", "H"), ("INT8", "b"), ("UINT64", "Q")]
)
def test_tokens_in_every_integer_datatype(datatype: str, code: str) -> None:
    response = _binary_response([("tokens", datatype, struct.pack(f"<3{code}", 1, 2, 3))])
    assert TOKENS.units(None, response) == 6


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"outputs": []}, "no output"),
        ({"outputs": [{"name": "tokens", "datatype": "FP32", "data": [1.0]}]}, "not an integer"),
        ({"outputs": [{"name": "tokens", "datatype": "INT64"}]}, "no data"),
        ({"outputs": [{"name": "tokens", "datatype": "INT64", "data": [1.5]}]}, "non-integer"),
        ({"outputs": [{"name": "tokens", "datatype": "INT64", "data": [True]}]}, "non-integer"),
        ({"outputs": [{"name": "tokens", "datatype": "INT64", "data": [-9]}]}, "< 0"),
        ({"outputs": "x"}, "not a list"),
        ({"outputs": [{"datatype": "INT64"}]}, "no name"),
    ],
)
def test_unreadable_units_are_errors(doc: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        TOKENS.units(None, _body(doc))


def test_truncated_binary_is_an_error() -> None:
    head = json.dumps(
        {
            "outputs": [
                {"name": "tokens", "datatype": "INT64", "parameters": {"binary_data_size": 16}}
            ]
        }
    ).encode()
    with pytest.raises(InvalidInput, match="truncated"):
        TOKENS.units(None, InferenceBody.parse(head + b"\x00" * 8, len(head)))
    with pytest.raises(InvalidInput, match="does not fit"):
        InferenceBody.parse(head, len(head) + 1)


def test_token_models_refuse_requests_that_would_hide_the_units() -> None:
    TOKENS.check_request(_body({"inputs": []}))
    TOKENS.check_request(_body({"outputs": [{"name": "tokens"}, {"name": "text"}]}))
    with pytest.raises(BillingError, match="ask for it"):
        TOKENS.check_request(_body({"outputs": [{"name": "text"}]}))


@pytest.mark.parametrize(
    "raw", [b"{", b"[]", b'"x"', b'{"inputs": [{"name": "x", "shape": ["a"]}]}', b"\xff"]
)
def test_malformed_requests(raw: bytes) -> None:
    with pytest.raises(InvalidInput):
        BATCH.check_request(InferenceBody.parse(raw))


def test_billing_table() -> None:
    table = BillingTable({"llm": TOKENS, "vision": BATCH, "llm-v2": ModelBilling("llm-v2", 7)})
    assert table.require("llm") is TOKENS
    with pytest.raises(UnknownModel):
        table.require("nope")
    assert {b.name for b in table.by_model_id(7)} == {"llm", "llm-v2"}
    with pytest.raises(ValueError, match="describes"):
        BillingTable({"a": TOKENS})
    with pytest.raises(ValueError, match="units_output"):
        ModelBilling("x", 1, "tokens")
