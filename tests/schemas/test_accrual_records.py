"""Accruals and dead letters: the two outcomes of every usage event."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.accrual import (
    MAX_DEAD_LETTER_DETAIL,
    MAX_DEAD_LETTER_PAYLOAD,
    Accrual,
    DeadLetter,
    RejectReason,
    encode_accrual,
    kafka_key,
)
from schemas.chain import ChainPosition
from schemas.codec import encode
from tests.schemas.schema_factories import PAYER, accrual_doc

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_accrual_round_trips_with_amounts_as_strings() -> None:
    accrual = Accrual.model_validate(accrual_doc(payer=PAYER.lower()))
    assert accrual.payer == PAYER
    assert accrual.state_interval == ChainPosition(12, 3)
    assert accrual.fee_e6 == 192_000_000
    document = json.loads(accrual.model_dump_json())
    assert document["fee_e6"] == "192000000"
    assert document["state_interval"] == [12, 3]
    assert Accrual.model_validate_json(accrual.model_dump_json()) == accrual
    assert kafka_key(accrual) == b"7"


def test_accrual_fee_is_exact_at_uint256_scale() -> None:
    price = 2**190
    units = 2**64 - 1
    accrual = Accrual.model_validate(
        accrual_doc(units=units, price_per_unit_e6=str(price), fee_e6=str(units * price))
    )
    assert accrual.fee_e6 == units * price


@pytest.mark.parametrize(
    "change",
    [
        {"fee_e6": str(128 * 1_500_000 + 1)},
        {"fee_e6": 192000000.0},
        {"units": 0},
        {"operator_bps": 2001},
        {"payer": "0x00"},
        {"state_interval": [12]},
        {"state_interval": [12, "3"]},
        {"epoch": -1},
        {"usage_id": ""},
        {"price_per_unit_e6": "1.5"},
        {"surprise": True},
    ],
)
def test_inconsistent_accruals_are_rejected(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Accrual.model_validate(accrual_doc(**change))


def test_reject_reasons_are_exactly_the_design_codes() -> None:
    assert {reason.value for reason in RejectReason} == {
        "malformed",
        "bad_signature",
        "duplicate",
        "unknown_model",
        "unknown_license",
        "model_mismatch",
        "expired",
        "revoked",
    }


def test_dead_letter_from_hostile_bytes_is_storable() -> None:
    raw = b'{"id": "\xff\x00' + b"x" * (MAX_DEAD_LETTER_PAYLOAD + 10)
    letter = DeadLetter.from_raw(
        raw, reason=RejectReason.MALFORMED, detail="bad\x00" * 1000, received_at=NOW
    )
    assert letter.payload_truncated
    assert len(letter.payload) == MAX_DEAD_LETTER_PAYLOAD
    assert "\x00" not in letter.payload
    assert "\ufffd" in letter.payload
    assert len(letter.detail) == MAX_DEAD_LETTER_DETAIL
    assert letter.usage_id is None
    assert DeadLetter.model_validate_json(letter.model_dump_json()) == letter


def test_dead_letter_keeps_small_payloads_verbatim() -> None:
    letter = DeadLetter.from_raw(
        '{"id": "u-1"}',
        reason=RejectReason.DUPLICATE,
        detail="already seen",
        received_at=NOW,
        usage_id="u-1",
        source="//metering/node-1",
    )
    assert letter.payload == '{"id": "u-1"}'
    assert not letter.payload_truncated
    document = json.loads(letter.model_dump_json())
    assert document["reason"] == "duplicate"
    assert document["received_at"] == "2024-05-01T12:00:00Z"


@pytest.mark.parametrize(
    "change",
    [
        {"reason": "timeout"},
        {"payload": "a\x00b"},
        {"payload": "x" * (MAX_DEAD_LETTER_PAYLOAD + 1)},
        {"received_at": "2024-05-01T12:00:00"},
    ],
)
def test_invalid_dead_letters_are_rejected(change: dict[str, Any]) -> None:
    doc = {"reason": "malformed", "detail": "", "payload": "", "received_at": NOW, **change}
    with pytest.raises(ValidationError):
        DeadLetter.model_validate(doc)


_U64 = st.integers(0, 2**64 - 1)


@st.composite
def _accruals(draw: st.DrawFn) -> Accrual:
    units = draw(st.integers(1, 2**64 - 1))
    price = draw(st.integers(0, (2**256 - 1) // units))
    operator_bps = draw(st.integers(0, 10_000))
    treasury_bps = draw(st.integers(0, 10_000 - operator_bps))
    address = st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex())
    return Accrual(
        usage_id=draw(
            st.text(
                # Any text an id may hold: no controls, and no lone surrogates (not text).
                st.characters(
                    min_codepoint=0x20, exclude_characters="\x7f", exclude_categories=("Cs",)
                ),
                min_size=1,
                max_size=128,
            )
        ),
        epoch=draw(_U64),
        model_id=draw(st.integers(0, 2**256 - 1)),
        license_id=draw(st.integers(0, 2**256 - 1)),
        payer=draw(address),
        event_time=draw(_U64),
        units=units,
        price_per_unit_e6=price,
        fee_e6=units * price,
        state_interval=ChainPosition(draw(_U64), draw(_U64)),
        operator=draw(address),
        operator_bps=operator_bps,
        treasury_bps=treasury_bps,
        contributors_bps=10_000 - operator_bps - treasury_bps,
    )


@given(_accruals())
def test_an_accrual_s_message_is_its_canonical_encoding(accrual: Accrual) -> None:
    assert encode_accrual(accrual) == encode(accrual)
    assert Accrual.model_validate_json(encode_accrual(accrual)) == accrual
