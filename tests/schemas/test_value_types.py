"""Value types: the uint256 decimal-string codec, strict uint64, addresses, hashes, UTC times."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from eth_utils.address import to_checksum_address
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from schemas.evm import Address, Bytes32, HexData
from schemas.money import UINT256_MAX, Uint64, Uint256, parse_uint
from schemas.timestamps import UNIX_EPOCH, UtcDatetime, format_rfc3339, unix_seconds

UINT256 = TypeAdapter(Uint256)
UINT64 = TypeAdapter(Uint64)
ADDRESS = TypeAdapter(Address)
BYTES32 = TypeAdapter(Bytes32)
HEX_DATA = TypeAdapter(HexData)
UTC_DATETIME = TypeAdapter(UtcDatetime)

uint256s = st.one_of(
    st.integers(min_value=0, max_value=UINT256_MAX),
    st.sampled_from([0, 1, 2**53, 2**53 + 1, 2**63, 2**64, 2**255, UINT256_MAX]),
)


@given(uint256s)
def test_uint256_round_trips_as_a_decimal_string(value: int) -> None:
    encoded = UINT256.dump_json(value)
    assert encoded == f'"{value}"'.encode()
    assert UINT256.validate_json(encoded) == value
    assert UINT256.validate_python(str(value)) == value
    assert UINT256.validate_python(value) == value
    assert UINT256.dump_python(value) == value  # Python mode keeps the int


@given(uint256s)
def test_uint256_accepts_json_integers_exactly(value: int) -> None:
    # A JSON number above 2**53 must not pass through a double on the way in.
    assert UINT256.validate_json(str(value).encode()) == value


@given(st.integers(min_value=UINT256_MAX + 1, max_value=2**300))
def test_uint256_rejects_values_above_the_maximum(value: int) -> None:
    for candidate in (value, str(value)):
        with pytest.raises(ValidationError, match=r"exceeds the uint256 maximum|at most 78 digits"):
            UINT256.validate_python(candidate)


@given(st.integers(max_value=-1))
def test_uint256_rejects_negatives(value: int) -> None:
    with pytest.raises(ValidationError):
        UINT256.validate_python(value)
    with pytest.raises(ValidationError):
        UINT256.validate_python(str(value))


@given(st.text(max_size=90).filter(lambda s: re.fullmatch(r"0|[1-9][0-9]{0,77}", s) is None))
def test_uint256_rejects_every_non_canonical_string(text: str) -> None:
    with pytest.raises(ValidationError):
        UINT256.validate_python(text)


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_uint256_rejects_every_float(value: float) -> None:
    with pytest.raises(ValidationError, match="float"):
        UINT256.validate_python(value)


@pytest.mark.parametrize(
    "value",
    [
        True,
        False,
        1.0,
        "",
        " 1",
        "1 ",
        "+1",
        "-0",
        "01",
        "00",
        "1e3",
        "1.0",
        "0x10",
        "1_000",
        "١٢٣",  # Arabic-Indic digits: int() would accept them
        "9" * 79,
        None,
        [],
        {},
        b"1",
    ],
)
def test_uint256_rejects_hostile_inputs(value: Any) -> None:
    with pytest.raises(ValidationError):
        UINT256.validate_python(value)


@pytest.mark.parametrize("document", ["1.0", "1e3", "-1", "true", "null", '"1.5"', '"-1"'])
def test_uint256_rejects_hostile_json(document: str) -> None:
    with pytest.raises(ValidationError):
        UINT256.validate_json(document)


def test_parse_uint_honours_the_bit_width() -> None:
    assert parse_uint(str(2**64 - 1), bits=64) == 2**64 - 1
    with pytest.raises(ValueError, match="uint64"):
        parse_uint(2**64, bits=64)


@pytest.mark.parametrize("value", ["5", 5.0, True, -1, 2**64])
def test_uint64_is_a_strict_json_integer(value: Any) -> None:
    with pytest.raises(ValidationError):
        UINT64.validate_python(value)
    assert UINT64.validate_json("5") == 5
    assert UINT64.dump_json(2**64 - 1) == str(2**64 - 1).encode()


@given(st.binary(min_size=20, max_size=20))
def test_address_normalises_any_casing_to_eip55(raw: bytes) -> None:
    lower = "0x" + raw.hex()
    expected = to_checksum_address(lower)
    assert ADDRESS.validate_python(lower) == expected
    assert ADDRESS.validate_python("0x" + raw.hex().upper()) == expected
    assert ADDRESS.validate_python(expected) == expected


def test_address_rejects_a_wrong_checksum() -> None:
    good = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"
    bad = "0x5b38Da6a701c568545dCfcB03FcB875f56beddC4"
    with pytest.raises(ValidationError, match="checksum"):
        ADDRESS.validate_python(bad)
    assert ADDRESS.validate_python(good) == good


@pytest.mark.parametrize(
    "value",
    [
        "",
        "0x",
        "5B38Da6a701c568545dCfcB03FcB875f56beddC4",
        "0X5b38da6a701c568545dcfcb03fcb875f56beddc4",
        "0x5b38da6a701c568545dcfcb03fcb875f56beddc",
        "0x5b38da6a701c568545dcfcb03fcb875f56beddc4aa",
        "0xzz38da6a701c568545dcfcb03fcb875f56beddc4",
        " 0x5b38da6a701c568545dcfcb03fcb875f56beddc4",
        0x5B38DA6A701C568545DCFCB03FCB875F56BEDDC4,
        None,
    ],
)
def test_address_rejects_malformed_values(value: Any) -> None:
    with pytest.raises(ValidationError):
        ADDRESS.validate_python(value)


def test_bytes32_and_hex_data_normalise_to_lower_case() -> None:
    assert BYTES32.validate_python("0x" + "AB" * 32) == "0x" + "ab" * 32
    assert HEX_DATA.validate_python("0xDEADBEEF") == "0xdeadbeef"
    assert HEX_DATA.validate_python("0x") == "0x"


@pytest.mark.parametrize("value", ["0x" + "ab" * 31, "0x" + "ab" * 33, "ab" * 32, 1, None])
def test_bytes32_rejects_other_lengths_and_types(value: Any) -> None:
    with pytest.raises(ValidationError):
        BYTES32.validate_python(value)


@pytest.mark.parametrize("value", ["0xabc", "deadbeef", "0xgg", ""])
def test_hex_data_rejects_partial_bytes(value: str) -> None:
    with pytest.raises(ValidationError):
        HEX_DATA.validate_python(value)


@pytest.mark.parametrize(
    ("text", "unix"),
    [
        ("2024-05-01T12:00:00Z", 1714564800),
        ("2024-05-01T12:00:00+00:00", 1714564800),
        ("2024-05-01T12:00:00.999999Z", 1714564800),
        ("1970-01-01T00:00:00Z", 0),
    ],
)
def test_utc_datetime_parses_rfc3339_in_utc(text: str, unix: int) -> None:
    value = UTC_DATETIME.validate_json(json.dumps(text))
    assert value.tzinfo is UTC
    assert unix_seconds(value) == unix


@pytest.mark.parametrize(
    "value",
    [
        "2024-05-01T12:00:00",  # naive
        "2024-05-01T14:00:00+02:00",  # not UTC
        "1969-12-31T23:59:59Z",  # before the unix epoch
        "yesterday",
        1714564800,
        1714564800.5,
        datetime(2024, 5, 1, 12),  # naive object
        datetime(2024, 5, 1, 12, tzinfo=timezone(timedelta(hours=-5))),
    ],
)
def test_utc_datetime_rejects_naive_and_non_utc_times(value: Any) -> None:
    with pytest.raises(ValidationError):
        UTC_DATETIME.validate_python(value)


@given(st.datetimes(min_value=datetime(1970, 1, 1), timezones=st.just(UTC)))
def test_utc_datetime_round_trips_and_floors(value: datetime) -> None:
    encoded = UTC_DATETIME.dump_json(value)
    assert encoded.decode().endswith('Z"')
    assert UTC_DATETIME.validate_json(encoded) == value
    assert format_rfc3339(value) == json.loads(encoded)
    assert unix_seconds(value) == (value - UNIX_EPOCH) // timedelta(seconds=1)
