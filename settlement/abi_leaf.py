"""ABI encoding of Merkle leaves: `abi.encode(leafEncoding, value)`, as OpenZeppelin hashes it.

Leaves of static elementary types (the payout leaf `(uint256, address, uint256)` among them) are
one 32-byte word per item, so they are encoded column by column with bulk checks: the fast path
that lets a million-leaf tree build in seconds. Any other encoding (strings, arrays, tuples) goes
through eth_abi, after the same validation. Addresses follow the project's one rule,
`schemas.evm.parse_address`; see "addresses" below for why a column does not call it per value.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TypeAlias

from eth_abi.abi import encode as _abi_encode
from eth_abi.exceptions import ABITypeError, EncodingError, ParseError
from eth_abi.grammar import ABIType, BasicType, TupleType
from eth_abi.grammar import normalize as _normalize_abi_type
from eth_abi.grammar import parse as _parse_abi_type

from schemas.evm import parse_address
from settlement.errors import InvalidInputError
from settlement.keccak import keccak256_many

#: One ABI value in a leaf: integers as `int` or decimal / 0x-hex `str` (as in OZ dumps),
#: addresses and byte strings as 0x-hex `str` (or `bytes`), `bool`, `str` for `string`, and
#: sequences for arrays and tuples.
LeafValue: TypeAlias = int | str | bool | bytes | Sequence["LeafValue"]


# --- addresses ---------------------------------------------------------------------------------
#
# The rule is schemas.evm.parse_address: "0x" and 40 hex digits, all in one letter case or in
# mixed case carrying a valid EIP-55 checksum (a wrong one is a typo). This is stricter than OZ,
# which also takes a wrong checksum: the root is the same, but money sent to a typo is gone.
#
# One value goes through parse_address itself. A column cannot: parse_address checksums each
# address through eth_utils (~12 us), 12 s for a million leaves, twice the whole tree's build.
# `_parse_column` applies the same rule to a column with C-speed string operations and one batch
# of keccak hashes, only when some address is in mixed case. tests/unit/test_merkle.py checks
# with hypothesis that it accepts and refuses exactly what parse_address does.

# EIP-55 in bulk: a letter of the lowercase address is upper-cased when the matching nibble of
# keccak256(address) is >= 8. With these tables that is one AND and one XOR on big integers per
# batch (0x20 is the ASCII case bit), instead of a Python loop over 40 characters per address.
_HASH_NIBBLE_CASE_BIT = bytes.maketrans(b"0123456789abcdef", b"\x00" * 8 + b"\x20" * 8)
_LETTER_CASE_BIT = bytes.maketrans(b"0123456789abcdef", b"\x00" * 10 + b"\x20" * 6)


def checked_address(value: object) -> str:
    """`schemas.evm.parse_address(value)` (the EIP-55 form), raising InvalidInputError."""
    try:
        return parse_address(value)
    except ValueError as exc:
        raise InvalidInputError(f"invalid address {value!r}: {exc}") from exc


def parse_addresses(values: Sequence[object]) -> list[str]:
    """`checked_address` of every value, in order, in bulk (~0.5 us an address, not ~12 us).

    Raises InvalidInputError naming the first value that parse_address refuses.
    """
    raw, checksummed = _parse_column(values)
    digits = _eip55_digits(raw) if checksummed is None else checksummed
    return ["0x" + digits[i : i + 40] for i in range(0, len(digits), 40)]


def _parse_column(values: Sequence[object]) -> tuple[bytes, str | None]:
    """The 20-byte values of addresses that all pass parse_address, concatenated.

    Also returns their concatenated EIP-55 digits when checking the letter case needed them.
    """
    texts: Sequence[str] = values  # type: ignore[assignment]  # checked just below
    if (
        not texts
        or set(map(type, texts)) != {str}
        or set(map(len, texts)) != {42}
        or {text[:2] for text in texts} != {"0x"}
    ):
        return _parse_each(values), None
    digits = "".join([text[2:] for text in texts])
    # bytes.fromhex skips whitespace, so a space or tab shows as a short result, not an error.
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raw = b""
    if len(raw) != 20 * len(texts):
        return _parse_each(values), None
    lower = raw.hex()
    if digits == lower or digits == lower.upper():  # one letter case: no checksum to check
        return raw, None
    checksummed = _eip55_digits(raw)
    if digits != checksummed:  # not all checksummed: each must be in one case or checksummed
        upper = lower.upper()
        for i, text in enumerate(texts):
            span = slice(40 * i, 40 * i + 40)
            if digits[span] not in (lower[span], upper[span], checksummed[span]):
                checked_address(text)  # raises, with parse_address's reason
    return raw, checksummed


def _parse_each(values: Sequence[object]) -> bytes:
    """`_parse_column` of a column that failed its bulk checks: raises for its first bad value.

    Halves go back through the bulk checks, so one bad value among a million costs a few bulk
    passes rather than a million parse_address calls.
    """
    if len(values) <= 64:
        return b"".join([bytes.fromhex(checked_address(value)[2:]) for value in values])
    middle = len(values) // 2
    return _parse_column(values[:middle])[0] + _parse_column(values[middle:])[0]


def _eip55_digits(raw: bytes) -> str:
    """The EIP-55 hex digits (40 per address, no "0x") of concatenated 20-byte addresses."""
    digits = raw.hex().encode("ascii")
    width = len(digits)
    hashes = keccak256_many(digits[i : i + 40] for i in range(0, width, 40))
    hash_hex = b"".join([digest[:20] for digest in hashes])
    hash_bits = hash_hex.hex().encode("ascii").translate(_HASH_NIBBLE_CASE_BIT)
    case_bits = int.from_bytes(hash_bits, "big") & int.from_bytes(
        digits.translate(_LETTER_CASE_BIT), "big"
    )
    return (int.from_bytes(digits, "big") ^ case_bits).to_bytes(width, "big").decode("ascii")


# --- values ------------------------------------------------------------------------------------


def _is_hex(text: str) -> bool:
    return text.isascii() and all(c in "0123456789abcdefABCDEF" for c in text)


def _to_int(value: object) -> int:
    # bool is an int subclass but never a number here (OZ's abi-utils refuses it too). Strings
    # are parsed strictly: int() alone would also take spaces, underscores and other bases.
    if type(value) is int:
        return value
    if isinstance(value, str):
        if value[:2] in ("0x", "0X") and len(value) > 2 and _is_hex(value[2:]):
            return int(value[2:], 16)
        digits = value[1:] if value[:1] == "-" else value
        if digits.isascii() and digits.isdecimal():
            return int(value, 10)
    raise InvalidInputError(f"expected an integer or a decimal/0x-hex string, got {value!r}")


def hex_bytes(value: object) -> bytes:
    """`bytes` as given, or the bytes of a 0x-prefixed hex string of whole bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str) and value[:2] == "0x" and len(value) % 2 == 0 and _is_hex(value[2:]):
        return bytes.fromhex(value[2:])
    raise InvalidInputError(f"expected bytes or a 0x-prefixed hex string, got {value!r}")


class _Word:
    """Encoder of one static elementary ABI type as its single 32-byte word."""

    def one(self, value: object) -> bytes:
        """Validate and encode one value."""
        raise NotImplementedError

    def many(self, column: list[object]) -> list[bytes]:
        """Encode a column of values; subclasses add bulk fast paths for the common forms."""
        return [self.one(value) for value in column]


class _UintWord(_Word):
    def __init__(self, bits: int) -> None:
        self.bits, self.limit = bits, 1 << bits

    def one(self, value: object) -> bytes:
        number = _to_int(value)
        if not 0 <= number < self.limit:
            raise InvalidInputError(f"{number} out of range for uint{self.bits}")
        return number.to_bytes(32, "big")

    def many(self, column: list[object]) -> list[bytes]:
        # Checks run once over the column at C speed (set/min/max), not once per value.
        if set(map(type, column)) == {int}:
            ints: list[int] = column  # type: ignore[assignment]
            if min(ints) >= 0 and max(ints) < self.limit:
                return [number.to_bytes(32, "big") for number in ints]
        return super().many(column)


class _IntWord(_Word):
    def __init__(self, bits: int) -> None:
        self.bits, self.bound = bits, 1 << (bits - 1)

    def one(self, value: object) -> bytes:
        number = _to_int(value)
        if not -self.bound <= number < self.bound:
            raise InvalidInputError(f"{number} out of range for int{self.bits}")
        return number.to_bytes(32, "big", signed=True)


_ADDRESS_PAD = bytes(12)


class _AddressWord(_Word):
    def one(self, value: object) -> bytes:
        # 20 raw bytes have no letter case to check; text follows parse_address.
        if isinstance(value, bytes) and len(value) == 20:
            return _ADDRESS_PAD + value
        return _ADDRESS_PAD + bytes.fromhex(checked_address(value)[2:])

    def many(self, column: list[object]) -> list[bytes]:
        if set(map(type, column)) != {str}:
            return super().many(column)  # raw bytes among the text
        raw, _ = _parse_column(column)
        pad = _ADDRESS_PAD
        return [pad + raw[i : i + 20] for i in range(0, len(raw), 20)]


class _BoolWord(_Word):
    def one(self, value: object) -> bytes:
        if not isinstance(value, bool):
            raise InvalidInputError(f"expected a bool, got {value!r}")
        return bytes(31) + (b"\x01" if value else b"\x00")


class _FixedBytesWord(_Word):
    def __init__(self, size: int) -> None:
        self.size = size

    def one(self, value: object) -> bytes:
        raw = hex_bytes(value)
        if len(raw) != self.size:
            raise InvalidInputError(f"expected {self.size} bytes for bytes{self.size}")
        return raw + bytes(32 - self.size)


def _static_word(abi_type: ABIType) -> _Word | None:
    """The word encoder of a static elementary type, or None for any other type."""
    if not isinstance(abi_type, BasicType) or abi_type.arrlist:
        return None
    base, sub = abi_type.base, abi_type.sub
    if base == "uint" and isinstance(sub, int):
        return _UintWord(sub)
    if base == "int" and isinstance(sub, int):
        return _IntWord(sub)
    if base == "address":
        return _AddressWord()
    if base == "bool":
        return _BoolWord()
    if base == "bytes" and isinstance(sub, int):
        return _FixedBytesWord(sub)
    return None


def _type_str(abi_type: ABIType) -> str:
    return str(abi_type.to_type_str())  # type: ignore[no-untyped-call]


def _parse_leaf_type(type_str: str) -> ABIType:
    # normalize: "uint" means "uint256"; validate: refuses sizes such as "uint7".
    abi_type: ABIType = _parse_abi_type(_normalize_abi_type(type_str))  # type: ignore[no-untyped-call]
    abi_type.validate()  # type: ignore[no-untyped-call]
    return abi_type


def _sequence(value: object, what: str) -> Sequence[object]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidInputError(f"expected a sequence for {what}, got {value!r}")
    return value


def _normalize(abi_type: ABIType, value: object) -> object:
    """Convert a value to what eth_abi.encode takes, validated as on the fast path."""
    type_str = _type_str(abi_type)
    if abi_type.is_array:
        items = _sequence(value, type_str)
        dims = abi_type.arrlist[-1] if abi_type.arrlist else ()
        if dims and len(items) != dims[0]:
            raise InvalidInputError(f"expected {dims[0]} items for {type_str}")
        return [_normalize(abi_type.item_type, item) for item in items]
    if isinstance(abi_type, TupleType):
        items = _sequence(value, type_str)
        if len(items) != len(abi_type.components):
            raise InvalidInputError(f"wrong number of items for {type_str}")
        return tuple(_normalize(t, v) for t, v in zip(abi_type.components, items, strict=True))
    assert isinstance(abi_type, BasicType)
    word = _static_word(abi_type)
    if word is not None:
        encoded = word.one(value)  # validates
        if isinstance(word, _AddressWord):
            return "0x" + encoded[12:].hex()  # lowercase: eth_abi refuses bad checksums
        if isinstance(word, _FixedBytesWord):
            return encoded[: word.size]
        return value if isinstance(word, _BoolWord) else _to_int(value)
    if abi_type.base == "string" and isinstance(value, str):
        return value
    if abi_type.base == "bytes" and abi_type.sub is None:
        return hex_bytes(value)
    raise InvalidInputError(f"unsupported ABI type {type_str} or bad value {value!r}")


class LeafCodec:
    """`abi.encode(leaf_encoding, value)` for one leaf encoding, for one value or many.

    When every type is static and elementary (the payout leaf `(uint256, address, uint256)`
    among them) the encoding is one 32-byte word per item, so values are encoded column by
    column with bulk checks and joined: ~10x cheaper than eth_abi per leaf. Other encodings
    (strings, arrays, tuples) go through eth_abi.
    """

    def __init__(self, leaf_encoding: tuple[str, ...]) -> None:
        try:
            self.types = [_parse_leaf_type(t) for t in leaf_encoding]
        except (ParseError, ABITypeError) as exc:
            raise InvalidInputError(f"invalid leaf encoding {list(leaf_encoding)!r}") from exc
        if not self.types:
            raise InvalidInputError("a leaf encoding names at least one type")
        self.arity = len(self.types)
        self.type_strings = [_type_str(t) for t in self.types]
        words = [_static_word(t) for t in self.types]
        self.words = [w for w in words if w is not None] if None not in words else None

    def _check_arity(self, value: Sequence[object]) -> None:
        if len(value) != self.arity:
            raise InvalidInputError(f"expected {self.arity} values, got {list(value)!r}")

    def encode(self, value: Sequence[object]) -> bytes:
        """Encode one leaf value."""
        self._check_arity(value)
        if self.words is not None:
            return b"".join([w.one(v) for w, v in zip(self.words, value, strict=True)])
        normalized = [_normalize(t, v) for t, v in zip(self.types, value, strict=True)]
        try:
            return _abi_encode(self.type_strings, normalized)
        except EncodingError as exc:
            raise InvalidInputError(f"cannot ABI-encode {list(value)!r}: {exc}") from exc

    def encode_all(self, values: Sequence[Sequence[object]]) -> list[bytes]:
        """Encode many leaf values, in order."""
        if self.words is None:
            return [self.encode(value) for value in values]
        if set(map(len, values)) != {self.arity}:
            for value in values:
                self._check_arity(value)
        columns = [word.many([value[i] for value in values]) for i, word in enumerate(self.words)]
        return list(map(b"".join, zip(*columns, strict=True)))


@lru_cache(maxsize=64)
def leaf_codec(leaf_encoding: tuple[str, ...]) -> LeafCodec:
    """The (cached) codec of a leaf encoding; InvalidInputError for an unknown ABI type."""
    return LeafCodec(leaf_encoding)


def leaf_sequence(value: object) -> tuple[LeafValue, ...]:
    """A leaf value as a tuple; InvalidInputError unless it is a (non-text) sequence."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidInputError(f"a leaf value is a sequence of ABI values, got {value!r}")
    return value if type(value) is tuple else tuple(value)
