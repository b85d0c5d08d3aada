"""compute_distribution on hand-computed epochs: zero stake, one recipient, an operator who also
stakes, a treasury change, and sub-unit amounts carried across three epochs."""

from __future__ import annotations

import pytest
from web3 import Web3

from settlement.distribution import (
    LEAF_ENCODING,
    ZERO_ROOT,
    IntervalGroup,
    compute_distribution,
    largest_remainder,
)
from settlement.errors import InvalidInputError
from settlement.merkle import MerkleTree, leaf_hash, verify_proof

OPERATOR = "0x" + "11" * 20
STAKER = "0x" + "22" * 20
TREASURY = "0x" + "33" * 20
TREASURY_2 = "0x" + "44" * 20


def group(
    fee_e6: int,
    stakes: dict[str, int] | None = None,
    *,
    model_id: int = 1,
    block: int = 10,
    log_index: int = 0,
    operator: str = OPERATOR,
    treasury: str = TREASURY,
    bps: tuple[int, int, int] = (2_000, 1_000, 7_000),
    count: int = 1,
) -> IntervalGroup:
    return IntervalGroup(
        model_id=model_id,
        state_block=block,
        state_log_index=log_index,
        fee_e6=fee_e6,
        accrual_count=count,
        operator=operator,
        treasury=treasury,
        operator_bps=bps[0],
        treasury_bps=bps[1],
        contributors_bps=bps[2],
        stakes=stakes or {},
    )


def test_zero_stake_model_pays_the_contributors_share_to_the_treasury() -> None:
    # 10 base units: operator 20%, treasury 10% + the contributors' 70% (nobody stakes).
    d = compute_distribution(3, [group(10_000_000, count=4)], {})
    assert d.units_e6 == {OPERATOR: 2_000_000, TREASURY: 8_000_000}
    assert d.amounts() == {OPERATOR: 2, TREASURY: 8}
    assert d.carries_out == {OPERATOR: 0, TREASURY: 0}
    assert (d.epoch, d.fees_e6, d.accrual_count, d.total) == (3, 10_000_000, 4, 10)
    assert [leaf.index for leaf in d.leaves] == [0, 1]


def test_single_recipient_takes_everything() -> None:
    # Operator, treasury and the only staker are one address.
    d = compute_distribution(
        0, [group(5_250_000, {OPERATOR: 7}, treasury=OPERATOR)], {OPERATOR: 900_000}
    )
    assert d.units_e6 == {OPERATOR: 5_250_000}
    assert d.amounts() == {OPERATOR: 6}
    assert d.carries_out == {OPERATOR: 150_000}  # 5_250_000 + 900_000 - 6 * 10^6
    assert len(d.leaves) == 1
    assert d.leaves[0].account == Web3.to_checksum_address(OPERATOR)
    assert d.root == MerkleTree.of([(0, OPERATOR, 6)], LEAF_ENCODING).root_bytes


def test_operator_who_also_stakes_gets_both_parts() -> None:
    # fee 10_000_003: exact 2_000_000.6 / 1_000_000.3 / 7_000_002.1 → the one left-over unit
    # goes to the largest remainder (the operator's .6). Contributors 7_000_002 split 1:3 is
    # 1_750_000.5 / 5_250_001.5: a tie, won by the lower address (the operator, 0x11..).
    d = compute_distribution(1, [group(10_000_003, {OPERATOR: 1, STAKER: 3})], {})
    assert d.units_e6 == {
        OPERATOR: 2_000_001 + 1_750_001,
        STAKER: 5_250_001,
        TREASURY: 1_000_000,
    }
    assert d.amounts() == {OPERATOR: 3, STAKER: 5, TREASURY: 1}
    assert d.carries_out == {OPERATOR: 750_002, STAKER: 250_001, TREASURY: 0}
    assert d.total == 9
    assert [leaf.account.lower() for leaf in d.leaves] == [OPERATOR, STAKER, TREASURY]


def test_treasury_change_splits_each_interval_with_its_own_treasury() -> None:
    before = group(1_000_000_000, {STAKER: 1}, block=10, bps=(1_000, 4_000, 5_000))
    after = group(
        3_000_000_000, {STAKER: 1}, block=20, treasury=TREASURY_2, bps=(1_000, 4_000, 5_000)
    )
    d = compute_distribution(2, [after, before], {})
    assert d.amounts() == {OPERATOR: 400, STAKER: 2_000, TREASURY: 400, TREASURY_2: 1_200}
    assert d.total == 4_000
    assert d.fees_e6 == 4_000_000_000


def test_many_tiny_events_carry_across_three_epochs() -> None:
    # 400_000 e6 (0.4 base units) a epoch to one staker, no operator or treasury share.
    carries: dict[str, int] = {}
    paid = []
    for epoch in range(3):
        tiny = group(400_000, {STAKER: 5}, bps=(0, 0, 10_000), count=400_000)
        d = compute_distribution(epoch, [tiny], carries)
        paid.append(d.amounts().get(STAKER, 0))
        carries = {k: v for k, v in d.carries_out.items() if v}
        if epoch < 2:
            assert d.leaves == ()
            assert d.root == ZERO_ROOT
            assert d.tree is None
    assert paid == [0, 0, 1]
    assert carries == {STAKER: 200_000}


def test_leaves_sorted_by_address_bytes_with_valid_proofs() -> None:
    stakers = {"0x" + f"{b:02x}" * 20: b + 1 for b in (0xFE, 0x01, 0xA0, 0x5B)}
    d = compute_distribution(4, [group(987_654_321_000, stakers)], {})
    accounts = [bytes.fromhex(leaf.account[2:]) for leaf in d.leaves]
    assert accounts == sorted(accounts)
    assert [leaf.index for leaf in d.leaves] == list(range(len(d.leaves)))
    assert all(leaf.account == Web3.to_checksum_address(leaf.account) for leaf in d.leaves)
    for leaf in d.leaves:
        hashed = leaf_hash(LEAF_ENCODING, leaf.value())
        assert verify_proof(d.root, hashed, d.proof(leaf.index))


def test_order_of_groups_and_letter_case_do_not_matter() -> None:
    a = group(10_000_003, {OPERATOR: 1, STAKER: 3}, block=1)
    b = group(77_777_777, {STAKER: 2}, block=2, treasury=TREASURY_2)
    checksummed = group(
        77_777_777,
        {Web3.to_checksum_address(STAKER): 2},
        block=2,
        treasury=Web3.to_checksum_address(TREASURY_2),
    )
    one = compute_distribution(5, [a, b], {STAKER: 999_999})
    two = compute_distribution(5, [checksummed, a], {Web3.to_checksum_address(STAKER): 999_999})
    assert one == two
    assert one.root == two.root


def test_largest_remainder_ties_favour_the_earlier_weight() -> None:
    assert largest_remainder(3, [1, 1, 1, 1]) == [1, 1, 1, 0]
    assert largest_remainder(10, [0, 5]) == [0, 10]


@pytest.mark.parametrize(
    ("groups", "carries"),
    [
        ([group(-1)], {}),
        ([group(1, bps=(5_000, 5_000, 1))], {}),
        ([group(1, {STAKER: -1})], {}),
        ([group(1, {"0xnothex": 1})], {}),
        ([group(1)], {STAKER: 1_000_000}),
        ([group(1, {"0x" + "ab" * 20: 1, "0x" + "AB" * 20: 2})], {}),
    ],
)
def test_invalid_inputs_are_refused(groups: list[IntervalGroup], carries: dict[str, int]) -> None:
    with pytest.raises(InvalidInputError):
        compute_distribution(0, groups, carries)
