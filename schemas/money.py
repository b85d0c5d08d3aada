"""Unsigned integer types for amounts and ids: `int` in Python, decimal strings in JSON.

Solidity's `uint256` does not fit a JSON number (IEEE doubles lose precision above 2**53), so
every amount and id travels as a canonical decimal string: ``"0"`` or digits without a leading
zero, at most 78 of them. Input may also be a Python/JSON integer (trusted in-process callers
and lenient producers); floats, booleans, negatives, values above the type's maximum and any
other string (``"1e3"``, ``" 1"``, ``"0x10"``, ``"1_000"``, ``"01"``) are rejected, because a
value that needs interpretation is a value two parties can read differently.

Smaller counters that always fit (block numbers, unix times, log indexes, units) are plain
JSON integers: `Uint64`, strict (no strings, floats or booleans).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, PlainSerializer, PlainValidator, Strict, WithJsonSchema

UINT256_MAX = 2**256 - 1
UINT64_MAX = 2**64 - 1
UINT256_DIGITS = len(str(UINT256_MAX))  # 78

_CANONICAL_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_DECIMAL_PATTERN = r"^(0|[1-9][0-9]{0,77})$"


def parse_uint(value: object, *, bits: int = 256) -> int:
    """Validate `value` as an unsigned integer of `bits` bits; return it as `int`.

    Accepts an `int` (not `bool`) or a canonical decimal string; raises `ValueError` with a
    reason a producer can act on otherwise.
    """
    maximum = 2**bits - 1
    if isinstance(value, bool):
        raise ValueError("expected an unsigned integer, got a boolean")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        # Check the length before int(): a megabyte of digits must not cost a parse.
        if len(value) > len(str(maximum)) or not _CANONICAL_DECIMAL.fullmatch(value):
            shown = value if len(value) <= 40 else value[:40] + "..."
            raise ValueError(
                f"expected a decimal string of at most {len(str(maximum))} digits without "
                f"sign, spaces or leading zeros, got {shown!r}"
            )
        number = int(value)
    elif isinstance(value, float):
        raise ValueError("floats are never accepted for integer amounts; send a decimal string")
    else:
        raise ValueError(f"expected a decimal string or an integer, got {type(value).__name__}")
    if number < 0:
        raise ValueError("must not be negative")
    if number > maximum:
        raise ValueError(f"exceeds the uint{bits} maximum 2**{bits} - 1")
    return number


def to_decimal(value: int) -> str:
    """The canonical decimal string of an unsigned integer (the JSON form of `Uint256`)."""
    return str(value)


def _uint256(value: Any) -> int:
    return parse_uint(value, bits=256)


Uint256 = Annotated[
    int,
    PlainValidator(_uint256),
    PlainSerializer(to_decimal, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _DECIMAL_PATTERN,
            "description": "uint256 as a canonical decimal string",
        },
        mode="serialization",
    ),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _DECIMAL_PATTERN},
                {"type": "integer", "minimum": 0},
            ],
            "description": "uint256: a canonical decimal string (preferred) or an integer",
        },
        mode="validation",
    ),
]
"""A `uint256` (amount, id, price): Python `int`, canonical decimal string in JSON."""

Uint64 = Annotated[int, Strict(), Field(ge=0, le=UINT64_MAX)]
"""A `uint64` counter (block number, unix seconds, index): a strict JSON integer."""

PositiveUint64 = Annotated[int, Strict(), Field(gt=0, le=UINT64_MAX)]
"""A strictly positive `uint64` (billing units, chain id)."""

Uint8 = Annotated[int, Strict(), Field(ge=0, le=2**8 - 1)]
"""A `uint8` (a Governor vote's `support`)."""

Bps = Annotated[int, Strict(), Field(ge=0, le=10_000)]
"""Basis points of a split: 0 to 10000 (a Solidity `uint16` capped at 100%)."""

BPS_TOTAL = 10_000
