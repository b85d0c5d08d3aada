"""Reorgs at depths 1 to 10, mid-stream, removing license transfers and stakes: after the
follower catches up, its database equals a fresh index of the final chain, and every event it
published from an orphaned block was retracted."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from deploy.local import KafkaBroker
from indexer.messages import CHAIN_EVENT_TYPE, CHAIN_RETRACTION_TYPE, TYPE_HEADER
from indexer.publisher import KafkaChainConfig, KafkaChainPublisher, MemoryChainPublisher
from schemas.chain import CHAIN_WATERMARK_TYPE, parse_chain_message, parse_watermark_message
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


def _read_topic(broker: KafkaBroker, topic: str) -> list[ConsumerRecord]:
    """Every record of `topic` (all partitions, up to their end offsets now)."""
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: list[ConsumerRecord] = []
        while any(consumer.position(p) < ends[p] for p in partitions):
            for batch in consumer.poll(timeout_ms=1000).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def test_reorg_retractions_reach_kafka(
    ix_system: System, ix_chain: ChainHarness, sqlite_migrated: str, kafka_broker: KafkaBroker
) -> None:
    """On a real broker: every event of an orphaned block is retracted on the `chain` topic,
    keyed and partitioned like the event, after it; survivors are never retracted."""
    system, chain, a = ix_system, ix_chain, ix_chain.actors
    license_id = _base(system, chain)
    topic = f"chain-reorg-{uuid.uuid4().hex[:8]}"
    publisher = KafkaChainPublisher(
        KafkaChainConfig(bootstrap_servers=kafka_broker.bootstrap_servers, topic=topic)
    )
    follower = make_follower(
        system, [chain.anvil.rpc_url], sqlite_migrated, confirmations=3, publisher=publisher
    )
    try:
        index_to_head(follower)
        _doomed_blocks(system, chain, license_id, 3)
        index_to_head(follower)
        chain.anvil.rpc("anvil_reorg", [3, [[_stake_request(system, a.carol.address, 7), 0]]])
        steps = index_to_head(follower)
    finally:
        publisher.close()
        follower.engine.dispose()
    assert any(s.kind == "reorg" for s in steps)
    final_ids = set(column(table_rows(sqlite_migrated)["chain_events"], "event_id"))

    announced: dict[str, tuple[int, int]] = {}
    retracted: dict[str, tuple[int, int]] = {}
    watermarks: dict[int, int] = defaultdict(int)
    for record in _read_topic(kafka_broker, topic):
        kind = dict(record.headers)[TYPE_HEADER].decode()
        where = (record.partition, record.offset)
        if kind == CHAIN_WATERMARK_TYPE:
            parse_watermark_message(record.value)
            watermarks[record.partition] += 1
            continue
        message = parse_chain_message(record.value)
        assert message.type == kind
        assert record.key.decode() == message.id == message.data.event_id
        if kind == CHAIN_EVENT_TYPE:
            announced.setdefault(message.id, where)
        else:
            assert kind == CHAIN_RETRACTION_TYPE
            assert message.data.removed is True
            retracted[message.id] = where
    orphaned = set(announced) - final_ids
    assert len(orphaned) >= 3  # the transfer and the stakes of the three replaced blocks
    assert set(retracted) == orphaned
    for event_id in orphaned:
        event_partition, event_offset = announced[event_id]
        partition, offset = retracted[event_id]
        assert partition == event_partition
        assert offset > event_offset
    assert final_ids <= set(announced)
    assert len(watermarks) == 3  # broadcast: every partition got the watermarks
