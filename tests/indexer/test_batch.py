"""The backfill's one-pass batch (`indexer.batch`) against the full path, and the outbox's
event-range entries read back after a restart and across a reorg.

The fast path writes messages and COPY text straight from the log words; the full path
decodes into validated `ChainEvent`s, encodes them, projects them and formats their rows. On
the logs of a real chain (every event kind, plus damaged logs) both must give byte-identical
messages, the same rows and the same undecoded logs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from indexer.batch import RangeBatch, RangeBuilder
from indexer.blocks import RawLog
from indexer.decoding import LogDecoder
from indexer.follower import Follower
from indexer.messages import CHAIN_EVENT_TYPE, CHAIN_RETRACTION_TYPE, event_message
from indexer.publisher import MemoryChainPublisher
from indexer.rpc import RpcChainSource
from schemas.chain import ChainEvent
from schemas.engine import create_engine
from schemas.tables import metadata
from settlement.chain import System
from tests.contracts.contract_helpers import ChainHarness
from tests.indexer.support import (
    MODEL_A,
    column,
    full_path_decoder,
    fund_stakers,
    index_to_head,
    make_follower,
    scripted_logs,
    table_rows,
)

pytestmark = [pytest.mark.anvil]


def _full_builder(decoder: LogDecoder) -> RangeBuilder:
    """A builder whose every event takes the full path (validated, projected, formatted)."""
    builder = RangeBuilder(full_path_decoder(decoder), copy=True)
    assert not builder.fast_kinds
    return builder


def _rows(batch: RangeBatch) -> dict[str, tuple[tuple[str, ...], list[str], list[object]]]:
    """Per table: the columns, the sorted COPY text lines, and the rows left unformatted."""
    return {
        insert.table.name: (
            insert.columns,
            sorted("".join(insert.text).splitlines()),
            [dict(row) for row in insert.rows],
        )
        for insert in batch.inserts
        if insert.text or insert.rows
    }


def _same_batches(fast: RangeBatch, full: RangeBatch) -> None:
    assert fast.messages == full.messages  # byte-identical, same order
    assert fast.events == full.events == len(fast.messages)
    assert fast.kinds == full.kinds
    assert fast.undecoded == full.undecoded
    assert _rows(fast) == _rows(full)


def test_fast_batch_equals_the_full_path(ix_system: System, ix_chain: ChainHarness) -> None:
    decoder, logs = scripted_logs(ix_system, ix_chain)
    builder = RangeBuilder(decoder, copy=True)
    assert {"Staked", "Unstaked", "Withdrawn", "LicenseMinted", "LicenseTransferred"} <= (
        builder.fast_kinds
    )
    assert {"Claimed", "EpochCommitted", "Paused", "Unpaused", "ProposalQueued"} <= (
        builder.fast_kinds
    )
    fast, full = builder.build(logs, {}), _full_builder(decoder).build(logs, {})
    _same_batches(fast, full)
    kinds = set(fast.kinds)
    assert {"PolicySet", "ProposalCreated", "VoteCast", "ModelRegistered"} <= kinds  # full path
    assert builder.fast_kinds & kinds >= {"Staked", "Claimed", "Paused", "LicenseMinted"}
    # The messages are the canonical encoding of the validated events.
    events = [e for e in (decoder.decode(entry, 0) for entry in logs) if isinstance(e, ChainEvent)]
    timestamps = {entry.block_number: entry.block_timestamp for entry in logs}
    canonical = [
        event_message(e.model_copy(update={"block_timestamp": timestamps[e.block_number]}))
        for e in events
    ]
    assert fast.messages == canonical


def test_damaged_logs_take_the_full_path(ix_system: System, ix_chain: ChainHarness) -> None:
    decoder, logs = scripted_logs(ix_system, ix_chain)
    staked = next(
        e for e in logs if isinstance(r := decoder.decode(e, 1), ChainEvent) and r.kind == "Staked"
    )
    word = "f" * 64
    damaged = [
        dataclasses.replace(staked, data=staked.data[:-2]),
        dataclasses.replace(staked, topics=staked.topics[:2]),
        dataclasses.replace(staked, topics=(*staked.topics[:2], "0x" + word)),
        dataclasses.replace(staked, block_hash="0x1234"),
        dataclasses.replace(staked, log_index=-1),
        dataclasses.replace(staked, data="0x" + "zz" * 96),
        dataclasses.replace(staked, tx_hash="0x" + "G" * 64),  # after its block passed
        dataclasses.replace(staked, block_timestamp=None),  # from the headers' timestamps
    ]
    timestamps = {staked.block_number: 1_700_000_000}
    fast = RangeBuilder(decoder, copy=True).build([staked, *damaged], timestamps)
    full = _full_builder(decoder).build([staked, *damaged], timestamps)
    _same_batches(fast, full)
    assert len(fast.undecoded) == 7
    assert fast.events == 2


def test_without_copy_rows_are_not_preformatted(ix_system: System, ix_chain: ChainHarness) -> None:
    decoder, logs = scripted_logs(ix_system, ix_chain)
    builder = RangeBuilder(decoder, copy=False)
    assert not builder.fast_kinds
    batch = builder.build(logs, {})
    assert all(not insert.text for insert in batch.inserts)
    assert batch.messages == RangeBuilder(decoder, copy=True).build(logs, {}).messages


def _step_to_head(follower: Follower) -> None:
    """Step until caught up, publishing nothing (as if the bus were down all along)."""
    for _ in range(10_000):
        if follower.step().kind == "idle":
            return
    raise AssertionError("the follower did not reach the head")


def _published(publisher: MemoryChainPublisher, message_type: str) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for message in publisher.messages:
        if message.message_type == message_type:
            assert found.setdefault(message.key, message.value) == message.value
    return found


def _outbox_size(url: str) -> int:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            outbox = metadata.tables["chain_outbox"]
            return int(connection.execute(sa.select(sa.func.count()).select_from(outbox)).one()[0])
    finally:
        engine.dispose()


def _stakes(system: System, chain: ChainHarness, amounts: Iterable[int]) -> None:
    a = chain.actors
    for i, amount in enumerate(amounts):
        system.staking.stake(a.bob if i % 2 else a.carol, MODEL_A, amount)


def test_unpublished_ranges_are_published_after_a_restart_and_a_reorg(
    ix_system: System, ix_chain: ChainHarness, migrated_url: str, sqlite_migrated: str
) -> None:
    """Event ranges queued but never published, some of them orphaned by a reorg before the
    relay ran, then published by a restarted follower: the same bytes as a follower that
    published after every step, each orphaned event followed by its retraction."""
    system, chain, a = ix_system, ix_chain, ix_chain.actors
    system.model_registry.register_model(a.operator, MODEL_A, a.operator.address, "m")
    fund_stakers(system, chain, [a.bob, a.carol])
    _stakes(system, chain, range(1, 6))
    reference_bus = MemoryChainPublisher()
    reference = make_follower(
        system, [chain.anvil.rpc_url], sqlite_migrated, confirmations=3, publisher=reference_bus
    )
    silent = make_follower(
        system, [chain.anvil.rpc_url], migrated_url, confirmations=3, publisher=None
    )
    index_to_head(reference)
    _step_to_head(silent)
    _stakes(system, chain, range(10, 14))
    index_to_head(reference)
    _step_to_head(silent)
    chain.anvil.rpc("anvil_reorg", [3, []])
    _stakes(system, chain, [99])
    index_to_head(reference)
    _step_to_head(silent)
    silent.close()
    silent.engine.dispose()
    assert _outbox_size(migrated_url) > 0

    bus = MemoryChainPublisher()
    restarted = make_follower(
        system, [chain.anvil.rpc_url], migrated_url, confirmations=3, publisher=bus
    )
    assert restarted.relay() == len(bus.messages) > 0
    restarted.engine.dispose()
    reference.engine.dispose()
    assert _outbox_size(migrated_url) == 0

    announced = _published(bus, CHAIN_EVENT_TYPE)
    retracted = _published(bus, CHAIN_RETRACTION_TYPE)
    assert announced == _published(reference_bus, CHAIN_EVENT_TYPE)
    assert retracted == _published(reference_bus, CHAIN_RETRACTION_TYPE)
    state = table_rows(migrated_url)
    assert state == table_rows(sqlite_migrated)
    final = set(column(state["chain_events"], "event_id"))
    assert set(retracted) == set(announced) - final
    assert len(retracted) >= 2
    order = {(m.message_type, m.key): i for i, m in enumerate(bus.messages)}
    assert all(
        order[(CHAIN_RETRACTION_TYPE, key)] > order[(CHAIN_EVENT_TYPE, key)] for key in retracted
    )


def _follower_before_empty_blocks(system: System, chain: ChainHarness, url: str) -> Follower:
    """A model with a funded staker, then ten empty blocks (nothing of ours in them), and a
    follower over small ranges that has indexed nothing yet."""
    a = chain.actors
    system.model_registry.register_model(a.operator, MODEL_A, a.operator.address, "m")
    fund_stakers(system, chain, [a.bob])
    chain.anvil.rpc("anvil_mine", ["0xa"])
    return make_follower(system, [chain.anvil.rpc_url], url, max_block_range=2)


def _stake_request(system: System, chain: ChainHarness, amount: int) -> dict[str, str]:
    """Bob's stake of `amount` on MODEL_A, as a transaction request for `anvil_reorg`."""
    stake = system.staking.encode("stake", MODEL_A, amount)
    bob = chain.actors.bob.address
    return {"from": bob, "to": system.staking.address, "data": "0x" + stake.hex()}


def _assert_stake_indexed_as_a_fresh_index(
    system: System,
    chain: ChainHarness,
    follower: Follower,
    url: str,
    fresh_url: str,
    amount: int,
) -> None:
    """The follower's state holds the stake and equals a fresh index of the final chain."""
    follower.close()
    follower.engine.dispose()
    state = table_rows(url)
    assert amount in column(state["chain_stakes"], "amount")
    fresh = make_follower(system, [chain.anvil.rpc_url], fresh_url)
    index_to_head(fresh)
    fresh.engine.dispose()
    assert state == table_rows(fresh_url)


def test_a_reorg_after_a_near_head_range_was_fetched_ahead_is_seen(
    ix_system: System, ix_chain: ChainHarness, migrated_url: str, sqlite_migrated: str
) -> None:
    """A range fetched ahead near the head, then a reorg that puts a stake into one of its
    blocks, which had no logs: the logs fetched ahead hold no block hash to contradict the new
    headers, so only the range's last block hash read before them shows the chain moved."""
    system, chain = ix_system, ix_chain
    follower = _follower_before_empty_blocks(system, chain, migrated_url)
    head = chain.client.block_number()
    prefetched = None
    for _ in range(200):
        assert follower.step().kind == "indexed"
        prefetched = follower._prefetched
        if prefetched is not None and prefetched[0] >= head - 6:
            break
    assert prefetched is not None
    start, _, future = prefetched
    assert future.result()[0] == []  # fetched ahead: no logs in those blocks
    request = _stake_request(system, chain, 77)
    chain.anvil.rpc("anvil_reorg", [head - start + 1, [[request, 0]]])
    steps = index_to_head(follower)
    assert any(step.kind == "retry" for step in steps)
    _assert_stake_indexed_as_a_fresh_index(
        system, chain, follower, migrated_url, sqlite_migrated, 77
    )


class _ReorgAfterLogs:
    """A chain source that, once, reorganises the chain right after answering a `logs` call
    for a range near the head: the headers the step fetches next come from the new chain."""

    def __init__(self, inner: RpcChainSource, reorg: Callable[[int], None], near: int) -> None:
        self.inner, self.reorg, self.near, self.done = inner, reorg, near, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def logs(self, start: int, end: int, addresses: Iterable[str]) -> list[RawLog]:
        found = self.inner.logs(start, end, addresses)
        if not self.done and start >= self.near and not found:
            self.done = True
            self.reorg(start)
        return found


def test_a_reorg_between_the_logs_and_the_headers_of_a_step_is_seen(
    ix_system: System, ix_chain: ChainHarness, migrated_url: str, sqlite_migrated: str
) -> None:
    """Without fetching ahead: a reorg right after a step's `logs` call puts a stake into a
    block of its range that had no logs; the hash of the range's last block read before the
    logs shows the chain moved, and the step is retried on the new chain."""
    system, chain = ix_system, ix_chain
    follower = _follower_before_empty_blocks(system, chain, migrated_url)
    follower.config = dataclasses.replace(follower.config, prefetch=False)
    head = chain.client.block_number()
    request = _stake_request(system, chain, 78)

    def reorg(start: int) -> None:
        chain.anvil.rpc("anvil_reorg", [head - start + 1, [[request, 0]]])

    assert isinstance(follower.source, RpcChainSource)
    source = _ReorgAfterLogs(follower.source, reorg, near=head - 5)
    follower.source = cast(Any, source)
    steps = index_to_head(follower)
    assert source.done
    assert any(step.kind == "retry" for step in steps)
    _assert_stake_indexed_as_a_fresh_index(
        system, chain, follower, migrated_url, sqlite_migrated, 78
    )
