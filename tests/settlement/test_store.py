"""The epoch store: compare-and-set transitions, idempotence, order, concurrent settlers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

from schemas import migrate
from schemas.engine import create_engine
from schemas.epoch import EpochStatus
from schemas.errors import InvalidTransition
from settlement.settler import MAX_NEW_EPOCHS_PER_STEP, Settler, SettlerConfig
from settlement.store import ZERO_HASH, ComputedEpoch, EpochStore, StoredTx, hex32
from settlement.watermarks import usage_watermark
from stream.epochs import EpochClock

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ACCOUNT = "0x" + "11" * 20


@pytest.fixture
def engine(db_url: str) -> Iterable[Engine]:
    migrate.upgrade(db_url)
    engine = create_engine(db_url, poolclass=NullPool)
    yield engine
    engine.dispose()


def _open(engine: Engine, ids: Iterable[int]) -> int:
    with engine.begin() as connection:
        return EpochStore(connection).ensure_open((n, n * 10, n * 10 + 10) for n in ids)


def _status(engine: Engine, epoch: int) -> EpochStatus:
    with engine.connect() as connection:
        stored = EpochStore(connection).get(epoch)
    assert stored is not None
    return stored.status


def test_epochs_open_once(engine: Engine) -> None:
    assert _open(engine, range(3)) == 3
    assert _open(engine, range(5)) == 2
    with engine.connect() as connection:
        store = EpochStore(connection)
        assert [e.id for e in store.with_status(EpochStatus.OPEN)] == [0, 1, 2, 3, 4]
        assert (store.first_epoch_id(), store.last_epoch_id()) == (0, 4)
        assert store.status_counts()[EpochStatus.OPEN] == 5
        assert store.last_committed_epoch() is None


def test_transition_is_compare_and_set(engine: Engine) -> None:
    _open(engine, [0])
    with engine.begin() as connection:
        store = EpochStore(connection)
        assert store.transition(0, EpochStatus.OPEN, EpochStatus.CLOSING)
        # The same move again finds the epoch no longer open: nothing happens.
        assert not store.transition(0, EpochStatus.OPEN, EpochStatus.CLOSING)
        # A move from a status the epoch is not in does nothing either.
        assert not store.transition(0, EpochStatus.COMPUTED, EpochStatus.COMMITTED)
    assert _status(engine, 0) is EpochStatus.CLOSING


def test_transition_rejects_moves_outside_the_lifecycle(engine: Engine) -> None:
    _open(engine, [0])
    with engine.begin() as connection:
        store = EpochStore(connection)
        with pytest.raises(InvalidTransition):
            store.transition(0, EpochStatus.OPEN, EpochStatus.COMMITTED)
        with pytest.raises(InvalidTransition):
            store.transition(0, EpochStatus.CLAIMABLE, EpochStatus.DISPUTED)
    assert _status(engine, 0) is EpochStatus.OPEN


def test_computed_outputs_and_transactions_round_trip(engine: Engine) -> None:
    _open(engine, [0])
    computed = ComputedEpoch(
        leaves=[(0, "0x" + "AA" * 20, 5)],
        carries_out={ACCOUNT: 999_999},
        root=hex32(b"\x01" * 32),
        total=5,
        inputs_hash=hex32(b"\x02" * 32),
        usage_root=ZERO_HASH,
        accrual_count=1,
        fees_e6=5_999_999,
    )
    tx = StoredTx("0x" + "ab" * 32, 0, "commit", 31337, ACCOUNT, 7, "0x02", "signed", None, None)
    with engine.begin() as connection:
        store = EpochStore(connection)
        store.write_computed(0, computed, NOW)
        store.add_tx(tx, NOW)
        store.set_tx_state(tx.tx_hash, "mined", NOW, block_number=12, gas_used=21_000)
    with engine.connect() as connection:
        store = EpochStore(connection)
        epoch = store.get(0)
        assert epoch is not None
        assert epoch.on_chain
        assert (epoch.root, epoch.total, epoch.leaf_count, epoch.fees_e6) == (
            computed.root,
            5,
            1,
            5_999_999,
        )
        assert store.allocations(0) == [(0, "0x" + "AA" * 20, 5)]
        assert store.carries(0) == {ACCOUNT: 999_999}
        [stored] = store.txs(0, "commit")
        assert (stored.state, stored.block_number, stored.gas_used) == ("mined", 12, 21_000)
        assert store.txs(0, "approve") == []


def test_usage_watermark_is_capped_by_held_events() -> None:
    assert usage_watermark(None, None, allowed_lateness_s=5) is None
    assert usage_watermark(100, None, allowed_lateness_s=5) == 95
    assert usage_watermark(100, 90, allowed_lateness_s=5) == 90
    assert usage_watermark(100, None, allowed_lateness_s=5, now=200) == 195
    assert usage_watermark(None, 150, allowed_lateness_s=5, now=200) == 150


# -- two settlers ---------------------------------------------------------------------------


@dataclass
class _Empty:
    """An epoch with nothing to pay (the settler's interface, without accruals)."""

    groups: tuple[Any, ...] = ()
    carries_in: dict[str, int] = field(default_factory=dict)
    usage_root: bytes = bytes(32)
    fees_e6: int = 0
    accrual_count: int = 0
    carries_out: dict[str, int] = field(default_factory=dict)
    leaves: tuple[Any, ...] = ()
    total: int = 0

    def inputs_hash(self) -> bytes:
        return b"\x07" * 32

    @property
    def root(self) -> bytes:
        return bytes(32)


def _slow_settler(engine: Engine, calls: list[int]) -> Settler:
    def load(connection: Connection, *, chain_id: int, distributor: str, epoch: int) -> _Empty:
        calls.append(epoch)
        time.sleep(0.3)  # hold the transaction open while the other settler tries
        return _Empty()

    def compute(epoch: int, groups: Iterable[Any], carries: Mapping[str, int]) -> _Empty:
        return _Empty()

    config = SettlerConfig(1, "0x" + "00" * 20, EpochClock(10, 0), allowed_lateness_s=0)
    return Settler(engine, config, None, load_inputs=load, compute=compute, now=lambda: 25)


def test_two_settlers_never_both_compute_an_epoch(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    engines = [create_engine(pg_url, poolclass=NullPool) for _ in range(2)]
    _open(engines[0], [0])
    with engines[0].begin() as connection:
        assert EpochStore(connection).transition(0, EpochStatus.OPEN, EpochStatus.CLOSING)
    calls: list[int] = []
    settlers = [_slow_settler(e, calls) for e in engines]
    barrier = threading.Barrier(2)
    results: list[bool] = []

    def run(settler: Settler) -> None:
        barrier.wait()
        results.append(settler.compute_epoch(0))

    threads = [threading.Thread(target=run, args=(s,)) for s in settlers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [False, True]
    assert calls == [0]  # the loser never even read the inputs
    assert _status(engines[0], 0) is EpochStatus.COMPUTED
    for e in engines:
        e.dispose()


def test_two_settlers_never_both_move_an_epoch(pg_url: str) -> None:
    migrate.upgrade(pg_url)
    engine = create_engine(pg_url, poolclass=NullPool)
    _open(engine, range(20))
    wins: list[int] = []
    barrier = threading.Barrier(2)

    def close_all() -> None:
        barrier.wait()
        for n in range(20):
            with engine.begin() as connection:
                if EpochStore(connection).transition(n, EpochStatus.OPEN, EpochStatus.CLOSING):
                    wins.append(n)

    threads = [threading.Thread(target=close_all) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(wins) == list(range(20))  # every epoch moved exactly once
    with engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM epochs WHERE status = 'closing'"))
        assert count.scalar() == 20
    engine.dispose()


def test_compute_waits_for_the_previous_epoch(engine: Engine) -> None:
    """Carries chain: epoch 1 is not computed while epoch 0 is still open."""
    _open(engine, [0, 1])
    with engine.begin() as connection:
        EpochStore(connection).transition(1, EpochStatus.OPEN, EpochStatus.CLOSING)
    calls: list[int] = []
    settler = _slow_settler(engine, calls)
    assert settler._compute_due() == []
    with engine.begin() as connection:
        EpochStore(connection).transition(0, EpochStatus.OPEN, EpochStatus.CLOSING)
    assert settler._compute_due() == [0, 1]
    assert calls == [0, 1]
    with engine.connect() as connection:
        epoch = EpochStore(connection).get(1)
    assert epoch is not None
    assert (epoch.root, epoch.total, epoch.leaf_count, epoch.on_chain) == (ZERO_HASH, 0, 0, False)


def test_run_steps_until_stopped(engine: Engine) -> None:
    _open(engine, [0])
    with engine.begin() as connection:
        EpochStore(connection).transition(0, EpochStatus.OPEN, EpochStatus.CLOSING)
    calls: list[int] = []
    settler = _slow_settler(engine, calls)
    stop = threading.Event()
    loop = threading.Thread(target=settler.run, args=(stop, 0.01))
    loop.start()
    deadline = time.monotonic() + 20
    while _status(engine, 0) is not EpochStatus.CLAIMABLE and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    loop.join(timeout=10)
    assert not loop.is_alive()
    assert calls == [0]
    # No leaf: committed without a transaction and claimable, even without a committer.
    assert _status(engine, 0) is EpochStatus.CLAIMABLE


def test_one_step_opens_a_bounded_number_of_epochs(engine: Engine) -> None:
    _open(engine, [0])
    settler = _slow_settler(engine, [])
    settler.now = lambda: 10 * (MAX_NEW_EPOCHS_PER_STEP + 500)
    assert settler.step().created == MAX_NEW_EPOCHS_PER_STEP
    assert settler.step().created == 500
    assert settler.step().created == 0
