"""Staking: stake and unstake events carry the resulting stake and total; the cooldown holds."""

from __future__ import annotations

import pytest

from settlement.chain import Staking, System
from settlement.chain.tokens import ERC20Token
from tests.contracts.contract_helpers import DAY, ChainHarness, FeeOnTransferToken, reverts

pytestmark = pytest.mark.anvil

MODEL = 5


@pytest.fixture
def staker_funds(system: System, chain: ChainHarness) -> ERC20Token:
    """Model 5 registered; Alice and Bob hold 1000 governance tokens each, approved."""
    a = chain.actors
    system.model_registry.register_model(a.operator, MODEL, a.operator.address, "m")
    token = system.governance_token
    for who in (a.alice, a.bob):
        token.transfer(a.deployer, who.address, 1_000)
        token.approve(who, system.staking.address, 1_000)
    return token


def test_stake_and_unstake_events_carry_the_resulting_stake(
    system: System, chain: ChainHarness, staker_funds: ERC20Token
) -> None:
    s, a = system.staking, chain.actors
    r1 = s.stake(a.alice, MODEL, 300)
    r2 = s.stake(a.bob, MODEL, 200)
    r3 = s.stake(a.alice, MODEL, 100)
    staked = [s.events(r, "Staked")[0] for r in (r1, r2, r3)]
    assert [(e["staker"], e["amount"], e["stakeAfter"], e["totalAfter"]) for e in staked] == [
        (a.alice.address, 300, 300, 300),
        (a.bob.address, 200, 200, 500),
        (a.alice.address, 100, 400, 600),
    ]
    assert all(e["modelId"] == MODEL for e in staked)

    receipt = s.unstake(a.alice, MODEL, 150)

    assert s.events(receipt, "Unstaked") == [
        {
            "modelId": MODEL,
            "staker": a.alice.address,
            "amount": 150,
            "stakeAfter": 250,
            "totalAfter": 450,
        }
    ]
    assert s.events(receipt, "Withdrawn") == []  # the deployment has a cooldown
    assert s.stake_of(MODEL, a.alice.address) == 250
    assert s.total_staked(MODEL) == 450
    assert staker_funds.balance_of(s.address) == 600


def test_cooldown_holds_unstaked_tokens(
    system: System, chain: ChainHarness, staker_funds: ERC20Token
) -> None:
    s, a = system.staking, chain.actors
    assert s.cooldown_s() == DAY
    s.stake(a.alice, MODEL, 500)
    s.unstake(a.alice, MODEL, 200)
    pending = s.pending_withdrawal(MODEL, a.alice.address)
    assert pending.amount == 200
    with reverts("CooldownActive"):
        s.withdraw(a.alice, MODEL)
    chain.advance_time(DAY)

    receipt = s.withdraw(a.alice, MODEL)

    assert s.events(receipt, "Withdrawn") == [
        {"modelId": MODEL, "staker": a.alice.address, "amount": 200}
    ]
    assert staker_funds.balance_of(a.alice.address) == 700
    with reverts("NothingToWithdraw"):
        s.withdraw(a.alice, MODEL)


def test_staking_refuses_bad_amounts_and_unknown_models(
    system: System, chain: ChainHarness, staker_funds: ERC20Token
) -> None:
    s, a = system.staking, chain.actors
    with reverts("ZeroAmount"):
        s.stake(a.alice, MODEL, 0)
    with reverts("UnknownModel"):
        s.stake(a.alice, 999, 1)
    s.stake(a.alice, MODEL, 10)
    with reverts("InsufficientStake"):
        s.unstake(a.alice, MODEL, 11)
    with reverts("InsufficientStake"):
        s.unstake(a.bob, MODEL, 1)
    with reverts("ERC20InsufficientAllowance"):
        s.stake(a.alice, MODEL, 991)


def test_without_cooldown_tokens_return_at_unstake(
    system: System, chain: ChainHarness, staker_funds: ERC20Token
) -> None:
    a = chain.actors
    s = Staking.deploy(
        chain.client, a.deployer, staker_funds.address, system.model_registry.address, 0
    )
    staker_funds.approve(a.alice, s.address, 100)
    s.stake(a.alice, MODEL, 100)
    receipt = s.unstake(a.alice, MODEL, 60)
    assert [e["stakeAfter"] for e in s.events(receipt, "Unstaked")] == [40]
    assert s.events(receipt, "Withdrawn") == [
        {"modelId": MODEL, "staker": a.alice.address, "amount": 60}
    ]
    assert staker_funds.balance_of(a.alice.address) == 960


def test_fee_on_transfer_stake_token_is_refused(system: System, chain: ChainHarness) -> None:
    a = chain.actors
    system.model_registry.register_model(a.operator, MODEL, a.operator.address, "m")
    token = FeeOnTransferToken.deploy(chain.client, a.deployer)
    s = Staking.deploy(chain.client, a.deployer, token.address, system.model_registry.address, 0)
    token.mint(a.deployer, a.alice.address, 1_000)
    token.approve(a.alice, s.address, 1_000)
    with reverts("TransferAmountMismatch"):
        s.stake(a.alice, MODEL, 1_000)
