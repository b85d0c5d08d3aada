"""Chain state "as of" a block or a time, read from the projections (what joins and settlement
use).

State at time t is the state after every event in blocks whose timestamp is <= t; at block b,
after every event in blocks <= b. Each projection is a history keyed by log position, so a
lookup is "the newest row at or before the point". By default only *finalized* rows count
(at or below the finalized watermark in the indexer's checkpoint), so a reorg can never change
an answer already given; `finalized_only=False` reads the unfinalized tip too (analytics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from indexer.store import IndexerStore
from schemas.chain import FinalizedWatermark
from schemas.evm import ZERO_ADDRESS
from schemas.tables import metadata

_t = metadata.tables


@dataclass(frozen=True)
class AsOf:
    """A point on the chain: after block `block`, or at unix time `timestamp` (one of them)."""

    block: int | None = None
    timestamp: int | None = None

    def __post_init__(self) -> None:
        if (self.block is None) == (self.timestamp is None):
            raise ValueError("give exactly one of block and timestamp")

    @classmethod
    def at_block(cls, block: int) -> AsOf:
        """After every event of blocks <= `block`."""
        return cls(block=block)

    @classmethod
    def at_time(cls, timestamp: int) -> AsOf:
        """After every event of blocks whose timestamp is <= `timestamp`."""
        return cls(timestamp=timestamp)


@dataclass(frozen=True)
class LicenseState:
    """A license at a point: its immutable terms, holder, and whether it was revoked."""

    license_id: int
    model_id: int
    price_per_unit_e6: int
    expires_at: int
    owner: str | None
    revoked: bool


@dataclass(frozen=True)
class PolicyState:
    """The split in force for a model; `model_id` 0 when it is the default policy."""

    model_id: int
    operator_bps: int
    treasury_bps: int
    contributors_bps: int
    block_number: int
    log_index: int


class ChainState:
    """As-of queries over the projections of one chain, through the caller's connection."""

    def __init__(self, connection: Connection, chain_id: int, *, finalized_only: bool = True):
        self.connection = connection
        self.chain_id = chain_id
        self.finalized_only = finalized_only
        self._finalized: FinalizedWatermark | None = None
        if finalized_only:
            checkpoint = IndexerStore(connection, chain_id).checkpoint()
            self._finalized = checkpoint.finalized if checkpoint else None

    def watermark(self) -> FinalizedWatermark | None:
        """The finalized watermark the indexer published (None before the first one)."""
        checkpoint = IndexerStore(self.connection, self.chain_id).checkpoint()
        return checkpoint.finalized if checkpoint else None

    def _bounds(self, table: sa.Table, at: AsOf) -> list[Any]:
        clauses: list[Any] = [table.c.chain_id == self.chain_id]
        if at.block is not None:
            clauses.append(table.c.block_number <= at.block)
        else:
            clauses.append(table.c.block_timestamp <= at.timestamp)
        if self.finalized_only:
            finalized = self._finalized.block_number if self._finalized else -1
            clauses.append(table.c.block_number <= finalized)
        return clauses

    def _latest(self, table_name: str, at: AsOf, *filters: Any) -> Row[Any] | None:
        table = _t[table_name]
        query = (
            sa.select(table)
            .where(*self._bounds(table, at), *filters)
            .order_by(table.c.block_number.desc(), table.c.log_index.desc())
            .limit(1)
        )
        return self.connection.execute(query).one_or_none()

    def _all(self, table_name: str, at: AsOf, *filters: Any) -> list[Row[Any]]:
        table = _t[table_name]
        query = (
            sa.select(table)
            .where(*self._bounds(table, at), *filters)
            .order_by(table.c.block_number, table.c.log_index)
        )
        return list(self.connection.execute(query))

    # --- models --------------------------------------------------------------------------------

    def model_operator(self, model_id: int, at: AsOf) -> str | None:
        """The model's operator, None when not registered."""
        table = _t["chain_model_operators"]
        row = self._latest("chain_model_operators", at, table.c.model_id == model_id)
        return None if row is None else str(row.operator)

    def model_exists(self, model_id: int, at: AsOf) -> bool:
        """Whether the model was registered."""
        return self.model_operator(model_id, at) is not None

    # --- licenses ------------------------------------------------------------------------------

    def license_owner(self, license_id: int, at: AsOf) -> str | None:
        """The license's holder (None before its mint and after a burn)."""
        table = _t["chain_license_owners"]
        row = self._latest("chain_license_owners", at, table.c.license_id == license_id)
        if row is None or row.owner == ZERO_ADDRESS:
            return None
        return str(row.owner)

    def license_revoked(self, license_id: int, at: AsOf) -> bool:
        """Whether the license was revoked."""
        table = _t["chain_license_revocations"]
        return (
            self._latest("chain_license_revocations", at, table.c.license_id == license_id)
            is not None
        )

    def license(self, license_id: int, at: AsOf) -> LicenseState | None:
        """The license's terms, holder and revocation; None when not minted."""
        table = _t["chain_license_terms"]
        terms = self._latest("chain_license_terms", at, table.c.license_id == license_id)
        if terms is None:
            return None
        return LicenseState(
            license_id=license_id,
            model_id=terms.model_id,
            price_per_unit_e6=terms.price_per_unit_e6,
            expires_at=terms.expires_at,
            owner=self.license_owner(license_id, at),
            revoked=self.license_revoked(license_id, at),
        )

    # --- stakes --------------------------------------------------------------------------------

    def stake_of(self, model_id: int, staker: str, at: AsOf) -> int:
        """The staker's counting stake on the model."""
        table = _t["chain_stakes"]
        row = self._latest(
            "chain_stakes", at, table.c.model_id == model_id, table.c.staker == staker
        )
        return 0 if row is None else int(row.stake_after)

    def total_staked(self, model_id: int, at: AsOf) -> int:
        """The model's total counting stake."""
        table = _t["chain_stakes"]
        row = self._latest("chain_stakes", at, table.c.model_id == model_id)
        return 0 if row is None else int(row.total_after)

    def stakes(self, model_id: int, at: AsOf) -> dict[str, int]:
        """Every staker with a non-zero stake on the model."""
        table = _t["chain_stakes"]
        latest: dict[str, int] = {}
        for row in self._all("chain_stakes", at, table.c.model_id == model_id):
            latest[row.staker] = int(row.stake_after)
        return {staker: amount for staker, amount in latest.items() if amount > 0}

    # --- policy and treasury -------------------------------------------------------------------

    def policy(self, model_id: int, at: AsOf) -> PolicyState | None:
        """The model's own split, else the default (model 0); None before any."""
        table = _t["chain_policies"]
        for candidate in (model_id, 0):
            row = self._latest("chain_policies", at, table.c.model_id == candidate)
            if row is not None:
                return PolicyState(
                    candidate,
                    row.operator_bps,
                    row.treasury_bps,
                    row.contributors_bps,
                    row.block_number,
                    row.log_index,
                )
        return None

    def treasury(self, at: AsOf) -> str | None:
        """Where the treasury share goes."""
        row = self._latest("chain_treasuries", at)
        return None if row is None else str(row.treasury)

    # --- distributor ---------------------------------------------------------------------------

    def epoch_committed(self, epoch: int, at: AsOf) -> Row[Any] | None:
        """The epoch's `EpochCommitted` row."""
        table = _t["chain_distributor_epochs"]
        return self._latest("chain_distributor_epochs", at, table.c.epoch == epoch)

    def claimed(self, epoch: int, at: AsOf) -> dict[int, int]:
        """Claimed amount by leaf index of the epoch."""
        table = _t["chain_claims"]
        return {
            int(r.leaf_index): int(r.amount)
            for r in self._all("chain_claims", at, table.c.epoch == epoch)
        }
