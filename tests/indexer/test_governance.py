"""Governance as of a point (`ChainState.proposals`, `proposal`, `votes`, `vote_totals`) against
the Governor's own view at every step of a real round, and of a canceled proposal, indexed
into SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from indexer.asof import AsOf, ChainState
from settlement.chain import Proposal, Split, System
from settlement.chain.governance import ProposalState
from settlement.chain.policy import TOTAL_BPS
from tests.contracts.contract_helpers import ChainHarness
from tests.indexer.support import MODEL_A, governance_round, index_to_head, make_follower

pytestmark = [pytest.mark.anvil]

#: The lifecycle status the events give for each state the Governor reports.
EXPECTED_STATUS = {
    ProposalState.PENDING: "created",
    ProposalState.ACTIVE: "created",
    ProposalState.DEFEATED: "created",
    ProposalState.SUCCEEDED: "created",
    ProposalState.QUEUED: "queued",
    ProposalState.EXECUTED: "executed",
    ProposalState.CANCELED: "canceled",
}


def test_proposals_and_votes_as_of_each_step_of_a_round(
    ix_system: System, ix_chain: ChainHarness, migrated_url: str
) -> None:
    system, chain, a = ix_system, ix_chain, ix_chain.actors
    g = system.governor
    system.model_registry.register_model(a.operator, MODEL_A, a.operator.address, "m")
    before = chain.w3.eth.block_number
    round_ = governance_round(system, chain, MODEL_A, Split(1_500, 500, TOTAL_BPS - 2_000))
    # A second proposal, canceled by its proposer while pending.
    doomed = Proposal((system.royalty_policy.address,), (b"\x00",), "never mind")
    doomed_id = g.propose(a.deployer, doomed)
    created = chain.w3.eth.block_number
    targets, values, calldatas = doomed.args()
    chain.client.transact(
        g.contract, "cancel", [targets, values, calldatas, doomed.description_hash], a.deployer
    )
    canceled = chain.w3.eth.block_number

    follower = make_follower(system, [chain.anvil.rpc_url], migrated_url)
    index_to_head(follower)
    functions = g.contract.functions
    with follower.engine.connect() as connection:
        state = ChainState(connection, system.manifest.chain_id)
        assert state.proposals(AsOf.at_block(before)) == []
        assert state.proposal(round_.proposal_id, AsOf.at_block(before)) is None

        points = [round_.proposed, round_.voted, round_.queued, round_.executed, created, canceled]
        for block in points:
            at = AsOf.at_block(block)
            proposals = state.proposals(at)
            assert [p.proposal_id for p in proposals] == [round_.proposal_id] + (
                [doomed_id] if block >= created else []
            )
            for proposal in proposals:
                on_chain = ProposalState(
                    functions.state(proposal.proposal_id).call(block_identifier=block)
                )
                assert proposal.status == EXPECTED_STATUS[on_chain], (block, on_chain)
                assert state.proposal(proposal.proposal_id, at) == proposal
            # Votes and their totals equal the Governor's count at that block.
            against, for_, abstain = functions.proposalVotes(round_.proposal_id).call(
                block_identifier=block
            )
            totals = state.vote_totals(round_.proposal_id, at)
            assert {s: w for s, w in {0: against, 1: for_, 2: abstain}.items() if w} == totals

        at_end = AsOf.at_block(canceled)
        main = state.proposal(round_.proposal_id, at_end)
        assert main is not None
        assert main.status == "executed"
        assert main.status_block == round_.executed
        assert main.created_block == round_.proposed
        assert main.eta_seconds == g.proposal_eta(round_.proposal_id)
        assert main.proposer == a.deployer.address
        assert main.targets == round_.proposal.targets
        assert main.values == round_.proposal.values
        assert main.calldatas == tuple("0x" + c.hex() for c in round_.proposal.calldatas)
        assert main.description == round_.proposal.description
        assert main.vote_start == g.proposal_snapshot(round_.proposal_id)
        assert main.vote_end == g.proposal_deadline(round_.proposal_id)
        queued = state.proposal(round_.proposal_id, AsOf.at_block(round_.queued))
        assert queued is not None
        assert queued.status == "queued"
        assert queued.eta_seconds == main.eta_seconds
        assert state.proposal(round_.proposal_id, AsOf.at_block(round_.voted)) == (
            state.proposal(round_.proposal_id, AsOf.at_block(round_.proposed))
        )

        (vote,) = state.votes(round_.proposal_id, at_end)
        assert vote.voter == a.deployer.address
        assert vote.support == 1
        assert vote.reason == "for the contributors"
        assert vote.params is None
        assert vote.block_number == round_.voted
        snapshot = g.proposal_snapshot(round_.proposal_id)
        assert vote.weight == functions.getVotes(a.deployer.address, snapshot).call() > 0
        assert state.votes(round_.proposal_id, AsOf.at_block(round_.voted - 1)) == []
        assert state.votes(doomed_id, at_end) == []

        gone = state.proposal(doomed_id, at_end)
        assert gone is not None
        assert (gone.status, gone.status_block, gone.eta_seconds) == ("canceled", canceled, None)
        # As of a time: the same as of the last block of that second.
        stamp = chain.w3.eth.get_block(round_.queued)["timestamp"]
        by_time = state.proposal(round_.proposal_id, AsOf.at_time(stamp))
        assert by_time is not None
        assert by_time.status == "queued"
    follower.engine.dispose()
