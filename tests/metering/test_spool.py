"""The spool: record codec properties, torn tails, capacity, rotation, crash recovery."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from metering.errors import SpoolFull, SpoolLocked
from metering.spool import FileSpool, Position
from metering.spool_codec import HEADER_BYTES, encode_record, scan

records_st = st.lists(
    st.tuples(st.binary(max_size=40), st.binary(max_size=300)), min_size=0, max_size=30
)


@given(records_st)
def test_codec_round_trip(records: list[tuple[bytes, bytes]]) -> None:
    data = b"".join(encode_record(k, v) for k, v in records)
    result = scan(data)
    assert result.torn is None
    assert result.good_end == len(data)
    assert [(r.key, r.value) for r in result.records] == records


@given(records_st.filter(bool), st.data())
def test_a_torn_tail_keeps_every_whole_record(
    records: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    """Cut the log anywhere: every record wholly before the cut survives, none after it."""
    encoded = [encode_record(k, v) for k, v in records]
    blob = b"".join(encoded)
    cut = data.draw(st.integers(0, len(blob)))
    result = scan(blob[:cut])
    ends = [sum(len(e) for e in encoded[: i + 1]) for i in range(len(encoded))]
    whole = [i for i, end in enumerate(ends) if end <= cut]
    assert [(r.key, r.value) for r in result.records] == [records[i] for i in whole]
    assert result.good_end == (ends[whole[-1]] if whole else 0)
    assert (result.torn is None) == (result.good_end == cut)


@given(records_st.filter(bool), st.data())
def test_a_flipped_byte_is_caught(records: list[tuple[bytes, bytes]], data: st.DataObject) -> None:
    """Corruption anywhere stops the scan at the damaged record; those before it survive."""
    encoded = [encode_record(k, v) for k, v in records]
    blob = bytearray(b"".join(encoded))
    index = data.draw(st.integers(0, len(blob) - 1))
    blob[index] ^= 0xFF
    damaged = next(i for i in range(len(encoded)) if sum(map(len, encoded[: i + 1])) > index)
    result = scan(bytes(blob))
    assert result.torn is not None
    assert [(r.key, r.value) for r in result.records] == records[:damaged]


def _spool(path: Path, max_bytes: int = 1 << 20, segment: int = 1 << 16) -> FileSpool:
    return FileSpool(path, max_bytes=max_bytes, segment_bytes=segment)


def _drain(spool: FileSpool) -> list[bytes]:
    out = []
    while True:
        batch = spool.read(spool.cursor, 7)
        if not batch:
            return out
        out += [r.value for r in batch]
        spool.ack(batch[-1].end, len(batch))


def test_append_read_ack_in_order_across_segments(tmp_path: Path) -> None:
    spool = _spool(tmp_path, segment=2048)
    values = [f"event-{i}".encode() * 20 for i in range(100)]
    for i in range(0, 100, 10):
        spool.append([(b"1", v) for v in values[i : i + 10]])
    assert spool.pending_records == 100
    assert len(list(tmp_path.glob("*.seg"))) > 3  # rotated
    assert _drain(spool) == values
    assert spool.pending_records == 0
    assert spool.pending_bytes == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1  # acked segments deleted
    spool.close()


def test_reopen_resumes_after_the_acked_cursor(tmp_path: Path) -> None:
    spool = _spool(tmp_path, segment=4096)
    spool.append([(b"k", f"v{i}".encode()) for i in range(50)])
    batch = spool.read(spool.cursor, 20)
    spool.ack(batch[-1].end, 20)
    spool.close()
    reopened = _spool(tmp_path, segment=4096)
    assert reopened.recovery.pending_records == 30
    assert _drain(reopened) == [f"v{i}".encode() for i in range(20, 50)]
    reopened.close()


def test_torn_tail_is_truncated_and_earlier_records_kept(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.append([(b"k", f"v{i}".encode()) for i in range(10)])
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    whole = segment.stat().st_size
    with segment.open("ab") as fh:  # a crash in the middle of the next batch's write
        fh.write(encode_record(b"k", b"never acknowledged")[: HEADER_BYTES + 3])
    reopened = _spool(tmp_path)
    assert reopened.recovery.truncated_bytes == HEADER_BYTES + 3
    assert segment.stat().st_size == whole
    reopened.append([(b"k", b"after")])
    assert _drain(reopened) == [f"v{i}".encode() for i in range(10)] + [b"after"]
    reopened.close()


def test_corrupt_last_record_is_dropped(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.append([(b"k", b"first"), (b"k", b"second")])
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[-1] ^= 0x01  # the last payload byte never reached the disk intact
    segment.write_bytes(bytes(data))
    reopened = _spool(tmp_path)
    assert reopened.recovery.pending_records == 1
    assert _drain(reopened) == [b"first"]
    reopened.close()


def test_unreadable_cursor_replays_everything(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.append([(b"k", b"a"), (b"k", b"b")])
    spool.ack(spool.read(spool.cursor, 1)[0].end, 1)
    spool.close()
    (tmp_path / "cursor.json").write_text("{garbage")
    reopened = _spool(tmp_path)
    assert _drain(reopened) == [b"a", b"b"]  # a duplicate, never a loss
    reopened.close()


def test_capacity_is_enforced_all_or_nothing(tmp_path: Path) -> None:
    spool = _spool(tmp_path, max_bytes=1000, segment=1000)
    spool.append([(b"k", b"x" * 400)])
    assert spool.has_room(400)
    assert not spool.has_room(700)
    with pytest.raises(SpoolFull):
        spool.append([(b"k", b"y" * 300), (b"k", b"z" * 300)])
    assert spool.pending_records == 1
    assert spool.usage_ratio() == pytest.approx((400 + HEADER_BYTES + 2 + 1) / 1000)
    _drain(spool)
    spool.append([(b"k", b"y" * 300), (b"k", b"z" * 300)])  # room again once acked
    spool.close()


def test_one_owner_at_a_time(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    with pytest.raises(SpoolLocked):
        _spool(tmp_path)
    spool.close()
    _spool(tmp_path).close()


def test_ack_cannot_move_back(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.append([(b"k", b"a"), (b"k", b"b")])
    records = spool.read(spool.cursor, 2)
    spool.ack(records[1].end, 2)
    with pytest.raises(ValueError, match="back"):
        spool.ack(Position(records[0].end.segment, 0), 0)
    spool.close()


def test_cursor_file_is_written_atomically(tmp_path: Path) -> None:
    spool = _spool(tmp_path)
    spool.append([(b"k", b"a")])
    (record,) = spool.read(spool.cursor, 1)
    spool.ack(record.end, 1)
    doc = json.loads((tmp_path / "cursor.json").read_text())
    assert Position(doc["segment"], doc["offset"]) == spool.cursor
    assert not (tmp_path / "cursor.json.tmp").exists()
    assert oct(os.stat(next(tmp_path.glob("*.seg"))).st_mode & 0o777) == "0o600"
    spool.close()


def test_a_drained_spool_keeps_a_small_segment_and_rolls_a_large_one(tmp_path: Path) -> None:
    spool = _spool(tmp_path, max_bytes=8 << 20, segment=4 << 20)
    spool.append([(b"k", b"a")])
    (record,) = spool.read(spool.cursor, 1)
    spool.ack(record.end, 1)
    # Drained, but a new segment per replay would cost more than the replay itself.
    (small,) = tmp_path.glob("*.seg")
    assert spool.cursor == record.end
    assert spool.pending_bytes == 0
    spool.append([(b"k", b"x" * 2000)] * 600)  # past 1 MiB in the active segment
    records = spool.read(spool.cursor, 600)
    spool.ack(records[-1].end, 600)
    (fresh,) = tmp_path.glob("*.seg")
    assert fresh != small
    assert fresh.stat().st_size == 0
    assert spool.pending_records == 0
    assert spool.pending_bytes == 0
    spool.close()
    reopened = _spool(tmp_path, max_bytes=8 << 20, segment=4 << 20)
    assert reopened.pending_records == 0
    assert reopened.read(reopened.cursor, 10) == []
    reopened.close()
