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

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from schemas.base import Record, construct_unvalidated
from schemas.cloudevents import JSON_CONTENT_TYPE, SPECVERSION, EventId, ShortText, SourceRef
from schemas.codec import MAX_EVENT_BYTES, canonical_json, decode, encode
from schemas.evm import HexData
from schemas.money import UINT64_MAX, UINT256_MAX, PositiveUint64, Uint64, Uint256
from schemas.timestamps import UNIX_EPOCH, UtcDatetime, format_rfc3339

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


@dataclass(frozen=True, slots=True)
class ReadUsage:
    """A usage event read from a message, with the two byte forms the stream needs."""

    event: UsageEvent
    encoded: bytes
    """`encode_usage_event(event)`: the event's canonical bytes, its stored form."""
    signed: bytes
    """`signing_payload(event)`: what its signature must verify over."""


def read_usage_event(raw: bytes | str) -> ReadUsage:
    """`parse_usage_event(raw)` with its canonical bytes and signing payload.

    A message a metering node wrote (`encode_usage_event`) is already its canonical bytes, and
    its signing payload is those bytes without the signature: `trusted_usage_event` reads it
    that way. Anything else is decoded and validated in full."""
    trusted = _trusted(raw)
    if trusted is not None:
        return trusted
    event = decode(UsageEvent, raw)
    return ReadUsage(event, encode_usage_event(event), signing_payload(event))


def parse_usage_event(raw: bytes | str) -> UsageEvent:
    """Decode one `usage` topic message; raise `MalformedEvent` with the reason on any fault."""
    trusted = _trusted(raw)
    return trusted.event if trusted is not None else decode(UsageEvent, raw)


def encode_usage_event(event: UsageEvent) -> bytes:
    """The canonical JSON bytes of a usage event (the `usage` topic message value)."""
    return encode(event)


def _trusted(raw: bytes | str) -> ReadUsage | None:
    if isinstance(raw, str):
        try:
            raw = raw.encode("utf-8")
        except UnicodeEncodeError:
            return None
    if len(raw) > MAX_EVENT_BYTES:
        return None
    found = trusted_usage_event(raw)
    return None if found is None else ReadUsage(found[0], raw, found[1])


# The canonical bytes of a usage event (`encode_usage_event`) whose text is printable ASCII
# without quotes or backslashes (so written as it is, without escapes): sorted keys, no
# whitespace, optional fields present or absent, never null.
_TEXT = rb"[\x20\x21\x23-\x5b\x5d-\x7e]"
_NO_SPACE = rb"[\x21\x23-\x5b\x5d-\x7e]"
_U256 = rb"0|[1-9][0-9]{0,77}"
_U64 = rb"0|[1-9][0-9]{0,19}"
_NODE_EVENT = re.compile(
    rb'\{"data":\{'
    rb'(?:"billing_metric":"(?P<billing_metric>' + _TEXT + rb'{1,256})",)?'
    rb'(?:"latency_ms":(?P<latency_ms>' + _U64 + rb"),)?"
    rb'"license_id":"(?P<license_id>' + _U256 + rb')",'
    rb'"model_id":"(?P<model_id>' + _U256 + rb')"'
    rb'(?:,"model_version":"(?P<model_version>' + _TEXT + rb'{1,256})")?'
    rb'(?:,"request_id":"(?P<request_id>' + _TEXT + rb'{1,256})")?'
    rb',"units":(?P<units>[1-9][0-9]{0,19})\},'
    rb'"datacontenttype":"application/json",'
    rb'"id":"(?P<id>' + _TEXT + rb'{1,128})"'
    rb'(?:,"keyid":"(?P<keyid>' + _TEXT + rb'{1,256})")?'
    rb'(?P<signed>,"signature":"(?P<signature>0x[0-9a-f]*)")?'
    rb',"source":"(?P<source>' + _NO_SPACE + rb'{1,2048})"'
    rb',"specversion":"1\.0"'
    rb'(?:,"subject":"(?P<subject>' + _TEXT + rb'{1,256})")?'
    rb',"time":"(?P<time>[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?Z)"'
    rb',"type":"ai\.royalty\.usage\.v1"\}'
)
_TEXT_FIELDS = ("billing_metric", "model_version", "request_id", "id", "keyid", "subject")
_GROUPS = (*_TEXT_FIELDS, "latency_ms", "license_id", "model_id", "units", "signature")


def trusted_usage_event(encoded: bytes) -> tuple[UsageEvent, bytes] | None:
    """The usage event whose canonical bytes are `encoded`, and its signing payload, read
    without JSON decoding or pydantic validation, when `encoded` is exactly what a metering
    node writes for a valid event; None for anything else, which full decoding and validation
    then judge (so None never means "invalid").

    Every check is the model's own rule, narrowed: text in printable ASCII without quotes or
    backslashes, numbers and ids as their JSON form spells them, the time as `format_rfc3339`
    writes it, the signature in lower-case hex, keys sorted, no whitespace, no nulls. The tests
    hold it to `decode` and `encode` on generated and hostile documents.
    """
    match = _NODE_EVENT.fullmatch(encoded)
    if match is None:
        return None
    (
        billing_metric, model_version, request_id, event_id, keyid, subject,
        latency, license_id, model_id, units, signature,
    ) = match.group(*_GROUPS)  # fmt: skip
    time = _utc_time(match["time"].decode("ascii"))
    model = int(model_id)
    license = int(license_id)
    count = int(units)
    latency_ms = None if latency is None else int(latency)
    if (
        time is None
        or (signature is not None and len(signature) % 2)  # whole bytes
        or model > UINT256_MAX
        or license > UINT256_MAX
        or count > UINT64_MAX
        or (latency_ms is not None and latency_ms > UINT64_MAX)
    ):
        return None
    data = {
        "model_id": model,
        "license_id": license,
        "units": count,
        "model_version": _text(model_version),
        "request_id": _text(request_id),
        "latency_ms": latency_ms,
        "billing_metric": _text(billing_metric),
    }
    values = {
        "specversion": SPECVERSION,
        "id": event_id.decode("ascii"),
        "source": match["source"].decode("ascii"),
        "type": USAGE_EVENT_TYPE,
        "time": time,
        "datacontenttype": JSON_CONTENT_TYPE,
        "subject": _text(subject),
        "keyid": _text(keyid),
        "signature": _text(signature),
        "data": construct_unvalidated(UsageData, data, _present(data)),
    }
    event = construct_unvalidated(UsageEvent, values, _present(values))
    start, end = match.span("signed")
    return event, encoded if start < 0 else encoded[:start] + encoded[end:]


def _present(values: Mapping[str, object]) -> set[str]:
    # The fields the document held (validation's `model_fields_set`): no null is ever held.
    return {k for k, v in values.items() if v is not None}


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("ascii")


def _utc_time(value: str) -> datetime | None:
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        return None
    if instant.tzinfo is not UTC or instant < UNIX_EPOCH or format_rfc3339(instant) != value:
        return None
    return instant
