"""EVM value types: addresses, 32-byte words and byte strings, as normalised hex strings.

Addresses are normalised to their EIP-55 checksum form, so the same account always compares
(and sorts, and hashes) equal however a producer cased it. A mixed-case input must carry a
valid checksum: a wrong one is the signature of a typo, and money sent to a typo is gone.
Hashes and byte strings are normalised to lower case.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any

from eth_utils.address import to_checksum_address
from pydantic import PlainValidator, WithJsonSchema

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_BYTES32 = re.compile(r"0x[0-9a-fA-F]{64}")
_HEX_DATA = re.compile(r"0x(?:[0-9a-fA-F]{2})*")


CHECKSUM_CACHE_SIZE = 16_384
"""Distinct addresses whose checksum form is kept (a few MiB at most)."""


@lru_cache(maxsize=CHECKSUM_CACHE_SIZE)
def checksum_address(lower_hex: str) -> str:
    """The EIP-55 form of a lower-case `0x` + 40 hex digit address.

    Cached because checksumming is a keccak per call and the same few addresses (contracts,
    stakers, operators) come back on almost every event: without the cache it was a quarter of
    the indexer's validation time. Pure, so caching cannot change an answer.
    """
    return str(to_checksum_address(lower_hex))


def parse_address(value: object) -> str:
    """Validate a 0x-prefixed 20-byte hex address; return its EIP-55 checksum form."""
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ValueError("expected an address: 0x followed by 40 hex digits")
    checksummed = checksum_address("0x" + value[2:].lower())
    body = value[2:]
    if body not in (body.lower(), body.upper()) and value != checksummed:
        raise ValueError(f"address {value} is mixed-case but its EIP-55 checksum is wrong")
    return checksummed


def parse_bytes32(value: object) -> str:
    """Validate a 0x-prefixed 32-byte hex word (hash, Merkle root); return it lower-cased."""
    if not isinstance(value, str) or not _BYTES32.fullmatch(value):
        raise ValueError("expected 32 bytes: 0x followed by 64 hex digits")
    return value.lower()


def parse_hex_data(value: object) -> str:
    """Validate 0x-prefixed hex of whole bytes (calldata, signatures); return it lower-cased."""
    if not isinstance(value, str) or not _HEX_DATA.fullmatch(value):
        raise ValueError("expected bytes: 0x followed by an even number of hex digits")
    return value.lower()


def _address(value: Any) -> str:
    return parse_address(value)


def _bytes32(value: Any) -> str:
    return parse_bytes32(value)


def _hex_data(value: Any) -> str:
    return parse_hex_data(value)


Address = Annotated[
    str,
    PlainValidator(_address),
    WithJsonSchema(
        {"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$", "description": "EIP-55 address"}
    ),
]
"""A 20-byte address, normalised to its EIP-55 checksum form."""

Bytes32 = Annotated[
    str,
    PlainValidator(_bytes32),
    WithJsonSchema(
        {"type": "string", "pattern": "^0x[0-9a-f]{64}$", "description": "32 bytes, lower hex"}
    ),
]
"""A 32-byte word (block/tx hash, Merkle root), lower-case 0x hex."""

HexData = Annotated[
    str,
    PlainValidator(_hex_data),
    WithJsonSchema(
        {"type": "string", "pattern": "^0x([0-9a-f]{2})*$", "description": "bytes, lower hex"}
    ),
]
"""Arbitrary bytes (calldata, a signature), lower-case 0x hex."""
