"""`ChainView` over the indexer's finalized projections: histories loaded once, answered in memory.

Reads through the caller's connection, so a join batch sees one consistent snapshot of the
chain and commits its outputs in the same transaction. The watermark is read once, at
construction: everything the batch decides is decided against the same finalized block.

The answers are `indexer.asof.ChainState`'s (finalized rows only; the newest row at or before
the time, in chain order), but not one query per question: the first question about a model,
a license or the treasury loads that key's whole finalized history (one small query per
projection), and every later question about it is a binary search in memory. Finalized rows
never change, so a view stays valid as long as the watermark does: `for_transaction` hands a
runner the same view (histories kept) for its next batch while the watermark has not moved,
and a fresh one once it has.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from indexer.store import IndexerStore
from schemas.chain import ChainPosition, FinalizedWatermark
from schemas.evm import ZERO_ADDRESS
from schemas.tables import metadata
from stream.state import NO_CHANGE, LicenseView, PolicyView

_t = metadata.tables


@dataclass(frozen=True, slots=True)
class _Rows:
    """One key's finalized rows of one projection, in chain order, with their block times."""

    times: list[int]
    positions: list[ChainPosition]
    rows: list[Any]

    def at(self, t: int) -> int:
        """How many rows are in force at time t (the newest is `rows[at(t) - 1]`)."""
        return bisect_right(self.times, t)

    def latest(self, t: int) -> tuple[ChainPosition, Any] | None:
        index = self.at(t)
        return (self.positions[index - 1], self.rows[index - 1]) if index else None


class SqlAlchemyChainView:
    """The join's `ChainView` over one chain's projections (finalized rows only)."""

    def __init__(self, connection: Connection, chain_id: int) -> None:
        self._connection = connection
        self._chain_id = chain_id
        checkpoint = IndexerStore(connection, chain_id).checkpoint()
        self.watermark: FinalizedWatermark | None = (
            None if checkpoint is None else (checkpoint.finalized)
        )
        """The finalized block every answer of this view is bounded by."""
        watermark = self.watermark
        self._finalized_block = -1 if watermark is None else watermark.block_number
        self._finalized_time = None if watermark is None else watermark.block_timestamp
        self._cache: dict[tuple[str, int | None], _Rows] = {}

    def for_transaction(self, connection: Connection) -> SqlAlchemyChainView:
        """The view for a new transaction on `connection`: this one, its loaded histories
        kept, when the finalized watermark has not moved; a fresh one when it has."""
        fresh = SqlAlchemyChainView(connection, self._chain_id)
        if fresh.watermark != self.watermark:
            return fresh
        self._connection = connection
        return self

    # --- loading -------------------------------------------------------------------------------

    def _history(self, table_name: str, key: str | None, value: int | None) -> _Rows:
        cache_key = (table_name if key is None else f"{table_name}.{key}", value)
        found = self._cache.get(cache_key)
        if found is None:
            table = _t[table_name]
            filters = [] if key is None else [table.c[key] == value]
            query = (
                sa.select(table)
                .where(
                    table.c.chain_id == self._chain_id,
                    table.c.block_number <= self._finalized_block,
                    *filters,
                )
                .order_by(table.c.block_number, table.c.log_index)
            )
            rows = list(self._connection.execute(query))
            found = _Rows(
                times=_nondecreasing([int(r.block_timestamp) for r in rows]),
                positions=[ChainPosition(int(r.block_number), int(r.log_index)) for r in rows],
                rows=rows,
            )
            self._cache[cache_key] = found
        return found

    # --- ChainView -----------------------------------------------------------------------------

    def finalized_time(self) -> int | None:
        return self._finalized_time

    def model_operator(self, model_id: int, t: int) -> str | None:
        found = self._history("chain_model_operators", "model_id", model_id).latest(t)
        return None if found is None else str(found[1].operator)

    def license(self, license_id: int, t: int) -> LicenseView | None:
        terms = self._history("chain_license_terms", "license_id", license_id).latest(t)
        if terms is None:
            return None
        row = terms[1]
        owner = self._history("chain_license_owners", "license_id", license_id).latest(t)
        revocations = self._history("chain_license_revocations", "license_id", license_id)
        return LicenseView(
            license_id=license_id,
            model_id=int(row.model_id),
            price_per_unit_e6=int(row.price_per_unit_e6),
            expires_at=int(row.expires_at),
            owner=None if owner is None or owner[1].owner == ZERO_ADDRESS else str(owner[1].owner),
            revoked=revocations.at(t) > 0,
        )

    def _policy_entry(self, model_id: int, t: int) -> tuple[ChainPosition, Any] | None:
        for candidate in (model_id, 0):
            found = self._history("chain_policies", "model_id", candidate).latest(t)
            if found is not None:
                return found
        return None

    def policy(self, model_id: int, t: int) -> PolicyView | None:
        found = self._policy_entry(model_id, t)
        if found is None:
            return None
        row = found[1]
        return PolicyView(int(row.operator_bps), int(row.treasury_bps), int(row.contributors_bps))

    def state_interval(self, model_id: int, t: int) -> ChainPosition:
        latest = NO_CHANGE
        for found in (
            self._policy_entry(model_id, t),
            self._history("chain_stakes", "model_id", model_id).latest(t),
            self._history("chain_model_operators", "model_id", model_id).latest(t),
            self._history("chain_treasuries", None, None).latest(t),
        ):
            if found is not None and found[0] > latest:
                latest = found[0]
        return latest


def _nondecreasing(times: Sequence[int]) -> list[int]:
    """Block times in chain order, for a binary search: a chain's block times never decrease,
    and a projection that says otherwise is refused rather than answered wrongly."""
    for before, after in pairwise(times):
        if after < before:
            raise ValueError("projection rows are not in block-time order")
    return list(times)
