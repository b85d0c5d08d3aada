"""DESIGN.md invariants 1-4 of compute_distribution over random epochs (hypothesis):
conservation, agreement with the reference split (`settlement.split`), determinism under
permutation and letter case, fairness, and sorted leaves whose root MerkleTree.of reproduces."""

from __future__ import annotations

import os
import random
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st
from web3 import Web3

from settlement.distribution import (
    LEAF_ENCODING,
    ZERO_ROOT,
    EpochDistribution,
    IntervalGroup,
    compute_distribution,
)
from settlement.merkle import MerkleTree, leaf_hash, verify_proof
from settlement.split import BPS_DENOMINATOR, E6, apply_carry, split_policy

settings.register_profile("distribution-ci", max_examples=300, deadline=None)
settings.register_profile("distribution-dev", max_examples=60, deadline=None)
PROPERTY = settings.get_profile("distribution-ci" if os.environ.get("CI") else "distribution-dev")

# A small pool of addresses (with letters, so letter case matters) so that recipients recur
# across groups, operators stake, and the treasury is sometimes the operator.
POOL = [
    Web3.to_checksum_address("0x" + bytes([b] * 20).hex())
    for b in (0x0A, 0x3C, 0x5F, 0xA1, 0xC4, 0xEE)
]
addresses = st.sampled_from(POOL).map(str.lower)

bps = st.tuples(st.integers(0, BPS_DENOMINATOR), st.integers(0, BPS_DENOMINATOR)).filter(
    lambda t: sum(t) <= BPS_DENOMINATOR
)


@st.composite
def interval_groups(draw: st.DrawFn) -> IntervalGroup:
    operator_bps, treasury_bps = draw(bps)
    return IntervalGroup(
        model_id=draw(st.integers(1, 3)),
        state_block=draw(st.integers(0, 50)),
        state_log_index=draw(st.integers(0, 3)),
        fee_e6=draw(st.one_of(st.integers(0, 10**18), st.integers(0, 30))),
        accrual_count=draw(st.integers(1, 10**6)),
        operator=draw(addresses),
        treasury=draw(addresses),
        operator_bps=operator_bps,
        treasury_bps=treasury_bps,
        contributors_bps=BPS_DENOMINATOR - operator_bps - treasury_bps,
        stakes=draw(
            st.dictionaries(
                addresses, st.one_of(st.integers(0, 10**24), st.integers(0, 3)), max_size=5
            )
        ),
    )


epochs = st.tuples(
    st.lists(interval_groups(), max_size=8),
    st.dictionaries(addresses, st.integers(0, E6 - 1), max_size=6),
)


def _nonzero(values: dict[str, int]) -> dict[str, int]:
    return {key: value for key, value in values.items() if value}


@PROPERTY
@given(epochs)
def test_conservation_fees_units_amounts_carries(
    epoch: tuple[list[IntervalGroup], dict[str, int]],
) -> None:
    groups, carries = epoch
    d = compute_distribution(9, groups, carries)
    fees = sum(g.fee_e6 for g in groups)
    assert d.fees_e6 == fees == sum(d.units_e6.values())
    assert fees + sum(carries.values()) == E6 * d.total + sum(d.carries_out.values())
    assert d.total == sum(leaf.amount for leaf in d.leaves)
    assert all(0 <= carry < E6 for carry in d.carries_out.values())
    assert set(d.carries_out) >= set(_nonzero(d.units_e6)) | set(carries)
    assert d.accrual_count == sum(g.accrual_count for g in groups)


@PROPERTY
@given(epochs)
def test_agrees_with_the_reference_split(epoch: tuple[list[IntervalGroup], dict[str, int]]) -> None:
    groups, carries = epoch
    units: dict[str, int] = {}
    for g in groups:
        split = split_policy(
            g.fee_e6,
            g.operator_bps,
            g.treasury_bps,
            g.contributors_bps,
            operator=g.operator,
            treasury=g.treasury,
            stakes=g.stakes,
        )
        for account, share in split.allocations().items():
            units[account] = units.get(account, 0) + share
    reference = apply_carry(units, carries)
    d = compute_distribution(0, groups, carries)
    assert _nonzero(d.units_e6) == _nonzero(units)
    assert d.amounts() == _nonzero(reference.amounts)
    assert _nonzero(d.carries_out) == _nonzero(reference.carries_e6)


@PROPERTY
@given(epochs, st.randoms(use_true_random=False))
def test_determinism_under_permutation_and_letter_case(
    epoch: tuple[list[IntervalGroup], dict[str, int]], rng: random.Random
) -> None:
    groups, carries = epoch
    first = compute_distribution(1, groups, carries)

    def recase(address: str) -> str:
        return Web3.to_checksum_address(address) if rng.random() < 0.5 else address

    shuffled = [
        IntervalGroup(
            g.model_id,
            g.state_block,
            g.state_log_index,
            g.fee_e6,
            g.accrual_count,
            recase(g.operator),
            recase(g.treasury),
            g.operator_bps,
            g.treasury_bps,
            g.contributors_bps,
            dict(rng.sample([(recase(k), v) for k, v in g.stakes.items()], len(g.stakes))),
        )
        for g in groups
    ]
    rng.shuffle(shuffled)
    items = [(recase(k), v) for k, v in carries.items()]
    rng.shuffle(items)
    second = compute_distribution(1, shuffled, dict(items))
    assert second == first
    assert second.root == first.root
    assert [second.proof(leaf.index) for leaf in second.leaves] == [
        first.proof(leaf.index) for leaf in first.leaves
    ]


def _exact_shares(groups: list[IntervalGroup]) -> tuple[dict[str, Fraction], dict[str, int]]:
    """Each recipient's exact rational share (10^-6 units) and how many splits it is in."""
    exact: dict[str, Fraction] = {}
    splits: dict[str, int] = {}

    def add(account: str, share: Fraction) -> None:
        exact[account] = exact.get(account, Fraction(0)) + share
        splits[account] = splits.get(account, 0) + 1

    for g in groups:
        fee = Fraction(g.fee_e6)
        add(g.operator, fee * g.operator_bps / BPS_DENOMINATOR)
        contributors = fee * g.contributors_bps / BPS_DENOMINATOR
        stake_sum = sum(g.stakes.values())
        if stake_sum == 0:
            add(g.treasury, fee * g.treasury_bps / BPS_DENOMINATOR + contributors)
            continue
        add(g.treasury, fee * g.treasury_bps / BPS_DENOMINATOR)
        for staker, stake in g.stakes.items():
            add(staker, contributors * stake / stake_sum)
    return exact, splits


@PROPERTY
@given(epochs)
def test_fairness_within_one_base_unit_plus_carry(
    epoch: tuple[list[IntervalGroup], dict[str, int]],
) -> None:
    groups, carries = epoch
    d = compute_distribution(2, groups, carries)
    exact, splits = _exact_shares(groups)
    amounts = d.amounts()
    for account in set(exact) | set(carries) | set(amounts):
        share = exact.get(account, Fraction(0))
        # Each split is within one 10^-6 unit of exact per rounding stage (two stages), and
        # the floor to base units loses less than one base unit, which the carry keeps.
        rounding = 2 * splits.get(account, 0)
        units = d.units_e6.get(account, 0)
        assert abs(units - share) <= rounding
        paid = E6 * amounts.get(account, 0)
        assert share - E6 - rounding < paid <= share + carries.get(account, 0) + rounding


@PROPERTY
@given(epochs)
def test_leaves_sorted_and_root_reproducible(
    epoch: tuple[list[IntervalGroup], dict[str, int]],
) -> None:
    groups, carries = epoch
    d: EpochDistribution = compute_distribution(3, groups, carries)
    raw = [bytes.fromhex(leaf.account[2:]) for leaf in d.leaves]
    assert raw == sorted(raw)
    assert len(set(raw)) == len(raw)
    assert [leaf.index for leaf in d.leaves] == list(range(len(d.leaves)))
    assert all(leaf.amount > 0 for leaf in d.leaves)
    if not d.leaves:
        assert d.root == ZERO_ROOT
        return
    rebuilt = MerkleTree.of(
        [(leaf.index, leaf.account, leaf.amount) for leaf in d.leaves], LEAF_ENCODING
    )
    assert rebuilt.root_bytes == d.root
    for leaf in d.leaves:
        assert verify_proof(d.root, leaf_hash(LEAF_ENCODING, leaf.value()), d.proof(leaf.index))
