"""Properties of settlement.merkle and settlement.merkle_dump (pure, fast).

Compatibility with the real npm library is checked in tests/test_merkle_oz_compat.py; here the
tree is checked against its own promises, golden OZ dumps, and a naive reference built from
eth_abi (independent of our column encoder and of the direct C keccak binding).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from eth_abi import encode as abi_encode
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

import settlement.keccak as keccak_module
from schemas.evm import parse_address
from settlement.abi_leaf import parse_addresses
from settlement.errors import InvalidInputError, RootMismatchError
from settlement.merkle import (
    MerkleTree,
    MultiProof,
    keccak256,
    leaf_hash,
    process_multiproof,
    verify_multiproof,
    verify_proof,
)
from settlement.merkle_dump import (
    PayoutFile,
    build_payout,
    dumps_payout,
    loads_payout,
    to_checksum_addresses,
)

settings.register_profile("settlement-ci", max_examples=500, deadline=None)
settings.register_profile("settlement-dev", max_examples=100, deadline=None)
PROPERTY = settings.get_profile("settlement-ci" if os.environ.get("CI") else "settlement-dev")

GOLDEN = Path(__file__).parents[1] / "golden" / "merkle"
ENCODING = ("uint256", "address", "uint256")
MAX_UINT256 = 2**256 - 1


def _spell(raw: bytes, style: int) -> str:
    lower = "0x" + raw.hex()
    return [lower, to_checksum_address(lower), "0x" + raw.hex().upper()][style]


addresses = st.builds(_spell, st.binary(min_size=20, max_size=20), st.integers(0, 2))
uint256s = st.one_of(st.integers(0, MAX_UINT256), st.sampled_from([0, 1, MAX_UINT256]))
payout_leaves = st.tuples(uint256s, addresses, uint256s)
leaf_lists = st.lists(payout_leaves, min_size=1, max_size=40)


def reference_root(values: list[tuple[int, str, int]]) -> str:
    """OZ's algorithm written the slow, obvious way: eth_abi, one hash object per node."""
    leaves = sorted(
        keccak256(keccak256(abi_encode(list(ENCODING), [i, a.lower(), m]))) for i, a, m in values
    )
    tree: list[bytes] = [b""] * (2 * len(leaves) - 1)
    for k, leaf in enumerate(leaves):
        tree[len(tree) - 1 - k] = leaf
    for i in range(len(tree) - 1 - len(leaves), -1, -1):
        tree[i] = keccak256(b"".join(sorted([tree[2 * i + 1], tree[2 * i + 2]])))
    return "0x" + tree[0].hex()


def flip(node: str) -> str:
    """The same node with its last hex digit changed."""
    return node[:-1] + ("0" if node[-1] != "0" else "1")


# --- building and proving ------------------------------------------------------------------


@PROPERTY
@given(leaf_lists)
def test_root_matches_naive_reference(values: list[tuple[int, str, int]]) -> None:
    assert MerkleTree.of(values, ENCODING).root == reference_root(values)


@PROPERTY
@given(leaf_lists)
def test_every_proof_verifies(values: list[tuple[int, str, int]]) -> None:
    tree = MerkleTree.of(values, ENCODING)
    proofs = tree.proofs()
    assert proofs == [tree.proof(i) for i in range(len(values))]
    for i, value in enumerate(values):
        assert verify_proof(tree.root, leaf_hash(ENCODING, value), proofs[i])
        assert tree.verify(value, proofs[i])
        assert tree.verify(i, proofs[i])
        assert tree.proof(value) == proofs[tree.value_index(value)]


@PROPERTY
@given(leaf_lists, st.data())
def test_tampered_claims_fail(values: list[tuple[int, str, int]], data: st.DataObject) -> None:
    tree = MerkleTree.of(values, ENCODING)
    i = data.draw(st.integers(0, len(values) - 1))
    index, account, amount = values[i]
    proof = tree.proof(i)
    other_account = data.draw(addresses.filter(lambda a: a.lower() != account.lower()))
    for forged in [
        (index, account, (amount + 1) % 2**256),
        (index, other_account, amount),
        ((index + 1) % 2**256, account, amount),
    ]:
        assert not tree.verify(forged, proof)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        tampered = (*proof[:k], flip(proof[k]), *proof[k + 1 :])
        assert not tree.verify(i, tampered)
        assert not tree.verify(i, proof[:-1])
    assert not verify_proof(flip(tree.root), tree.leaf_hash(i), proof)


@PROPERTY
@given(leaf_lists, st.data())
def test_multiproofs_verify(values: list[tuple[int, str, int]], data: st.DataObject) -> None:
    tree = MerkleTree.of(values, ENCODING)
    chosen = data.draw(st.lists(st.integers(0, len(values) - 1), unique=True))
    multi = tree.multiproof(chosen)
    assert tree.verify_multiproof(multi)
    hashes = [tree.leaf_hash(v) for v in multi.leaves]
    assert process_multiproof(hashes, multi.proof, multi.proof_flags) == tree.root
    # Compared by hash: OZ returns the last spelling of duplicate leaves (see below).
    assert sorted(hashes) == sorted(tree.leaf_hash(i) for i in chosen)
    if multi.proof:
        forged = (flip(multi.proof[0]), *multi.proof[1:])
        assert not verify_multiproof(tree.root, hashes, forged, multi.proof_flags)


@PROPERTY
@given(leaf_lists, st.randoms(use_true_random=False))
def test_input_order_does_not_change_root_or_proofs(
    values: list[tuple[int, str, int]], rnd: object
) -> None:
    shuffled = list(values)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    a, b = MerkleTree.of(values, ENCODING), MerkleTree.of(shuffled, ENCODING)
    assert a.root == b.root
    for value in values:
        assert a.proof(value) == b.proof(value)


@PROPERTY
@given(leaf_lists)
def test_dump_round_trip(values: list[tuple[int, str, int]]) -> None:
    tree = MerkleTree.of(values, ENCODING)
    for indent in (None, 2):
        text = tree.dumps(indent)
        loaded = MerkleTree.loads(text)
        assert loaded.root == tree.root
        assert loaded.dumps(indent) == text
        assert loaded.proofs() == tree.proofs()
    dumped_values = [entry["value"] for entry in tree.dump()["values"]]  # type: ignore[attr-defined]
    assert dumped_values == [[str(i), a, str(m)] for i, a, m in values]


def test_single_leaf_tree() -> None:
    value = (0, "0x" + "11" * 20, 5)
    tree = MerkleTree.of([value], ENCODING)
    assert tree.root == leaf_hash(ENCODING, value) == reference_root([value])
    assert tree.proof(0) == ()
    assert tree.verify(value, [])
    assert tree.multiproof([0]) == MultiProof(leaves=(value,), proof=(), proof_flags=())
    assert tree.multiproof([]) == MultiProof(leaves=(), proof=(tree.root,), proof_flags=())
    assert tree.verify_multiproof(tree.multiproof([]))
    assert MerkleTree.loads(tree.dumps()).root == tree.root


def test_two_leaves_prove_each_other() -> None:
    values = [(0, "0x" + "11" * 20, 0), (1, "0x" + "22" * 20, MAX_UINT256)]
    tree = MerkleTree.of(values, ENCODING)
    assert tree.proof(0) == (tree.leaf_hash(1),)
    assert tree.proof(1) == (tree.leaf_hash(0),)
    assert tree.multiproof([0, 1]).proof_flags == (True,)


def test_duplicate_values_are_kept_and_looked_up_like_oz() -> None:
    value = (3, "0x" + "33" * 20, 9)
    tree = MerkleTree.of([value, value, (4, "0x" + "44" * 20, 1)], ENCODING)
    assert len(tree) == 3
    assert tree.value_index(value) == 1  # OZ's lookup keeps the last duplicate
    assert tree.verify(0, tree.proof(0))
    with pytest.raises(InvalidInputError, match="duplicated"):
        tree.multiproof([0, 0])


def test_multiproof_returns_the_last_spelling_of_duplicates_like_oz() -> None:
    first = ("1", "0x" + "ab" * 20, "16")
    second = ("0x1", "0x" + "AB" * 20, "0x10")
    tree = MerkleTree.of([first, (2, "0x" + "cd" * 20, 5), second], ENCODING)
    assert tree.leaf_hash(0) == tree.leaf_hash(2)
    assert tree.multiproof([0]).leaves == (second,)
    assert tree.value_index(first) == 2


def test_string_and_int_forms_hash_alike() -> None:
    as_ints = MerkleTree.of([(1, "0x" + "ab" * 20, 10**18)], ENCODING)
    as_text = MerkleTree.of([("1", "0x" + "AB" * 20, "0xde0b6b3a7640000")], ENCODING)
    assert as_ints.root == as_text.root


@pytest.mark.parametrize(
    "value",
    [
        (-1, "0x" + "11" * 20, 1),
        (0, "0x" + "11" * 20, 2**256),
        (0, "0x" + "11" * 19, 1),
        (0, "0x" + "1" * 39 + " ", 1),
        (0, "11" * 21, 1),
        (True, "0x" + "11" * 20, 1),
        (0, "0x" + "11" * 20, 1.0),
        (0, "0x" + "11" * 20, " 1"),
        (0, "0x" + "11" * 20),
        "not a sequence",
    ],
)
def test_invalid_values_are_refused(value: object) -> None:
    with pytest.raises(InvalidInputError):
        MerkleTree.of([(0, "0x" + "00" * 20, 0), value], ENCODING)  # type: ignore[list-item]


def test_invalid_queries_are_refused() -> None:
    tree = MerkleTree.of([(0, "0x" + "11" * 20, 1)], ENCODING)
    with pytest.raises(InvalidInputError):
        MerkleTree.of([], ENCODING)
    with pytest.raises(InvalidInputError):
        MerkleTree.of([(0,)], ["uint256", "nonsense"])
    for bad in (1, -1, True):
        with pytest.raises(InvalidInputError):
            tree.proof(bad)
    with pytest.raises(InvalidInputError, match="not in tree"):
        tree.proof((1, "0x" + "11" * 20, 1))
    with pytest.raises(InvalidInputError):
        verify_proof(tree.root, "0x1234", [])


def test_general_abi_types_match_eth_abi() -> None:
    types = ["address", "bool", "int8", "bytes32", "string", "bytes", "uint16[]", "(uint8,bool)"]
    value = [
        "0x" + "ab" * 20,
        True,
        "-7",
        "0x" + "cd" * 32,
        "héllo",
        "0x01ff",
        [1, "2"],
        [3, False],
    ]
    expected = abi_encode(
        types, ["0x" + "ab" * 20, True, -7, b"\xcd" * 32, "héllo", b"\x01\xff", [1, 2], (3, False)]
    )
    assert leaf_hash(types, value) == "0x" + keccak256(keccak256(expected)).hex()


def test_portable_keccak_fallback_builds_the_same_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    values = [(i, "0x" + f"{i:040x}", i * 7) for i in range(50)]
    fast = MerkleTree.of(values, ENCODING)
    monkeypatch.setattr(keccak_module, "_USE_C_KECCAK", False)
    assert isinstance(keccak_module.new_keccak(), keccak_module._PortableKeccak)
    assert MerkleTree.of(values, ENCODING).root == fast.root


def test_big_tree_pauses_gc_and_matches_reference() -> None:
    values = [(i, "0x" + f"{i * 7919:040x}", i) for i in range(20_001)]
    tree = MerkleTree.of(values, ENCODING)
    assert tree.root == reference_root(values)
    proofs = tree.proofs()
    assert all(tree.verify(i, proofs[i]) for i in range(0, len(values), 997))


# --- golden OZ dumps -----------------------------------------------------------------------


GOLDEN_ROOTS = {
    "oz-standard-v1.json": "0x12b75b1d442a477f63a3f4f7551fede0837b4fa5a01c335dee9f6c6943ad6cad",
    "oz-standard-v1-indent2.json": (
        "0x12b75b1d442a477f63a3f4f7551fede0837b4fa5a01c335dee9f6c6943ad6cad"
    ),
    "oz-standard-v1-unsorted.json": (
        "0x5327c8618a6919d89120786dc86e8d534b809af3db0b40154c0b93d50c7f3e00"
    ),
    "oz-standard-v1-mixed-types.json": (
        "0xb76f5ad69a4430ceff96de85e54379bed8a8527b006c7951da9e622a88f5a00f"
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN_ROOTS))
def test_golden_oz_dump_loads_and_dumps_byte_for_byte(name: str) -> None:
    text = (GOLDEN / name).read_text(encoding="utf-8")
    tree = MerkleTree.loads(text)
    assert tree.root == GOLDEN_ROOTS[name]
    assert tree.dumps(indent=2 if "indent2" in name else None) == text
    for i, proof in enumerate(tree.proofs()):
        assert tree.verify(tree.values[i], proof)
    if "unsorted" not in name:  # OZ's `of` sorts by default; ours always does
        assert MerkleTree.of(tree.values, tree.leaf_encoding).dumps() == tree.dumps()


def _golden_dump() -> dict[str, object]:
    data = json.loads((GOLDEN / "oz-standard-v1.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.mark.parametrize(
    ("path", "replacement", "message"),
    [
        (("values", 0, "value", 2), "5000001", "expected value"),
        (("tree", 1), "0x" + "00" * 32, "invalid"),
        (("values", 0, "treeIndex"), 0, "every leaf"),
        (("values", 0, "value", 2), 5000000.0, "unsupported"),
        (("format",), "standard-v2", "Unknown format"),
        (("leafEncoding",), None, "leaf encoding"),
        (("tree", 0), "0x1234", "32 bytes"),
    ],
)
def test_tampered_dumps_are_refused(
    path: tuple[object, ...], replacement: object, message: str
) -> None:
    data = _golden_dump()
    target: object = data
    for key in path[:-1]:
        target = target[key]  # type: ignore[index]
    target[path[-1]] = replacement  # type: ignore[index]
    with pytest.raises(InvalidInputError, match=message):
        MerkleTree.load(data)


def test_dump_with_a_leaf_no_value_covers_is_refused() -> None:
    data = _golden_dump()
    data["values"] = data["values"][:-1]  # type: ignore[index]
    with pytest.raises(InvalidInputError):
        MerkleTree.load(data)


# --- payout files --------------------------------------------------------------------------

TOKEN = "0x2e234DAe75C793f67A35089C9d99245E1C58470b"
payout_amounts = st.dictionaries(
    st.binary(min_size=20, max_size=20).map(lambda b: "0x" + b.hex()),
    st.one_of(st.integers(0, 10**30), st.just(0)),
    min_size=1,
    max_size=30,
).filter(lambda amounts: any(amounts.values()) and sum(amounts.values()) <= MAX_UINT256)


@PROPERTY
@given(payout_amounts)
def test_payout_file_round_trip(amounts: dict[str, int]) -> None:
    payout, tree = build_payout(9, TOKEN, 1, amounts)
    text = dumps_payout(payout)
    loaded = loads_payout(text)
    assert loaded == payout
    assert loaded.rebuild_tree().root == tree.root == payout.root
    assert dumps_payout(loaded) == text
    paid = {a: m for a, m in amounts.items() if m}
    assert payout.total == sum(paid.values())
    assert [e.index for e in payout.entries] == list(range(len(paid)))
    assert [e.account.lower() for e in payout.entries] == sorted(paid)
    assert {e.account.lower(): e.amount for e in payout.entries} == paid
    for entry, proof in zip(payout.entries, tree.proofs(), strict=True):
        assert tree.verify((entry.index, entry.account, entry.amount), proof)


def test_golden_payout_file_loads_and_rebuilds() -> None:
    text = (GOLDEN / "royalty-payout-v1.json").read_text(encoding="utf-8")
    payout = loads_payout(text)
    assert payout.root == "0x493715352113a22bf162abffd6c1b8c5a908ccf90ce24786e525de5a2390555c"
    assert payout.total == MAX_UINT256
    assert payout.rebuild_tree().root == payout.root
    assert dumps_payout(payout, indent=2) + "\n" == text


def _golden_payout() -> dict[str, object]:
    data = json.loads((GOLDEN / "royalty-payout-v1.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _entry(data: dict[str, object], i: int) -> dict[str, str]:
    return data["entries"][i]  # type: ignore[index,no-any-return]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: _entry(d, 0).update(amount="43"),  # total no longer matches
        lambda d: _entry(d, 0).update(amount="042"),
        lambda d: _entry(d, 0).update(amount="-1"),
        lambda d: _entry(d, 0).update(index="5"),  # order broken
        lambda d: _entry(d, 1).update(account=_entry(d, 0)["account"]),
        lambda d: _entry(d, 0).update(account=_entry(d, 0)["account"].lower()),
        lambda d: d.update(total=int(d["total"])),  # type: ignore[call-overload]
        lambda d: d.update(epoch=-1),
        lambda d: d.update(chainId="1"),
        lambda d: d.update(leafEncoding=["uint256", "address"]),
        lambda d: d.update(root=d["root"].upper()),  # type: ignore[attr-defined]
        lambda d: d.update(entries=[]),
    ],
)
def test_malformed_payout_files_are_refused(tamper: object) -> None:
    data = _golden_payout()
    tamper(data)  # type: ignore[operator]
    with pytest.raises(InvalidInputError):
        loads_payout(json.dumps(data))


def test_payout_with_a_wrong_root_does_not_rebuild() -> None:
    data = _golden_payout()
    _entry(data, 0)["amount"] = "43"  # one unit moved between accounts: the total still holds
    _entry(data, 1)["amount"] = "1499999"
    payout = loads_payout(json.dumps(data))
    with pytest.raises(RootMismatchError):
        payout.rebuild_tree()


def test_floats_never_load() -> None:
    data = _golden_payout()
    text = json.dumps(data).replace('"epoch": 7', '"epoch": 7.0')
    with pytest.raises(InvalidInputError, match="float"):
        loads_payout(text)


def test_build_payout_refuses_bad_input() -> None:
    a = "0x" + "aa" * 20
    for amounts in [
        {a: -1},
        {a: 0},
        {a: 2**256},
        {"0x12": 1},
        {a: 1, a.upper().replace("X", "x"): 2},
    ]:
        with pytest.raises(InvalidInputError):
            build_payout(1, TOKEN, 1, amounts)
    with pytest.raises(InvalidInputError):
        build_payout(1, TOKEN, 1, {a: MAX_UINT256, "0x" + "bb" * 20: 1})


@PROPERTY
@given(st.lists(st.binary(min_size=20, max_size=20), max_size=20), st.integers(0, 2))
def test_checksums_match_eth_utils(raw: list[bytes], style: int) -> None:
    spelled = [_spell(r, style) for r in raw]
    assert to_checksum_addresses(spelled) == [to_checksum_address("0x" + r.hex()) for r in raw]


def _miscase(raw: bytes, flip_at: int) -> str:
    """The checksummed address with the case of one letter flipped (if it has any letters)."""
    text = to_checksum_address("0x" + raw.hex())
    letters = [i for i, c in enumerate(text) if i > 1 and c.isalpha()]
    if not letters:
        return text
    i = letters[flip_at % len(letters)]
    return text[:i] + text[i].swapcase() + text[i + 1 :]


# Well-formed text whose letter case decides (the bulk checks' slow branch), and other junk.
cased_addresses = st.one_of(
    addresses, st.builds(_miscase, st.binary(min_size=20, max_size=20), st.integers(0, 39))
)
malformed_addresses = st.one_of(
    addresses.map(lambda a: "0X" + a[2:]),
    st.builds(
        lambda a, i, c: a[:i] + c + a[i + 1 :],
        addresses,
        st.integers(0, 41),
        st.sampled_from([" ", "\t", "\n", "g", "G", "x", "é", "٣", "\x00", "0"]),
    ),
    st.builds(lambda a, n: a[: 42 - n], addresses, st.integers(1, 3)),
    addresses.map(lambda a: a + "0"),
    addresses.map(lambda a: a + "\n"),
    st.text(max_size=44),
    st.binary(max_size=21),
    st.none(),
)


def _parse_address_or_none(value: object) -> str | None:
    try:
        return parse_address(value)
    except ValueError:
        return None


@PROPERTY
@given(
    st.lists(cased_addresses, min_size=1, max_size=8),
    st.lists(malformed_addresses, max_size=2),
    st.integers(0, 2),
)
def test_bulk_address_checks_accept_exactly_what_parse_address_accepts(
    cased: list[str], malformed: list[object], style: int
) -> None:
    # The bulk paths take shortcuts for columns in one letter case or all checksummed, so the
    # column starts with valid addresses in one style, then the drawn values.
    values = [*cased, *malformed]
    valid = [_parse_address_or_none(value) for value in values]
    column = [_spell(bytes.fromhex(a[2:]), style) for a in valid if a is not None] + values
    expected = [_parse_address_or_none(value) for value in column]
    if None in expected:
        with pytest.raises(InvalidInputError):
            parse_addresses(column)
    else:
        assert parse_addresses(column) == expected
    # A Merkle leaf also takes 20 raw bytes (they have no letter case); text as parse_address.
    as_leaf = [
        "0x" + v.hex() if isinstance(v, bytes) and len(v) == 20 else p
        for v, p in zip(column, expected, strict=True)
    ]
    leaves = [(0, value, 1) for value in column]
    if None in as_leaf:
        with pytest.raises(InvalidInputError):
            MerkleTree.of(leaves, ENCODING)  # type: ignore[arg-type]
    else:
        reference = reference_root([(0, a, 1) for a in as_leaf])  # type: ignore[misc]
        assert MerkleTree.of(leaves, ENCODING).root == reference  # type: ignore[arg-type]
    for value, parsed in zip(column, as_leaf, strict=True):
        if parsed is None:
            with pytest.raises(InvalidInputError):
                leaf_hash(ENCODING, (0, value, 1))  # type: ignore[arg-type]
        else:
            assert leaf_hash(ENCODING, (0, value, 1)) == leaf_hash(ENCODING, (0, parsed, 1))


def test_payout_file_is_a_frozen_value() -> None:
    payout, _ = build_payout(1, TOKEN, 5, {"0x" + "aa" * 20: 3})
    assert isinstance(payout, PayoutFile)
    with pytest.raises(AttributeError):
        payout.total = 4  # type: ignore[misc]
