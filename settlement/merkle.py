"""Merkle trees compatible with OpenZeppelin's `StandardMerkleTree` (@openzeppelin/merkle-tree 1.x).

Compatibility is the point: the contracts verify claims with OpenZeppelin's `MerkleProof`, and
third parties load our published dumps with the npm library. So this module reproduces it exactly:

- leaf = keccak256(keccak256(abi.encode(leafEncoding, value)));
- node = keccak256(min(a, b) ++ max(a, b)) (sorted pair, so proofs need no left/right flags);
- leaves sorted by hash (OZ's default `sortLeaves: true`, a stable sort), then laid out in OZ's
  flat array: length 2n-1, node i has children 2i+1 and 2i+2, leaf k of the sorted list at index
  2n-2-k (the leaves fill the end of the array in reverse order);
- proofs, multiproofs and the `standard-v1` JSON dump exactly as OZ produces them.

One deliberate difference: an address in mixed letter case must carry its valid EIP-55
checksum (the project's rule, `schemas.evm.parse_address`); OZ also accepts a wrong one.

The tree is a flat list of 32-byte `bytes` (no per-node objects), leaves of static types are
encoded column by column (`settlement.abi_leaf`), and hashing calls pycryptodome's C keccak
directly (`settlement.keccak`), so a million-leaf tree with all its proofs builds in seconds.
Pure: no I/O.
"""

from __future__ import annotations

import gc
import json
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeAlias, TypeVar

from settlement.abi_leaf import LeafValue, hex_bytes, leaf_codec, leaf_sequence
from settlement.errors import InvalidInputError, InvariantViolation
from settlement.keccak import Keccak, hashing_backend, keccak256, keccak256_many, new_keccak

# Re-exported: callers import the hashing and leaf names from here, as before the module split.
__all__ = [
    "DUMP_FORMAT",
    "JsonLeafValue",
    "LeafValue",
    "MerkleTree",
    "MultiProof",
    "Node",
    "hashing_backend",
    "keccak256",
    "keccak256_many",
    "leaf_hash",
    "process_multiproof",
    "process_proof",
    "verify_multiproof",
    "verify_proof",
]

#: A leaf value as it appears in a `standard-v1` dump.
JsonLeafValue: TypeAlias = str | int | bool | list["JsonLeafValue"]

#: A tree node as the verifiers accept it: 0x-hex `str` or raw `bytes`, 32 bytes either way.
Node: TypeAlias = str | bytes

#: The `format` tag of OZ's `StandardMerkleTree.dump()`.
DUMP_FORMAT = "standard-v1"

_T = TypeVar("_T")

# Below this many leaves the cyclic GC is left alone; above it, pausing it saves seconds.
_BULK_THRESHOLD = 10_000


# --- hashes and verification -------------------------------------------------------------------


def _hex(node: bytes) -> str:
    return "0x" + node.hex()


def _node_bytes(node: Node) -> bytes:
    raw = node if isinstance(node, bytes) else hex_bytes(node)
    if len(raw) != 32:
        raise InvalidInputError(f"Merkle tree nodes are 32 bytes, got {node!r}")
    return raw


def leaf_hash(leaf_encoding: Sequence[str], value: Sequence[LeafValue]) -> str:
    """OZ's standard leaf hash keccak256(keccak256(abi.encode(types, value))), as 0x-hex."""
    encoded = leaf_codec(tuple(leaf_encoding)).encode(leaf_sequence(value))
    return _hex(keccak256(keccak256(encoded)))


def _hash_pair(keccak: Keccak, a: bytes, b: bytes) -> bytes:
    return keccak.hash(a + b if a <= b else b + a)


def process_proof(leaf: Node, proof: Iterable[Node]) -> str:
    """The root (0x-hex) that `proof` implies for the leaf hash `leaf`, as OZ's processProof."""
    keccak = new_keccak()
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
    keccak = new_keccak()
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


def _fill_internal_nodes(keccak: Keccak, tree: list[bytes], leaf_count: int) -> None:
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
        self._codec = leaf_codec(leaf_encoding)
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
        codec = leaf_codec(encoding)
        kept = tuple(map(leaf_sequence, values))
        count = len(kept)
        if count == 0:
            raise InvalidInputError("Expected non-zero number of leaves")
        with _gc_paused(count):
            keccak = new_keccak()
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
        keccak = new_keccak()
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
        return _hex(keccak256(keccak256(self._codec.encode(leaf_sequence(item)))))

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
        leaves = [self.leaf_hash(leaf_sequence(value)) for value in multiproof.leaves]
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
