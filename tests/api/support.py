"""Factories of the API tests: epochs with allocations, claims, accruals, dead letters."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from api.proofs import LEAF_ENCODING
from schemas.evm import checksum_address
from schemas.tables import metadata
from settlement.merkle import MerkleTree

T = metadata.tables
CHAIN_ID = 31337
PEPPER = "test-pepper-not-secret"


def account(n: int) -> str:
    """A deterministic checksummed address."""
    return checksum_address("0x" + f"{n:040x}")


@dataclass(frozen=True)
class SeededEpoch:
    """An epoch written to the database: its leaves in leaf-index order and its tree."""

    id: int
    leaves: tuple[tuple[int, str, int], ...]
    tree: MerkleTree

    @property
    def root(self) -> str:
        return self.tree.root

    @property
    def total(self) -> int:
        return sum(amount for _, _, amount in self.leaves)

    def leaf_of(self, address: str) -> tuple[int, str, int]:
        return next(leaf for leaf in self.leaves if leaf[1].lower() == address.lower())


def seed_epoch(
    conn: Connection,
    epoch: int,
    payouts: Sequence[tuple[str, int]],
    *,
    status: str = "claimable",
    claimable_at: int | None = 1_000,
    length_s: int = 3_600,
    tx_hash: str | None = None,
    block_number: int | None = None,
) -> SeededEpoch:
    """Write an epoch row and its allocations as the settler does (leaves sorted by address)."""
    ordered = sorted(payouts, key=lambda p: bytes.fromhex(p[0][2:]))
    leaves = tuple(
        (i, checksum_address(a.lower()), amount) for i, (a, amount) in enumerate(ordered)
    )
    tree = MerkleTree.of(leaves, LEAF_ENCODING)
    committed = status in ("committed", "claimable", "disputed")
    conn.execute(
        T["epochs"]
        .insert()
        .values(
            id=epoch,
            start_time=epoch * length_s,
            end_time=(epoch + 1) * length_s,
            status=status,
            root=tree.root,
            total=sum(a for _, _, a in leaves),
            inputs_hash="0x" + "11" * 32,
            usage_root="0x" + "22" * 32,
            tx_hash=tx_hash or ("0x" + f"{epoch:064x}" if committed else None),
            block_number=block_number
            if block_number is not None
            else (epoch if committed else None),
            claimable_at=claimable_at if committed else None,
            leaf_count=len(leaves),
            accrual_count=3 * len(leaves),
            fees_e6=sum(a for _, _, a in leaves) * 10**6,
            computed_at=datetime(2026, 1, 1, tzinfo=UTC),
            committed_at=datetime(2026, 1, 1, tzinfo=UTC) if committed else None,
        )
    )
    if leaves:
        conn.execute(
            T["epoch_allocations"].insert(),
            [{"epoch_id": epoch, "leaf_index": i, "account": a, "amount": m} for i, a, m in leaves],
        )
    return SeededEpoch(epoch, leaves, tree)


_position = 0


def _log_position(block: int) -> dict[str, object]:
    global _position
    _position += 1
    return {
        "chain_id": CHAIN_ID,
        "block_number": block,
        "log_index": _position,
        "block_hash": "0x" + f"{block:064x}",
        "block_timestamp": 1_000 + block,
    }


def seed_claim(conn: Connection, epoch: int, index: int, holder: str, amount: int) -> None:
    """An indexed `Claimed` log."""
    conn.execute(
        T["chain_claims"]
        .insert()
        .values(
            **_log_position(100 + epoch),
            epoch=epoch,
            leaf_index=index,
            account=checksum_address(holder.lower()),
            amount=amount,
        )
    )


def seed_dispute(conn: Connection, epoch: int, guardian: str, refunded: int) -> None:
    """An indexed `EpochDisputed` log."""
    conn.execute(
        T["chain_epoch_transitions"]
        .insert()
        .values(
            **_log_position(200 + epoch),
            epoch=epoch,
            status="disputed",
            account=checksum_address(guardian.lower()),
            amount=refunded,
        )
    )


def seed_accrual(
    conn: Connection,
    usage_id: str,
    *,
    epoch: int,
    model_id: int,
    license_id: int,
    units: int,
    price_e6: int,
    settled_epoch: int | None = None,
) -> None:
    """A billed usage event."""
    conn.execute(
        T["accruals"]
        .insert()
        .values(
            usage_id=usage_id,
            epoch=epoch,
            model_id=model_id,
            license_id=license_id,
            payer=account(99),
            event_time=epoch * 3_600 + 1,
            units=units,
            price_per_unit_e6=price_e6,
            fee_e6=units * price_e6,
            state_block_number=0,
            state_log_index=0,
            operator=account(98),
            operator_bps=1_000,
            treasury_bps=1_000,
            contributors_bps=8_000,
            settled_epoch=settled_epoch,
        )
    )


def seed_dead_letter(conn: Connection, reason: str, received_at: datetime, usage_id: str) -> None:
    """A rejected usage event."""
    conn.execute(
        T["dead_letters"]
        .insert()
        .values(
            reason=reason,
            detail=f"{reason} for test",
            payload=f'{{"id": "{usage_id}"}}',
            payload_truncated=False,
            usage_id=usage_id,
            source="//metering/test",
            received_at=received_at,
        )
    )


def count_rows(conn: Connection, table: str) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(T[table])).scalar_one())
