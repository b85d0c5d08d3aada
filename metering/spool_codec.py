"""The spool's record format: length-prefixed, CRC32-checked records of (Kafka key, value).

One record on disk::

    u32 big-endian  payload length
    u32 big-endian  CRC32 of the payload
    payload         u16 big-endian key length, key bytes, value bytes

Records are appended and fsync'd in batches, so after a crash only the tail of the last segment
can be torn (a partial header, a partial payload, or a payload whose bytes never all reached
the disk). `scan` stops at the first record that is incomplete or fails its CRC and reports
where the good data ends; the spool truncates there. A torn record was never fsync'd whole, so
it was never acknowledged to a client: dropping it loses nothing we promised to keep.

Pure: bytes in, records out.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

_HEADER = struct.Struct(">II")
_KEY_LENGTH = struct.Struct(">H")
HEADER_BYTES = _HEADER.size

MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""Larger lengths can only come from garbage: a usage event is a few hundred bytes."""


def encode_record(key: bytes, value: bytes) -> bytes:
    """The on-disk bytes of one record."""
    if len(key) > 0xFFFF:
        raise ValueError("a spool record key is at most 65535 bytes")
    payload = _KEY_LENGTH.pack(len(key)) + key + value
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"a spool record is at most {MAX_PAYLOAD_BYTES} bytes")
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True)
class Record:
    """One decoded record and the offset just past it in its segment."""

    key: bytes
    value: bytes
    end: int


@dataclass(frozen=True)
class ScanResult:
    """Records found from some offset, where the good data ends, and why it ends there."""

    records: list[Record]
    good_end: int
    torn: str | None = None
    """None when the data ended exactly at a record boundary; else what was wrong after
    `good_end` (`truncated header`, `truncated payload`, `bad length`, `bad crc`)."""


def scan(data: bytes, start: int = 0, limit: int | None = None) -> ScanResult:
    """Decode records from `data[start:]`, at most `limit` of them.

    Stops at the end of the data, at `limit`, or at the first bad record (`torn` says why).
    """
    records: list[Record] = []
    offset = start
    size = len(data)
    while offset < size and (limit is None or len(records) < limit):
        if size - offset < HEADER_BYTES:
            return ScanResult(records, offset, "truncated header")
        length, crc = _HEADER.unpack_from(data, offset)
        if length < _KEY_LENGTH.size or length > MAX_PAYLOAD_BYTES:
            return ScanResult(records, offset, "bad length")
        body_start = offset + HEADER_BYTES
        body_end = body_start + length
        if body_end > size:
            return ScanResult(records, offset, "truncated payload")
        payload = data[body_start:body_end]
        if zlib.crc32(payload) != crc:
            return ScanResult(records, offset, "bad crc")
        (key_length,) = _KEY_LENGTH.unpack_from(payload, 0)
        if _KEY_LENGTH.size + key_length > length:
            return ScanResult(records, offset, "bad length")
        key_end = _KEY_LENGTH.size + key_length
        records.append(Record(payload[_KEY_LENGTH.size : key_end], payload[key_end:], body_end))
        offset = body_end
    return ScanResult(records, offset)
