"""The `royalty-payout-v1` file: one epoch's distribution, enough on its own to rebuild its tree.

What the settler publishes next to the on-chain root and what the API serves proofs from:

    {"format": "royalty-payout-v1", "epoch": 42, "token": "0x…", "chainId": 1,
     "leafEncoding": ["uint256", "address", "uint256"], "root": "0x…", "total": "123",
     "entries": [{"index": "0", "account": "0x…", "amount": "123"}, …]}

Rules, all checked when reading, so a file that loads is canonical and self-consistent:
- integers that are money or leaf fields (`index`, `amount`, `total`) are decimal strings without
  sign or leading zeros, below 2**256: never JSON numbers, never floats. `epoch` and `chainId`
  are JSON integers (always below 2**53, so JavaScript reads them exactly);
- addresses are EIP-55 checksummed; accounts are unique;
- entries are in strictly increasing `index` order; `build_payout` numbers them 0..n-1 in
  ascending account order (as 20-byte values), which makes the file a function of the amounts;
- `total` is the sum of the amounts: the amount the epoch commits and funds on-chain;
- the leaves are `(index, account, amount)` in OZ's StandardMerkleTree; `rebuild_tree` rebuilds
  it and refuses a file whose `root` does not match.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import TypeVar

from settlement.abi_leaf import parse_addresses
from settlement.errors import InvalidInputError, RootMismatchError
from settlement.merkle import MerkleTree

PAYOUT_FORMAT = "royalty-payout-v1"

#: The leaf of the RoyaltyDistributor contract: (index, account, amount).
PAYOUT_LEAF_ENCODING = ("uint256", "address", "uint256")

_T = TypeVar("_T")

_UINT256_LIMIT = 1 << 256
_JS_SAFE_LIMIT = 1 << 53


@dataclass(frozen=True, slots=True)
class PayoutEntry:
    """One leaf: `account` may claim `amount` token base units under claim bitmap bit `index`."""

    index: int
    account: str
    amount: int


@dataclass(frozen=True, slots=True)
class PayoutFile:
    """A parsed, canonical `royalty-payout-v1` file (see the module docstring for the rules)."""

    epoch: int
    token: str
    chain_id: int
    root: str
    total: int
    entries: tuple[PayoutEntry, ...]

    def rebuild_tree(self) -> MerkleTree:
        """Rebuild the Merkle tree from the entries; RootMismatchError unless it has `root`."""
        tree = MerkleTree.of(
            [(entry.index, entry.account, entry.amount) for entry in self.entries],
            PAYOUT_LEAF_ENCODING,
        )
        if tree.root != self.root:
            raise RootMismatchError(
                f"epoch {self.epoch}: entries rebuild to root {tree.root}, file states {self.root}"
            )
        return tree

    def to_json(self) -> dict[str, object]:
        """The file as a JSON-ready dict (keys in publication order)."""
        return {
            "format": PAYOUT_FORMAT,
            "epoch": self.epoch,
            "token": self.token,
            "chainId": self.chain_id,
            "leafEncoding": list(PAYOUT_LEAF_ENCODING),
            "root": self.root,
            "total": str(self.total),
            "entries": [
                {"index": str(e.index), "account": e.account, "amount": str(e.amount)}
                for e in self.entries
            ],
        }


def build_payout(
    epoch: int, token: str, chain_id: int, amounts: Mapping[str, int]
) -> tuple[PayoutFile, MerkleTree]:
    """Build an epoch's payout file and its tree from per-account amounts in base units.

    Entries are ordered by account (as 20-byte values) and indexed 0..n-1 in that order, so the
    same amounts always give the same file and root. Accounts with a zero amount get no leaf:
    claiming it would cost gas and pay nothing. Raises InvalidInputError on a bad address (as
    `schemas.evm.parse_address` judges it), a duplicate account (in any letter case), a negative
    or >= 2**256 amount, or nothing to pay.
    """
    _check_small_int(epoch, "epoch")
    _check_small_int(chain_id, "chainId")
    accounts = list(amounts)
    checksummed = to_checksum_addresses([*accounts, token])
    if len(set(checksummed[:-1])) != len(accounts):
        raise InvalidInputError("an account appears twice (in different letter case)")
    paid = sorted(
        (
            (_uint256(amounts[account], "amount"), address)
            for account, address in zip(accounts, checksummed, strict=False)
            if amounts[account] != 0
        ),
        key=lambda pair: pair[1].lower(),
    )
    entries = tuple(
        PayoutEntry(index, address, amount) for index, (amount, address) in enumerate(paid)
    )
    _check_entries(entries)
    if not entries:
        raise InvalidInputError(f"epoch {epoch}: no positive amount to pay")
    tree = MerkleTree.of([(e.index, e.account, e.amount) for e in entries], PAYOUT_LEAF_ENCODING)
    total = _uint256(sum(e.amount for e in entries), "total")
    payout = PayoutFile(epoch, checksummed[-1], chain_id, tree.root, total, entries)
    return payout, tree


def dumps_payout(payout: PayoutFile, indent: int | None = None) -> str:
    """Serialize a payout file as JSON text (compact unless `indent` is given)."""
    if indent is None:
        return json.dumps(payout.to_json(), separators=(",", ":"))
    return json.dumps(payout.to_json(), indent=indent)


def loads_payout(text: str) -> PayoutFile:
    """Parse and check a payout file; call `rebuild_tree()` on the result to check its root.

    Raises InvalidInputError for anything that breaks the rules of the module docstring.
    """
    try:
        data = json.loads(text, parse_float=_refuse_float)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"a payout file must be JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != PAYOUT_FORMAT:
        raise InvalidInputError(f"not a {PAYOUT_FORMAT} file")
    if data.get("leafEncoding") != list(PAYOUT_LEAF_ENCODING):
        raise InvalidInputError(f"leafEncoding must be {list(PAYOUT_LEAF_ENCODING)}")
    raw_entries = data.get("entries")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise InvalidInputError("entries must be a non-empty list")
    entries = tuple(_parse_entry(raw) for raw in raw_entries)
    _check_entries(entries)
    accounts = [entry.account for entry in entries]
    token = _field(data, "token", str)
    if to_checksum_addresses([*accounts, token]) != [*accounts, token]:
        raise InvalidInputError("addresses must be EIP-55 checksummed")
    total = _decimal(data.get("total"), "total")
    if total != sum(entry.amount for entry in entries):
        raise InvalidInputError(f"total {total} is not the sum of the entries' amounts")
    root = _field(data, "root", str)
    if len(root) != 66 or root[:2] != "0x" or root != root.lower():
        raise InvalidInputError(f"root must be 0x and 64 lowercase hex digits, got {root!r}")
    return PayoutFile(
        epoch=_check_small_int(data.get("epoch"), "epoch"),
        token=token,
        chain_id=_check_small_int(data.get("chainId"), "chainId"),
        root=root,
        total=total,
        entries=entries,
    )


def to_checksum_addresses(addresses: list[str]) -> list[str]:
    """EIP-55 checksum many addresses at once: `schemas.evm.parse_address` of each, in bulk.

    Any single letter case is accepted; mixed case must already be the valid checksum. In bulk
    because eth_utils takes ~12 us per address, which matters for a million-entry payout file.
    """
    return parse_addresses(addresses)


def _parse_entry(raw: object) -> PayoutEntry:
    if not isinstance(raw, dict) or set(raw) != {"index", "account", "amount"}:
        raise InvalidInputError(f"an entry has exactly index, account and amount: {raw!r}")
    return PayoutEntry(
        index=_decimal(raw["index"], "index"),
        account=_field(raw, "account", str),
        amount=_decimal(raw["amount"], "amount"),
    )


def _check_entries(entries: tuple[PayoutEntry, ...]) -> None:
    indices = [entry.index for entry in entries]
    if any(a >= b for a, b in pairwise(indices)):
        raise InvalidInputError("entries must be in strictly increasing index order")
    if len({entry.account.lower() for entry in entries}) != len(entries):
        raise InvalidInputError("an account appears in more than one entry")


def _decimal(value: object, name: str) -> int:
    # Canonical form only, so a file has exactly one spelling: no sign, no leading zeros.
    if (
        not isinstance(value, str)
        or not value.isascii()
        or not value.isdigit()
        or (value[0] == "0" and value != "0")
    ):
        raise InvalidInputError(f"{name} must be a canonical decimal string, got {value!r}")
    return _uint256(int(value), name)


def _uint256(value: int, name: str) -> int:
    if type(value) is not int or not 0 <= value < _UINT256_LIMIT:
        raise InvalidInputError(f"{name} must be an integer in [0, 2**256), got {value!r}")
    return value


def _check_small_int(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value < _JS_SAFE_LIMIT:
        raise InvalidInputError(f"{name} must be an integer in [0, 2**53), got {value!r}")
    return value


def _field(data: Mapping[str, object], name: str, kind: type[_T]) -> _T:
    value = data.get(name)
    if not isinstance(value, kind):
        raise InvalidInputError(f"{name} must be a {kind.__name__}, got {value!r}")
    return value


def _refuse_float(text: str) -> float:
    raise InvalidInputError(f"floats are not allowed in a payout file: {text}")
