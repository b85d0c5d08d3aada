"""Building usage events: ids, attributes, signature, wire bytes.

One successful inference becomes one `UsageEvent` (see `schemas.usage`), signed by the metering
node. Its id is `<node_id>:<boot>:<sequence>`: `boot` is fixed when the process starts (48-bit
milliseconds since the epoch plus 16 random bits, in hex) and `sequence` counts the events of
that process. Ids are therefore unique per inference without any coordination or persisted
counter, and a replay of a spooled event keeps its id because the spool holds the encoded,
signed event itself, never the facts to rebuild it from.

Pure apart from reading the clock and the random generator once at start.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime

from metering.billing import ModelBilling
from metering.signing import Signer
from schemas.usage import UsageData, UsageEvent, encode_usage_event, kafka_key

_SHORT_TEXT = re.compile(r"[^\x00-\x1f\x7f]{1,256}")


def boot_id() -> str:
    """A per-process id: milliseconds since the epoch (48 bits) and 16 random bits, in hex."""
    millis = time.time_ns() // 1_000_000 & (2**48 - 1)
    return f"{millis:012x}{secrets.randbits(16):04x}"


class EventIds:
    """Unique event ids for one process: `<node_id>:<boot>:<sequence>` (thread-safe)."""

    def __init__(self, node_id: str, boot: str | None = None) -> None:
        self.prefix = f"{node_id}:{boot or boot_id()}:"
        # next() on itertools.count is atomic under the GIL: no lock on the hot path.
        self._sequence = itertools.count(1)

    def next_id(self) -> str:
        """A new id, never returned before by this process."""
        return f"{self.prefix}{next(self._sequence)}"


@dataclass(frozen=True)
class Usage:
    """The facts of one successful inference, as the gateway or an in-model meter saw them."""

    billing: ModelBilling
    license_id: int
    units: int
    completed_at: datetime
    model_version: str | None = None
    request_id: str | None = None
    latency_ms: int | None = None


@dataclass(frozen=True)
class EncodedEvent:
    """A signed usage event ready for Kafka: its id, key and value bytes."""

    id: str
    key: bytes
    value: bytes


def short_text(value: str | None) -> str | None:
    """`value` if it is a valid CloudEvents short label (1-256 chars, no control characters),
    else None: client-supplied labels must never make an event invalid."""
    if value is None or not _SHORT_TEXT.fullmatch(value):
        return None
    return value


class UsageEventFactory:
    """Builds the signed usage event of one inference (thread-safe)."""

    def __init__(self, node_id: str, signer: Signer, ids: EventIds | None = None) -> None:
        self.node_id = node_id
        self.source = f"//metering/{node_id}"
        self.signer = signer
        self.ids = ids or EventIds(node_id)

    def build(self, usage: Usage) -> UsageEvent:
        """The signed `UsageEvent` of `usage` (units must be positive)."""
        event = UsageEvent.create(
            id=self.ids.next_id(),
            source=self.source,
            time=usage.completed_at,
            subject=short_text(usage.billing.name),
            keyid=self.signer.keyid,
            data=UsageData(
                model_id=usage.billing.model_id,
                license_id=usage.license_id,
                units=usage.units,
                model_version=short_text(usage.model_version),
                request_id=short_text(usage.request_id),
                latency_ms=usage.latency_ms,
                billing_metric=usage.billing.metric,
            ),
        )
        return self.signer.sign(event)

    def encode(self, usage: Usage) -> EncodedEvent:
        """The signed event of `usage` as Kafka key and value bytes."""
        event = self.build(usage)
        return EncodedEvent(event.id, kafka_key(event), encode_usage_event(event))
