"""A scripted history indexed into SQLite and PostgreSQL equals the chain's own view of itself
(ownerOf, stakes, policy getters, treasury) at several blocks, read back "as of" each block."""

from __future__ import annotations

import pytest
from sqlalchemy.pool import NullPool

from indexer.asof import AsOf, ChainState
from schemas.engine import create_engine
from settlement.chain import System
from tests.contracts.contract_helpers import ChainHarness
from tests.indexer.support import (
    MODEL_A,
    MODEL_B,
    column,
    index_to_head,
    make_follower,
    scripted_history,
    table_rows,
)

pytestmark = [pytest.mark.anvil]


def _owner_on_chain(system: System, license_id: int, block: int) -> str | None:
    fn = system.license_nft.contract.functions.ownerOf(license_id)
    try:
        return str(fn.call(block_identifier=block))
    except Exception:
        return None


def test_projections_equal_the_chain_at_every_checkpoint(
    ix_system: System, ix_chain: ChainHarness, migrated_url: str
) -> None:
    system, chain = ix_system, ix_chain
    history = scripted_history(system, chain)
    follower = make_follower(system, [chain.anvil.rpc_url], migrated_url, confirmations=0)
    index_to_head(follower)
    chain_id = system.manifest.chain_id
    staking, policy = system.staking.contract.functions, system.royalty_policy.contract.functions
    with follower.engine.connect() as connection:
        state = ChainState(connection, chain_id)
        watermark = state.watermark()
        assert watermark is not None
        assert watermark.block_number == chain.w3.eth.block_number
        for block in history.checkpoints:
            at = AsOf.at_block(block)
            for license_id in history.licenses:
                assert state.license_owner(license_id, at) == _owner_on_chain(
                    system, license_id, block
                )
                terms = system.license_nft.contract.functions.terms(license_id).call(
                    block_identifier=block
                )
                indexed = state.license(license_id, at)
                assert indexed is not None
                assert (indexed.model_id, indexed.price_per_unit_e6, indexed.expires_at) == tuple(
                    terms[:3]
                )
                assert indexed.revoked == (terms[3] != 0)
            for model_id in (MODEL_A, MODEL_B):
                for staker in history.stakers:
                    assert state.stake_of(model_id, staker, at) == staking.stakeOf(
                        model_id, staker
                    ).call(block_identifier=block)
                assert state.total_staked(model_id, at) == staking.totalStaked(model_id).call(
                    block_identifier=block
                )
                split = policy.policyOf(model_id).call(block_identifier=block)
                indexed_policy = state.policy(model_id, at)
                assert indexed_policy is not None
                assert (
                    indexed_policy.operator_bps,
                    indexed_policy.treasury_bps,
                    indexed_policy.contributors_bps,
                ) == tuple(split[:3])
                operator = system.model_registry.contract.functions.operatorOf(model_id)
                assert state.model_operator(model_id, at) == operator.call(block_identifier=block)
            assert state.treasury(at) == policy.treasury().call(block_identifier=block)
        latest = AsOf.at_block(chain.w3.eth.block_number)
        assert state.claimed(1, latest) == {0: 600}
        committed = state.epoch_committed(1, latest)
        assert committed is not None
        assert committed.total == 1000
    # As of a time: the state after the last block of that second (several blocks can share
    # one timestamp).
    stamp = chain.w3.eth.get_block(history.checkpoints[2])["timestamp"]
    last = history.checkpoints[2]
    while chain.w3.eth.get_block(last + 1)["timestamp"] <= stamp:
        last += 1
    with follower.engine.connect() as connection:
        state = ChainState(connection, chain_id)
        by_time = state.stakes(MODEL_A, AsOf.at_time(stamp))
        by_block = state.stakes(MODEL_A, AsOf.at_block(last))
        assert by_time == by_block
        assert by_block
    rows = table_rows(migrated_url)
    kinds = set(column(rows["chain_events"], "kind"))
    assert {"LicenseTransferred", "LicenseRevoked", "Staked", "Unstaked", "Withdrawn"} <= kinds
    assert {"ProposalCreated", "VoteCast", "ProposalQueued", "ProposalExecuted"} <= kinds
    assert {"PolicySet", "EpochCommitted", "Claimed", "ModelOperatorTransferred"} <= kinds
    # Events of the ABIs that are not chain events are kept raw with their reason.
    assert set(column(rows["chain_raw_logs"], "reason")) == {"not_indexed"}
    follower.engine.dispose()


def test_finalized_only_reads_stop_at_the_watermark(
    ix_system: System, ix_chain: ChainHarness, migrated_url: str
) -> None:
    system, chain, a = ix_system, ix_chain, ix_chain.actors
    system.model_registry.register_model(a.operator, MODEL_A, a.operator.address, "x")
    license_id = system.license_nft.mint(a.operator, MODEL_A, a.alice.address, 1)
    follower = make_follower(system, [chain.anvil.rpc_url], migrated_url, confirmations=3)
    index_to_head(follower)
    head = chain.w3.eth.block_number
    engine = create_engine(migrated_url, poolclass=NullPool)
    with engine.connect() as connection:
        final = ChainState(connection, system.manifest.chain_id)
        tip = ChainState(connection, system.manifest.chain_id, finalized_only=False)
        watermark = final.watermark()
        assert watermark is not None
        assert watermark.block_number == head - 3
        assert final.license_owner(license_id, AsOf.at_block(head)) is None  # not final yet
        assert tip.license_owner(license_id, AsOf.at_block(head)) == a.alice.address
    chain.mine(3)
    index_to_head(follower)
    with engine.connect() as connection:
        final = ChainState(connection, system.manifest.chain_id)
        assert final.license_owner(license_id, AsOf.at_block(head)) == a.alice.address
    engine.dispose()
    follower.engine.dispose()
