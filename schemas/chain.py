"""Chain events: decoded contract logs with their chain position, as the indexer publishes them.

A `ChainEvent` is one log of one of our contracts: the envelope (where on the chain) plus a
typed payload (what happened; see `schemas.chain_payloads`). Its `event_id`,
``f"{chain_id}:{block_hash}:{log_index}"``, is deterministic, so re-indexing the same block
yields the same ids, and a log of a block that is reorganised away has a different id from its
replacement. When a block is orphaned the indexer publishes each of its events again with
`removed=True` (a retraction, CloudEvents type `ai.royalty.chain.retraction.v1`).

On the `chain` topic each event is wrapped in a `ChainCloudEvent` whose Kafka key is its event id
(`kafka_key`), so a retraction lands on the partition of the event it retracts, after it. The
finalized watermark travels as a `FinalizedWatermarkCloudEvent` (`ai.royalty.chain.finalized.v1`)
sent to every partition: a consumer of any partition learns that nothing at or below it will
change. Consumers dedupe on the CloudEvent `(type, id)`.
"""

from __future__ import annotations

from typing import Any, Final, Literal, NamedTuple, Self

from pydantic import (
    ModelWrapValidatorHandler,
    StrictBool,
    computed_field,
    model_validator,
)

from schemas.base import Record
from schemas.chain_payloads import (
    PAYLOAD_MODELS,
    SOLIDITY_EVENTS,
    ChainPayload,
    Claimed,
    EpochCommitted,
    EpochDisputed,
    EventPayload,
    LicenseMinted,
    LicenseOfferSet,
    LicenseRevoked,
    LicenseTransferred,
    ModelMetadataUpdated,
    ModelOperatorTransferred,
    ModelRegistered,
    Paused,
    PolicySet,
    ProposalCanceled,
    ProposalCreated,
    ProposalExecuted,
    ProposalQueued,
    Staked,
    Swept,
    TreasurySet,
    Unpaused,
    Unstaked,
    VoteCast,
    Withdrawn,
)
from schemas.cloudevents import JSON_CONTENT_TYPE, SPECVERSION, EventId, SourceRef
from schemas.codec import decode, encode
from schemas.evm import Address, Bytes32
from schemas.money import PositiveUint64, Uint64
from schemas.timestamps import UtcDatetime, from_unix_seconds, unix_seconds

__all__ = [
    "CHAIN_EVENT_TYPE",
    "CHAIN_RETRACTION_TYPE",
    "CHAIN_WATERMARK_TYPE",
    "PAYLOAD_MODELS",
    "SOLIDITY_EVENTS",
    "ChainCloudEvent",
    "ChainEvent",
    "ChainPayload",
    "ChainPosition",
    "Claimed",
    "EpochCommitted",
    "EpochDisputed",
    "EventPayload",
    "FinalizedWatermark",
    "FinalizedWatermarkCloudEvent",
    "LicenseMinted",
    "LicenseOfferSet",
    "LicenseRevoked",
    "LicenseTransferred",
    "ModelMetadataUpdated",
    "ModelOperatorTransferred",
    "ModelRegistered",
    "Paused",
    "PolicySet",
    "ProposalCanceled",
    "ProposalCreated",
    "ProposalExecuted",
    "ProposalQueued",
    "Staked",
    "Swept",
    "TreasurySet",
    "Unpaused",
    "Unstaked",
    "VoteCast",
    "Withdrawn",
    "encode_chain_message",
    "encode_watermark_message",
    "event_id",
    "kafka_key",
    "parse_chain_message",
    "parse_watermark_message",
]

CHAIN_EVENT_TYPE: Final = "ai.royalty.chain.v1"
CHAIN_RETRACTION_TYPE: Final = "ai.royalty.chain.retraction.v1"
CHAIN_WATERMARK_TYPE: Final = "ai.royalty.chain.finalized.v1"


class ChainPosition(NamedTuple):
    """Where a log sits in the canonical chain; tuples order as the chain does.

    `log_index` is the log's index within its block, so `(block_number, log_index)` totally
    orders one chain's events. JSON: `[block_number, log_index]`.
    """

    block_number: Uint64
    log_index: Uint64


def event_id(chain_id: int, block_hash: str, log_index: int) -> str:
    """The deterministic id of a log: ``f"{chain_id}:{block_hash}:{log_index}"``."""
    return f"{chain_id}:{block_hash.lower()}:{log_index}"


class ChainEvent(Record):
    """One decoded contract log with its position; `removed=True` retracts an earlier one.

    `event_id` is derived from the envelope and serialised with it; an input that carries an
    `event_id` must carry the right one.
    """

    chain_id: PositiveUint64
    block_number: Uint64
    block_hash: Bytes32
    block_timestamp: Uint64
    tx_hash: Bytes32
    log_index: Uint64
    contract: Address
    removed: StrictBool = False
    payload: ChainPayload

    @computed_field  # type: ignore[prop-decorator]
    @property
    def event_id(self) -> str:
        """``f"{chain_id}:{block_hash}:{log_index}"``: unique per log of a given block."""
        return event_id(self.chain_id, self.block_hash, self.log_index)

    @property
    def position(self) -> ChainPosition:
        """`(block_number, log_index)`."""
        return ChainPosition(self.block_number, self.log_index)

    @property
    def kind(self) -> str:
        """The payload's kind (`ModelRegistered`, `PolicySet`, ...)."""
        return self.payload.kind

    def retraction(self) -> ChainEvent:
        """This event marked `removed` (its block left the canonical chain)."""
        return self.model_copy(update={"removed": True})

    @model_validator(mode="wrap")
    @classmethod
    def _check_claimed_event_id(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        # The id is computed, but our own JSON carries it: accept it back only if it agrees.
        claimed: object = None
        if isinstance(data, dict) and "event_id" in data:
            data = dict(data)
            claimed = data.pop("event_id")
        event = handler(data)
        if claimed is not None and claimed != event.event_id:
            raise ValueError(f"event_id {claimed!r} does not match the envelope ({event.event_id})")
        return event


class ChainCloudEvent(Record):
    """A `ChainEvent` as a CloudEvent on the `chain` topic.

    `id` is the event's `event_id` and `time` its block time; `type` says whether it announces
    the event (`ai.royalty.chain.v1`) or retracts it (`ai.royalty.chain.retraction.v1`), so a
    consumer dedupes on `(type, id)`. `source` is the contract as a CAIP-10 account id
    (`eip155:<chain id>:<address>`), `subject` the payload kind.
    """

    specversion: Literal["1.0"]
    id: EventId
    source: SourceRef
    type: Literal["ai.royalty.chain.v1", "ai.royalty.chain.retraction.v1"]
    time: UtcDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    subject: str | None = None
    data: ChainEvent

    @classmethod
    def wrap(cls, event: ChainEvent) -> ChainCloudEvent:
        """The CloudEvent announcing (or, when `event.removed`, retracting) `event`."""
        # `event` is a validated `ChainEvent` and every attribute below is derived from it
        # exactly as `_consistent_with_data` requires, so validating again would only repeat
        # work: the indexer wraps every event it commits, and this was a large share of a
        # backfill. Parsing (`parse_chain_message`) validates everything, as always.
        if not isinstance(event, ChainEvent):
            raise TypeError(f"expected a ChainEvent, got {type(event).__name__}")
        return cls.model_construct(
            specversion="1.0",
            id=event.event_id,
            source=f"eip155:{event.chain_id}:{event.contract}",
            type=CHAIN_RETRACTION_TYPE if event.removed else CHAIN_EVENT_TYPE,
            time=from_unix_seconds(event.block_timestamp),
            datacontenttype="application/json",
            subject=event.kind,
            data=event,
        )

    @model_validator(mode="after")
    def _consistent_with_data(self) -> ChainCloudEvent:
        if self.id != self.data.event_id:
            raise ValueError(f"id {self.id!r} is not the event's event_id {self.data.event_id!r}")
        expected_type = CHAIN_RETRACTION_TYPE if self.data.removed else CHAIN_EVENT_TYPE
        if self.type != expected_type:
            raise ValueError(f"type must be {expected_type!r} when removed={self.data.removed}")
        if unix_seconds(self.time) != self.data.block_timestamp:
            raise ValueError("time must be the block timestamp")
        return self


class FinalizedWatermark(Record):
    """The newest finalized block: chain state up to `block_timestamp` will not change."""

    chain_id: PositiveUint64
    block_number: Uint64
    block_hash: Bytes32
    block_timestamp: Uint64


def watermark_id(watermark: FinalizedWatermark) -> str:
    """The CloudEvent id of a watermark: ``f"{chain_id}:{block_hash}"``, the finalized block."""
    return f"{watermark.chain_id}:{watermark.block_hash}"


class FinalizedWatermarkCloudEvent(Record):
    """A `FinalizedWatermark` as a CloudEvent on the `chain` topic.

    `id` is the finalized block (`chain_id:block_hash`), `time` its block time, `source` the
    chain as a CAIP-2 id (`eip155:<chain id>`) and `subject` the block number, so a re-sent
    watermark dedupes on `(type, id)` like any chain event.
    """

    specversion: Literal["1.0"]
    id: EventId
    source: SourceRef
    type: Literal["ai.royalty.chain.finalized.v1"]
    time: UtcDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    subject: str | None = None
    data: FinalizedWatermark

    @classmethod
    def wrap(cls, watermark: FinalizedWatermark) -> FinalizedWatermarkCloudEvent:
        """The CloudEvent announcing `watermark`."""
        return cls(
            specversion=SPECVERSION,
            id=watermark_id(watermark),
            source=f"eip155:{watermark.chain_id}",
            type=CHAIN_WATERMARK_TYPE,
            time=from_unix_seconds(watermark.block_timestamp),
            datacontenttype=JSON_CONTENT_TYPE,
            subject=str(watermark.block_number),
            data=watermark,
        )

    @model_validator(mode="after")
    def _consistent_with_data(self) -> FinalizedWatermarkCloudEvent:
        if self.id != watermark_id(self.data):
            raise ValueError(f"id {self.id!r} is not the watermark's {watermark_id(self.data)!r}")
        if self.source != f"eip155:{self.data.chain_id}":
            raise ValueError("source must be the watermark's chain (eip155:<chain id>)")
        if unix_seconds(self.time) != self.data.block_timestamp:
            raise ValueError("time must be the block timestamp")
        return self


def kafka_key(message: ChainCloudEvent | FinalizedWatermarkCloudEvent) -> bytes:
    """The Kafka key of a `chain` topic message, UTF-8.

    A chain event (or its retraction): its event id ``chain_id:block_hash:log_index``, so the
    retraction goes to the partition of the event it retracts. A watermark: its chain id in
    decimal (it is sent to every partition explicitly, so its key routes nothing).
    """
    if isinstance(message, FinalizedWatermarkCloudEvent):
        return str(message.data.chain_id).encode("ascii")
    return message.data.event_id.encode("utf-8")


def parse_chain_message(raw: bytes | str) -> ChainCloudEvent:
    """Decode one `chain` topic message; raise `MalformedEvent` with the reason on any fault."""
    return decode(ChainCloudEvent, raw)


def encode_chain_message(message: ChainCloudEvent) -> bytes:
    """The canonical JSON bytes of a `chain` topic message."""
    return encode(message)


def parse_watermark_message(raw: bytes | str) -> FinalizedWatermarkCloudEvent:
    """Decode one watermark message of the `chain` topic (`ce_type` header
    `ai.royalty.chain.finalized.v1`); raise `MalformedEvent` with the reason on any fault."""
    return decode(FinalizedWatermarkCloudEvent, raw)


def encode_watermark_message(message: FinalizedWatermarkCloudEvent) -> bytes:
    """The canonical JSON bytes of a watermark message."""
    return encode(message)
