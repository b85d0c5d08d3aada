"""The settler end to end on a real anvil and real databases: epochs close on both watermarks,
compute in order with carries, commit on chain funded, become claimable or disputed, and a
late accrual is billed exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from schemas.epoch import CARRY_SCALE
from schemas.tables import metadata
from schemas.usage import UsageData, UsageEvent, encode_usage_event
from settlement.chain import System
from settlement.chain.distributor import EpochStatus as ChainStatus
from settlement.committer import CommitConflictError, Committer
from settlement.settler import REGISTRY
from settlement.store import ZERO_HASH, EpochStore, hex32
from stream.sinks.sqlalchemy_accrual_store import JoinPosition, SqlAlchemyAccrualStore
from tests.contracts.contract_helpers import ChainHarness, Distribution
from tests.settlement import settler_support
from tests.settlement.settler_support import (
    LATENESS_S,
    World,
    build_world,
    epoch_rows,
    rows,
)

# The settler tests' fixtures.
st_anvil = settler_support.st_anvil
st_system = settler_support.st_system
st_chain = settler_support.st_chain
st_db = settler_support.st_db

pytestmark = pytest.mark.anvil


@pytest.fixture
def world(st_system: System, st_chain: ChainHarness, st_db: str) -> Iterator[World]:
    w = build_world(st_system, st_chain, st_db)
    yield w
    w.close()


def _commit_logs(world: World) -> list[dict[str, object]]:
    event = world.system.royalty_distributor.contract.events.EpochCommitted()
    return [dict(log["args"]) for log in event.get_logs(from_block=0)]


def _close_through(world: World, epoch: int) -> None:
    """Make both watermarks pass the end of `epoch`: usage in the next one, chain time past."""
    end = world.clock.end_of(epoch)
    world.accrue(epoch + 1, [(LATENESS_S, 1)])
    world.advance_to(end + 1)


def _conserved(world: World) -> None:
    """Invariant 1 per epoch: fees + carries in = 10^6 * leaves + carries out."""
    with world.engine.connect() as connection:
        store = EpochStore(connection)
        previous: dict[str, int] = {}
        for epoch_id, epoch in sorted(epoch_rows(world.engine).items()):
            if epoch["fees_e6"] is None:
                break
            leaves = store.allocations(epoch_id)
            carries = store.carries(epoch_id)
            assert sum(a for _, _, a in leaves) == epoch["total"]
            assert epoch["fees_e6"] + sum(previous.values()) == (
                CARRY_SCALE * epoch["total"] + sum(carries.values())
            )
            previous = {**previous, **carries}


def test_epochs_settle_on_chain_and_become_claimable(world: World) -> None:
    distributor, token = world.system.royalty_distributor, world.system.payment_token
    a = world.actors
    world.accrue(0, [(1, 3), (20, 5), (99, 1)])
    world.accrue(1, [(0, 7)])
    world.accrue(2, [(50, 2), (51, 11)])
    # epoch 3 stays empty; usage in epoch 4 and chain time carry both watermarks past it.
    world.accrue(4, [(LATENESS_S, 1)])
    settler = world.settler()

    # The chain watermark is still before epoch 0 ends: everything stays open.
    report = settler.step()
    assert report.created == 5
    assert report.closed == []
    assert {e["status"] for e in epoch_rows(world.engine).values()} == {"open"}

    world.advance_to(world.clock.end_of(3) + 1)
    funded_before = token.balance_of(distributor.address)
    settler_before = token.balance_of(a.settler.address)
    report = settler.step()
    assert report.closed == [0, 1, 2, 3]
    assert report.computed == [0, 1, 2, 3]
    assert report.committed == [0, 1, 2, 3]
    assert report.claimable == [3]  # no leaf: committed without a transaction, final at once

    epochs = epoch_rows(world.engine)
    assert [epochs[n]["status"] for n in range(5)] == [
        *["committed"] * 3,
        "claimable",
        "open",
    ]
    funded = 0
    for n in range(3):
        info = distributor.epoch_info(n)
        assert info.status == ChainStatus.COMMITTED
        assert hex32(info.root) == epochs[n]["root"]
        assert info.total == epochs[n]["total"] > 0
        assert info.claimable_at == epochs[n]["claimable_at"]
        assert epochs[n]["tx_hash"] is not None
        assert epochs[n]["leaf_count"] >= 3  # operator, treasury, two stakers
        funded += info.total
    assert (epochs[3]["root"], epochs[3]["total"], epochs[3]["tx_hash"]) == (ZERO_HASH, 0, None)
    assert distributor.epoch_info(3).root == bytes(32)
    assert token.balance_of(distributor.address) - funded_before == funded
    assert settler_before - token.balance_of(a.settler.address) == funded
    assert [log["epoch"] for log in _commit_logs(world)] == [0, 1, 2]
    txs = rows(world.engine, "settlement_txs")
    assert sorted((t["epoch_id"], t["kind"], t["state"]) for t in txs if t["kind"] == "commit") == [
        (0, "commit", "mined"),
        (1, "commit", "mined"),
        (2, "commit", "mined"),
    ]

    # Every accrual is billed once, in its own epoch; fees are conserved with the carries.
    accruals = rows(world.engine, "accruals")
    assert all(r["settled_epoch"] == r["epoch"] for r in accruals if r["epoch"] < 4)
    assert [epochs[n]["accrual_count"] for n in range(4)] == [3, 1, 2, 0]
    _conserved(world)

    # A leaf proves against the committed root: the recipient can claim after the window.
    assert settler.step().moved is False  # idempotent: nothing more to do yet
    world.chain.advance_time(distributor.dispute_window_s() + 1)
    report = settler.step()
    assert report.claimable == [0, 1, 2]
    with world.engine.connect() as connection:
        leaves = EpochStore(connection).allocations(0)
    claim = Distribution.of([(acct, amount) for _, acct, amount in leaves]).claim(0, 0)
    distributor.claim(a.mallory, claim)
    assert distributor.is_claimed(0, 0)
    assert len(_commit_logs(world)) == 3
    # The step's metrics.
    assert REGISTRY.get_sample_value("royalty_settlement_epochs", {"status": "claimable"}) == 4
    assert REGISTRY.get_sample_value("royalty_settlement_epochs", {"status": "open"}) == 1
    assert REGISTRY.get_sample_value("royalty_settlement_last_committed_epoch") == 3
    assert (REGISTRY.get_sample_value("royalty_settlement_commit_seconds_count") or 0) >= 3


def test_disputed_epoch_is_final_and_refunded(world: World) -> None:
    distributor, token = world.system.royalty_distributor, world.system.payment_token
    a = world.actors
    world.accrue(0, [(10, 40)])
    _close_through(world, 0)
    settler = world.settler()
    report = settler.step()
    assert report.committed == [0]
    total = epoch_rows(world.engine)[0]["total"]
    settler_balance = token.balance_of(a.settler.address)

    distributor.dispute(a.guardian, 0)
    report = settler.step()
    assert report.disputed == [0]
    assert epoch_rows(world.engine)[0]["status"] == "disputed"
    assert token.balance_of(a.settler.address) == settler_balance + total
    # Final: the window passing changes nothing.
    world.chain.advance_time(distributor.dispute_window_s() + 1)
    assert settler.step().claimable == []
    assert epoch_rows(world.engine)[0]["status"] == "disputed"


def test_late_accrual_is_billed_in_the_next_epoch_exactly_once(world: World) -> None:
    world.accrue(0, [(10, 4)])
    _close_through(world, 0)
    settler = world.settler()
    assert settler.step().computed == [0]

    [late] = world.accrue(0, [(30, 9)])  # committed by the stream after epoch 0 was computed
    _close_through(world, 1)
    assert settler.step().computed == [1]
    assert settler.step().computed == []
    by_id = {r["usage_id"]: r for r in rows(world.engine, "accruals")}
    assert by_id[late]["epoch"] == 0
    assert by_id[late]["settled_epoch"] == 1
    epochs = epoch_rows(world.engine)
    assert epochs[0]["accrual_count"] == 1
    assert epochs[1]["accrual_count"] == 2  # its own usage and the late one
    assert epochs[1]["fees_e6"] == sum(
        r["fee_e6"] for r in by_id.values() if r["settled_epoch"] == 1
    )
    billed = [r["settled_epoch"] for r in by_id.values() if r["settled_epoch"] is not None]
    assert len(billed) == 3
    _conserved(world)


def test_usage_watermark_holds_the_epoch_open(world: World) -> None:
    world.accrue(0, [(10, 4)])
    world.accrue(1, [(LATENESS_S - 1, 1)])  # one second short of the allowed lateness
    world.advance_to(world.clock.end_of(1) + 1)
    settler = world.settler(committer=False)
    assert settler.step().closed == []
    world.accrue(1, [(LATENESS_S, 1)])
    report = settler.step()
    assert report.closed == [0]
    assert report.computed == [0]
    assert report.committed == []  # no committer: computed, not committed
    assert epoch_rows(world.engine)[0]["status"] == "computed"


def test_wall_clock_watermark_closes_idle_epochs(world: World) -> None:
    world.accrue(0, [(10, 4)])
    world.advance_to(world.clock.end_of(2) + 1)
    assert world.settler(committer=False).step().closed == []
    idle = world.settler(committer=False, wall_clock=world.clock.end_of(2) + LATENESS_S)
    report = idle.step()
    assert report.closed == [0, 1, 2]
    assert report.computed == [0, 1, 2]
    epochs = epoch_rows(world.engine)
    assert [epochs[n]["leaf_count"] for n in range(3)] == [epochs[0]["leaf_count"], 0, 0]


def test_a_different_root_on_chain_is_never_overwritten(world: World) -> None:
    distributor, a = world.system.royalty_distributor, world.actors
    world.accrue(0, [(10, 4)])
    _close_through(world, 0)
    world.settler(committer=False).step()
    # Someone else with the settler role put another root for epoch 0 on chain.
    other = Distribution.of([(a.mallory.address, 1)])
    world.system.payment_token.approve(a.settler, distributor.address, other.total)
    distributor.commit_epoch(a.settler, 0, other.root, other.total, b"\x01" * 32, b"\x02" * 32)
    with pytest.raises(CommitConflictError):
        world.settler().step()
    assert epoch_rows(world.engine)[0]["status"] == "computed"
    assert distributor.epoch_info(0).root == other.root


def test_accruals_table_untouched_by_open_epochs(world: World) -> None:
    world.accrue(0, [(10, 4)])
    world.settler(committer=False).step()
    with world.engine.connect() as connection:
        accruals = metadata.tables["accruals"]
        unsettled = connection.execute(
            sa.select(sa.func.count()).where(accruals.c.settled_epoch.is_(None))
        ).scalar()
    assert unsettled == 1


def test_events_held_by_the_stream_hold_their_epoch_open(world: World) -> None:
    """The join holds an event of epoch 0 (waiting for the chain): epoch 0 must not close."""
    world.accrue(0, [(10, 4)])
    world.accrue(2, [(LATENESS_S, 1)])
    world.advance_to(world.clock.end_of(1) + 1)
    held_time = world.clock.start_of(0) + 50
    event = UsageEvent.create(
        id="held-1",
        source="urn:node:test",
        time=datetime.fromtimestamp(held_time, UTC),
        data=UsageData(model_id=1, license_id=world.license_id, units=1),
    )
    position = JoinPosition(offset=7, held=((7, encode_usage_event(event).decode()),))
    saved = datetime(2026, 1, 1, tzinfo=UTC)
    with world.engine.begin() as connection:
        SqlAlchemyAccrualStore(connection).save_position("stream.join", position, None, saved)
    settler = world.settler(committer=False)
    report = settler.step()
    assert report.watermarks is not None
    assert report.watermarks.held_min == held_time
    assert report.closed == []
    with world.engine.begin() as connection:
        SqlAlchemyAccrualStore(connection).save_position(
            "stream.join", JoinPosition(offset=8), saved, datetime.now(UTC)
        )
    # The event was decided (here: billed as an accrual of epoch 0) and released.
    world.accrue(0, [(50, 1)])
    assert settler.step().closed == [0, 1]


def test_a_commit_whose_nonce_was_taken_is_signed_again(world: World) -> None:
    """A commit signed and recorded, never sent, and its nonce spent by another transaction:
    the settler sees it replaced, finds the epoch still uncommitted, and signs a new one."""
    a, token = world.actors, world.system.payment_token
    world.accrue(0, [(10, 40)])
    _close_through(world, 0)
    world.settler(committer=False).step()
    committer = world.committer()
    with world.engine.connect() as connection:
        epoch = EpochStore(connection).get(0)
    assert epoch is not None
    committer._ensure_allowance(epoch)
    stale = committer._sign(0, "commit", committer._commit_call(epoch))
    token.transfer(a.settler, a.bob.address, 1)  # takes the stale commit's nonce

    report = world.settler().step()
    assert report.committed == [0]
    commits = sorted(
        (t for t in rows(world.engine, "settlement_txs") if t["kind"] == "commit"),
        key=lambda t: t["nonce"],
    )
    assert [(t["tx_hash"], t["state"]) for t in commits] == [
        (stale.tx_hash, "replaced"),
        (epoch_rows(world.engine)[0]["tx_hash"], "mined"),
    ]
    assert commits[1]["nonce"] == stale.nonce + 1
    assert [log["epoch"] for log in _commit_logs(world)] == [0]


def test_a_commit_counts_only_once_confirmed_and_survives_a_reorg(world: World) -> None:
    """With a confirmation depth, an epoch is committed only once its commit is buried; a
    reorg that drops the commit's block gets the same signed transaction sent again."""
    world.accrue(0, [(1, 3), (5, 4)])
    world.accrue(1, [(LATENESS_S, 1)])
    world.advance_to(world.clock.end_of(0) + 1)
    settler = world.settler()
    settler.committer = Committer(
        world.engine,
        world.system.royalty_distributor,
        world.actors.settler,
        receipt_timeout_s=30,
        confirmations=3,
    )
    report = settler.step()
    assert report.computed == [0]
    assert report.committed == []  # mined, not yet 3 blocks deep
    assert report.retry is not None
    assert "confirmations" in report.retry
    assert epoch_rows(world.engine)[0]["status"] == "computed"
    (first,) = [t for t in rows(world.engine, "settlement_txs") if t["kind"] == "commit"]
    assert first["state"] == "mined"

    # The commit's block is reorganised away (with empty blocks in its place).
    depth = world.chain.w3.eth.block_number - int(first["block_number"]) + 1
    world.chain.anvil.rpc("anvil_reorg", [depth, []])
    assert world.system.royalty_distributor.epoch_info(0).root == bytes(32)
    report = settler.step()  # re-sends the very same signed transaction
    assert report.committed == []
    world.chain.mine(3)
    report = settler.step()
    assert report.committed == [0]
    commits = [t for t in rows(world.engine, "settlement_txs") if t["kind"] == "commit"]
    assert [t["tx_hash"] for t in commits] == [first["tx_hash"]]
    assert [log["epoch"] for log in _commit_logs(world)] == [0]
    epoch = epoch_rows(world.engine)[0]
    assert epoch["status"] == "committed"
    assert epoch["tx_hash"] == first["tx_hash"]
    assert hex32(world.system.royalty_distributor.epoch_info(0).root) == epoch["root"]
