"""`SqlAlchemyChainView` (histories loaded once, answered in memory) answers exactly as the
per-question `indexer.asof.ChainState` queries do, on the scenario's indexed chain, and is kept
across transactions only while the finalized watermark stays."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from indexer.asof import AsOf, ChainState
from schemas.chain import ChainPosition
from schemas.engine import create_engine
from schemas.tables import metadata
from settlement.chain import System
from stream.sqlalchemy_chain_state import SqlAlchemyChainView
from stream.state import NO_CHANGE, LicenseView, PolicyView
from tests.contracts.contract_helpers import ChainHarness
from tests.indexer.support import index_to_head, make_follower
from tests.stream.scenario import build

pytestmark = [pytest.mark.anvil]


class _PerQuestion:
    """The reference: one `ChainState` query per question (the view's former form)."""

    def __init__(self, connection: Connection, chain_id: int) -> None:
        self.state = ChainState(connection, chain_id, finalized_only=True)
        self.connection = connection
        self.chain_id = chain_id
        mark = self.state.watermark()
        self.block = -1 if mark is None else mark.block_number

    def license(self, license_id: int, t: int) -> LicenseView | None:
        found = self.state.license(license_id, AsOf.at_time(t))
        if found is None:
            return None
        return LicenseView(
            found.license_id,
            int(found.model_id),
            int(found.price_per_unit_e6),
            int(found.expires_at),
            found.owner,
            found.revoked,
        )

    def policy(self, model_id: int, t: int) -> PolicyView | None:
        found = self.state.policy(model_id, AsOf.at_time(t))
        if found is None:
            return None
        return PolicyView(found.operator_bps, found.treasury_bps, found.contributors_bps)

    def state_interval(self, model_id: int, t: int) -> ChainPosition:
        candidates = []
        policy = self.state.policy(model_id, AsOf.at_time(t))
        if policy is not None:
            candidates.append(ChainPosition(policy.block_number, policy.log_index))
        for name, filters in (
            ("chain_stakes", {"model_id": model_id}),
            ("chain_model_operators", {"model_id": model_id}),
            ("chain_treasuries", {}),
        ):
            table = metadata.tables[name]
            row = self.connection.execute(
                sa.select(table.c.block_number, table.c.log_index)
                .where(
                    table.c.chain_id == self.chain_id,
                    table.c.block_timestamp <= t,
                    table.c.block_number <= self.block,
                    *(table.c[k] == v for k, v in filters.items()),
                )
                .order_by(table.c.block_number.desc(), table.c.log_index.desc())
                .limit(1)
            ).one_or_none()
            if row is not None:
                candidates.append(ChainPosition(int(row[0]), int(row[1])))
        return max(candidates, default=NO_CHANGE)


def _index(system: System, chain: ChainHarness, url: str) -> None:
    follower = make_follower(system, [chain.anvil.rpc_url], url, confirmations=0)
    try:
        index_to_head(follower)
    finally:
        follower.release_lease()
        follower.engine.dispose()


def test_view_answers_as_the_per_question_queries(
    st_system: System, st_chain: ChainHarness, migrated_url: str
) -> None:
    script = build(st_system, st_chain)
    chain_id = st_system.manifest.chain_id
    engine = create_engine(migrated_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            before = SqlAlchemyChainView(connection, chain_id)
            assert before.finalized_time() is None
            assert before.model_operator(1, script.last_time) is None
        _index(st_system, st_chain, migrated_url)
        with engine.connect() as connection:
            view = before.for_transaction(connection)
            assert view is not before  # the watermark moved: a fresh view
            assert view.finalized_time() is not None
            reference = _PerQuestion(connection, chain_id)
            checked: list[Any] = []
            for t in range(script.genesis - 2, script.last_time + 3):
                for model_id in (0, 1, 2, 99):
                    got = (
                        view.model_operator(model_id, t),
                        view.policy(model_id, t),
                        view.state_interval(model_id, t),
                    )
                    want = (
                        reference.state.model_operator(model_id, AsOf.at_time(t)),
                        reference.policy(model_id, t),
                        reference.state_interval(model_id, t),
                    )
                    assert got == want, (model_id, t)
                    checked.append(got)
                for license_id in range(0, 7):
                    assert view.license(license_id, t) == reference.license(license_id, t), (
                        license_id,
                        t,
                    )
            # The scenario changes owners, revokes, expires and moves intervals: the comparison
            # covered answers that differ over time, not one constant.
            assert len({c[2] for c in checked}) >= 4
        with engine.connect() as connection:
            assert view.for_transaction(connection) is view  # same watermark: kept
    finally:
        engine.dispose()
