"""Merkle trees compatible with OpenZeppelin's `StandardMerkleTree` (@openzeppelin/merkle-tree 1.x).

Compatibility is the point: the contracts verify claims with OpenZeppelin's `MerkleProof`, and
third parties load our published dumps with the npm library. So this module reproduces it exactly:

- leaf = keccak256(keccak256(abi.encode(leafEncoding, value)));
- node = keccak256(min(a, b) ++ max(a, b)) (sorted pair, so proofs need no left/right flags);
- leaves sorted by hash (OZ's default `sortLeaves: true`, a stable sort), then laid out in OZ's
  flat array: length 2n-1, node i has children 2i+1 and 2i+2, leaf k of the sorted list at index
  2n-2-k (the leaves fill the end of the array in reverse order);
- proofs, multiproofs and the `standard-v1` JSON dump exactly as OZ produces them.

The tree is a flat list of 32-byte `bytes` (no per-node objects), leaves of static types are
encoded column by column, and hashing calls pycryptodome's C keccak directly, so a million-leaf
tree with all its proofs builds in seconds. Pure: no I/O.
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import json
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, TypeAlias, TypeVar

from Crypto.Hash import keccak as _pycryptodome_keccak
from eth_abi.abi import encode as _abi_encode
from eth_abi.exceptions import ABITypeError, EncodingError, ParseError
from eth_abi.grammar import ABIType, BasicType, TupleType
from eth_abi.grammar import normalize as _normalize_abi_type
from eth_abi.grammar import parse as _parse_abi_type

from settlement.errors import InvalidInputError, InvariantViolation

#: One ABI value in a leaf: integers as `int` or decimal / 0x-hex `str` (as in OZ dumps),
#: addresses and byte strings as 0x-hex `str` (or `bytes`), `bool`, `str` for `string`, and
#: sequences for arrays and tuples.
LeafValue: TypeAlias = int | str | bool | bytes | Sequence["LeafValue"]

#: A leaf value as it appears in a `standard-v1` dump.
JsonLeafValue: TypeAlias = str | int | bool | list["JsonLeafValue"]

#: A tree node as the verifiers accept it: 0x-hex `str` or raw `bytes`, 32 bytes either way.
Node: TypeAlias = str | bytes

#: The `format` tag of OZ's `StandardMerkleTree.dump()`.
DUMP_FORMAT = "standard-v1"

_T = TypeVar("_T")

# Below this many leaves the cyclic GC is left alone; above it, pausing it saves seconds.
_BULK_THRESHOLD = 10_000


# --- keccak256 ---------------------------------------------------------------------------------


def keccak256(data: bytes) -> bytes:
    """Return keccak256(data) (Ethereum's pre-standard SHA-3). Thread-safe; for one-off hashes."""
    return _pycryptodome_keccak.new(digest_bits=256, data=data).digest()


class _Keccak(Protocol):
    """keccak256 of one input or of many (in order); see `_new_keccak`."""

    def hash(self, data: bytes) -> bytes: ...

    def hash_all(self, data: Iterable[bytes]) -> list[bytes]: ...


class _PortableKeccak:
    """keccak256 through pycryptodome's public API: the fallback when the C binding is absent."""

    def hash(self, data: bytes) -> bytes:
        return keccak256(data)

    def hash_all(self, data: Iterable[bytes]) -> list[bytes]:
        return list(map(keccak256, data))


def _load_c_keccak() -> ctypes.CDLL | None:
    """Open pycryptodome's C keccak library for direct calls, or None if it cannot be found.

    Why: without cffi, pycryptodome's Python wrapper costs ~3 us per hash (a state allocation
    and argument checks each time); calls on one reusable C state cost ~0.8 us. A tree of n
    leaves needs 3n hashes, so this is most of the difference between ~10 s and ~4 s for a
    million leaves. `keccak_init/absorb/digest/reset/destroy` are pycryptodome's exported C
    ABI; `_new_keccak` checks the results against the public API before trusting them.
    """
    try:
        spec = importlib.util.find_spec("Crypto.Hash._keccak")
        if spec is None or spec.origin is None:
            return None
        lib = ctypes.CDLL(spec.origin)
        for name in ("keccak_init", "keccak_absorb", "keccak_digest", "keccak_reset"):
            getattr(lib, name)
    except (OSError, AttributeError):
        return None
    return lib


class _CKeccak:
    """keccak256 on a private C state: fast, but not thread-safe (make one per operation).

    Every argument is passed as a ctypes object of the C parameter's exact type, so no
    `argtypes` conversion runs per call (a third of the call cost) and nothing is truncated.
    """

    __slots__ = ("__weakref__", "_absorb", "_digest", "_out", "_reset", "_state")

    def __init__(self, lib: ctypes.CDLL) -> None:
        state = ctypes.c_void_p()
        # capacity 64 bytes (twice the 256-bit digest) and 24 rounds: plain Keccak-256.
        if lib.keccak_init(ctypes.byref(state), ctypes.c_size_t(64), ctypes.c_ubyte(24)) != 0:
            raise MemoryError("keccak_init failed")
        self._state = ctypes.c_void_p(state.value)
        self._absorb, self._digest, self._reset = (
            lib.keccak_absorb,
            lib.keccak_digest,
            lib.keccak_reset,
        )
        self._out = ctypes.create_string_buffer(32)
        weakref.finalize(self, lib.keccak_destroy, self._state)

    def hash(self, data: bytes) -> bytes:
        self._absorb(self._state, data, ctypes.c_size_t(len(data)))
        self._digest(self._state, self._out, _C_SIZE_32, _C_KECCAK_PADDING)
        self._reset(self._state)
        return self._out.raw

    def hash_all(self, data: Iterable[bytes]) -> list[bytes]:
        absorb, digest, reset = self._absorb, self._digest, self._reset
        state, out, size32, padding = self._state, self._out, _C_SIZE_32, _C_KECCAK_PADDING
        sizes: dict[int, ctypes.c_size_t] = {}
        hashes: list[bytes] = []
        append = hashes.append
        for item in data:
            size = sizes.get(len(item))
            if size is None:
                size = sizes[len(item)] = ctypes.c_size_t(len(item))
            absorb(state, item, size)
            digest(state, out, size32, padding)
            reset(state)
            append(out.raw)
        return hashes


_C_SIZE_32 = ctypes.c_size_t(32)
_C_KECCAK_PADDING = ctypes.c_ubyte(0x01)  # Keccak's padding byte (SHA3-256 would use 0x06)
_C_KECCAK_LIB = _load_c_keccak()


def _c_keccak_works() -> bool:
    if _C_KECCAK_LIB is None:
        return False
    try:
        fast = _CKeccak(_C_KECCAK_LIB)
    except MemoryError:
        return False
    samples = [b"", b"abc", bytes(range(64)), bytes(range(200))]
    return fast.hash_all(samples) == [keccak256(sample) for sample in samples]


_USE_C_KECCAK = _c_keccak_works()


def _new_keccak() -> _Keccak:
    """A keccak256 engine for one operation: the C binding when it passed its self-check."""
    if _USE_C_KECCAK and _C_KECCAK_LIB is not None:
        return _CKeccak(_C_KECCAK_LIB)
    return _PortableKeccak()


def keccak256_many(data: Iterable[bytes]) -> list[bytes]:
    """keccak256 of each item, in order: the fast path for bulk hashing (e.g. address checksums)."""
    return _new_keccak().hash_all(data)


def hashing_backend() -> str:
    """Name the keccak implementation in use (reported by the benchmark)."""
    return "pycryptodome C, direct calls" if _USE_C_KECCAK else "pycryptodome public API"


# --- leaf encoding -----------------------------------------------------------------------------


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


def _to_bytes(value: object) -> bytes:
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
        # Length first: bytes.fromhex skips spaces, so only the exact length makes it strict.
        # Any letter case is accepted, as OZ does: the checksum is display, not identity.
        if isinstance(value, str) and len(value) == 42 and value[:2] == "0x":
            try:
                raw = bytes.fromhex(value[2:])
            except ValueError:
                raw = b""
            if len(raw) == 20:
                return _ADDRESS_PAD + raw
        elif isinstance(value, bytes) and len(value) == 20:
            return _ADDRESS_PAD + value
        raise InvalidInputError(f"invalid address {value!r}")

    def many(self, column: list[object]) -> list[bytes]:
        # One fromhex over the whole column; a space anywhere shortens the result, so the
        # length check below still catches it.
        if set(map(type, column)) == {str}:
            texts: list[str] = column  # type: ignore[assignment]
            if set(map(len, texts)) == {42} and {text[:2] for text in texts} == {"0x"}:
                try:
                    raw = bytes.fromhex("".join([text[2:] for text in texts]))
                except ValueError:
                    raw = b""
                if len(raw) == 20 * len(texts):
                    pad = _ADDRESS_PAD
                    return [pad + raw[i : i + 20] for i in range(0, len(raw), 20)]
        return super().many(column)


class _BoolWord(_Word):
    def one(self, value: object) -> bytes:
        if not isinstance(value, bool):
            raise InvalidInputError(f"expected a bool, got {value!r}")
        return bytes(31) + (b"\x01" if value else b"\x00")


class _FixedBytesWord(_Word):
    def __init__(self, size: int) -> None:
        self.size = size

    def one(self, value: object) -> bytes:
        raw = _to_bytes(value)
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
        return _to_bytes(value)
    raise InvalidInputError(f"unsupported ABI type {type_str} or bad value {value!r}")


class _LeafCodec:
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
def _codec(leaf_encoding: tuple[str, ...]) -> _LeafCodec:
    return _LeafCodec(leaf_encoding)


def _leaf_sequence(value: object) -> tuple[LeafValue, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidInputError(f"a leaf value is a sequence of ABI values, got {value!r}")
    return value if type(value) is tuple else tuple(value)


def leaf_hash(leaf_encoding: Sequence[str], value: Sequence[LeafValue]) -> str:
    """OZ's standard leaf hash keccak256(keccak256(abi.encode(types, value))), as 0x-hex."""
    encoded = _codec(tuple(leaf_encoding)).encode(_leaf_sequence(value))
    return _hex(keccak256(keccak256(encoded)))


# --- nodes and verification --------------------------------------------------------------------


def _hex(node: bytes) -> str:
    return "0x" + node.hex()


def _node_bytes(node: Node) -> bytes:
    raw = node if isinstance(node, bytes) else _to_bytes(node)
    if len(raw) != 32:
        raise InvalidInputError(f"Merkle tree nodes are 32 bytes, got {node!r}")
    return raw


def _hash_pair(keccak: _Keccak, a: bytes, b: bytes) -> bytes:
    return keccak.hash(a + b if a <= b else b + a)


def process_proof(leaf: Node, proof: Iterable[Node]) -> str:
    """The root (0x-hex) that `proof` implies for the leaf hash `leaf`, as OZ's processProof."""
    keccak = _new_keccak()
    node = _node_bytes(leaf)
    for sibling in proof:
        node = _hash_pair(keccak, node, _node_bytes(sibling))
    return _hex(node)


def verify_proof(root: Node, leaf: Node, proof: Iterable[Node]) -> bool:
    """Whether `proof` proves the leaf hash `leaf` under `root` (all 32 bytes, hex or raw).

    A malformed node raises InvalidInputError instead of returning False: it is a caller bug,
    not a forged claim.
    """
    return _hex(_node_bytes(root)) == process_proof(leaf, proof)


def process_multiproof(leaves: Sequence[Node], proof: Sequence[Node], flags: Sequence[bool]) -> str:
    """The root (0x-hex) a multiproof implies for leaf hashes in OZ order (OZ's algorithm)."""
    stack = deque(_node_bytes(leaf) for leaf in leaves)
    siblings = deque(_node_bytes(node) for node in proof)
    if len(siblings) < sum(1 for flag in flags if not flag):
        raise InvalidInputError("Invalid multiproof format")
    if len(stack) + len(siblings) != len(flags) + 1:
        raise InvalidInputError("Provided leaves and multiproof are not compatible")
    keccak = _new_keccak()
    for flag in flags:
        if len(stack) < (2 if flag else 1):
            raise InvalidInputError("Invalid multiproof format")
        a = stack.popleft()
        b = stack.popleft() if flag else siblings.popleft()
        stack.append(_hash_pair(keccak, a, b))
    if len(stack) + len(siblings) != 1:
        raise InvalidInputError("Invalid multiproof format")
    return _hex(stack.pop() if stack else siblings.popleft())


def verify_multiproof(
    root: Node, leaves: Sequence[Node], proof: Sequence[Node], flags: Sequence[bool]
) -> bool:
    """Whether the multiproof (leaf hashes in OZ order, proof, flags) holds under `root`."""
    return _hex(_node_bytes(root)) == process_multiproof(leaves, proof, flags)


# --- the tree ----------------------------------------------------------------------------------


@contextmanager
def _gc_paused(size: int) -> Iterator[None]:
    """Pause the cyclic GC while building big trees.

    Why: building allocates millions of tuples and bytes; every few thousand allocations the
    GC would rescan all live tuples, which costs more than the hashing itself for 10^6 leaves.
    Nothing built here forms cycles, so nothing is left for the GC to collect afterwards.
    """
    paused = size >= _BULK_THRESHOLD and gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _fill_internal_nodes(keccak: _Keccak, tree: list[bytes], leaf_count: int) -> None:
    """Hash the internal nodes (indices below leaf_count - 1) of OZ's flat layout in place.

    Level d of the layout is the index range [2^d - 1, 2^(d+1) - 1) and its children are the
    contiguous range just after it, so each level is one comprehension of sorted pairs and one
    batch of hashes, deepest level first: no per-node index arithmetic in Python.
    """
    internal = leaf_count - 1
    for depth in range(internal.bit_length() - 1, -1, -1):
        low, high = (1 << depth) - 1, min((1 << (depth + 1)) - 1, internal)
        children = iter(tree[2 * low + 1 : 2 * high + 1])
        pairs = [a + b if a <= b else b + a for a, b in zip(children, children, strict=False)]
        tree[low:high] = keccak.hash_all(pairs)


@dataclass(frozen=True, slots=True)
class MultiProof:
    """A multiproof as OZ's `getMultiProof` returns it: values in OZ order, proof, flags."""

    leaves: tuple[tuple[LeafValue, ...], ...]
    proof: tuple[str, ...]
    proof_flags: tuple[bool, ...]


class MerkleTree:
    """An immutable OpenZeppelin `StandardMerkleTree`; build it with `of()` or `load()`.

    As in OZ, a value is identified by its position in the input (its *value index*), and its
    leaf's position in the flat tree array is its *tree index*. Values keep the form they were
    given or loaded in; the dump writes Python ints as decimal strings, as OZ users pass them.
    """

    __slots__ = (
        "_codec",
        "_hash_lookup",
        "_leaf_encoding",
        "_tree",
        "_tree_hex",
        "_tree_indices",
        "_values",
        "_values_are_json",
    )

    def __init__(
        self,
        leaf_encoding: tuple[str, ...],
        tree: list[bytes],
        values: tuple[tuple[LeafValue, ...], ...],
        tree_indices: tuple[int, ...],
        *,
        values_are_json: bool,
    ) -> None:
        """Wrap parts that are already consistent; call `of()` or `load()` instead."""
        self._leaf_encoding = leaf_encoding
        self._codec = _codec(leaf_encoding)
        self._tree = tree
        self._values = values
        self._tree_indices = tree_indices
        self._values_are_json = values_are_json
        self._tree_hex: list[str] | None = None
        self._hash_lookup: dict[bytes, int] | None = None

    @classmethod
    def of(cls, values: Iterable[Sequence[LeafValue]], leaf_encoding: Sequence[str]) -> MerkleTree:
        """Build the tree of `values`, as OZ's `StandardMerkleTree.of(values, leafEncoding)`.

        Raises InvalidInputError when there are no values or a value does not fit the encoding.
        """
        encoding = tuple(leaf_encoding)
        codec = _codec(encoding)
        kept = tuple(map(_leaf_sequence, values))
        count = len(kept)
        if count == 0:
            raise InvalidInputError("Expected non-zero number of leaves")
        with _gc_paused(count):
            keccak = _new_keccak()
            leaves = keccak.hash_all(keccak.hash_all(codec.encode_all(kept)))
            # Stable sort by hash bytes, as OZ's Array.prototype.sort with its byte comparator.
            order = sorted(range(count), key=leaves.__getitem__)
            tree = [b""] * (count - 1) + [leaves[k] for k in reversed(order)]
            last = 2 * count - 2
            tree_indices = [0] * count
            for position, value_index in enumerate(order):
                tree_indices[value_index] = last - position
            _fill_internal_nodes(keccak, tree, count)
        return cls(encoding, tree, kept, tuple(tree_indices), values_are_json=False)

    @classmethod
    def load(cls, data: Mapping[str, object]) -> MerkleTree:
        """Load a parsed `standard-v1` dump, checking every leaf and node as OZ's `load` does.

        Stricter than OZ in one respect: the values must cover every leaf exactly once. OZ's
        `of` always produces such dumps, and a leaf no value accounts for would be a hidden
        claim. Nodes and values are kept as given, so `dumps()` reproduces an OZ dump exactly.
        """
        if data.get("format") != DUMP_FORMAT:
            raise InvalidInputError(f"Unknown format {data.get('format')!r}")
        encoding = data.get("leafEncoding")
        if not isinstance(encoding, list) or not all(isinstance(t, str) for t in encoding):
            raise InvalidInputError("Expected leaf encoding")
        raw_tree, raw_values = data.get("tree"), data.get("values")
        if not isinstance(raw_tree, list) or not isinstance(raw_values, list) or not raw_values:
            raise InvalidInputError("Expected non-empty 'tree' and 'values' lists")
        count = len(raw_values)
        if len(raw_tree) != 2 * count - 1:
            raise InvalidInputError("Expected a tree of 2 * len(values) - 1 nodes")
        with _gc_paused(count):
            tree = [_node_bytes(_expect(str, node)) for node in raw_tree]
            values, tree_indices = [], []
            for entry in raw_values:
                entry = _expect(dict, entry)
                values.append(tuple(_json_leaf(_expect(list, entry.get("value")))))
                tree_indices.append(_expect(int, entry.get("treeIndex")))
            if sorted(tree_indices) != list(range(count - 1, 2 * count - 1)):
                raise InvalidInputError("treeIndex values must cover every leaf exactly once")
            loaded = cls(
                tuple(encoding), tree, tuple(values), tuple(tree_indices), values_are_json=True
            )
            loaded._check_consistency()
        return loaded

    @classmethod
    def loads(cls, text: str) -> MerkleTree:
        """Load a `standard-v1` dump from JSON text (e.g. `JSON.stringify(tree.dump())`)."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"a tree dump must be JSON: {exc}") from exc
        return cls.load(_expect(dict, data))

    def _check_consistency(self) -> None:
        keccak = _new_keccak()
        leaves = keccak.hash_all(keccak.hash_all(self._codec.encode_all(self._values)))
        tree = self._tree
        if any(leaf != tree[i] for leaf, i in zip(leaves, self._tree_indices, strict=True)):
            raise InvalidInputError("Merkle tree does not contain the expected value")
        rebuilt = list(tree)
        _fill_internal_nodes(keccak, rebuilt, len(self._values))
        if rebuilt != tree:
            raise InvalidInputError("Merkle tree is invalid")

    # reading

    @property
    def root(self) -> str:
        """The root, as a 0x-prefixed lowercase hex string (bytes32)."""
        return _hex(self._tree[0])

    @property
    def root_bytes(self) -> bytes:
        """The root, as 32 raw bytes."""
        return self._tree[0]

    @property
    def leaf_encoding(self) -> tuple[str, ...]:
        """The ABI types of a leaf, e.g. ("uint256", "address", "uint256")."""
        return self._leaf_encoding

    @property
    def values(self) -> tuple[tuple[LeafValue, ...], ...]:
        """The values in input order, in the form they were given or loaded in."""
        return self._values

    def __len__(self) -> int:
        """The number of values (leaves)."""
        return len(self._values)

    def tree_index(self, value_index: int) -> int:
        """The position in the flat tree array of the leaf of value `value_index`."""
        return self._tree_indices[self._checked_index(value_index)]

    def value_index(self, item: int | Sequence[LeafValue]) -> int:
        """Resolve a value index, or a value (by its leaf hash, as OZ's `leafLookup`)."""
        if isinstance(item, int):
            return self._checked_index(item)
        found = self._lookup().get(_node_bytes(self.leaf_hash(item)))
        if found is None:
            raise InvalidInputError("Leaf is not in tree")
        return found

    def _lookup(self) -> dict[bytes, int]:
        if self._hash_lookup is None:
            # Later duplicates win, as in OZ's Object.fromEntries lookup.
            tree = self._tree
            self._hash_lookup = {tree[t]: v for v, t in enumerate(self._tree_indices)}
        return self._hash_lookup

    def leaf_hash(self, item: int | Sequence[LeafValue]) -> str:
        """The leaf hash (0x-hex) of a value index, or of any value under this tree's encoding."""
        if isinstance(item, int):
            return _hex(self._tree[self.tree_index(item)])
        return _hex(keccak256(keccak256(self._codec.encode(_leaf_sequence(item)))))

    def _checked_index(self, value_index: int) -> int:
        if isinstance(value_index, bool) or not 0 <= value_index < len(self._values):
            raise InvalidInputError(f"Index out of bounds: {value_index!r}")
        return value_index

    def _nodes_hex(self) -> list[str]:
        if self._tree_hex is None:
            with _gc_paused(len(self._tree)):
                self._tree_hex = [_hex(node) for node in self._tree]
        return self._tree_hex

    # proofs

    def proof(self, item: int | Sequence[LeafValue]) -> tuple[str, ...]:
        """The proof of a value or value index: sibling hashes from leaf to root, 0x-hex.

        Verified against the root before it is returned, as OZ does; failing that is our bug.
        """
        tree = self._tree
        index = self._tree_indices[self.value_index(item)]
        leaf = tree[index]
        siblings: list[bytes] = []
        while index > 0:
            siblings.append(tree[index + 1 if index % 2 else index - 1])
            index = (index - 1) // 2
        if not verify_proof(tree[0], leaf, siblings):
            raise InvariantViolation("Unable to prove value")
        return tuple(map(_hex, siblings))

    def proofs(self) -> list[tuple[str, ...]]:
        """The proofs of all values, indexed by value index, in one pass.

        A node's proof is its sibling followed by its parent's proof, so proofs are built top
        down by prefixing one hash to the parent's tuple (a C-speed copy) instead of walking
        from every leaf to the root in Python. Equal to `[self.proof(i) for i in ...]`, minus
        the per-proof check (the tests verify every proof).
        """
        hexes = self._nodes_hex()
        with _gc_paused(len(hexes)):
            node_proofs: list[tuple[str, ...]] = [()] * len(hexes)
            for parent in range(len(self._values) - 1):
                above = node_proofs[parent]
                left = 2 * parent + 1
                node_proofs[left] = (hexes[left + 1],) + above  # noqa: RUF005 - 3x faster than *above
                node_proofs[left + 1] = (hexes[left],) + above  # noqa: RUF005
                node_proofs[parent] = ()  # no longer needed: free it early
            return [node_proofs[index] for index in self._tree_indices]

    def multiproof(self, items: Sequence[int | Sequence[LeafValue]]) -> MultiProof:
        """A multiproof of several values or value indices, as OZ's `getMultiProof`."""
        tree = self._tree
        indices = sorted((self._tree_indices[self.value_index(i)] for i in items), reverse=True)
        if len(set(indices)) != len(indices):
            raise InvalidInputError("Cannot prove duplicated index")
        queue = deque(indices)
        proof: list[bytes] = []
        flags: list[bool] = []
        while queue and queue[0] > 0:
            j = queue.popleft()
            sibling = j + 1 if j % 2 else j - 1
            if queue and queue[0] == sibling:
                flags.append(True)
                queue.popleft()
            else:
                flags.append(False)
                proof.append(tree[sibling])
            queue.append((j - 1) // 2)
        if not indices:
            proof.append(tree[0])
        if not verify_multiproof(tree[0], [tree[i] for i in indices], proof, flags):
            raise InvariantViolation("Unable to prove values")
        # Values come through the hash lookup, as in OZ: with duplicate leaves spelled
        # differently (e.g. address case), OZ returns the last spelling, and so do we.
        lookup = self._lookup()
        return MultiProof(
            leaves=tuple(self._values[lookup[tree[i]]] for i in indices),
            proof=tuple(map(_hex, proof)),
            proof_flags=tuple(flags),
        )

    def verify(self, item: int | Sequence[LeafValue], proof: Iterable[Node]) -> bool:
        """Whether `proof` proves a value (or the value at an index) under this root."""
        return verify_proof(self._tree[0], self.leaf_hash(item), proof)

    def verify_multiproof(self, multiproof: MultiProof) -> bool:
        """Whether a multiproof proves its values under this root."""
        leaves = [self.leaf_hash(_leaf_sequence(value)) for value in multiproof.leaves]
        return verify_multiproof(self._tree[0], leaves, multiproof.proof, multiproof.proof_flags)

    # dump

    def dump(self) -> dict[str, object]:
        """The `standard-v1` dump: equal to OZ's `tree.dump()` for the same values."""
        values = self._values if self._values_are_json else map(_json_leaf_value, self._values)
        return {
            "format": DUMP_FORMAT,
            "leafEncoding": list(self._leaf_encoding),
            "tree": list(self._nodes_hex()),
            "values": [
                {"value": list(value), "treeIndex": index}
                for value, index in zip(values, self._tree_indices, strict=True)
            ],
        }

    def dumps(self, indent: int | None = None) -> str:
        """The dump as JSON text, byte-equal to `JSON.stringify(tree.dump(), null, indent)`."""
        data = self.dump()
        # JSON.stringify clamps the indent to 10 and treats 0 or less as no indentation.
        if indent is None or indent < 1:
            return json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        return json.dumps(data, indent=min(indent, 10), ensure_ascii=False)


def _expect(kind: type[_T], value: object) -> _T:
    # bool is an int subclass; a JSON `true` is never a valid treeIndex.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidInputError(f"malformed tree dump: expected {kind.__name__}, got {value!r}")
    return value


def _json_leaf(value: list[object]) -> list[JsonLeafValue]:
    """Check a dumped value's items: JSON floats and nulls are refused (amounts never float)."""
    checked: list[JsonLeafValue] = []
    for item in value:
        if isinstance(item, list):
            checked.append(_json_leaf(item))
        elif isinstance(item, bool | int | str):
            checked.append(item)
        else:
            raise InvalidInputError(f"unsupported item {item!r} in a dumped value")
    return checked


def _json_leaf_value(value: Sequence[LeafValue]) -> list[JsonLeafValue]:
    """The dump form of a value: ints as decimal strings (JS numbers would lose precision)."""
    converted: list[JsonLeafValue] = []
    for item in value:
        if isinstance(item, bool | str):
            converted.append(item)
        elif isinstance(item, int):
            converted.append(str(item))
        elif isinstance(item, bytes):
            converted.append(_hex(item))
        else:
            converted.append(_json_leaf_value(item))
    return converted
