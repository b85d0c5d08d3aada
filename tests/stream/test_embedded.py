"""The embedded runner over real indexed chain state (anvil + indexer) on SQLite and PostgreSQL:
database accruals equal the scenario's expectations to the 10^-6 unit, every rejection has its
reason, held events wait for the finalized chain, and a crash mid-batch loses or doubles
nothing."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from schemas.accrual import RejectReason
from schemas.engine import create_engine
from settlement.chain import System
from stream.embedded import EmbeddedJoinRunner, numbered
from stream.epochs import EpochClock
from stream.sinks.sqlalchemy_accrual_store import SqlAlchemyAccrualStore
from tests.contracts.contract_helpers import ChainHarness
from tests.indexer.support import index_to_head, make_follower
from tests.stream.scenario import EPOCH_S, Script, build

pytestmark = [pytest.mark.anvil]


def _index(system: System, chain: ChainHarness, url: str) -> None:
    follower = make_follower(system, [chain.anvil.rpc_url], url, confirmations=0)
    try:
        index_to_head(follower)
    finally:
        # The indexer holds a lease on the chain in this database: give it back, so the next
        # indexing run of the test may take it.
        follower.release_lease()
        follower.engine.dispose()


def _runner(script: Script, engine: Engine, chain_id: int, **kwargs: int) -> EmbeddedJoinRunner:
    return EmbeddedJoinRunner(
        engine, chain_id, script.key_ring, EpochClock(EPOCH_S, script.genesis), **kwargs
    )


def _check(script: Script, engine: Engine) -> None:
    with engine.connect() as connection:
        store = SqlAlchemyAccrualStore(connection)
        accruals = store.accruals()
        counts = store.dead_letter_counts()
        letters = store.dead_letters()
    billed = {a.usage_id: a for a in accruals}
    assert len(billed) == len(accruals), "a usage id billed twice"
    expected_billed = {k: e for k, e in script.expected.items() if e.reason is None}
    # The scenario exercises every reason code and several state intervals.
    assert set(script.reject_counts) == set(RejectReason)
    assert len({e.interval_block for e in expected_billed.values()}) >= 4
    assert set(billed) == set(expected_billed), "accruals missing or extra"
    for usage_id, want in expected_billed.items():
        got = billed[usage_id]
        assert got.payer == want.payer, usage_id
        assert got.fee_e6 == want.fee_e6, usage_id
        assert (got.operator_bps, got.treasury_bps, got.contributors_bps) == want.bps, usage_id
        assert got.state_interval.block_number == want.interval_block, usage_id
        assert got.epoch == want.epoch, usage_id
    assert sum(a.fee_e6 for a in accruals) == sum(e.fee_e6 for e in expected_billed.values())
    assert counts == {reason.value: n for reason, n in script.reject_counts.items()}
    for letter in letters:
        if letter.usage_id in script.expected and letter.reason != "duplicate":
            assert script.expected[letter.usage_id].reason == letter.reason


def test_ground_truth_scenario(
    st_system: System, st_chain: ChainHarness, migrated_url: str
) -> None:
    script = build(st_system, st_chain)
    _index(st_system, st_chain, migrated_url)
    engine = create_engine(migrated_url, poolclass=NullPool)
    runner = _runner(script, engine, st_system.manifest.chain_id, batch_size=7)
    runner.process(numbered(script.messages))
    # The newest events are not before the finalized block's time yet: held, not rejected.
    assert runner.held_count > 0
    assert runner.position().offset == len(script.messages) - 1
    st_chain.advance_time(script.last_time - st_chain.now() + 5)
    _index(st_system, st_chain, migrated_url)
    runner.process(numbered(script.messages))  # a replaying source: nothing is decided twice
    assert runner.held_count == 0
    _check(script, engine)
    engine.dispose()


class SimulatedCrashError(Exception):
    """The simulated crash."""


def test_crash_mid_batch_then_restart_loses_and_doubles_nothing(
    st_system: System,
    st_chain: ChainHarness,
    migrated_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = build(st_system, st_chain)
    st_chain.advance_time(script.last_time - st_chain.now() + 5)
    _index(st_system, st_chain, migrated_url)
    engine = create_engine(migrated_url, poolclass=NullPool)
    chain_id = st_system.manifest.chain_id
    original = SqlAlchemyAccrualStore.add_dead_letters
    calls = Counter[str]()

    def failing(self: SqlAlchemyAccrualStore, letters: list) -> None:  # type: ignore[type-arg]
        original(self, letters)  # written, then the batch dies before its commit
        calls["n"] += 1
        if calls["n"] in (3, 5):
            raise SimulatedCrashError

    monkeypatch.setattr(SqlAlchemyAccrualStore, "add_dead_letters", failing)
    for _ in range(2):
        with pytest.raises(SimulatedCrashError):
            _runner(script, engine, chain_id, batch_size=4).process(numbered(script.messages))
    assert 0 < _runner(script, engine, chain_id).position().offset < len(script.messages) - 1
    _runner(script, engine, chain_id, batch_size=4).process(numbered(script.messages))
    _check(script, engine)
    engine.dispose()
