"""The usage event: one completed inference, billed against a license.

Wire format: a CloudEvents 1.0 event in structured JSON mode on the `usage` topic, Kafka key =
the model id (so all usage of a model lands in one partition, in order)::

    {"specversion": "1.0", "id": "node-7:000042", "source": "//metering/node-7",
     "type": "ai.royalty.usage.v1", "time": "2024-05-01T12:00:00.250Z",
     "datacontenttype": "application/json", "keyid": "node-7", "signature": "0x...",
     "data": {"model_id": "1", "license_id": "42", "units": 128}}

`id` is the global dedupe key. `signature` and `keyid` are CloudEvents extension attributes
(lowercase alphanumeric names, as the spec requires) carrying the metering node's signature
over `signing_payload(event)`. The `type` is versioned: a `v2` is a new model, never a silent
reinterpretation of `v1`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from schemas.base import Record
from schemas.cloudevents import JSON_CONTENT_TYPE, SPECVERSION, EventId, ShortText, SourceRef
from schemas.codec import canonical_json, decode, encode
from schemas.evm import HexData
from schemas.money import PositiveUint64, Uint64, Uint256
from schemas.timestamps import UNIX_EPOCH, UtcDatetime

_SECOND = timedelta(seconds=1)

USAGE_EVENT_TYPE = "ai.royalty.usage.v1"


class UsageData(Record):
    """The billed facts of one inference: which model, under which license, how many units.

    `units` counts the model's billing metric (tokens, images, seconds...): a positive integer.
    The optional fields are what the metering node knows; they are kept for analytics and
    never change the price.
    """

    model_id: Uint256
    license_id: Uint256
    units: PositiveUint64
    model_version: ShortText | None = None
    request_id: ShortText | None = None
    latency_ms: Uint64 | None = None
    billing_metric: ShortText | None = None


class UsageEvent(Record):
    """A usage event (CloudEvents 1.0, type `ai.royalty.usage.v1`) as a metering node sends it.

    `time` is when the inference completed, in UTC; `unix_time` is its floor in unix seconds,
    the time at which the license, price and split are looked up.
    """

    specversion: Literal["1.0"]
    id: EventId
    source: SourceRef
    type: Literal["ai.royalty.usage.v1"]
    time: UtcDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    subject: ShortText | None = None
    keyid: ShortText | None = None
    signature: HexData | None = None
    data: UsageData

    @property
    def unix_time(self) -> int:
        """The event time in unix seconds, rounded down (`unix_seconds(self.time)`, in exact
        integer arithmetic on the aware UTC instant)."""
        return (self.time - UNIX_EPOCH) // _SECOND

    @classmethod
    def create(
        cls,
        *,
        id: str,
        source: str,
        time: datetime,
        data: UsageData,
        subject: str | None = None,
        keyid: str | None = None,
    ) -> UsageEvent:
        """A new, unsigned usage event with the fixed CloudEvents attributes filled in."""
        return cls(
            specversion=SPECVERSION,
            id=id,
            source=source,
            type=USAGE_EVENT_TYPE,
            time=time,
            datacontenttype=JSON_CONTENT_TYPE,
            subject=subject,
            keyid=keyid,
            data=data,
        )

    def with_signature(self, signature: str) -> UsageEvent:
        """This event carrying `signature` (validated, unlike a bare `model_copy`)."""
        return UsageEvent.model_validate({**self.model_dump(), "signature": signature})


def signing_payload(event: UsageEvent) -> bytes:
    """The bytes a metering node signs and the stream processor verifies.

    The canonical JSON of the event without its `signature` attribute: sorted keys, no
    whitespace, UTF-8, absent optional attributes omitted. Computed from the parsed event, so
    two encodings of the same event (key order, spacing, `"units": 5` vs a re-serialised copy)
    sign the same bytes, and nothing the model does not hold can be smuggled past a signature.
    """
    return canonical_json(event.model_dump(mode="json", exclude_none=True, exclude={"signature"}))


def kafka_key(event: UsageEvent) -> bytes:
    """The Kafka message key of a usage event: its model id in decimal ASCII."""
    return str(event.data.model_id).encode("ascii")


def parse_usage_event(raw: bytes | str) -> UsageEvent:
    """Decode one `usage` topic message; raise `MalformedEvent` with the reason on any fault."""
    return decode(UsageEvent, raw)


def encode_usage_event(event: UsageEvent) -> bytes:
    """The canonical JSON bytes of a usage event (the `usage` topic message value)."""
    return encode(event)
