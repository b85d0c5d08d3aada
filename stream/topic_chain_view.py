"""Finalized chain state folded from the `chain` topic: the worker's point-in-time table.

The `chain` topic carries chain events (key `chain_id:block_hash:log_index`), retractions of
events whose block was orphaned, and the finalized watermark, sent to every partition after the
events it covers. `TopicChainView` keeps announced events *pending* until a watermark covers
them, drops the ones retracted meanwhile, and only then records them, in chain order, into a
`MemoryChainView`: so it only ever holds finalized state and a reorg never reaches the join.

Why one replicated view per worker, not a table co-partitioned by model id: the topic is keyed
by event id (so a retraction follows its event), not by model; re-keying it by model would
still leave licenses, the treasury and the default policy (model 0) needed by every model's
partition; and the whole state is small (models, licenses, policies, stakes: thousands of rows,
not the usage stream). Every worker therefore reads every `chain` partition from the start (the
topic is the changelog; like a faust GlobalTable), which also makes rebalances free: a worker
that gains a usage partition already has the state to decide it.

The global finalized watermark is the minimum over partitions of the newest watermark seen on
each: a partition's watermark follows every event of that partition it covers, so only once
every partition has passed block N are all events up to N known. Pure: no Kafka here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from schemas.chain import (
    CHAIN_RETRACTION_TYPE,
    CHAIN_WATERMARK_TYPE,
    ChainEvent,
    FinalizedWatermark,
    LicenseMinted,
    LicenseRevoked,
    LicenseTransferred,
    ModelOperatorTransferred,
    ModelRegistered,
    PolicySet,
    Staked,
    TreasurySet,
    Unstaked,
    parse_chain_message,
    parse_watermark_message,
)
from schemas.evm import ZERO_ADDRESS
from stream.state import MemoryChainView, PolicyView, Stamp


@dataclass
class TopicChainView:
    """A `ChainView` (through `view`) of one chain, fed with raw `chain` topic messages.

    `partitions` is the number of partitions of the topic: no state is final before each of
    them has delivered a watermark.
    """

    chain_id: int
    partitions: int
    view: MemoryChainView = field(default_factory=MemoryChainView)
    _pending: dict[str, ChainEvent] = field(default_factory=dict)
    _recorded: set[str] = field(default_factory=set)
    _watermarks: dict[int, FinalizedWatermark] = field(default_factory=dict)
    finalized_block: int = -1
    """Newest block whose events are all recorded (-1: none yet)."""

    def apply(self, partition: int, raw: bytes, ce_type: str | None = None) -> None:
        """Fold one message of `partition` in. `ce_type` is the `ce_type` header when present
        (a watermark is told from an event without parsing twice)."""
        if ce_type == CHAIN_WATERMARK_TYPE or (ce_type is None and _looks_like_watermark(raw)):
            mark = parse_watermark_message(raw).data
            if mark.chain_id != self.chain_id:
                return
            previous = self._watermarks.get(partition)
            if previous is None or mark.block_number > previous.block_number:
                self._watermarks[partition] = mark
            self._advance()
            return
        message = parse_chain_message(raw)
        event = message.data
        if event.chain_id != self.chain_id or event.event_id in self._recorded:
            return  # another chain, or a re-sent event (dedupe on the id)
        if message.type == CHAIN_RETRACTION_TYPE:
            self._pending.pop(event.event_id, None)
        else:
            self._pending[event.event_id] = event

    def _advance(self) -> None:
        if len(self._watermarks) < self.partitions:
            return
        lowest = min(self._watermarks.values(), key=lambda w: w.block_number)
        if lowest.block_number <= self.finalized_block:
            return
        final = sorted(
            (e for e in self._pending.values() if e.block_number <= lowest.block_number),
            key=lambda e: e.position,
        )
        for event in final:
            del self._pending[event.event_id]
            self._recorded.add(event.event_id)
            _record(self.view, event)
        self.finalized_block = lowest.block_number
        self.view.finalize(lowest.block_timestamp)


def _looks_like_watermark(raw: bytes) -> bool:
    """For messages without a `ce_type` header: read the CloudEvents `type` attribute itself
    (a substring test could be fooled by a payload string, e.g. a metadata URI)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("type") == CHAIN_WATERMARK_TYPE


def _record(view: MemoryChainView, event: ChainEvent) -> None:
    """Record one finalized event's effect on the state the join reads (the same projection
    as `indexer.projections` + `indexer.asof`, onto `MemoryChainView`'s recorders)."""
    at = Stamp(event.block_number, event.log_index, event.block_timestamp)
    p = event.payload
    match p:
        case ModelRegistered():
            view.set_operator(p.model_id, p.operator, at)
        case ModelOperatorTransferred():
            view.set_operator(p.model_id, p.new_operator, at)
        case LicenseMinted():
            view.mint(p.license_id, p.model_id, p.price_per_unit_e6, p.expires_at, p.to, at)
        case LicenseTransferred():
            owner = None if p.to_address == ZERO_ADDRESS else p.to_address
            view.transfer(p.license_id, owner, at)
        case LicenseRevoked():
            view.revoke(p.license_id, at)
        case Staked() | Unstaked():
            view.set_stake(p.model_id, p.staker, p.stake_after, at)
        case PolicySet():
            policy = PolicyView(p.operator_bps, p.treasury_bps, p.contributors_bps)
            view.set_policy(p.model_id, policy, at)
        case TreasurySet():
            view.set_treasury(p.treasury, at)
        case _:
            pass  # governance, epochs, claims: not read by the join
