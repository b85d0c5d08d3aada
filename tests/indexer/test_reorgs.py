"""Reorgs at depths 1 to 10, mid-stream, removing license transfers and stakes: after the
follower catches up, its database equals a fresh index of the final chain, and every event it
published from an orphaned block was retracted."""

from __future__ import annotations

import json

import pytest

from indexer.messages import CHAIN_EVENT_TYPE, CHAIN_RETRACTION_TYPE
from indexer.publisher import MemoryChainPublisher
from settlement.chain import System
from tests.contracts.contract_helpers import ChainHarness
from tests.indexer.support import (
    MODEL_A,
    column,
    fresh_index,
    fund_stakers,
    index_to_head,
    make_follower,
    table_rows,
)

pytestmark = [pytest.mark.anvil]


def _base(system: System, chain: ChainHarness) -> int:
    """A model, a license held by Alice, funded stakers; returns the license id."""
    a = chain.actors
    system.model_registry.register_model(a.operator, MODEL_A, a.operator.address, "m")
    license_id = system.license_nft.mint(a.operator, MODEL_A, a.alice.address, 5)
    fund_stakers(system, chain, [a.alice, a.bob, a.carol])
    system.staking.stake(a.alice, MODEL_A, 100)
    return license_id


def _doomed_blocks(system: System, chain: ChainHarness, license_id: int, depth: int) -> None:
    """`depth` blocks: a license transfer first, then stakes (one transaction per block)."""
    a = chain.actors
    chain.client.transact(
        system.license_nft.contract,
        "transferFrom",
        [a.alice.address, a.bob.address, license_id],
        a.alice,
    )
    for i in range(1, depth):
        system.staking.stake(a.bob if i % 2 else a.carol, MODEL_A, 10 + i)


def _stake_request(system: System, sender: str, amount: int) -> dict[str, str]:
    data = system.staking.encode("stake", MODEL_A, amount)
    return {"from": sender, "to": system.staking.address, "data": "0x" + data.hex()}


def _check_retractions(publisher: MemoryChainPublisher, final_ids: set[str]) -> int:
    """Every published event id missing from the final state was retracted after it."""
    announced: dict[str, int] = {}
    retracted: dict[str, int] = {}
    for position, message in enumerate(publisher.messages):
        if message.message_type == CHAIN_EVENT_TYPE:
            announced.setdefault(message.key, position)
        elif message.message_type == CHAIN_RETRACTION_TYPE:
            retracted[message.key] = position
            assert json.loads(message.value)["data"]["removed"] is True
    orphaned = set(announced) - final_ids
    assert orphaned == set(retracted)
    assert all(retracted[key] > announced[key] for key in orphaned)
    return len(orphaned)


@pytest.mark.parametrize("depth", range(1, 11))
def test_reorg_mid_stream_equals_a_fresh_index(
    depth: int,
    ix_system: System,
    ix_chain: ChainHarness,
    migrated_url: str,
    sqlite_migrated: str,
) -> None:
    system, chain, a = ix_system, ix_chain, ix_chain.actors
    license_id = _base(system, chain)
    publisher = MemoryChainPublisher()
    follower = make_follower(
        system, [chain.anvil.rpc_url], migrated_url, confirmations=3, publisher=publisher
    )
    index_to_head(follower)  # mid-stream: the indexer is at the head before the doomed blocks
    _doomed_blocks(system, chain, license_id, depth)
    index_to_head(follower)
    assert a.bob.address in column(table_rows(migrated_url)["chain_license_owners"], "owner")
    # Replace the last `depth` blocks: the transfer and the stakes are gone, Carol staked.
    chain.anvil.rpc("anvil_reorg", [depth, [[_stake_request(system, a.carol.address, 7), 0]]])
    system.staking.stake(a.alice, MODEL_A, 1)  # the chain goes on after the reorg
    steps = index_to_head(follower)
    assert any(s.kind == "reorg" for s in steps)
    after = table_rows(migrated_url)
    assert after == fresh_index(system, chain.anvil.rpc_url, sqlite_migrated)
    owners = column(after["chain_license_owners"], "owner")
    assert a.bob.address not in owners  # the removed transfer left no trace
    final_ids = set(column(after["chain_events"], "event_id"))
    assert _check_retractions(publisher, final_ids) >= depth
    follower.engine.dispose()


@pytest.mark.parametrize(("depth", "replacement_blocks"), [(4, 1), (6, 9)])
def test_snapshot_revert_to_a_shorter_or_longer_chain(
    depth: int,
    replacement_blocks: int,
    ix_system: System,
    ix_chain: ChainHarness,
    migrated_url: str,
    sqlite_migrated: str,
) -> None:
    system, chain, a = ix_system, ix_chain, ix_chain.actors
    license_id = _base(system, chain)
    follower = make_follower(system, [chain.anvil.rpc_url], migrated_url, confirmations=2)
    index_to_head(follower)
    snapshot = chain.anvil.rpc("evm_snapshot")
    _doomed_blocks(system, chain, license_id, depth)
    index_to_head(follower)
    assert chain.anvil.rpc("evm_revert", [snapshot]) is True
    for i in range(replacement_blocks):
        system.staking.stake(a.carol, MODEL_A, 1 + i)
    steps = index_to_head(follower)
    assert any(s.kind == "reorg" for s in steps)
    assert table_rows(migrated_url) == fresh_index(system, chain.anvil.rpc_url, sqlite_migrated)
    follower.engine.dispose()
