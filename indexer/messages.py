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

`event_messages` writes those canonical bytes directly, without building the CloudEvent model
and dumping it (most of a backfill's time went there): the envelope's values are hex strings and
integers that need no escaping, and the payload goes through a per-model plan derived from its
field types (`Uint256` as a decimal string, every other value as JSON has it, `None` omitted).
A payload model with a field type the plan does not know is dumped by pydantic. The output is
byte-for-byte `encode_chain_message(ChainCloudEvent.wrap(event))` (tested on every event kind).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, StrictBool
from pydantic.fields import FieldInfo

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
from schemas.codec import canonical_json
from schemas.evm import Address, Bytes32, HexData
from schemas.money import Bps, PositiveUint64, Uint8, Uint64, Uint256
from schemas.timestamps import format_rfc3339, from_unix_seconds

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


_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)

Writer = Callable[[Any], str]


def _decimal(value: Any) -> str:
    return f'"{value}"'


def _integer(value: Any) -> str:
    return str(int(value))


def _hex(value: Any) -> str:
    return f'"{value}"'


def _boolean(value: Any) -> str:
    return "true" if value else "false"


def _decimals(values: Any) -> str:
    return "[" + ",".join(f'"{v}"' for v in values) + "]"


def _same_type(info: FieldInfo, alias: Any) -> bool:
    reference = FieldInfo.from_annotation(alias)
    return info.annotation == reference.annotation and info.metadata == reference.metadata


# Field types by how their JSON is written: (type alias, writer). Hex types are validated to
# `0x` + hex digits, so they need no escaping.
_SCALARS: tuple[tuple[Any, Writer], ...] = (
    (Uint256, _decimal),
    (Uint64, _integer),
    (PositiveUint64, _integer),
    (Uint8, _integer),
    (Bps, _integer),
    (StrictBool, _boolean),
    (Address, _hex),
    (Bytes32, _hex),
    (HexData, _hex),
)


def _writer(info: FieldInfo) -> Writer | None:
    """How to write a field's JSON value, or None for a type without a known form."""
    for alias, writer in _SCALARS:
        if _same_type(info, alias):
            return writer
    annotation = info.annotation
    if info.metadata:
        return None
    if annotation is str or get_origin(annotation) is Literal:
        return _ENCODER.encode
    origin, arguments = get_origin(annotation), get_args(annotation)
    if origin is tuple and len(arguments) == 2 and arguments[1] is Ellipsis:
        item = FieldInfo.from_annotation(arguments[0])
        if _same_type(item, Uint256):
            return _decimals
        if item.annotation is str or _same_type(item, Address) or _same_type(item, HexData):
            return _ENCODER.encode  # a list of strings
        return None
    if origin in (Union, UnionType) and NoneType in arguments and len(arguments) == 2:
        inner = next(a for a in arguments if a is not NoneType)
        return _writer(FieldInfo.from_annotation(inner))  # None itself is omitted
    return None


@cache
def payload_plan(model: type[BaseModel]) -> tuple[tuple[str, Writer], ...] | None:
    """(field, writer) in key order, or None when a field's JSON form is not known here."""
    plan = []
    for name in sorted(model.model_fields):
        writer = _writer(model.model_fields[name])
        if writer is None:
            return None
        plan.append((name, writer))
    return tuple(plan)


def plain_form(info: FieldInfo) -> tuple[type, bool] | None:
    """For a field whose JSON is `str(value)` (quoted or not) when the value has one Python
    type: that type and whether it is quoted (`Uint256`: int, quoted; `Uint64`: int; `Address`:
    str, quoted). None for any other field."""
    writer = _writer(info)
    if writer is _decimal:
        return int, True
    if writer is _integer:
        return int, False
    if writer is _hex:
        return str, True
    return None


def payload_json(payload: BaseModel, *, exclude_none: bool = True) -> str:
    """The canonical JSON text of a payload, as `canonical_json(payload.model_dump(mode="json",
    exclude_none=exclude_none))` writes it."""
    plan = payload_plan(type(payload))
    if plan is None:
        document = payload.model_dump(mode="json", exclude_none=exclude_none)
        return canonical_json(document).decode("utf-8")
    values = payload.__dict__
    parts = [
        f'"{name}":{"null" if (value := values[name]) is None else writer(value)}'
        for name, writer in plan
        if not exclude_none or values[name] is not None
    ]
    return "{" + ",".join(parts) + "}"


@lru_cache(maxsize=4096)
def message_time(seconds: int) -> str:
    """The CloudEvent `time` of a block timestamp (RFC 3339, as the models write it)."""
    return format_rfc3339(from_unix_seconds(seconds))


@lru_cache(maxsize=4096)
def event_template(chain_id: int, contract: str, kind: str, removed: bool) -> str:
    """The message of an event of `kind` from `contract` as a `%` template, with `%s` for, in
    order: block_hash, block_number, block_timestamp, event_id, log_index, the payload's JSON,
    tx_hash, event_id and `message_time(block_timestamp)`."""
    message_type = CHAIN_RETRACTION_TYPE if removed else CHAIN_EVENT_TYPE
    constants = {
        "chain_id": str(chain_id),
        "contract": contract,
        "removed": "true" if removed else "false",
        "subject": _ENCODER.encode(kind),
        "type": message_type,
    }
    escaped = {name: value.replace("%", "%%") for name, value in constants.items()}
    return (
        '{"data":{"block_hash":"%s","block_number":%s,"block_timestamp":%s,'
        f'"chain_id":{escaped["chain_id"]},"contract":"{escaped["contract"]}",'
        '"event_id":"%s","log_index":%s,"payload":%s,'
        f'"removed":{escaped["removed"]},"tx_hash":"%s"}},'
        '"datacontenttype":"application/json","id":"%s",'
        f'"source":"eip155:{escaped["chain_id"]}:{escaped["contract"]}","specversion":"1.0",'
        f'"subject":{escaped["subject"]},"time":"%s","type":"{escaped["type"]}"}}'
    )


def encoded_event(event: ChainEvent) -> tuple[ChainMessage, str]:
    """The message announcing (or retracting) `event`, with the same bytes as
    `event_message(event)`, and the canonical JSON of its payload as `chain_events` stores it
    (`None` fields included, as `model_dump(mode="json")` has them)."""
    payload = payload_json(event.payload)
    stored = payload
    if None in event.payload.__dict__.values():
        stored = payload_json(event.payload, exclude_none=False)
    identifier = event.event_id
    removed = event.removed
    template = event_template(event.chain_id, event.contract, event.kind, removed)
    value = template % (
        event.block_hash,
        event.block_number,
        event.block_timestamp,
        identifier,
        event.log_index,
        payload,
        event.tx_hash,
        identifier,
        message_time(event.block_timestamp),
    )
    message_type = CHAIN_RETRACTION_TYPE if removed else CHAIN_EVENT_TYPE
    return ChainMessage(event.chain_id, message_type, identifier, value.encode("utf-8")), stored


def event_messages(events: Iterable[ChainEvent]) -> tuple[list[ChainMessage], list[str]]:
    """`encoded_event` of each event: the messages, and the payloads' JSON to store."""
    messages: list[ChainMessage] = []
    payloads: list[str] = []
    for event in events:
        message, payload = encoded_event(event)
        messages.append(message)
        payloads.append(payload)
    return messages, payloads


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
    "encoded_event",
    "event_message",
    "event_messages",
    "event_template",
    "message_time",
    "payload_json",
    "payload_plan",
    "plain_form",
    "retraction_message",
    "watermark_message",
]
