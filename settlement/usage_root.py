"""The usage root of an epoch, and usage receipts.

The usage root commits an epoch to the exact usage it bills: an OpenZeppelin
`StandardMerkleTree` with one leaf per accrual billed by the epoch (`settled_epoch == epoch`),

    (bytes32 keccak256(utf8(usage_id)), uint256 model_id, uint256 license_id,
     uint256 units, uint256 event_time, uint256 fee_e6)

leaf encoding `USAGE_LEAF_ENCODING`; an epoch that bills nothing has the zero root. It goes
on-chain with the epoch's commit (`EpochCommitted.usageRoot`), so a licensee holding a
`UsageReceipt` can check, without trusting this service, that a usage id was billed in that
epoch, for those units and that fee.

The tree part (`UsageRecord`, `usage_tree`, `usage_root`) is pure; `read_usage_records` and
`usage_receipt` read the `accruals` table through the caller's connection.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from schemas.tables import metadata
from settlement.merkle import MerkleTree, keccak256, keccak256_many, leaf_hash, verify_proof

#: The leaf encoding of the usage tree.
USAGE_LEAF_ENCODING = ("bytes32", "uint256", "uint256", "uint256", "uint256", "uint256")

# USAGE_LEAF_ENCODING with the id hash as the uint256 of its bytes: the same 32-byte word.
_BULK_USAGE_ENCODING = ("uint256",) * len(USAGE_LEAF_ENCODING)

#: The usage root of an epoch that bills nothing.
EMPTY_USAGE_ROOT = bytes(32)

# Rows fetched per round trip when streaming an epoch's accruals.
_FETCH_SIZE = 50_000

_accruals = metadata.tables["accruals"]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One billed usage event as the usage tree commits to it."""

    usage_id: str
    model_id: int
    license_id: int
    units: int
    event_time: int
    fee_e6: int

    def leaf(self) -> tuple[bytes, int, int, int, int, int]:
        """The leaf value (`USAGE_LEAF_ENCODING`)."""
        return (
            usage_id_hash(self.usage_id),
            self.model_id,
            self.license_id,
            self.units,
            self.event_time,
            self.fee_e6,
        )


def usage_id_hash(usage_id: str) -> bytes:
    """keccak256 of the usage id's UTF-8 bytes: the first item of its leaf."""
    return keccak256(usage_id.encode("utf-8"))


def usage_leaves(records: Iterable[UsageRecord]) -> list[tuple[bytes, int, int, int, int, int]]:
    """The leaf values of `records`, in order (the id hashes in one batch)."""
    kept = list(records)
    hashes = keccak256_many(record.usage_id.encode("utf-8") for record in kept)
    return [
        (digest, r.model_id, r.license_id, r.units, r.event_time, r.fee_e6)
        for digest, r in zip(hashes, kept, strict=True)
    ]


def usage_tree(records: Iterable[UsageRecord]) -> MerkleTree | None:
    """The usage tree of `records` (in any order: the root depends only on the set); None when
    empty."""
    leaves = usage_leaves(records)
    return MerkleTree.of(leaves, USAGE_LEAF_ENCODING) if leaves else None


def usage_root(records: Iterable[UsageRecord]) -> bytes:
    """The usage root of `records`; `EMPTY_USAGE_ROOT` when there are none."""
    tree = usage_tree(records)
    return EMPTY_USAGE_ROOT if tree is None else tree.root_bytes


# --- receipts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageReceipt:
    """Proof that `usage_id` was billed in `epoch`: its leaf values, Merkle proof and the root."""

    usage_id: str
    epoch: int
    record: UsageRecord
    proof: tuple[str, ...]
    """Sibling nodes, 0x-hex, as OpenZeppelin's `MerkleProof` takes them."""
    root: str
    """The epoch's usage root, 0x-hex (compare it with `EpochCommitted.usageRoot`)."""

    @property
    def leaf_values(self) -> tuple[str, int, int, int, int, int]:
        """The leaf values, the id hash as 0x-hex."""
        digest, *numbers = self.record.leaf()
        model_id, license_id, units, event_time, fee_e6 = numbers
        return ("0x" + digest.hex(), model_id, license_id, units, event_time, fee_e6)

    @property
    def leaf_hash(self) -> str:
        """The leaf's hash (0x-hex), as the tree hashes it."""
        return leaf_hash(USAGE_LEAF_ENCODING, self.leaf_values)

    def verify(self) -> bool:
        """Whether the proof takes this receipt's leaf to its root."""
        return verify_proof(self.root, self.leaf_hash, self.proof)

    def to_json(self) -> dict[str, Any]:
        """The receipt as JSON (integers as decimal strings)."""
        values = self.leaf_values
        return {
            "usage_id": self.usage_id,
            "epoch": str(self.epoch),
            "leaf_encoding": list(USAGE_LEAF_ENCODING),
            "leaf": [values[0], *(str(value) for value in values[1:])],
            "leaf_hash": self.leaf_hash,
            "proof": list(self.proof),
            "root": self.root,
        }


def receipt_from_tree(
    tree: MerkleTree, epoch: int, records: Sequence[UsageRecord], usage_id: str
) -> UsageReceipt | None:
    """The receipt of `usage_id` in a usage tree built from `records` (in that order)."""
    for index, record in enumerate(records):
        if record.usage_id == usage_id:
            return UsageReceipt(usage_id, epoch, record, tree.proof(index), tree.root)
    return None


# --- database reads ----------------------------------------------------------------------------


def _plain(column: Any, dialect: str) -> Any:
    """A uint256 column read as the driver returns it (a padded string on SQLite, a Decimal on
    PostgreSQL), without the per-value checks of `Uint256`: the caller converts with int()."""
    return sa.type_coerce(column, sa.String() if dialect == "sqlite" else sa.Numeric(78, 0))


def _usage_rows(connection: Connection, epoch: int) -> Iterator[Sequence[Any]]:
    a = _accruals.c
    dialect = connection.dialect.name
    query = sa.select(
        a.usage_id,
        _plain(a.model_id, dialect),
        _plain(a.license_id, dialect),
        _plain(a.units, dialect),
        a.event_time,
        _plain(a.fee_e6, dialect),
    ).where(a.settled_epoch == epoch)
    # Per statement: Connection.execution_options() would change the caller's connection.
    result = connection.execute(query.execution_options(yield_per=_FETCH_SIZE))
    for partition in result.partitions():
        yield from partition


def read_usage_records(connection: Connection, epoch: int) -> Iterator[UsageRecord]:
    """The usage records billed by `epoch` (accruals with `settled_epoch == epoch`), streamed."""
    for usage_id, model_id, license_id, units, event_time, fee_e6 in _usage_rows(connection, epoch):
        yield UsageRecord(
            str(usage_id), int(model_id), int(license_id), int(units), int(event_time), int(fee_e6)
        )


def epoch_usage_root(connection: Connection, epoch: int) -> tuple[bytes, int]:
    """The usage root of `epoch` and its record count, read in bulk (what the settler uses:
    the same leaves as `usage_root(read_usage_records(...))`, without a record object each)."""
    ids: list[bytes] = []
    columns: list[tuple[int, int, int, int, int]] = []
    with _gc_paused():
        for usage_id, model_id, license_id, units, event_time, fee_e6 in _usage_rows(
            connection, epoch
        ):
            ids.append(str(usage_id).encode("utf-8"))
            columns.append(
                (int(model_id), int(license_id), int(units), int(event_time), int(fee_e6))
            )
        if not ids:
            return EMPTY_USAGE_ROOT, 0
        # A bytes32 and the uint256 of the same 32 bytes have one ABI encoding, so the leaves,
        # and the root, are those of USAGE_LEAF_ENCODING; uint256 columns encode in bulk.
        hashes = [int.from_bytes(digest, "big") for digest in keccak256_many(ids)]
        leaves = [(digest, *rest) for digest, rest in zip(hashes, columns, strict=True)]
        return MerkleTree.of(leaves, _BULK_USAGE_ENCODING).root_bytes, len(leaves)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while millions of tuples are built (none forms a cycle): otherwise
    its full collections rescan them all, again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def usage_receipt(connection: Connection, usage_id: str) -> UsageReceipt | None:
    """The receipt of `usage_id`: None when it was never billed or its epoch is not computed
    yet (its accrual has no `settled_epoch`)."""
    epoch = connection.execute(
        sa.select(_accruals.c.settled_epoch).where(_accruals.c.usage_id == usage_id)
    ).scalar_one_or_none()
    if epoch is None:
        return None
    records = list(read_usage_records(connection, int(epoch)))
    tree = usage_tree(records)
    if tree is None:
        return None
    return receipt_from_tree(tree, int(epoch), records, usage_id)
