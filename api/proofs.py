"""Merkle trees of computed epochs, built from `epoch_allocations` and kept in memory.

A computed epoch's allocations never change (its root is committed on-chain), so its tree and
every proof in it are computed once and served from memory until evicted (least recently used
first, `tree_cache_epochs` trees at most). The tree is rebuilt with `settlement.merkle` — the
same code the settler commits with — and checked against the epoch's stored root before use.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemas.tables import metadata
from settlement.merkle import MerkleTree

LEAF_ENCODING = ("uint256", "address", "uint256")
"""The leaf `(index, account, amount)` as `RoyaltyDistributor.leafHash` encodes it."""

_alloc = metadata.tables["epoch_allocations"]


class RootMismatchError(Exception):
    """The allocations stored for an epoch do not hash to its stored root (a database bug)."""


@dataclass(frozen=True)
class Leaf:
    """One allocation of an epoch: leaf index, checksummed account, amount, proof (0x hex)."""

    epoch: int
    index: int
    account: str
    amount: int
    proof: tuple[str, ...]


@dataclass(frozen=True)
class EpochTree:
    """An epoch's tree with an account → leaf lookup and every proof precomputed."""

    epoch: int
    root: str
    tree: MerkleTree | None
    leaves: tuple[tuple[int, str, int], ...]
    positions: dict[str, int]
    proofs: tuple[tuple[str, ...], ...]
    _fragments: dict[int, bytes] = field(default_factory=dict, compare=False, repr=False)

    def leaf_of(self, account: str) -> Leaf | None:
        """The leaf of `account` (checksummed), or None when it earned nothing this epoch."""
        position = self.positions.get(account)
        if position is None:
            return None
        index, holder, amount = self.leaves[position]
        return Leaf(self.epoch, index, holder, amount, self.proofs[position])

    def fragment(self, position: int) -> bytes:
        """The JSON of the leaf at `position` up to its root, serialised once and reused:
        `{"epoch":..,"index":..,"account":..,"amount":"..","proof":[..],"root":` (the
        caller appends the root and the `claimed` flag)."""
        cached = self._fragments.get(position)
        if cached is None:
            index, account, amount = self.leaves[position]
            head = {
                "epoch": self.epoch,
                "index": index,
                "account": account,
                "amount": str(amount),
                "proof": list(self.proofs[position]),
            }
            text = json.dumps(head, separators=(",", ":"), ensure_ascii=False)
            cached = self._fragments[position] = (text[:-1] + ',"root":').encode()
        return cached


def build_tree(connection: Connection, epoch: int, root: str) -> EpochTree:
    """The tree of `epoch` from its stored allocations; RootMismatchError if it is not `root`."""
    rows = connection.execute(
        sa.select(_alloc.c.leaf_index, _alloc.c.account, _alloc.c.amount)
        .where(_alloc.c.epoch_id == epoch)
        .order_by(_alloc.c.leaf_index)
    ).all()
    leaves = tuple((int(r.leaf_index), str(r.account), int(r.amount)) for r in rows)
    if not leaves:
        return EpochTree(epoch, root, None, (), {}, ())
    tree = MerkleTree.of(leaves, LEAF_ENCODING)
    if tree.root.lower() != root.lower():
        raise RootMismatchError(
            f"epoch {epoch}: allocations hash to {tree.root}, stored root {root}"
        )
    positions = {account: position for position, (_, account, _) in enumerate(leaves)}
    return EpochTree(epoch, root, tree, leaves, positions, tuple(tree.proofs()))


class TreeCache:
    """Trees by `(epoch, root)`, least recently used evicted; `max_epochs=0` caches nothing."""

    def __init__(self, max_epochs: int) -> None:
        self.max_epochs = max_epochs
        self._trees: OrderedDict[tuple[int, str], EpochTree] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, connection: Connection, epoch: int, root: str) -> EpochTree:
        """The tree of `epoch` with root `root`, built on first use."""
        key = (epoch, root.lower())
        with self._lock:
            cached = self._trees.get(key)
            if cached is not None:
                self._trees.move_to_end(key)
                return cached
        built = build_tree(connection, epoch, root)
        if self.max_epochs > 0:
            with self._lock:
                self._trees[key] = built
                while len(self._trees) > self.max_epochs:
                    self._trees.popitem(last=False)
        return built

    def __len__(self) -> int:
        return len(self._trees)
