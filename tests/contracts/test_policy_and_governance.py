"""RoyaltyPolicy under governance: only the timelock sets splits; a full proposal round."""

from __future__ import annotations

import pytest

from settlement.chain import Proposal, ProposalState, Split, System, VoteType
from tests.contracts.contract_helpers import ChainHarness, reverts

pytestmark = pytest.mark.anvil


def vote_and_pass(system: System, chain: ChainHarness, proposal: Proposal) -> int:
    """Propose from the deployer (all votes), vote for, mine past the period, queue."""
    g, a = system.governor, chain.actors
    proposal_id = g.propose(a.deployer, proposal)
    chain.mine(g.voting_delay() + 1)
    g.cast_vote(a.deployer, proposal_id, VoteType.FOR)
    chain.mine(g.proposal_deadline(proposal_id) - chain.w3.eth.block_number + 1)
    g.queue(a.deployer, proposal)
    chain.advance_time(system.timelock.min_delay())
    return proposal_id


def test_initial_policy_and_ownership(system: System, chain: ChainHarness) -> None:
    p = system.royalty_policy
    assert p.policy_of(0) == Split(2_000, 1_000, 7_000)
    assert p.policy_of(12345) == Split(2_000, 1_000, 7_000)  # the default applies
    assert not p.has_own_policy(12345)
    assert p.treasury() == chain.actors.treasury.address
    assert p.owner() == system.timelock.address == system.manifest.roles.governance


def test_policy_set_by_anyone_but_governance_reverts(system: System, chain: ChainHarness) -> None:
    p, a = system.royalty_policy, chain.actors
    split = Split(1_000, 1_000, 8_000)
    for outsider in (a.deployer, a.mallory, a.settler, a.guardian, a.operator):
        with reverts("OwnableUnauthorizedAccount"):
            p.set_policy(outsider, 1, split)
    with reverts("OwnableUnauthorizedAccount"):  # not even the Governor itself: the timelock
        chain.send_as(system.governor.address, p, "setPolicy", 1, 1_000, 1_000, 8_000)
    with reverts("OwnableUnauthorizedAccount"):
        chain.send_as(a.deployer.address, p, "setTreasury", a.mallory.address)
    assert not p.has_own_policy(1)


@pytest.mark.parametrize(
    "bps",
    [
        (5_000, 5_000, 1),
        (0, 0, 0),
        (9_999, 0, 0),
        (10_000, 10_000, 45_536),
        (65_535, 65_535, 65_535),
    ],
)
def test_policy_not_summing_to_10000_reverts(
    system: System, chain: ChainHarness, bps: tuple[int, int, int]
) -> None:
    p = system.royalty_policy
    with reverts("InvalidSplit") as info:
        chain.send_as(system.timelock.address, p, "setPolicy", 3, *bps)
    assert info.value.error_args == bps
    assert not p.has_own_policy(3)


def test_governance_sets_policies_and_treasury(system: System, chain: ChainHarness) -> None:
    p, a = system.royalty_policy, chain.actors
    receipt = chain.send_as(system.timelock.address, p, "setPolicy", 3, 0, 0, 10_000)
    assert p.events(receipt, "PolicySet") == [
        {"modelId": 3, "operatorBps": 0, "treasuryBps": 0, "contributorsBps": 10_000}
    ]
    receipt = chain.send_as(system.timelock.address, p, "setTreasury", a.carol.address)
    assert p.events(receipt, "TreasurySet") == [{"treasury": a.carol.address}]
    assert p.policy_of(3) == Split(0, 0, 10_000)
    with reverts("ZeroTreasury"):
        chain.send_as(system.timelock.address, p, "setTreasury", "0x" + "00" * 20)


def test_full_governance_round_changes_a_policy(system: System, chain: ChainHarness) -> None:
    g, p, a = system.governor, system.royalty_policy, chain.actors
    split = Split(3_000, 500, 6_500)
    proposal = Proposal(
        targets=(p.address,),
        calldatas=(p.encode_set_policy(7, split),),
        description="Model 7: 30% operator, 5% treasury, 65% contributors",
    )

    proposal_id = g.propose(a.deployer, proposal)

    assert proposal_id == g.proposal_id(proposal)
    assert g.state(proposal_id) == ProposalState.PENDING
    chain.mine(g.voting_delay() + 1)
    assert g.state(proposal_id) == ProposalState.ACTIVE
    receipt = g.cast_vote(a.deployer, proposal_id, VoteType.FOR, reason="fair")
    (vote,) = g.events(receipt, "VoteCast")
    assert vote["support"] == VoteType.FOR
    assert vote["weight"] == system.governance_token.total_supply()
    with reverts("GovernorUnexpectedProposalState"):  # voting still open
        g.queue(a.deployer, proposal)
    chain.mine(g.proposal_deadline(proposal_id) - chain.w3.eth.block_number + 1)
    assert g.state(proposal_id) == ProposalState.SUCCEEDED

    receipt = g.queue(a.deployer, proposal)

    (queued,) = g.events(receipt, "ProposalQueued")
    assert queued["proposalId"] == proposal_id
    assert g.state(proposal_id) == ProposalState.QUEUED
    with reverts("TimelockUnexpectedOperationState"):  # the timelock delay has not passed
        g.execute(a.mallory, proposal)
    chain.advance_time(system.timelock.min_delay())

    receipt = g.execute(a.mallory, proposal)  # anyone may execute

    assert g.events(receipt, "ProposalExecuted") == [{"proposalId": proposal_id}]
    assert p.events(receipt, "PolicySet") == [
        {"modelId": 7, "operatorBps": 3_000, "treasuryBps": 500, "contributorsBps": 6_500}
    ]
    assert g.state(proposal_id) == ProposalState.EXECUTED
    assert p.policy_of(7) == split
    assert p.policy_of(8) == Split(2_000, 1_000, 7_000)


def test_governance_proposal_with_a_bad_split_fails_at_execution(
    system: System, chain: ChainHarness
) -> None:
    p, a = system.royalty_policy, chain.actors
    proposal = Proposal(
        targets=(p.address,),
        calldatas=(p.encode("setPolicy", 7, 5_000, 5_000, 5_000),),
        description="does not sum to 10000",
    )
    vote_and_pass(system, chain, proposal)
    with reverts("InvalidSplit"):
        system.governor.execute(a.deployer, proposal)
    assert not p.has_own_policy(7)


def test_governance_sweeps_through_a_proposal(system: System, chain: ChainHarness) -> None:
    """Governance administers the distributor: a sweep proposal after the long expiry."""
    d, token, a = system.royalty_distributor, system.payment_token, chain.actors
    token.approve(a.settler, d.address, 10)
    d.commit_epoch(a.settler, 1, b"\x07" * 32, 10, b"\x00" * 32, b"\x00" * 32)
    chain.advance_time(d.dispute_window_s() + d.sweep_delay_s())
    proposal = Proposal(
        targets=(d.address,),
        calldatas=(d.encode_sweep(1, a.treasury.address),),
        description="sweep epoch 1",
    )
    vote_and_pass(system, chain, proposal)
    receipt = system.governor.execute(a.deployer, proposal)
    assert d.events(receipt, "Swept") == [{"epoch": 1, "to": a.treasury.address, "amount": 10}]
    assert token.balance_of(a.treasury.address) == 10


def test_proposal_without_quorum_is_defeated(system: System, chain: ChainHarness) -> None:
    g, p, a = system.governor, system.royalty_policy, chain.actors
    supply = system.governance_token.total_supply()
    system.governance_token.transfer(a.deployer, a.alice.address, supply // 100)  # 1% < 4%
    system.governance_token.delegate(a.alice, a.alice.address)
    proposal = Proposal(
        targets=(p.address,),
        calldatas=(p.encode_set_policy(9, Split(10_000, 0, 0)),),
        description="all to the operator",
    )
    proposal_id = g.propose(a.alice, proposal)
    chain.mine(g.voting_delay() + 1)
    g.cast_vote(a.alice, proposal_id, VoteType.FOR)
    chain.mine(g.proposal_deadline(proposal_id) - chain.w3.eth.block_number + 1)
    assert g.state(proposal_id) == ProposalState.DEFEATED
    with reverts("GovernorUnexpectedProposalState"):
        g.queue(a.alice, proposal)


def test_nobody_but_the_governor_schedules_on_the_timelock(
    system: System, chain: ChainHarness
) -> None:
    t, a = system.timelock, chain.actors
    assert t.has_role(t.role("PROPOSER_ROLE"), system.governor.address)
    for who in (a.deployer, a.mallory):
        assert not t.has_role(t.role("DEFAULT_ADMIN_ROLE"), who.address)
        with reverts("AccessControlUnauthorizedAccount"):
            args = (
                system.royalty_policy.address,
                0,
                system.royalty_policy.encode_set_policy(1, Split(0, 0, 10_000)),
                b"\x00" * 32,
                b"\x00" * 32,
                t.min_delay(),
            )
            chain.client.transact(t.contract, "schedule", args, who)
