"""settlement.merkle against the real @openzeppelin/merkle-tree, on random inputs.

All cases go to one `node` run (tests/merkle_oz_compat/oz_tree.mjs), so the whole comparison
costs one process start. Compared for every case: root, the proof of every leaf, multiproofs,
the dump text (compact and indented), our dump loaded by OZ and OZ's dump loaded by us.
Set OZ_COMPAT_SEED to explore other inputs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from eth_utils import to_checksum_address

from settlement.merkle import MerkleTree
from settlement.merkle_dump import loads_payout

NODE_MODULES = Path(__file__).parents[1] / "contracts" / "node_modules"
ORACLE = Path(__file__).parent / "merkle_oz_compat" / "oz_tree.mjs"
GOLDEN_PAYOUT = Path(__file__).parent / "golden" / "merkle" / "royalty-payout-v1.json"
SEED = int(os.environ.get("OZ_COMPAT_SEED", "20240601"))
PAYOUT_ENCODING = ["uint256", "address", "uint256"]
MIXED_ENCODING = ["address", "bool", "int64", "bytes32", "string", "bytes", "uint16[]"]
MAX_UINT256 = 2**256 - 1

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_MODULES / "@openzeppelin" / "merkle-tree").is_dir(),
    reason="needs node and contracts/node_modules/@openzeppelin/merkle-tree (npm ci in contracts/)",
)


def _address(rnd: random.Random) -> str:
    lower = "0x" + rnd.randbytes(20).hex()
    return rnd.choice([lower, to_checksum_address(lower), "0x" + lower[2:].upper()])


def _uint(rnd: random.Random) -> int:
    return rnd.choice([0, 1, MAX_UINT256, rnd.getrandbits(rnd.randint(1, 256))])


def _payout_case(rnd: random.Random, size: int, as_ints: bool) -> tuple[list[Any], list[Any]]:
    """Values for OZ (strings, as OZ users pass them) and the same values for us."""
    ours: list[Any] = []
    theirs: list[Any] = []
    for i in range(size):
        index = i if rnd.random() < 0.8 else _uint(rnd)
        account, amount = _address(rnd), _uint(rnd)
        if as_ints:
            ours.append((index, account, amount))
            theirs.append([str(index), account, str(amount)])
        else:  # OZ also takes 0x-hex numbers; both sides then dump them as given
            spelled = [str(index), account, hex(amount) if rnd.random() < 0.3 else str(amount)]
            ours.append(tuple(spelled))
            theirs.append(spelled)
    return theirs, ours


def _mixed_case(rnd: random.Random, size: int) -> list[Any]:
    return [
        [
            _address(rnd),
            rnd.random() < 0.5,
            str(rnd.randint(-(2**63), 2**63 - 1)),
            "0x" + rnd.randbytes(32).hex(),
            rnd.choice(["", "royalty", "héllo ✓", "a" * 70]),
            "0x" + rnd.randbytes(rnd.randint(0, 40)).hex(),
            [str(rnd.randint(0, 2**16 - 1)) for _ in range(rnd.randint(0, 3))],
        ]
        for _ in range(size)
    ]


def _multiproof_sets(rnd: random.Random, size: int) -> list[list[int]]:
    picks = [rnd.sample(range(size), rnd.randint(1, size)) for _ in range(3)]
    return [[], list(range(size)), [rnd.randrange(size)], *picks]


def _build_cases() -> list[dict[str, Any]]:
    rnd = random.Random(SEED)
    cases: list[dict[str, Any]] = []
    sizes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 255, 256, 257, 1000]
    for n, size in enumerate(sizes):
        theirs, ours = _payout_case(rnd, size, as_ints=n % 2 == 0)
        cases.append({"leafEncoding": PAYOUT_ENCODING, "values": theirs, "ours": ours})
    for size in (1, 2, 5, 20):
        values = _mixed_case(rnd, size)
        cases.append({"leafEncoding": MIXED_ENCODING, "values": values, "ours": values})
    theirs, _ = _payout_case(rnd, 12, as_ints=False)
    respelled = [[i, a.upper().replace("X", "x"), hex(int(m, 0))] for i, a, m in theirs[:6]]
    duplicates = theirs + respelled  # same leaves, other spellings: OZ's lookup keeps the last
    cases.append({"leafEncoding": PAYOUT_ENCODING, "values": duplicates, "ours": duplicates})
    payout = loads_payout(GOLDEN_PAYOUT.read_text(encoding="utf-8"))
    entries = [(str(e.index), e.account, str(e.amount)) for e in payout.entries]
    cases.append({"leafEncoding": PAYOUT_ENCODING, "values": entries, "ours": entries})
    for case in cases:
        size = len(case["values"])
        case["multiproofs"] = _multiproof_sets(rnd, size)
        case["tree"] = MerkleTree.of(case.pop("ours"), case["leafEncoding"])
        case["dumps"] = [case["tree"].dumps()]
    return cases


@pytest.fixture(scope="module")
def compared() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    cases = _build_cases()
    wire = [{k: v for k, v in case.items() if k != "tree"} for case in cases]
    completed = subprocess.run(
        ["node", str(ORACLE)],
        input=json.dumps({"cases": wire}),
        capture_output=True,
        text=True,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout)["results"]
    assert len(results) == len(cases)
    return list(zip(cases, results, strict=True))


def _as_json(value: Any) -> Any:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return str(value)
    return [_as_json(item) for item in value]


def test_roots_and_every_proof_match(compared: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    for case, oz in compared:
        tree: MerkleTree = case["tree"]
        assert tree.root == oz["root"]
        assert [list(proof) for proof in tree.proofs()] == oz["proofs"]


def test_multiproofs_match(compared: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    for case, oz in compared:
        tree: MerkleTree = case["tree"]
        for indices, expected in zip(case["multiproofs"], oz["multiproofs"], strict=True):
            multi = tree.multiproof(indices)
            assert [_as_json(leaf) for leaf in multi.leaves] == expected["leaves"]
            assert list(multi.proof) == expected["proof"]
            assert list(multi.proof_flags) == expected["proofFlags"]
            assert tree.verify_multiproof(multi)


def test_dumps_are_byte_identical(compared: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    for case, oz in compared:
        tree: MerkleTree = case["tree"]
        assert tree.dumps() == oz["dump"]
        assert tree.dumps(indent=2) == oz["dumpIndented"]


def test_dumps_load_both_ways(compared: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    for case, oz in compared:
        tree: MerkleTree = case["tree"]
        (reloaded,) = oz["reloaded"]  # our dump, loaded and re-dumped by OZ
        assert reloaded == {"root": tree.root, "dump": tree.dumps()}
        for text in (oz["dump"], oz["dumpIndented"]):
            ours = MerkleTree.loads(text)
            assert ours.root == oz["root"]
            assert ours.dumps() == oz["dump"]
            assert ours.dumps(indent=2) == oz["dumpIndented"]
