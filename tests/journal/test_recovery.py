"""Recovery on open: torn tails are truncated, damage in the middle is refused (F9, F10).

Method: write records, drop the writer as a crash would (or close it cleanly),
edit the last segment, reopen, and check what the writer keeps.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from journal import JournalCorrupt, Reader, RecordType, Writer, verify
from journal._format import list_segments

from .conftest import SMALL_SEGMENT
from .disk import abandon, flip, locate, patch, record_offsets

INGRESS = RecordType.INGRESS


def _crashed_stream(stream: Path, count: int) -> Path:
    """A stream of `count` records (GENESIS included) whose writer died without syncing."""
    writer = Writer(stream, "node-a", 0, "none", segment_bytes=SMALL_SEGMENT, prefault=False)
    for i in range(count - 1):
        writer.append(INGRESS, b"body-%06d" % i + b"." * 150, i)
    abandon(writer)
    return list_segments(stream)[-1][1]


def _reopen(stream: Path, **options: object) -> Writer:
    return Writer(stream, "node-a", 0, "none", segment_bytes=SMALL_SEGMENT, **options)  # type: ignore[arg-type]


def _assert_zero_after_records(segment: Path) -> None:
    """F8: every byte after the last record is zero."""
    records = record_offsets(segment)
    end = records[-1][1] + records[-1][2]
    assert not any(segment.read_bytes()[end:])


@pytest.mark.parametrize("damage", ["half-written body", "garbage after the end", "header only"])
def test_torn_tail_is_truncated_and_the_sequence_continues(stream_dir: Path, damage: str) -> None:
    """F9: a torn last record (or garbage past the end) is zeroed; appends continue the chain."""
    segment = _crashed_stream(stream_dir, 120)
    seq_last, offset, size = record_offsets(segment)[-1]
    if damage == "half-written body":
        patch(segment, offset + size // 2, bytes(size - size // 2))
        kept = seq_last - 1
    elif damage == "garbage after the end":
        patch(segment, offset + size, os.urandom(100))
        kept = seq_last
    else:
        header = segment.read_bytes()[offset:offset + 64]
        patch(segment, offset + size, header[:4] + b"\xff" * 8 + header[12:])
        kept = seq_last
    assert verify(stream_dir).ok and verify(stream_dir).torn_tail_bytes > 0
    with _reopen(stream_dir) as writer:
        assert writer.recovered_tail_bytes > 0
        assert writer.next_seq == kept + 1
        seq, _ = writer.append(INGRESS, b"after recovery", 0)
    assert seq == kept + 1
    _assert_zero_after_records(list_segments(stream_dir)[-1][1])
    result = verify(stream_dir)
    assert result.ok and result.last_seq == seq and result.torn_tail_bytes == 0


def test_garbled_record_in_the_middle_is_refused_with_its_seq(stream_dir: Path) -> None:
    """F10: a bad record followed by valid ones is corruption; the writer will not open."""
    segment = _crashed_stream(stream_dir, 150)
    records = record_offsets(segment)
    bad_seq, offset, _ = records[len(records) // 2]
    flip(segment, offset + 70)
    with pytest.raises(JournalCorrupt) as refused:
        _reopen(stream_dir)
    assert refused.value.seq == bad_seq
    assert "CRC32C" in refused.value.reason
    assert not verify(stream_dir).ok and verify(stream_dir).first_bad_seq == bad_seq
    with pytest.raises(JournalCorrupt) as reading:
        list(Reader(stream_dir).records())
    assert reading.value.seq == bad_seq
    # After a power loss the operator may choose to drop the unsynced damage (F10 note).
    with _reopen(stream_dir, recover_unsynced=True) as writer:
        assert writer.next_seq == bad_seq


def test_damage_below_the_durable_mark_is_refused_even_at_the_end(stream_dir: Path) -> None:
    """F10: after a clean close everything is durable: a bad last record is not 'torn'."""
    with Writer(stream_dir, "node-a", 0, "batch", segment_bytes=SMALL_SEGMENT) as writer:
        for i in range(50):
            writer.append(INGRESS, b"d" * 100, i)
    segment, offset, _ = locate(stream_dir, 51)
    flip(segment, offset + 66)
    with pytest.raises(JournalCorrupt) as refused:
        _reopen(stream_dir)
    assert refused.value.seq == 51 and "durable mark" in refused.value.reason


def test_crash_before_genesis_completes_restarts_the_stream_cleanly(stream_dir: Path) -> None:
    segment = _crashed_stream(stream_dir, 1)
    _, offset, size = record_offsets(segment)[0]
    patch(segment, offset + 8, os.urandom(size - 8))  # torn GENESIS
    with _reopen(stream_dir) as writer:
        assert writer.next_seq == 2  # GENESIS rewritten as seq 1
    records = list(Reader(stream_dir).records())
    assert [r.type for r in records] == [RecordType.GENESIS] and verify(stream_dir).ok
