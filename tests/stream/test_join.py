"""Property tests of the pure join against an in-memory chain and a straightforward oracle."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.accrual import RejectReason
from schemas.chain import ChainPosition
from schemas.usage import UsageData, UsageEvent, encode_usage_event
from stream.epochs import EpochClock
from stream.join import Accepted, Held, Rejected, join, parse
from stream.state import NO_CHANGE, MemoryChainView, PolicyView, Stamp

OPERATOR = "0x" + "1" * 40
TREASURY = "0x" + "2" * 40
ALICE = "0x" + "3" * 40
CAROL = "0x" + "4" * 40
STAKER = "0x" + "5" * 40
MODEL, OTHER_MODEL, LICENSE = 1, 2, 7
DEFAULT = PolicyView(2_000, 1_000, 7_000)
OWN = PolicyView(1_000, 1_000, 8_000)
CLOCK = EpochClock(length_s=100, genesis_s=0)

times = st.integers(min_value=1, max_value=1_000)


def event(t: int, units: int = 3, model: int = MODEL, license_id: int = LICENSE) -> UsageEvent:
    return UsageEvent.create(
        id=f"node:{t}:{units}",
        source="//metering/test",
        time=datetime.fromtimestamp(t, UTC),
        data=UsageData(model_id=model, license_id=license_id, units=units),
    )


class Scenario:
    """One model, one license, changes at drawn times; `expected` is the oracle."""

    def __init__(
        self,
        *,
        license_model: int,
        price: int,
        mint_at: int,
        expires_at: int,
        transfer_at: int | None,
        revoke_at: int | None,
        stake_at: int | None,
        policy_at: int | None,
    ) -> None:
        self.__dict__.update(locals())
        view = MemoryChainView()
        changes: list[tuple[int, str]] = [(0, "default"), (0, "register"), (mint_at, "mint")]
        for at, kind in ((transfer_at, "transfer"), (revoke_at, "revoke")):
            if at is not None:
                changes.append((at, kind))
        for at, kind in ((stake_at, "stake"), (policy_at, "policy")):
            if at is not None:
                changes.append((at, kind))
        changes.sort(key=lambda c: c[0])
        self.positions: dict[str, ChainPosition] = {}
        for block, (at, kind) in enumerate(changes, start=1):
            stamp = Stamp(block, 0, at)
            self.positions[kind] = stamp.position
            if kind == "default":
                view.set_policy(0, DEFAULT, stamp)
            elif kind == "register":
                view.set_operator(MODEL, OPERATOR, stamp)
            elif kind == "mint":
                view.mint(LICENSE, license_model, price, expires_at, ALICE, stamp)
            elif kind == "transfer":
                view.transfer(LICENSE, CAROL, stamp)
            elif kind == "revoke":
                view.revoke(LICENSE, stamp)
            elif kind == "stake":
                view.set_stake(MODEL, STAKER, 10, stamp)
            else:
                view.set_policy(MODEL, OWN, stamp)
        view.finalize(2_000)
        self.view = view

    def expected(self, t: int) -> RejectReason | tuple[str, int, PolicyView, ChainPosition]:
        """Written from DESIGN.md directly, independent of the join."""
        if t < self.mint_at:
            return RejectReason.UNKNOWN_LICENSE
        if self.license_model != MODEL:
            return RejectReason.MODEL_MISMATCH
        if self.expires_at != 0 and t >= self.expires_at:
            return RejectReason.EXPIRED
        if self.revoke_at is not None and self.revoke_at <= t:
            return RejectReason.REVOKED
        payer = CAROL if self.transfer_at is not None and self.transfer_at <= t else ALICE
        own = self.policy_at is not None and self.policy_at <= t
        candidates = [self.positions["register"], self.positions["default"]]
        if own:
            candidates.append(self.positions["policy"])
        if self.stake_at is not None and self.stake_at <= t:
            candidates.append(self.positions["stake"])
        return payer, self.price, OWN if own else DEFAULT, max(candidates)


optional_time = st.none() | times


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Scenario, int]:
    mint_at = draw(times)
    scenario = Scenario(
        license_model=draw(st.sampled_from([MODEL, MODEL, MODEL, OTHER_MODEL])),
        price=draw(st.integers(min_value=0, max_value=2**128)),
        mint_at=mint_at,
        expires_at=draw(st.just(0) | times),
        transfer_at=draw(st.none() | st.integers(mint_at, 1_000)),
        revoke_at=draw(st.none() | st.integers(mint_at, 1_000)),
        stake_at=draw(optional_time),
        policy_at=draw(optional_time),
    )
    # Boundaries are where bugs live: draw event times at and around every change.
    marks = [
        m for m in (mint_at, scenario.expires_at, scenario.transfer_at, scenario.revoke_at) if m
    ]
    t = draw(st.sampled_from(marks).flatmap(lambda m: st.sampled_from([m - 1, m, m + 1])) | times)
    return scenario, max(t, 1)


@given(scenarios(), st.integers(min_value=1, max_value=2**64 - 1))
def test_join_matches_the_oracle(drawn: tuple[Scenario, int], units: int) -> None:
    scenario, t = drawn
    decision = join(
        event(t, units), signature_error=None, seen=False, state=scenario.view, clock=CLOCK
    )
    expected = scenario.expected(t)
    if isinstance(expected, RejectReason):
        assert isinstance(decision, Rejected)
        assert decision.reason == expected
        return
    assert isinstance(decision, Accepted)
    payer, price, policy, interval = expected
    accrual = decision.accrual
    assert accrual.fee_e6 == units * price
    assert type(accrual.fee_e6) is int
    assert accrual.payer == payer
    assert accrual.operator == OPERATOR
    assert (accrual.operator_bps, accrual.treasury_bps, accrual.contributors_bps) == (
        policy.operator_bps,
        policy.treasury_bps,
        policy.contributors_bps,
    )
    assert accrual.state_interval == interval
    assert accrual.epoch == t // CLOCK.length_s
    assert accrual.event_time == t


@given(scenarios(), st.integers(min_value=1, max_value=10**6))
def test_join_is_deterministic(drawn: tuple[Scenario, int], units: int) -> None:
    scenario, t = drawn
    decisions = [
        join(event(t, units), signature_error=None, seen=False, state=scenario.view, clock=CLOCK)
        for _ in range(2)
    ]
    assert decisions[0] == decisions[1]


@given(scenarios(), st.booleans())
def test_signature_and_duplicate_come_before_chain_checks(
    drawn: tuple[Scenario, int], forged: bool
) -> None:
    scenario, t = drawn
    decision = join(
        event(t),
        signature_error="forged" if forged else None,
        seen=True,
        state=scenario.view,
        clock=CLOCK,
    )
    assert isinstance(decision, Rejected)
    assert decision.reason == (RejectReason.BAD_SIGNATURE if forged else RejectReason.DUPLICATE)


def test_events_not_before_the_finalized_time_are_held() -> None:
    scenario = Scenario(
        license_model=MODEL,
        price=5,
        mint_at=10,
        expires_at=0,
        transfer_at=None,
        revoke_at=None,
        stake_at=None,
        policy_at=None,
    )
    scenario.view.finalize(50)
    kwargs = {"signature_error": None, "seen": False, "state": scenario.view, "clock": CLOCK}
    assert isinstance(join(event(50), **kwargs), Held)  # type: ignore[arg-type]
    assert isinstance(join(event(51), **kwargs), Held)  # type: ignore[arg-type]
    assert isinstance(join(event(49), **kwargs), Accepted)  # type: ignore[arg-type]
    empty = MemoryChainView()
    held = join(event(1), signature_error=None, seen=False, state=empty, clock=CLOCK)
    assert isinstance(held, Held)
    assert held.finalized_time is None


def test_unknown_model_precedes_license_checks() -> None:
    view = MemoryChainView()
    view.finalize(100)
    decision = join(
        event(5, model=9, license_id=99),
        signature_error=None,
        seen=False,
        state=view,
        clock=CLOCK,
    )
    assert isinstance(decision, Rejected)
    assert decision.reason == RejectReason.UNKNOWN_MODEL


def test_no_change_interval_and_epoch_floor() -> None:
    assert EpochClock(100, genesis_s=1_000).epoch_of(5) == 0
    assert EpochClock(100, genesis_s=1_000).epoch_of(1_250) == 2
    assert MemoryChainView().state_interval(MODEL, 10) == NO_CHANGE


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b'{"specversion": "1.0"}', b"\x00", b"\xff\xfe"],
)
def test_parse_rejects_malformed_payloads(raw: bytes) -> None:
    parsed = parse(raw)
    assert isinstance(parsed, Rejected)
    assert parsed.reason == RejectReason.MALFORMED
    letter = parsed.dead_letter(raw, datetime.now(UTC))
    assert letter.reason == RejectReason.MALFORMED


def test_parse_round_trips_a_well_formed_event() -> None:
    original = event(42)
    assert parse(encode_usage_event(original)) == original
