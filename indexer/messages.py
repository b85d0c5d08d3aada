"""The messages the indexer publishes on the `chain` topic, built purely from its records.

- a chain event: the CloudEvent `ai.royalty.chain.v1` (`ChainCloudEvent.wrap`);
- a retraction of an event whose block was orphaned: `ai.royalty.chain.retraction.v1`, same
  id, same key, so it lands on the same partition after the event it retracts;
- the finalized watermark: the CloudEvent `ai.royalty.chain.finalized.v1`
  (`FinalizedWatermarkCloudEvent.wrap`), sent to every partition (`broadcast`), so a consumer
  of any partition learns that nothing at or below it will change.

Keys come from `schemas.chain.kafka_key` (an event's id `chain_id:block_hash:log_index`; a
watermark's chain id) and each message's type travels in the `ce_type` header too (CloudEvents'
Kafka binding), so a consumer can tell a watermark from an event without parsing. Bytes are
canonical JSON, so a re-sent message is byte-identical and consumers dedupe on `(type, id)`.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.chain import (
    CHAIN_EVENT_TYPE,
    CHAIN_RETRACTION_TYPE,
    CHAIN_WATERMARK_TYPE,
    ChainCloudEvent,
    ChainEvent,
    FinalizedWatermark,
    FinalizedWatermarkCloudEvent,
    encode_chain_message,
    encode_watermark_message,
    kafka_key,
)

TYPE_HEADER = "ce_type"


@dataclass(frozen=True)
class ChainMessage:
    """One message for the `chain` topic (`key` is the Kafka key, UTF-8 text)."""

    chain_id: int
    message_type: str
    key: str
    value: bytes
    broadcast: bool = False


def event_message(event: ChainEvent) -> ChainMessage:
    """The message announcing `event` (or retracting it when `event.removed`)."""
    cloud_event = ChainCloudEvent.wrap(event)
    return ChainMessage(
        chain_id=event.chain_id,
        message_type=cloud_event.type,
        key=kafka_key(cloud_event).decode("utf-8"),
        value=encode_chain_message(cloud_event),
    )


def retraction_message(event: ChainEvent) -> ChainMessage:
    """The message retracting `event` (its block left the canonical chain)."""
    message = event_message(event.retraction())
    assert message.message_type == CHAIN_RETRACTION_TYPE
    return message


def watermark_message(watermark: FinalizedWatermark) -> ChainMessage:
    """The message announcing a new finalized watermark, for every partition."""
    cloud_event = FinalizedWatermarkCloudEvent.wrap(watermark)
    return ChainMessage(
        chain_id=watermark.chain_id,
        message_type=cloud_event.type,
        key=kafka_key(cloud_event).decode("utf-8"),
        value=encode_watermark_message(cloud_event),
        broadcast=True,
    )


__all__ = [
    "CHAIN_EVENT_TYPE",
    "CHAIN_RETRACTION_TYPE",
    "CHAIN_WATERMARK_TYPE",
    "TYPE_HEADER",
    "ChainMessage",
    "event_message",
    "retraction_message",
    "watermark_message",
]
