"""`ChainView` over the indexer's finalized projections, through `indexer.asof.ChainState`.

Reads through the caller's connection, so a join batch sees one consistent snapshot of the
chain and commits its outputs in the same transaction. The watermark is read once, at
construction: everything the batch decides is decided against the same finalized block.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from indexer.asof import AsOf, ChainState
from schemas.chain import ChainPosition
from schemas.tables import metadata
from stream.state import NO_CHANGE, LicenseView, PolicyView

_t = metadata.tables


class SqlAlchemyChainView:
    """The join's `ChainView` over one chain's projections (finalized rows only)."""

    def __init__(self, connection: Connection, chain_id: int) -> None:
        self._state = ChainState(connection, chain_id, finalized_only=True)
        self._connection = connection
        self._chain_id = chain_id
        watermark = self._state.watermark()
        self._finalized_block = -1 if watermark is None else watermark.block_number
        self._finalized_time = None if watermark is None else watermark.block_timestamp

    def finalized_time(self) -> int | None:
        return self._finalized_time

    def model_operator(self, model_id: int, t: int) -> str | None:
        return self._state.model_operator(model_id, AsOf.at_time(t))

    def license(self, license_id: int, t: int) -> LicenseView | None:
        found = self._state.license(license_id, AsOf.at_time(t))
        if found is None:
            return None
        return LicenseView(
            license_id=found.license_id,
            model_id=int(found.model_id),
            price_per_unit_e6=int(found.price_per_unit_e6),
            expires_at=int(found.expires_at),
            owner=found.owner,
            revoked=found.revoked,
        )

    def policy(self, model_id: int, t: int) -> PolicyView | None:
        found = self._state.policy(model_id, AsOf.at_time(t))
        if found is None:
            return None
        return PolicyView(found.operator_bps, found.treasury_bps, found.contributors_bps)

    def state_interval(self, model_id: int, t: int) -> ChainPosition:
        at = AsOf.at_time(t)
        candidates: list[ChainPosition] = []
        policy = self._state.policy(model_id, at)
        if policy is not None:
            candidates.append(ChainPosition(policy.block_number, policy.log_index))
        # ChainState answers values, not when they last changed: the positions of the newest
        # stake, operator and treasury rows are read here with the same finalized bounds.
        for table_name, filters in (
            ("chain_stakes", {"model_id": model_id}),
            ("chain_model_operators", {"model_id": model_id}),
            ("chain_treasuries", {}),
        ):
            position = self._latest_position(table_name, t, filters)
            if position is not None:
                candidates.append(position)
        return max(candidates, default=NO_CHANGE)

    def _latest_position(
        self, table_name: str, t: int, filters: dict[str, Any]
    ) -> ChainPosition | None:
        table = _t[table_name]
        query = (
            sa.select(table.c.block_number, table.c.log_index)
            .where(
                table.c.chain_id == self._chain_id,
                table.c.block_timestamp <= t,
                table.c.block_number <= self._finalized_block,
                *(table.c[name] == value for name, value in filters.items()),
            )
            .order_by(table.c.block_number.desc(), table.c.log_index.desc())
            .limit(1)
        )
        row = self._connection.execute(query).one_or_none()
        return None if row is None else ChainPosition(int(row[0]), int(row[1]))
