"""UTC instants: RFC 3339 strings in JSON, timezone-aware UTC `datetime` in Python.

The engine reckons time in unix seconds; `datetime` appears only where a published format
(CloudEvents `time`) or an operator-facing record wants a readable instant. Naive times and
non-UTC offsets are rejected instead of converted: the metering node is ours and writes `Z`, so
anything else means a misconfigured clock or a forged event, and a silent conversion would hide
either.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator, PlainSerializer

UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_rfc3339(value: datetime) -> str:
    """`2024-05-01T12:00:00Z`, with microseconds only when there are any."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def unix_seconds(value: datetime) -> int:
    """Unix seconds of an aware instant, rounded down (floor), as the design defines it."""
    # timegm drops the sub-second part of the time tuple, which floors for every instant
    # at or after the epoch (the only ones `UtcDatetime` admits).
    return calendar.timegm(value.astimezone(UTC).utctimetuple())


def from_unix_seconds(seconds: int) -> datetime:
    """The UTC instant of unix `seconds`."""
    return UNIX_EPOCH + timedelta(seconds=seconds)


def _reject_numbers(value: Any) -> Any:
    # pydantic would read a number as unix seconds; the wire format says RFC 3339 string.
    if isinstance(value, int | float):
        raise ValueError("time must be an RFC 3339 string such as 2024-05-01T12:00:00Z")
    return value


def _require_utc(value: datetime) -> datetime:
    if value.utcoffset() != timedelta(0):
        raise ValueError("time must be in UTC (offset Z or +00:00)")
    value = value.replace(tzinfo=UTC)
    if value < UNIX_EPOCH:
        raise ValueError("time must not be before 1970-01-01T00:00:00Z")
    return value


UtcDatetime = Annotated[
    AwareDatetime,
    BeforeValidator(_reject_numbers),
    AfterValidator(_require_utc),
    PlainSerializer(format_rfc3339, return_type=str, when_used="json"),
]
"""An instant in UTC at or after the unix epoch: RFC 3339 in JSON, aware `datetime` in Python."""
