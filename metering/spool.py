"""The local spool: an append-only, fsync'd, bounded log of events Kafka has not acked yet.

Layout of the spool directory::

    .lock                     flock'd by the one process that owns the spool
    0000000000000001.seg      segments of records (`metering.spool_codec`), appended in order
    0000000000000002.seg
    cursor.json               {"segment": 2, "offset": 4096}: everything before is in Kafka

The writer appends a batch of records with one write and one fsync, then acknowledges them;
the replayer reads from the cursor, publishes, and moves the cursor only over records Kafka
acked. Segments wholly behind the cursor are deleted. Every crash is safe:

- a torn tail (a batch written but not wholly fsync'd) fails its CRC at the next open and is
  truncated; it was never acknowledged;
- a cursor older than what Kafka holds replays some events again (duplicates are removed
  downstream by id); the cursor is written atomically (temp file, fsync, rename), and an
  unreadable cursor restarts from the oldest segment: more duplicates, never a loss.

Capacity counts the bytes not yet acked: an append that would exceed it raises `SpoolFull`,
and the gateway stops accepting inference before that (`has_room`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import structlog

from metering.errors import SpoolClosed, SpoolCorrupt, SpoolFull, SpoolLocked
from metering.spool_codec import encode_record, scan

log = structlog.get_logger(__name__)

_SEGMENT_SUFFIX = ".seg"
_CURSOR = "cursor.json"
_READ_CHUNK = 1024 * 1024
# A drained spool starts a fresh segment once its active one holds this much acked data.
_DRAINED_ROLL_BYTES = 1024 * 1024


class Position(NamedTuple):
    """A place in the spool: segment number and byte offset in it (ordered)."""

    segment: int
    offset: int


@dataclass(frozen=True)
class SpooledRecord:
    """A record read back from the spool, with the position just past it."""

    key: bytes
    value: bytes
    end: Position


@dataclass(frozen=True)
class RecoveryReport:
    """What opening the spool found: pending records, and torn data it truncated."""

    pending_records: int
    pending_bytes: int
    truncated_bytes: int
    segments: int


def _segment_name(number: int) -> str:
    return f"{number:016d}{_SEGMENT_SUFFIX}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileSpool:
    """The spool in one directory, owned by one process (an exclusive flock)."""

    def __init__(self, directory: Path, *, max_bytes: int, segment_bytes: int) -> None:
        if segment_bytes > max_bytes:
            raise ValueError("segment_bytes must not exceed max_bytes")
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            raise SpoolLocked(f"spool {directory} is in use by another process") from exc
        self._sizes: dict[int, int] = {}
        self._pending_records = 0
        self._closed = False
        self.recovery = self._recover()
        self._active = max(self._sizes)
        self._fd = os.open(self._path(self._active), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    # -- opening -------------------------------------------------------------------------

    def _path(self, segment: int) -> Path:
        return self.directory / _segment_name(segment)

    def _read_cursor(self, segments: list[int]) -> Position:
        path = self.directory / _CURSOR
        first = Position(segments[0], 0) if segments else Position(1, 0)
        if not path.exists():
            return first
        try:
            doc = json.loads(path.read_text())
            cursor = Position(int(doc["segment"]), int(doc["offset"]))
        except (ValueError, KeyError, TypeError, OSError):
            # Replaying from the oldest segment only duplicates events: never lose them.
            log.error("spool cursor unreadable; replaying from the oldest segment", path=str(path))
            return first
        if segments and cursor.segment < segments[0]:
            return first
        return cursor

    def _recover(self) -> RecoveryReport:
        segments = sorted(
            int(p.name[: -len(_SEGMENT_SUFFIX)])
            for p in self.directory.glob(f"*{_SEGMENT_SUFFIX}")
            if p.name[: -len(_SEGMENT_SUFFIX)].isdigit()
        )
        cursor = self._read_cursor(segments)
        truncated = 0
        for number in segments:
            if number < cursor.segment:
                # Wholly acked; a crash came between moving the cursor and deleting it.
                self._path(number).unlink(missing_ok=True)
                continue
            path = self._path(number)
            data = path.read_bytes()
            start = cursor.offset if number == cursor.segment else 0
            if start > len(data):
                log.error("spool cursor beyond its segment; replaying it", segment=number)
                start = 0
                cursor = Position(number, 0)
            result = scan(data, start)
            if result.torn is not None:
                dropped = len(data) - result.good_end
                truncated += dropped
                log.warning(
                    "spool: truncating torn records",
                    segment=number,
                    offset=result.good_end,
                    dropped_bytes=dropped,
                    reason=result.torn,
                )
                with path.open("r+b") as fh:
                    fh.truncate(result.good_end)
                    fh.flush()
                    os.fsync(fh.fileno())
            self._sizes[number] = result.good_end
            self._pending_records += len(result.records)
        if not self._sizes:
            number = max(cursor.segment, 1)
            self._path(number).touch(mode=0o600)
            _fsync_dir(self.directory)
            self._sizes[number] = 0
            cursor = Position(number, 0)
        self._cursor = cursor
        self._pending_bytes = self._count_pending_bytes()
        return RecoveryReport(
            self._pending_records, self._pending_bytes, truncated, len(self._sizes)
        )

    # -- state ---------------------------------------------------------------------------

    def _count_pending_bytes(self) -> int:
        # Called with the lock held (or before any other thread exists).
        total = 0
        for number, size in self._sizes.items():
            if number == self._cursor.segment:
                total += size - self._cursor.offset
            elif number > self._cursor.segment:
                total += size
        return total

    @property
    def pending_bytes(self) -> int:
        """Bytes written but not yet acked by Kafka (what capacity counts).

        A plain int updated under the lock: the gateway reads it for every request and must
        not wait for a writer that holds the lock through an fsync.
        """
        return self._pending_bytes

    @property
    def pending_records(self) -> int:
        """Records written but not yet acked by Kafka."""
        return self._pending_records

    @property
    def cursor(self) -> Position:
        """The position up to which Kafka acked everything."""
        return self._cursor

    @property
    def end(self) -> Position:
        """The position just past the last durable record."""
        return Position(self._active, self._sizes[self._active])

    def usage_ratio(self) -> float:
        """Pending bytes over capacity, 0.0 to 1.0."""
        return self.pending_bytes / self.max_bytes

    def has_room(self, reserve: int) -> bool:
        """Whether `reserve` more bytes would still fit (the gateway's admission check)."""
        return self.pending_bytes + reserve <= self.max_bytes

    # -- writing -------------------------------------------------------------------------

    def append(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Append (key, value) records with one write and one fsync, all or none.

        Raises `SpoolFull` (writing nothing) when they do not fit in the capacity.
        """
        blob = b"".join(encode_record(key, value) for key, value in records)
        with self._lock:
            if self._closed:
                raise SpoolClosed(f"spool {self.directory} is closed")
            if self._pending_bytes + len(blob) > self.max_bytes:
                raise SpoolFull(
                    f"spool full: {self._pending_bytes} of {self.max_bytes} bytes pending"
                )
            written = os.write(self._fd, blob)
            if written != len(blob):  # a short write on a regular file: disk full
                os.ftruncate(self._fd, self._sizes[self._active])
                raise SpoolFull(f"short write to the spool ({written} of {len(blob)} bytes)")
            os.fsync(self._fd)
            self._sizes[self._active] += len(blob)
            self._pending_records += len(records)
            self._pending_bytes += len(blob)
            if self._sizes[self._active] >= self.segment_bytes:
                self._roll()

    def _roll(self) -> None:
        # Called with the lock held: start a new empty active segment.
        os.close(self._fd)
        self._active += 1
        self._fd = os.open(self._path(self._active), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        _fsync_dir(self.directory)
        self._sizes[self._active] = 0

    # -- reading and acking (the replayer's thread) -------------------------------------

    def read(self, start: Position, limit: int) -> list[SpooledRecord]:
        """Up to `limit` durable records from `start` (a record boundary), in order."""
        with self._lock:
            sizes = dict(self._sizes)
        out: list[SpooledRecord] = []
        position = start
        while len(out) < limit:
            size = sizes.get(position.segment)
            if size is None:
                later = [n for n in sizes if n > position.segment]
                if not later:
                    break
                position = Position(min(later), 0)
                continue
            if position.offset >= size:
                later = [n for n in sizes if n > position.segment]
                if not later:
                    break
                position = Position(min(later), 0)
                continue
            with self._path(position.segment).open("rb") as fh:
                fh.seek(position.offset)
                chunk = fh.read(min(size - position.offset, _READ_CHUNK))
            result = scan(chunk, 0, limit - len(out))
            if not result.records:
                # A record larger than the chunk: read it whole.
                with self._path(position.segment).open("rb") as fh:
                    fh.seek(position.offset)
                    chunk = fh.read(size - position.offset)
                result = scan(chunk, 0, limit - len(out))
                if not result.records:
                    raise SpoolCorrupt(f"unreadable spool record at {position}")
            for record in result.records:
                out.append(
                    SpooledRecord(
                        record.key,
                        record.value,
                        Position(position.segment, position.offset + record.end),
                    )
                )
            position = out[-1].end
        return out

    def ack(self, position: Position, records: int) -> None:
        """Kafka acked everything before `position` (`records` more records than before):
        persist the cursor, delete wholly acked segments, and start afresh when drained."""
        with self._lock:
            if self._closed:
                # A replay that outlived shutdown: leave the cursor, the next start replays
                # (duplicates, never a loss).
                return
            if position < self._cursor:
                raise ValueError(f"cursor cannot move back from {self._cursor} to {position}")
            # Normalise "end of a finished segment" to "start of the next one".
            while position.segment < self._active and position.offset >= self._sizes.get(
                position.segment, 0
            ):
                position = Position(min(n for n in self._sizes if n > position.segment), 0)
            drained = position == self.end
            if drained and self._sizes[self._active] >= min(
                _DRAINED_ROLL_BYTES, self.segment_bytes
            ):
                # Everything is in Kafka: roll so the old segment can go. Not for a small one:
                # in write-ahead mode the spool drains after every replay, and creating,
                # syncing and deleting a segment each time would cost more than the replay.
                self._roll()
                position = Position(self._active, 0)
            self._write_cursor(position)
            self._cursor = position
            self._pending_records = max(0, self._pending_records - records)
            for number in [n for n in self._sizes if n < position.segment]:
                del self._sizes[number]
                self._path(number).unlink(missing_ok=True)
            self._pending_bytes = self._count_pending_bytes()

    def _write_cursor(self, position: Position) -> None:
        tmp = self.directory / (_CURSOR + ".tmp")
        with tmp.open("w") as fh:
            json.dump({"segment": position.segment, "offset": position.offset}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self.directory / _CURSOR)

    def close(self) -> None:
        """Close the files and release the directory lock."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(OSError):
                os.close(self._fd)
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)


@dataclass(frozen=True)
class SpoolDepth:
    """What a spool holds that Kafka has not acked, read without taking the spool's lock."""

    pending_records: int
    pending_bytes: int
    segments: int


def inspect_spool(directory: Path) -> SpoolDepth:
    """The depth of the spool in `directory`, read-only (safe while a gateway owns it).

    Nothing is truncated or deleted: a torn tail is simply not counted. A missing directory
    is an empty spool.
    """
    if not directory.is_dir():
        return SpoolDepth(0, 0, 0)
    segments = sorted(
        int(p.name[: -len(_SEGMENT_SUFFIX)])
        for p in directory.glob(f"*{_SEGMENT_SUFFIX}")
        if p.name[: -len(_SEGMENT_SUFFIX)].isdigit()
    )
    cursor = Position(segments[0], 0) if segments else Position(1, 0)
    with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
        doc = json.loads((directory / _CURSOR).read_text())
        cursor = max(cursor, Position(int(doc["segment"]), int(doc["offset"])))
    records = size = 0
    for number in (n for n in segments if n >= cursor.segment):
        try:
            data = (directory / _segment_name(number)).read_bytes()
        except FileNotFoundError:  # acked and deleted while we looked
            continue
        start = cursor.offset if number == cursor.segment else 0
        result = scan(data, min(start, len(data)))
        records += len(result.records)
        size += max(0, result.good_end - start)
    return SpoolDepth(records, size, len(segments))
