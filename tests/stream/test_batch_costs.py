"""The per-batch shortcuts of the join keep its answers: memoized chain state, accruals built
without re-validation, one dump per event for signing and storage, held events not re-decided
while the watermark keeps them, and the multi-row (COPY) inserts on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy.pool import NullPool

from metering.signing import KeyRing, Signer, SigningKey
from schemas import migrate
from schemas.accrual import Accrual
from schemas.chain import ChainPosition
from schemas.engine import create_engine
from schemas.tables import metadata
from schemas.timestamps import UNIX_EPOCH, unix_seconds
from schemas.usage import UsageData, UsageEvent, encode_usage_event, signing_payload
from stream.epochs import EpochClock
from stream.join import make_accrual
from stream.partition_batch import decide_partition_batch, held_time, split_held
from stream.sinks.sqlalchemy_accrual_store import SqlAlchemyAccrualStore
from stream.state import LicenseView, MemoizedChainView, MemoryChainView, PolicyView, Stamp

OPERATOR = "0x" + "ab" * 20
HOLDER = "0x" + "cd" * 20
T0 = 1_700_000_000


def _fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "usage_id": "node:1",
        "epoch": 3,
        "model_id": 1,
        "license_id": 7,
        "payer": HOLDER,
        "event_time": T0,
        "units": 5,
        "price_per_unit_e6": 1_500_000,
        "fee_e6": 7_500_000,
        "state_interval": ChainPosition(12, 3),
        "operator": OPERATOR,
        "operator_bps": 2_000,
        "treasury_bps": 1_000,
        "contributors_bps": 7_000,
    }
    return {**fields, **changes}


@settings(max_examples=200, deadline=None)
@given(
    units=st.integers(min_value=1, max_value=2**64 - 1),
    price=st.integers(min_value=0, max_value=2**192),
    split=st.tuples(*(st.integers(min_value=0, max_value=10_000) for _ in range(3))),
    block=st.integers(min_value=0, max_value=2**64 - 1),
    payer=st.sampled_from([HOLDER, HOLDER.upper().replace("0X", "0x"), "0x" + "cD" * 20]),
)
def test_make_accrual_is_the_validating_constructor(
    units: int, price: int, split: tuple[int, int, int], block: int, payer: str
) -> None:
    fields = _fields(
        units=units,
        price_per_unit_e6=price,
        fee_e6=units * price,
        operator_bps=split[0],
        treasury_bps=split[1],
        contributors_bps=split[2],
        state_interval=ChainPosition(block, 0),
        payer=payer,
    )
    try:
        expected: Accrual | str = Accrual(**fields)
    except ValidationError as exc:
        expected = str(exc)
    try:
        got: Accrual | str = make_accrual(fields)
    except ValidationError as exc:
        got = str(exc)
    assert got == expected
    if isinstance(got, Accrual):
        assert isinstance(expected, Accrual)
        assert got.model_dump() == expected.model_dump()
        assert got.model_dump_json() == expected.model_dump_json()
        assert hash(got) == hash(expected)
        assert got.model_fields_set == expected.model_fields_set
        assert got.model_copy(update={"epoch": 7}) == expected.model_copy(update={"epoch": 7})


@pytest.mark.parametrize(
    "changes",
    [
        {"fee_e6": 1},
        {"operator_bps": 10_001, "contributors_bps": -1},
        {"payer": "0x1234"},
        {"operator": None},
        {"price_per_unit_e6": 2**256, "fee_e6": 5 * 2**256},
        {"epoch": -1},
        {"state_interval": (1, -2)},
    ],
)
def test_make_accrual_refuses_what_accrual_refuses(changes: dict[str, Any]) -> None:
    fields = _fields(**changes)
    with pytest.raises(ValidationError):
        Accrual(**fields)
    with pytest.raises(ValidationError):
        make_accrual(fields)


class _Counting:
    """A `ChainView` counting the questions that reach it."""

    def __init__(self, view: MemoryChainView) -> None:
        self.view = view
        self.calls = 0

    def finalized_time(self) -> int | None:
        self.calls += 1
        return self.view.finalized_time()

    def model_operator(self, model_id: int, t: int) -> str | None:
        self.calls += 1
        return self.view.model_operator(model_id, t)

    def license(self, license_id: int, t: int) -> LicenseView | None:
        self.calls += 1
        return self.view.license(license_id, t)

    def policy(self, model_id: int, t: int) -> PolicyView | None:
        self.calls += 1
        return self.view.policy(model_id, t)

    def state_interval(self, model_id: int, t: int) -> ChainPosition:
        self.calls += 1
        return self.view.state_interval(model_id, t)


def _chain() -> MemoryChainView:
    view = MemoryChainView()
    view.set_policy(0, PolicyView(2_000, 1_000, 7_000), Stamp(1, 0, T0))
    view.set_operator(1, OPERATOR, Stamp(2, 0, T0 + 1))
    view.mint(7, 1, 1_500_000, 0, HOLDER, Stamp(3, 0, T0 + 2))
    view.set_stake(1, HOLDER, 10, Stamp(4, 0, T0 + 10))
    view.finalize(T0 + 100)
    return view


def test_memoized_view_answers_as_the_view_and_asks_once() -> None:
    inner = _chain()
    counting = _Counting(inner)
    memo = MemoizedChainView(counting)
    for _ in range(3):
        for t in range(T0 - 1, T0 + 20):
            assert memo.model_operator(1, t) == inner.model_operator(1, t)
            assert memo.license(7, t) == inner.license(7, t)
            assert memo.policy(1, t) == inner.policy(1, t)
            assert memo.state_interval(1, t) == inner.state_interval(1, t)
    assert memo.finalized_time() == inner.finalized_time()
    assert counting.calls == 1 + 4 * 21  # the watermark, then each question once


def _signed(ring_key: SigningKey, i: int, t: int) -> bytes:
    signer = Signer(ring_key)
    event = UsageEvent.create(
        id=f"node:{i}",
        source="//metering/node",
        time=datetime.fromtimestamp(t, UTC) + timedelta(microseconds=250_000),
        data=UsageData(model_id=1, license_id=7, units=5),
        keyid=signer.keyid,
    )
    return encode_usage_event(signer.sign(event))


def test_signature_checked_against_a_precomputed_payload() -> None:
    key = SigningKey.generate("ed25519", prefix="n")
    ring = KeyRing([key.verification_key()])
    event = UsageEvent.model_validate_json(_signed(key, 1, T0))
    document = event.model_dump(mode="json", exclude_none=True)
    del document["signature"]
    from schemas.codec import canonical_json

    assert canonical_json(document) == signing_payload(event)
    ring.verify(event, canonical_json(document))
    tampered = event.model_copy(update={"data": UsageData(model_id=1, license_id=7, units=6)})
    with pytest.raises(Exception, match="does not verify"):
        ring.verify(tampered, signing_payload(tampered))


@given(
    st.integers(min_value=0, max_value=250_000_000_000), st.integers(min_value=0, max_value=999_999)
)
def test_unix_time_is_the_floor_of_the_instant(seconds: int, micros: int) -> None:
    instant = UNIX_EPOCH + timedelta(seconds=seconds, microseconds=micros)
    event = UsageEvent.create(
        id="node:1",
        source="//metering/node",
        time=instant,
        data=UsageData(model_id=1, license_id=7, units=5),
    )
    assert event.unix_time == unix_seconds(instant) == seconds
    assert held_time(encode_usage_event(event).decode()) == seconds


def test_split_held_keeps_what_the_watermark_still_holds() -> None:
    key = SigningKey.generate("hmac-sha256", prefix="n")
    held = [(i, _signed(key, i, T0 + i * 10).decode()) for i in range(5)]
    held.append((9, "not json at all"))
    assert split_held(held, None) == (held, [])
    waiting, retry = split_held(held, T0 + 20)
    # Times T0, T0+10 are before the watermark: decided again; T0+20.. still held.
    assert [o for o, _ in retry] == [0, 1, 9]
    assert [o for o, _ in waiting] == [2, 3, 4]


def _store_rows(url: str, table: str) -> list[Any]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return list(connection.execute(sa.select(metadata.tables[table])))
    finally:
        engine.dispose()


def test_held_events_wait_without_being_decided_again(migrated_url: str) -> None:
    """Held events stay in the checkpoint as they were while the watermark holds them, fresh
    messages are decided around them, and they are billed once the watermark passes."""
    key = SigningKey.generate("hmac-sha256", prefix="n")
    ring = KeyRing([key.verification_key()])
    chain = _chain()
    clock = EpochClock(3_600, T0)
    late = [(i, _signed(key, i, T0 + 200 + i)) for i in range(3)]
    engine = create_engine(migrated_url, poolclass=NullPool)

    def run(batch: list[tuple[int, bytes]]) -> Any:
        with engine.begin() as connection:
            return decide_partition_batch(
                connection,
                "test:usage:0",
                batch,
                state=chain,
                key_ring=ring,
                clock=clock,
                received_at=datetime.now(UTC),
            )

    try:
        first = run(late)
        assert len(first.position.held) == 3
        assert not first.accruals
        second = run([(3, _signed(key, 3, T0 + 50))])
        assert [a.usage_id for a in second.accruals] == ["node:3"]
        assert second.position.held == first.position.held
        assert second.position.offset == 3
        chain.finalize(T0 + 1_000)
        third = run([])
        assert sorted(a.usage_id for a in third.accruals) == ["node:0", "node:1", "node:2"]
        assert third.position.held == ()
        assert third.consumed == 0
    finally:
        engine.dispose()


def test_bulk_inserts_keep_order_and_ignore_repeats(migrated_url: str) -> None:
    """Accruals land in the order given (their ids are the tailing order), usage rows hold the
    canonical encoding, and a repeated usage id is ignored, on both databases."""
    key = SigningKey.generate("hmac-sha256", prefix="n")
    events = [UsageEvent.model_validate_json(_signed(key, i, T0 + i)) for i in range(50)]
    received = datetime(2024, 5, 1, tzinfo=UTC)
    accruals = [Accrual(**_fields(usage_id=e.id, event_time=T0 + i)) for i, e in enumerate(events)][
        ::-1
    ]
    engine = create_engine(migrated_url, poolclass=NullPool)
    try:
        for _ in range(2):  # the second round only repeats: nothing changes
            with engine.begin() as connection:
                store = SqlAlchemyAccrualStore(connection)
                store.add_usage([(e, received) for e in events])
                store.add_accruals(accruals)
        with engine.connect() as connection:
            assert SqlAlchemyAccrualStore(connection).accruals() == accruals
    finally:
        engine.dispose()
    usage = _store_rows(migrated_url, "usage_events")
    assert len(usage) == 50
    by_id = {row.usage_id: row for row in usage}
    for e in events:
        row = by_id[e.id]
        assert row.payload == encode_usage_event(e).decode()
        assert (row.event_time, row.units, row.model_id) == (e.unix_time, 5, 1)
        assert row.received_at.astimezone(UTC) == received


def test_decided_finds_exactly_the_stored_ids(migrated_url: str) -> None:
    """The dedupe lookup (one array parameter on PostgreSQL, IN lists elsewhere) answers the
    stored subset of any id list: repeats, odd characters, an empty list, a large batch."""
    key = SigningKey.generate("hmac-sha256", prefix="n")
    events = [UsageEvent.model_validate_json(_signed(key, i, T0 + i)) for i in range(40)]
    received = datetime(2024, 5, 1, tzinfo=UTC)
    engine = create_engine(migrated_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            SqlAlchemyAccrualStore(connection).add_usage([(e, received) for e in events[::2]])
        stored = {e.id for e in events[::2]}
        odd = ["", "'; drop table usage_events; --", 'quote"d', "{a,b}", "NULL", "é\u2028x"]
        many = [f"absent:{i}" for i in range(25_000)]
        with engine.connect() as connection:
            store = SqlAlchemyAccrualStore(connection)
            assert store.decided([]) == set()
            assert store.decided([e.id for e in events] * 2) == stored
            assert store.decided(odd) == set()
            assert store.decided([*many, *stored, *odd]) == stored
    finally:
        engine.dispose()


def test_deferred_inserts_take_every_batch_staged_before_them(migrated_url: str) -> None:
    """Deferred inserts (PostgreSQL; done at once elsewhere): the batches of several partitions
    staged in one transaction are all inserted, in their order, by `send_deferred` and
    `finish_deferred`, and nothing of them is in the tables before."""
    key = SigningKey.generate("hmac-sha256", prefix="n")
    events = [UsageEvent.model_validate_json(_signed(key, i, T0 + i)) for i in range(60)]
    received = datetime(2024, 5, 1, tzinfo=UTC)
    accruals = [Accrual(**_fields(usage_id=e.id, event_time=T0 + i)) for i, e in enumerate(events)]
    engine = create_engine(migrated_url, poolclass=NullPool)
    deferring = engine.dialect.name == "postgresql"
    try:
        with engine.begin() as connection:
            store = SqlAlchemyAccrualStore(connection, defer_inserts=True)
            for part in (slice(0, 25), slice(25, 26), slice(26, 60)):  # three partitions
                store.add_usage([(e, received) for e in events[part]])
                store.add_accruals(accruals[part])
            count = sa.select(sa.func.count()).select_from(metadata.tables["accruals"])
            assert connection.execute(count).scalar() == (0 if deferring else 60)
            store.send_deferred()
            store.finish_deferred()
            assert connection.execute(count).scalar() == 60
        with engine.connect() as connection:
            assert SqlAlchemyAccrualStore(connection).accruals() == accruals
    finally:
        engine.dispose()
    assert sorted(row.usage_id for row in _store_rows(migrated_url, "usage_events")) == sorted(
        e.id for e in events
    )


def test_a_failed_deferred_insert_is_raised_and_nothing_commits(pg_url: str) -> None:
    """A deferred insert the database refuses raises its SQLSTATE's error at `finish_deferred`;
    the transaction rolls back with everything staged in it, and the connection stays usable."""
    migrate.upgrade(pg_url)
    key = SigningKey.generate("hmac-sha256", prefix="n")
    events = [UsageEvent.model_validate_json(_signed(key, i, T0 + i)) for i in range(10)]
    received = datetime(2024, 5, 1, tzinfo=UTC)
    accruals = [Accrual(**_fields(usage_id=e.id, units=5)) for e in events]
    engine = create_engine(pg_url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("ALTER TABLE accruals ADD CONSTRAINT few CHECK (units < 5)"))
        with engine.connect() as connection:
            transaction = connection.begin()
            store = SqlAlchemyAccrualStore(connection, defer_inserts=True)
            store.add_usage([(e, received) for e in events])
            store.add_accruals(accruals)
            store.send_deferred()
            with pytest.raises(psycopg.errors.CheckViolation, match="few"):
                store.finish_deferred()
            transaction.rollback()
            assert connection.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()
    assert _store_rows(pg_url, "usage_events") == []
    assert _store_rows(pg_url, "accruals") == []
