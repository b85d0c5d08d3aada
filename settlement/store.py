"""The settler's tables: epochs and their lifecycle, allocations, carries, signed transactions.

Every status change is a compare-and-set, `UPDATE epochs SET status = :target ... WHERE id = :n
AND status = :expected`, checked against `schemas.epoch.TRANSITIONS` first: of two settlers (or
a settler and its own restart) that try the same move, exactly one sees a row updated, and the
other learns it lost and does nothing. The store writes through the caller's connection and
never commits: the settler decides what one transaction holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from schemas.epoch import EpochStatus, check_transition
from schemas.tables import metadata

_epochs = metadata.tables["epochs"]
_allocations = metadata.tables["epoch_allocations"]
_carries = metadata.tables["recipient_carries"]
_txs = metadata.tables["settlement_txs"]
_accruals = metadata.tables["accruals"]

ZERO_HASH = "0x" + "00" * 32
"""The `root` of an epoch with no leaves (no Merkle tree exists for it)."""

#: Statuses from which an epoch's distribution is known (it may feed the next epoch's carries).
DONE_COMPUTING = frozenset(
    {EpochStatus.COMPUTED, EpochStatus.COMMITTED, EpochStatus.CLAIMABLE, EpochStatus.DISPUTED}
)


def hex32(value: bytes) -> str:
    """A 32-byte value as the tables store it: 0x-prefixed lowercase hex."""
    if len(value) != 32:
        raise ValueError(f"expected 32 bytes, got {len(value)}")
    return "0x" + value.hex()


@dataclass(frozen=True)
class StoredEpoch:
    """One `epochs` row."""

    id: int
    start_time: int
    end_time: int
    status: EpochStatus
    root: str | None
    total: int | None
    inputs_hash: str | None
    usage_root: str | None
    tx_hash: str | None
    block_number: int | None
    claimable_at: int | None
    leaf_count: int | None
    accrual_count: int | None
    fees_e6: int | None
    computed_at: datetime | None
    committed_at: datetime | None

    @classmethod
    def from_row(cls, row: RowMapping) -> StoredEpoch:
        values = {name: row[name] for name in cls.__dataclass_fields__}
        values["status"] = EpochStatus(row["status"])
        return cls(**values)

    @property
    def on_chain(self) -> bool:
        """Whether the epoch has (or will have) a root on chain: it has at least one leaf."""
        return bool(self.leaf_count)


@dataclass(frozen=True)
class StoredTx:
    """One `settlement_txs` row: a signed transaction of the settler for an epoch."""

    tx_hash: str
    epoch: int
    kind: str
    chain_id: int
    sender: str
    nonce: int
    raw_tx: str
    state: str
    block_number: int | None
    gas_used: int | None


@dataclass(frozen=True)
class ComputedEpoch:
    """What the compute step writes: leaves, carries and the epoch's outputs."""

    leaves: Sequence[tuple[int, str, int]]
    """(index, EIP-55 account, amount) per leaf."""
    carries_out: Mapping[str, int]
    root: str
    total: int
    inputs_hash: str
    usage_root: str
    accrual_count: int
    fees_e6: int


def _insert(connection: Connection) -> Any:
    # The dialect's insert: the one that has `on_conflict_do_nothing`.
    if connection.dialect.name == "postgresql":
        return postgresql.insert
    if connection.dialect.name == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"no idempotent insert for {connection.dialect.name}")


class EpochStore:
    """The settler's reads and writes, through one connection (the caller commits)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    # -- epochs -------------------------------------------------------------------------------

    def ensure_open(self, windows: Iterable[tuple[int, int, int]]) -> int:
        """Create `(id, start_time, end_time)` epochs as `open` unless they exist; how many new."""
        rows = [
            {"id": n, "start_time": s, "end_time": e, "status": EpochStatus.OPEN.value}
            for n, s, e in windows
        ]
        if not rows:
            return 0
        insert = _insert(self.connection)
        statement = (
            insert(_epochs).on_conflict_do_nothing(index_elements=["id"]).returning(_epochs.c.id)
        )
        return sum(len(self.connection.execute(statement, row).all()) for row in rows)

    def get(self, epoch: int) -> StoredEpoch | None:
        """The epoch row, or None."""
        row = self.connection.execute(sa.select(_epochs).where(_epochs.c.id == epoch)).one_or_none()
        return None if row is None else StoredEpoch.from_row(row._mapping)

    def with_status(self, *statuses: EpochStatus) -> list[StoredEpoch]:
        """Epochs in any of `statuses`, oldest first."""
        query = (
            sa.select(_epochs)
            .where(_epochs.c.status.in_([s.value for s in statuses]))
            .order_by(_epochs.c.id)
        )
        return [StoredEpoch.from_row(r._mapping) for r in self.connection.execute(query)]

    def last_epoch_id(self) -> int | None:
        """The greatest epoch id stored."""
        value = self.connection.execute(sa.select(sa.func.max(_epochs.c.id))).scalar()
        return None if value is None else int(value)

    def first_epoch_id(self) -> int | None:
        """The smallest epoch id stored."""
        value = self.connection.execute(sa.select(sa.func.min(_epochs.c.id))).scalar()
        return None if value is None else int(value)

    def status_counts(self) -> dict[EpochStatus, int]:
        """How many epochs are in each status (every status present, zero or not)."""
        query = sa.select(_epochs.c.status, sa.func.count()).group_by(_epochs.c.status)
        counts = {status: 0 for status in EpochStatus}
        for status, count in self.connection.execute(query):
            counts[EpochStatus(status)] = int(count)
        return counts

    def last_committed_epoch(self) -> int | None:
        """The greatest epoch id committed or beyond (claimable, disputed)."""
        done = [EpochStatus.COMMITTED.value, EpochStatus.CLAIMABLE.value]
        done.append(EpochStatus.DISPUTED.value)
        query = sa.select(sa.func.max(_epochs.c.id)).where(_epochs.c.status.in_(done))
        value = self.connection.execute(query).scalar()
        return None if value is None else int(value)

    def transition(
        self, epoch: int, expected: EpochStatus, target: EpochStatus, **values: Any
    ) -> bool:
        """Move `epoch` from `expected` to `target` (setting `values`) if it is still `expected`.

        Raises `InvalidTransition` if the lifecycle forbids the move; returns False (and changes
        nothing) when the epoch is not in `expected` any more, e.g. another settler moved it.
        """
        check_transition(expected, target)
        statement = (
            sa.update(_epochs)
            .where(_epochs.c.id == epoch, _epochs.c.status == expected.value)
            .values(status=target.value, **values)
        )
        return self.connection.execute(statement).rowcount == 1

    # -- compute ------------------------------------------------------------------------------

    def mark_settled(self, epoch: int) -> int:
        """Bill every unbilled accrual of `epoch` or before in `epoch`; how many."""
        statement = (
            sa.update(_accruals)
            .where(_accruals.c.settled_epoch.is_(None), _accruals.c.epoch <= epoch)
            .values(settled_epoch=epoch)
        )
        return int(self.connection.execute(statement).rowcount or 0)

    def write_computed(self, epoch: int, computed: ComputedEpoch, now: datetime) -> None:
        """Store the leaves and carries of `epoch` and its outputs (the status is set apart)."""
        if computed.leaves:
            self.connection.execute(
                sa.insert(_allocations),
                [
                    {"epoch_id": epoch, "leaf_index": i, "account": a, "amount": amount}
                    for i, a, amount in computed.leaves
                ],
            )
        if computed.carries_out:
            self.connection.execute(
                sa.insert(_carries),
                [
                    {"account": account, "epoch_id": epoch, "carry_e6": carry}
                    for account, carry in sorted(computed.carries_out.items())
                ],
            )
        self.connection.execute(
            sa.update(_epochs)
            .where(_epochs.c.id == epoch)
            .values(
                root=computed.root,
                total=computed.total,
                inputs_hash=computed.inputs_hash,
                usage_root=computed.usage_root,
                leaf_count=len(computed.leaves),
                accrual_count=computed.accrual_count,
                fees_e6=computed.fees_e6,
                computed_at=now,
            )
        )

    def allocations(self, epoch: int) -> list[tuple[int, str, int]]:
        """The leaves `(index, account, amount)` of `epoch`, by index."""
        query = (
            sa.select(_allocations.c.leaf_index, _allocations.c.account, _allocations.c.amount)
            .where(_allocations.c.epoch_id == epoch)
            .order_by(_allocations.c.leaf_index)
        )
        return [(int(i), str(a), int(m)) for i, a, m in self.connection.execute(query)]

    def carries(self, epoch: int) -> dict[str, int]:
        """The carries (10^-6 units) recorded after `epoch`, by account."""
        query = sa.select(_carries.c.account, _carries.c.carry_e6).where(
            _carries.c.epoch_id == epoch
        )
        return {str(a): int(c) for a, c in self.connection.execute(query)}

    # -- transactions -------------------------------------------------------------------------

    def add_tx(self, tx: StoredTx, now: datetime) -> None:
        """Record a signed transaction (before it is broadcast)."""
        values = {name: getattr(tx, name) for name in StoredTx.__dataclass_fields__}
        values["epoch_id"] = values.pop("epoch")
        self.connection.execute(sa.insert(_txs), {**values, "created_at": now, "updated_at": now})

    def txs(self, epoch: int, kind: str | None = None) -> list[StoredTx]:
        """The transactions recorded for `epoch` (of `kind`), by nonce then record order."""
        query = sa.select(_txs).where(_txs.c.epoch_id == epoch)
        if kind is not None:
            query = query.where(_txs.c.kind == kind)
        query = query.order_by(_txs.c.nonce, _txs.c.created_at)
        return [_stored_tx(r._mapping) for r in self.connection.execute(query)]

    def set_tx_state(
        self,
        tx_hash: str,
        state: str,
        now: datetime,
        *,
        block_number: int | None = None,
        gas_used: int | None = None,
    ) -> None:
        """Record what became of a transaction (sent, mined, failed, replaced)."""
        values: dict[str, Any] = {"state": state, "updated_at": now}
        if block_number is not None:
            values["block_number"] = block_number
        if gas_used is not None:
            values["gas_used"] = gas_used
        self.connection.execute(sa.update(_txs).where(_txs.c.tx_hash == tx_hash).values(**values))


def _stored_tx(row: RowMapping) -> StoredTx:
    values = {name: row[name] for name in StoredTx.__dataclass_fields__ if name != "epoch"}
    return StoredTx(epoch=int(row["epoch_id"]), **values)
