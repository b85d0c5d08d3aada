"""Properties of settlement.split: conservation, fairness, determinism, carries."""

from __future__ import annotations

import os
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement.errors import InvalidInputError
from settlement.split import (
    E6,
    apply_carry,
    split_largest_remainder,
    split_policy,
)

settings.register_profile("settlement-ci", max_examples=500, deadline=None)
settings.register_profile("settlement-dev", max_examples=100, deadline=None)
PROPERTY = settings.get_profile("settlement-ci" if os.environ.get("CI") else "settlement-dev")

OPERATOR = "0x" + "0f" * 20
TREASURY = "0x" + "7e" * 20

# Few distinct address bytes so that ties and equal weights are common.
addresses = st.builds(lambda b: "0x" + bytes([b]).hex() * 20, st.integers(0, 255))
weights = st.dictionaries(
    addresses, st.one_of(st.integers(0, 10**30), st.integers(0, 3)), min_size=1, max_size=12
).filter(lambda w: any(w.values()))
totals = st.one_of(st.integers(0, 10**40), st.integers(0, 20))
bps_triples = st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)).filter(
    lambda t: sum(t) <= 10_000
)


def _within_one_unit(share: int, total: int, weight: int, weight_sum: int) -> bool:
    return abs(Fraction(share) - Fraction(total * weight, weight_sum)) < 1


# --- largest remainder -------------------------------------------------------------------------


@PROPERTY
@given(totals, weights)
def test_split_conserves_the_total_and_keeps_every_key(total: int, w: dict[str, int]) -> None:
    shares = split_largest_remainder(total, w)
    assert sum(shares.values()) == total
    assert list(shares) == list(w)
    assert all(shares[k] == 0 for k, v in w.items() if v == 0)


@PROPERTY
@given(totals, weights)
def test_every_share_is_within_one_unit_of_its_exact_share(total: int, w: dict[str, int]) -> None:
    shares = split_largest_remainder(total, w)
    weight_sum = sum(w.values())
    assert all(_within_one_unit(shares[k], total, w[k], weight_sum) for k in w)


@PROPERTY
@given(totals, weights, st.randoms(use_true_random=False))
def test_split_is_independent_of_mapping_order(total: int, w: dict[str, int], rnd: object) -> None:
    items = list(w.items())
    rnd.shuffle(items)  # type: ignore[attr-defined]
    assert split_largest_remainder(total, dict(items)) == split_largest_remainder(total, w)


@PROPERTY
@given(totals, weights)
def test_extra_units_go_to_the_largest_remainders_then_lower_addresses(
    total: int, w: dict[str, int]
) -> None:
    shares = split_largest_remainder(total, w)
    weight_sum = sum(w.values())
    remainder = {k: total * v % weight_sum for k, v in w.items()}
    got_extra = {k for k in w if shares[k] * weight_sum > total * w[k]}
    for winner in got_extra:
        for loser in set(w) - got_extra:
            assert (remainder[winner], -int(winner, 16)) > (remainder[loser], -int(loser, 16))


def test_ties_go_to_the_lower_address_whatever_its_letter_case() -> None:
    low, high = "0x" + "0A" * 20, "0x" + "0b" * 20
    assert split_largest_remainder(1, {high: 1, low: 1}) == {high: 0, low: 1}
    assert split_largest_remainder(5, {high: 1, low: 1}) == {high: 2, low: 3}
    assert split_largest_remainder(2, {"0x" + "ff" * 20: 1, high: 1, low: 1}) == {
        "0x" + "ff" * 20: 0,
        high: 1,
        low: 1,
    }


@pytest.mark.parametrize(
    ("total", "w"),
    [
        (-1, {OPERATOR: 1}),
        (1, {OPERATOR: -1, TREASURY: 2}),
        (1, {OPERATOR: 0, TREASURY: 0}),
        (1, {}),
        (True, {OPERATOR: 1}),
        (1, {OPERATOR: True}),
        (1.0, {OPERATOR: 1}),
        (1, {"0x12": 1}),
        (1, {"0x" + "g" * 40: 1}),
        (1, {"0x" + "1" * 39 + " ": 1}),
        (1, {OPERATOR: 1, OPERATOR.upper().replace("X", "x"): 1}),
    ],
)
def test_invalid_splits_are_refused(total: object, w: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        split_largest_remainder(total, w)  # type: ignore[arg-type]


# --- policy split ------------------------------------------------------------------------------


stakes = st.dictionaries(addresses, st.integers(0, 10**24), max_size=8)


@PROPERTY
@given(totals, bps_triples, stakes)
def test_policy_split_conserves_the_fee(fee: int, bps: tuple[int, int], s: dict[str, int]) -> None:
    operator_bps, treasury_bps = bps
    contributors_bps = 10_000 - operator_bps - treasury_bps
    split = split_policy(
        fee, operator_bps, treasury_bps, contributors_bps, operator=OPERATOR, treasury=TREASURY,
        stakes=s,
    )  # fmt: skip
    assert split.total_e6 == fee
    assert sum(split.allocations().values()) == fee
    assert _within_one_unit(split.operator_e6, fee, operator_bps, 10_000)
    if any(s.values()):
        assert set(split.contributors_e6) == set(s)
        assert _within_one_unit(split.treasury_e6, fee, treasury_bps, 10_000)
        contributors_e6 = sum(split.contributors_e6.values())
        assert _within_one_unit(contributors_e6, fee, contributors_bps, 10_000)
    else:
        assert split.contributors_e6 == {}
        assert _within_one_unit(split.treasury_e6, fee, treasury_bps + contributors_bps, 10_000)


def test_without_stakes_the_contributors_share_goes_to_the_treasury() -> None:
    for no_stakes in ({}, {"0x" + "aa" * 20: 0}):
        split = split_policy(
            1000, 1000, 1000, 8000, operator=OPERATOR, treasury=TREASURY, stakes=no_stakes
        )
        assert (split.operator_e6, split.treasury_e6) == (100, 900)
        assert split.allocations() == {OPERATOR: 100, TREASURY: 900}


def test_role_ties_go_operator_then_treasury_then_contributors() -> None:
    staker = "0x" + "aa" * 20
    # 1 * 5000 / 10000 leaves remainder 5000 for both operator and treasury: the operator wins.
    split = split_policy(1, 5000, 5000, 0, operator=OPERATOR, treasury=TREASURY, stakes={staker: 1})
    assert (split.operator_e6, split.treasury_e6) == (1, 0)
    split = split_policy(1, 0, 5000, 5000, operator=OPERATOR, treasury=TREASURY, stakes={staker: 1})
    assert (split.treasury_e6, split.contributors_e6[staker]) == (1, 0)


def test_allocations_merge_roles_held_by_one_address() -> None:
    split = split_policy(
        10_000, 2000, 3000, 5000, operator=OPERATOR, treasury=OPERATOR.upper().replace("X", "x"),
        stakes={OPERATOR: 1, TREASURY: 1},
    )  # fmt: skip
    assert split.allocations() == {OPERATOR: 2000 + 3000 + 2500, TREASURY: 2500}


@pytest.mark.parametrize(
    ("fee", "bps"),
    [(-1, (10_000, 0, 0)), (1, (5000, 5000, 1)), (1, (-1, 10_001, 0)), (1, (9999, 0, 0))],
)
def test_invalid_policies_are_refused(fee: int, bps: tuple[int, int, int]) -> None:
    with pytest.raises(InvalidInputError):
        split_policy(fee, *bps, operator=OPERATOR, treasury=TREASURY, stakes={})


def test_negative_stake_and_bad_roles_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        split_policy(1, 0, 0, 10_000, operator=OPERATOR, treasury=TREASURY, stakes={OPERATOR: -1})
    with pytest.raises(InvalidInputError):
        split_policy(1, 10_000, 0, 0, operator="operator", treasury=TREASURY, stakes={})


# --- carries -----------------------------------------------------------------------------------


units = st.dictionaries(addresses, st.integers(0, 10**20), max_size=10)
carries = st.dictionaries(addresses, st.integers(0, E6 - 1), max_size=10)


@PROPERTY
@given(units, carries)
def test_carry_conserves_units(u: dict[str, int], c: dict[str, int]) -> None:
    amounts, new_carries = apply_carry(u, c)
    assert set(amounts) == set(new_carries) == {k.lower() for k in u.keys() | c.keys()}
    assert E6 * sum(amounts.values()) + sum(new_carries.values()) == sum(u.values()) + sum(
        c.values()
    )
    assert all(0 <= carry < E6 for carry in new_carries.values())
    for k in amounts:
        assert amounts[k] == (u.get(k, 0) + c.get(k, 0)) // E6


@PROPERTY
@given(st.lists(units, min_size=1, max_size=6))
def test_nothing_is_lost_across_epochs(epochs: list[dict[str, int]]) -> None:
    carried: dict[str, int] = {}
    paid: dict[str, int] = {}
    for epoch_units in epochs:
        amounts, carried = apply_carry(epoch_units, carried)
        for k, amount in amounts.items():
            paid[k] = paid.get(k, 0) + amount
    for k in paid:
        owed = sum(e.get(k, 0) for e in epochs)
        assert paid[k] * E6 + carried[k] == owed
        assert paid[k] == owed // E6  # fairness: a carry never delays a whole unit


def test_carry_refuses_bad_input() -> None:
    for u, c in [
        ({OPERATOR: -1}, {}),
        ({}, {OPERATOR: E6}),
        ({}, {OPERATOR: -1}),
        ({OPERATOR: 1, OPERATOR.upper().replace("X", "x"): 1}, {}),
    ]:
        with pytest.raises(InvalidInputError):
            apply_carry(u, c)
