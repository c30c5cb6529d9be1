"""The reader's batch path takes exactly the records the per-record check takes (F7, F9, F10, F12).

The Reader takes the valid records at its position with one jn_read_batch call
(copy each record out of the mapping, validate the copy) and falls back to
jn_record_check wherever that call stops. The two C functions state the F7
rules separately, so they must agree record for record.

Method:
1. Property (hypothesis): damage one byte of a closed segment anywhere after
   its header, with or without a CRC made to match it again; walking it with jn_read_batch (any count_max) and with
   jn_record_check record by record gives the same records, the same stop
   offset and the same reason, and the bytes handed out are the segment's.
2. Limits: count_max and the copy buffer bound one call, which then says
   JN_OK (stopped by a limit, not by a record), and the next call continues.
3. Through the public Reader: records() and follow_batches() over more than
   one step and several segments equal a record-at-a-time reference; a CRC
   error, a seq gap (deleted record) and a chain break (byte changed, CRC
   recomputed) in a sealed segment raise JournalCorrupt naming that seq; a
   torn tail being written ends the scan without an error.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journal import JournalCorrupt, Reader, Record, RecordType, Writer
from journal._format import list_segments, record_size
from journal._journal import ffi, lib

from .conftest import SMALL_SEGMENT
from .disk import fix_crc, flip, locate, patch

HEADER_SIZE = 256
COPY_BYTES = record_size(lib.JN_BODY_MAX)  # the smallest copy buffer jn_read_batch accepts
TOTAL = 2600  # > 2 Reader steps of 1024, over many 64 KiB segments


def _body(i: int) -> bytes:
    return b"rec-%05d" % i + bytes([i % 251]) * (i % 380)


@functools.lru_cache(maxsize=1)
def _closed_segment() -> tuple[bytes, int, bytes]:
    """(segment bytes, first_seq, prev_hash) of a sealed segment in the middle of a stream."""
    with tempfile.TemporaryDirectory() as tmp:
        stream = Path(tmp) / "node-a" / "0"
        with Writer(stream, "node-a", 0, "none", segment_bytes=SMALL_SEGMENT) as writer:
            for i in range(400):
                writer.append(RecordType.INGRESS if i % 2 else RecordType.OUTCOME, _body(i), i)
        first_seq, path = list_segments(stream)[1]
        data = path.read_bytes()
    prev_hash = data[128:160]
    return data, first_seq, prev_hash


def _views(views: object, count: int) -> list[tuple[int, ...]]:
    found = []
    for i in range(count):
        v = views[i]  # type: ignore[index]
        found.append((v.pos, v.record_size, v.seq, v.attestation_id, v.body_len, v.type))
    return found


def _reference(data: bytes, first_seq: int, prev_hash: bytes) -> tuple[list[tuple[int, ...]], int, int]:
    """Record by record with jn_record_check: (views, stop offset, stop code)."""
    base = ffi.from_buffer("uint8_t[]", data)
    view = ffi.new("jn_record_view *")
    pos, seq, prev, found = HEADER_SIZE, first_seq, prev_hash, []
    for _ in range(len(data) // 64):
        code = lib.jn_record_check(base, len(data), pos, seq, prev, view)
        if code != lib.JN_OK:
            return found, pos, code
        found.append(_views(view, 1)[0])
        prev = data[pos + 4:pos + 36]
        pos, seq = pos + view.record_size, seq + 1
    raise AssertionError("jn_record_check never stopped")


def _batched(data: bytes, first_seq: int, prev_hash: bytes,
             count_max: int) -> tuple[list[tuple[int, ...]], int, int, bytes]:
    """The same walk with jn_read_batch: (views, stop offset, stop code, bytes copied)."""
    base = ffi.from_buffer("uint8_t[]", data)
    words = ffi.new("uint64_t[]", COPY_BYTES // 8)
    copy = ffi.cast("char *", words)
    views = ffi.new("jn_record_view[]", count_max)
    out = ffi.new("jn_batch_result *")
    pos, seq, prev, found, copied = HEADER_SIZE, first_seq, prev_hash, [], b""
    for _ in range(len(data) // 64):
        assert lib.jn_read_batch(base, len(data), pos, seq, prev, count_max, copy, COPY_BYTES,
                                 views, out) == lib.JN_OK
        assert out.count <= count_max and out.end == pos + out.copied
        found += _views(views, out.count)
        copied += ffi.buffer(copy, out.copied)[:]
        if out.count:
            assert ffi.buffer(out.last_hash, 32)[:] == data[found[-1][0] + 4:found[-1][0] + 36]
        else:
            assert ffi.buffer(out.last_hash, 32)[:] == prev
        prev = ffi.buffer(out.last_hash, 32)[:]
        pos, seq = out.end, out.next_seq
        if out.stop != lib.JN_OK:
            return found, pos, out.stop, copied
        assert out.count == count_max  # a limit stopped it, not a record
    raise AssertionError("jn_read_batch never stopped")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.integers(1, 200))
def test_batch_read_agrees_with_the_record_check_after_any_damage(data: st.DataObject,
                                                                  count_max: int) -> None:
    original, first_seq, prev_hash = _closed_segment()
    damaged = bytearray(original)
    used_end = _reference(original, first_seq, prev_hash)[1]
    # Mostly inside the records (any field, any byte), sometimes in the zeros after them.
    offset = data.draw(st.one_of(st.integers(HEADER_SIZE, used_end + 64),
                                 st.integers(HEADER_SIZE, len(original) - 1)))
    damaged[offset] = data.draw(st.integers(0, 255).filter(lambda v: v != original[offset]))
    if data.draw(st.booleans()):
        _recompute_crc(damaged, original, first_seq, prev_hash, offset)  # reach the rules after F7b
    damaged_bytes = bytes(damaged)
    expected, stop_at, code = _reference(damaged_bytes, first_seq, prev_hash)
    found, pos, stop, copied = _batched(damaged_bytes, first_seq, prev_hash, count_max)
    assert found == expected
    assert (pos, stop) == (stop_at, code)
    assert copied == damaged_bytes[HEADER_SIZE:stop_at]


def _recompute_crc(damaged: bytearray, original: bytes, first_seq: int, prev_hash: bytes,
                   offset: int) -> None:
    """Give the record holding `offset` a matching CRC, as a tamperer who knows the format would."""
    for pos, size, *_ in _reference(original, first_seq, prev_hash)[0]:
        if pos + 4 <= offset < pos + size:
            crc = lib.jn_crc32c(bytes(damaged[pos + 4:pos + size]), size - 4)
            damaged[pos:pos + 4] = crc.to_bytes(4, "little")
            return


def test_batch_read_of_an_undamaged_segment_ends_at_its_zeros() -> None:
    data, first_seq, prev_hash = _closed_segment()
    expected, stop_at, code = _reference(data, first_seq, prev_hash)
    assert code == lib.JN_R_END and len(expected) > 100
    for count_max in (1, 7, 1024):
        found, pos, stop, _ = _batched(data, first_seq, prev_hash, count_max)
        assert (found, pos, stop) == (expected, stop_at, lib.JN_R_END)


def test_the_copy_buffer_bounds_a_call_and_the_next_call_continues(tmp_path: Path) -> None:
    stream = tmp_path / "node-a" / "0"
    big = lib.JN_BODY_MAX * 3 // 5  # two of them do not fit in COPY_BYTES
    with Writer(stream, "node-a", 0, "none", segment_bytes=8 << 20) as writer:
        for i in range(3):
            writer.append(RecordType.INGRESS, bytes([i + 1]) * big, i)
    data = list_segments(stream)[0][1].read_bytes()
    base = ffi.from_buffer("uint8_t[]", data)
    words = ffi.new("uint64_t[]", COPY_BYTES // 8)
    views = ffi.new("jn_record_view[]", 16)
    out = ffi.new("jn_batch_result *")
    # GENESIS (small) and the first big record fit; then one big record per call.
    pos, seq, prev, calls = HEADER_SIZE, 1, bytes(32), []
    for _ in range(4):
        lib.jn_read_batch(base, len(data), pos, seq, prev, 16, ffi.cast("char *", words), COPY_BYTES,
                          views, out)
        calls.append((out.count, out.stop))
        pos, seq, prev = out.end, out.next_seq, ffi.buffer(out.last_hash, 32)[:]
        if out.stop != lib.JN_OK:
            break
    assert calls == [(2, lib.JN_OK), (1, lib.JN_OK), (1, lib.JN_R_END)]
    assert seq == 5
    assert [r.body[:1] for r in Reader(stream).records(from_seq=2)] == [b"\x01", b"\x02", b"\x03"]


# -- through the public Reader --------------------------------------------------


@pytest.fixture
def long_stream(stream_dir: Path) -> Path:
    with Writer(stream_dir, "node-a", 0, "batch", segment_bytes=SMALL_SEGMENT) as writer:
        for i in range(TOTAL - 1):
            writer.append(RecordType.INGRESS, _body(i), 7000 + i)
    assert len(list_segments(stream_dir)) >= 5
    return stream_dir


def _record_at_a_time(stream: Path) -> list[Record]:
    """Reference: every record rebuilt from the files, checked with hashlib."""
    records, prev = [], bytes(32)
    for _, path in list_segments(stream):
        data = path.read_bytes()
        pos = HEADER_SIZE
        while pos + 64 <= len(data) and any(data[pos:pos + 64]):
            body_len = int.from_bytes(data[pos + 36:pos + 40], "little")
            seq = int.from_bytes(data[pos + 40:pos + 48], "little")
            attestation_id = int.from_bytes(data[pos + 48:pos + 56], "little")
            kind = RecordType(int.from_bytes(data[pos + 56:pos + 58], "little"))
            canonical = data[pos + 36:pos + 64 + body_len]
            chain = data[pos + 4:pos + 36]
            assert hashlib.sha256(prev + canonical).digest() == chain
            records.append(Record(seq, kind, attestation_id, canonical[28:], chain, prev, canonical))
            prev, pos = chain, pos + record_size(body_len)
    return records


def test_records_over_many_steps_equal_the_reference(long_stream: Path) -> None:
    expected = _record_at_a_time(long_stream)
    assert [r.seq for r in expected] == list(range(1, TOTAL + 1))
    assert list(Reader(long_stream).records()) == expected
    for start in (2, 1023, 1024, 1025, 2049, TOTAL):
        assert list(Reader(long_stream).records(from_seq=start)) == expected[start - 1:]
    assert all(r.body == _body(r.attestation_id - 7000) for r in expected[1:])


async def test_follow_batches_yields_consecutive_steps(long_stream: Path) -> None:
    expected = _record_at_a_time(long_stream)
    steps: list[list[Record]] = []

    async def follow() -> None:
        async for step in Reader(long_stream).follow_batches(from_seq=5, poll_seconds=0.001):
            steps.append(step)
            if step[-1].seq == TOTAL:
                return

    await asyncio.wait_for(follow(), timeout=60)
    assert all(1 <= len(step) <= 1024 for step in steps) and len(steps) >= 3
    assert [r for step in steps for r in step] == expected[4:]


def _corrupt_read(stream: Path) -> JournalCorrupt:
    with pytest.raises(JournalCorrupt) as raised:
        list(Reader(stream).records())
    return raised.value


def test_crc_error_in_a_sealed_segment_is_raised_with_its_seq(long_stream: Path) -> None:
    segment, offset, _ = locate(long_stream, 1500)
    flip(segment, offset + 70)
    error = _corrupt_read(long_stream)
    assert error.seq == 1500 and "CRC32C" in error.reason


def test_deleted_record_is_a_seq_gap(long_stream: Path) -> None:
    segment, offset, size = locate(long_stream, 1500)
    data = segment.read_bytes()
    patch(segment, offset, data[offset + size:] + bytes(size))  # shift the rest up
    error = _corrupt_read(long_stream)
    assert error.seq == 1500 and "unexpected seq" in error.reason


def test_changed_byte_with_recomputed_crc_is_a_chain_break(long_stream: Path) -> None:
    segment, offset, size = locate(long_stream, 1500)
    flip(segment, offset + 70)
    fix_crc(segment, offset, size)
    error = _corrupt_read(long_stream)
    assert error.seq == 1500 and "chain hash" in error.reason


def test_a_record_being_written_ends_the_scan_without_an_error(tmp_path: Path) -> None:
    """F12: beyond write_end an invalid record is 'not yet', not damage."""
    stream = tmp_path / "node-a" / "0"
    with Writer(stream, "node-a", 0, "none", segment_bytes=SMALL_SEGMENT) as writer:
        for i in range(1500):
            writer.append(RecordType.INGRESS, _body(i), i)
        segment = list_segments(stream)[-1][1]
        last_seq, end = writer.next_seq - 1, _end_of_records(segment)
        # Half a record after the end, as a writer in another process leaves it mid-append.
        patch(segment, end + 4, os.urandom(60))
        assert [r.seq for r in Reader(stream).records(from_seq=last_seq - 1)] == [last_seq - 1, last_seq]
        patch(segment, end, bytes(64))  # the writer will overwrite it: leave it as found


def _end_of_records(segment: Path) -> int:
    data = segment.read_bytes()
    pos = HEADER_SIZE
    while any(data[pos:pos + 64]):
        pos += record_size(int.from_bytes(data[pos + 36:pos + 40], "little"))
    return pos
