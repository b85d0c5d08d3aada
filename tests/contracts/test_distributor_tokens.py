"""RoyaltyDistributor with tokens that misbehave: false returns, reverts, fees, reentrancy."""

from __future__ import annotations

import pytest
from eth_utils.crypto import keccak

from settlement.chain import RoyaltyDistributor
from settlement.chain.tokens import MintableToken
from tests.contracts.contract_helpers import (
    DAY,
    ChainHarness,
    Distribution,
    FeeOnTransferToken,
    MisbehavingToken,
    ReentrantToken,
    reverts,
)

pytestmark = pytest.mark.anvil

WINDOW = 3_600
ZERO32 = b"\x00" * 32


def distributor_for(chain: ChainHarness, token: MintableToken) -> RoyaltyDistributor:
    """A fresh distributor paying out `token`; the settler holds and approves plenty of it."""
    a = chain.actors
    d = RoyaltyDistributor.deploy(
        chain.client,
        a.deployer,
        token.address,
        a.deployer.address,
        a.settler.address,
        a.guardian.address,
        WINDOW,
        30 * DAY,
    )
    token.mint(a.deployer, a.settler.address, 10**12)
    token.approve(a.settler, d.address, 10**12)
    return d


@pytest.fixture
def dist(chain: ChainHarness) -> Distribution:
    a = chain.actors
    return Distribution.of([(a.alice.address, 700), (a.bob.address, 300)])


def test_token_returning_false_on_claim_reverts_the_claim(
    chain: ChainHarness, dist: Distribution
) -> None:
    a = chain.actors
    token = MisbehavingToken.deploy(chain.client, a.deployer)
    d = distributor_for(chain, token)
    d.commit_epoch(a.settler, 1, dist.root, dist.total, ZERO32, ZERO32)
    chain.advance_time(WINDOW)

    token.set_mode(a.deployer, MisbehavingToken.RETURN_FALSE)
    with reverts("SafeERC20FailedOperation") as info:
        d.claim(a.alice, dist.claim(1, 0))
    assert info.value.error_args == (token.address.lower(),)
    with reverts("SafeERC20FailedOperation"):
        d.claim_many(a.alice, [dist.claim(1, 0), dist.claim(1, 1)])
    assert not d.is_claimed(1, 0)  # the whole claim was undone, the flag too
    assert d.epoch_info(1).claimed == 0

    token.set_mode(a.deployer, MisbehavingToken.REVERT)
    with reverts("Refused"):  # the token's own error bubbles up
        d.claim(a.alice, dist.claim(1, 0))

    token.set_mode(a.deployer, MisbehavingToken.NO_RETURN)  # USDT style: no return data
    d.claim(a.alice, dist.claim(1, 0))
    assert token.balance_of(a.alice.address) == 700


def test_token_returning_false_on_commit_reverts_the_commit(
    chain: ChainHarness, dist: Distribution
) -> None:
    a = chain.actors
    token = MisbehavingToken.deploy(chain.client, a.deployer)
    d = distributor_for(chain, token)
    token.set_mode(a.deployer, MisbehavingToken.RETURN_FALSE)
    with reverts("SafeERC20FailedOperation"):
        d.commit_epoch(a.settler, 1, dist.root, dist.total, ZERO32, ZERO32)
    token.set_mode(a.deployer, MisbehavingToken.REVERT)
    with reverts("Refused"):
        d.commit_epoch(a.settler, 1, dist.root, dist.total, ZERO32, ZERO32)
    assert d.epoch_info(1).root == ZERO32


def test_fee_on_transfer_token_cannot_underfund_an_epoch(
    chain: ChainHarness, dist: Distribution
) -> None:
    a = chain.actors
    token = FeeOnTransferToken.deploy(chain.client, a.deployer)
    d = distributor_for(chain, token)
    with reverts("FundingMismatch") as info:
        d.commit_epoch(a.settler, 1, dist.root, dist.total, ZERO32, ZERO32)
    assert info.value.error_args == (1, 1000, 990)


def test_reentrancy_through_a_hostile_token_is_refused(
    chain: ChainHarness, dist: Distribution
) -> None:
    """During Alice's payout the token calls back to claim again; the guard refuses."""
    a = chain.actors
    token = ReentrantToken.deploy(chain.client, a.deployer)
    d = distributor_for(chain, token)
    d.commit_epoch(a.settler, 1, dist.root, dist.total, ZERO32, ZERO32)
    chain.advance_time(WINDOW)
    guard_error = keccak(text="ReentrancyGuardReentrantCall()")[:4]

    for payload in (
        d.encode("claim", *dist.claim(1, 0).as_tuple()),  # the same leaf again
        d.encode("claim", *dist.claim(1, 1).as_tuple()),  # another leaf
        d.encode("claimMany", [dist.claim(1, 1).as_tuple()]),
        d.encode("commitEpoch", 2, dist.root, dist.total, ZERO32, ZERO32),
    ):
        with chain.rewind():
            token.arm(a.deployer, d.address, payload)
            d.claim(a.alice, dist.claim(1, 0))
            assert token.attempted()
            assert not token.reentry_succeeded()
            assert token.reentry_return_data() == guard_error
            assert token.balance_of(a.alice.address) == 700
            assert not d.is_claimed(1, 1)
            assert d.epoch_info(1).claimed == 700
            assert d.epoch_info(2).root == ZERO32


def test_reentrancy_during_commit_is_refused(chain: ChainHarness, dist: Distribution) -> None:
    a = chain.actors
    token = ReentrantToken.deploy(chain.client, a.deployer)
    d = distributor_for(chain, token)
    token.arm(a.deployer, d.address, d.encode("commitEpoch", 2, dist.root, 1, ZERO32, ZERO32))
    d.commit_epoch(a.settler, 1, dist.root, dist.total, ZERO32, ZERO32)
    assert token.attempted()
    assert not token.reentry_succeeded()
    assert d.epoch_info(2).root == ZERO32
    assert token.balance_of(d.address) == dist.total
