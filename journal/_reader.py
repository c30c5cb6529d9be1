"""Reading a journal stream: finite scans, following a live writer, verify, retention.

A reader never writes. It may run in another process than the writer and
relies only on the reader contract of FORMAT.md: records below the published
write_end are complete; every record is re-checked (CRC, seq, chain) anyway; a
segment named after the seq we expect next means the current one is finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from journal._errors import JournalCorrupt, JournalError
from journal._files import MappedSegment, fsync_directory, read_header, require_directory
from journal._format import (
    CANONICAL_OFFSET,
    EPOCH_SIZE,
    HASH_SIZE,
    HEADER_SIZE,
    RECORD_HEADER_SIZE,
    ZERO_HASH,
    Record,
    RecordType,
    SegmentHeader,
    genesis_body,
    list_segments,
    make_record,
    reason,
    record_type,
    segment_name,
)
from journal._journal import ffi, lib

_BATCH_RECORDS = 1024  # records handed out per scan step (bounds one step's work)
# Copy buffer of one batch read (jn_read_batch): it must hold the largest record
# so every call makes progress; 2 MiB also holds a full step of typical records.
_COPY_BYTES = 2 << 20
assert _COPY_BYTES >= RECORD_HEADER_SIZE + lib.JN_BODY_MAX
# jn_record_view as laid out by the compiler: pos, record_size, seq,
# attestation_id, body_len, type, reserved.
_VIEW = struct.Struct("<QQQQIHH")
assert _VIEW.size == ffi.sizeof("jn_record_view")
_HASH_END = 4 + HASH_SIZE  # chain_hash is record bytes 4..35
_BODY_START = RECORD_HEADER_SIZE - CANONICAL_OFFSET  # where the body starts in `canonical`
# RecordType by value; jn_read_batch only passes valid types (F7d).
_TYPES: dict[int, RecordType] = {int(kind): kind for kind in RecordType}


class _Cursor:
    """Position in a stream: segment, offset, next seq and the chain hash before it."""

    def __init__(self, directory: Path, from_seq: int) -> None:
        if from_seq < 1:
            raise ValueError("seqs start at 1")
        self._dir = directory
        self._from_seq = from_seq
        self._segment: MappedSegment | None = None
        self._identity: tuple[str, int, bytes] | None = None
        self._pos = HEADER_SIZE
        self._expected = 0
        self._prev = ZERO_HASH
        self._view = ffi.new("jn_record_view *")
        # Batch reads reuse these for the cursor's life (C never allocates).
        # uint64_t keeps the copy 8-aligned, as records are in a segment.
        self._copy_words = ffi.new("uint64_t[]", _COPY_BYTES // 8)
        self._copy = ffi.cast("char *", self._copy_words)
        self._views = ffi.new("jn_record_view[]", _BATCH_RECORDS)
        self._batch = ffi.new("jn_batch_result *")
        self.at_end = False

    def close(self) -> None:
        if self._segment is not None:
            self._segment.close()
            self._segment = None

    def _start(self) -> bool:
        segments = list_segments(self._dir)
        if not segments:
            return False  # the writer has not created the stream yet
        if self._from_seq < segments[0][0]:
            raise JournalError(
                f"seq {self._from_seq} is no longer in {self._dir}: the oldest segment starts "
                f"at {segments[0][0]} (released after shipping)"
            )
        first_seq, path = [entry for entry in segments if entry[0] <= self._from_seq][-1]
        self._enter(path, first_seq, None)
        return True

    def _enter(self, path: Path, first_seq: int, prev_hash: bytes | None) -> None:
        segment = MappedSegment.open(path, writable=False)
        header = segment.header()
        identity = (header.node_id, header.stream_id, header.epoch)
        problem = None
        if header.first_seq != first_seq:
            problem = f"{path.name}: header first_seq is {header.first_seq} (F5)"
        elif self._identity is not None and identity != self._identity:
            problem = f"{path.name}: node, stream or epoch differs from the previous segment (F5)"
        elif prev_hash is not None and header.prev_hash != prev_hash:
            problem = f"{path.name}: prev_hash does not continue the chain (F6)"
        if problem is not None:
            segment.close()
            raise JournalCorrupt(first_seq, problem)
        self.close()
        self._segment = segment
        self._identity = identity
        self._pos = HEADER_SIZE
        self._expected = first_seq
        self._prev = header.prev_hash

    def read(self) -> list[Record]:
        """Up to _BATCH_RECORDS records available now; sets at_end when it ran out.

        The valid records at the cursor are taken in bulk (_take_batch, one C
        call); wherever that stops short, the record-at-a-time path (_next)
        looks at the same offset and decides: nothing there yet, a torn tail
        being written, the next segment, or corruption. So every decision
        about what is not a valid record is the one _next always took.
        """
        self.at_end = False
        if self._segment is None and not self._start():
            self.at_end = True
            return []
        out: list[Record] = []
        for _ in range(_BATCH_RECORDS):  # each pass takes >= 1 record or ends the step
            room = _BATCH_RECORDS - len(out)
            if room == 0:
                break
            if self._take_batch(room, out) == lib.JN_OK:
                continue  # stopped by room or the copy buffer, not by a record
            record = self._next()
            if record is None:
                self.at_end = True
                break
            if record.seq >= self._from_seq:
                out.append(record)
        return out

    def _take_batch(self, room: int, out: list[Record]) -> int:
        """Append the valid records at the cursor (at most `room`) to `out`.

        jn_read_batch copies each record out of the mapping and validates the
        copy (CRC, seq, type, reserved bytes, chain: F7), so the bytes a Record
        holds are the bytes that were checked. Returns why it stopped: JN_OK
        (room or copy buffer used up) or the JN_R_* code at the new position.
        """
        segment = self._segment
        assert segment is not None
        start, expected, prev = self._pos, self._expected, self._prev
        batch = self._batch
        lib.jn_read_batch(segment.base, segment.size, start, expected, prev, room,
                          self._copy, _COPY_BYTES, self._views, batch)
        count = batch.count
        if count == 0:
            return int(batch.stop)
        assert count <= room and batch.next_seq == expected + count
        assert batch.end == start + batch.copied
        blob = ffi.buffer(self._copy, batch.copied)[:]
        views = _VIEW.iter_unpack(ffi.buffer(self._views, count * _VIEW.size))
        from_seq, types, append = self._from_seq, _TYPES, out.append
        for pos, _, seq, attestation_id, body_len, kind, _ in views:
            offset = pos - start
            chain = blob[offset + 4:offset + _HASH_END]
            if seq >= from_seq:
                canonical = blob[offset + CANONICAL_OFFSET:offset + RECORD_HEADER_SIZE + body_len]
                append(make_record(seq, types[kind], attestation_id, canonical[_BODY_START:],
                                   chain, prev, canonical))
            prev = chain
        assert prev == ffi.buffer(batch.last_hash, HASH_SIZE)[:]
        self._pos, self._expected, self._prev = batch.end, batch.next_seq, prev
        return int(batch.stop)

    def _next(self) -> Record | None:
        segment = self._segment
        assert segment is not None
        # write_end first: records below it were complete before it was stored.
        write_end = lib.jn_load_write_end(segment.base)
        code = lib.jn_record_check(segment.base, segment.size, self._pos, self._expected,
                                   self._prev, self._view)
        if code == lib.JN_OK:
            return self._take(segment)
        if self._switch():
            return self._next()
        if code != lib.JN_R_END and self._pos < write_end:
            self._judge(segment, code)
        return None  # end for now: nothing written yet, or a tail being written

    def _take(self, segment: MappedSegment) -> Record:
        view = self._view
        start = segment.base + self._pos
        canonical = ffi.buffer(start + CANONICAL_OFFSET,
                               RECORD_HEADER_SIZE - CANONICAL_OFFSET + view.body_len)[:]
        chain = ffi.buffer(start + 4, HASH_SIZE)[:]
        record = make_record(view.seq, record_type(view.type), view.attestation_id,
                             canonical[_BODY_START:], chain, self._prev, canonical)
        assert view.seq == self._expected and view.pos == self._pos
        self._pos += view.record_size
        self._expected += 1
        self._prev = chain
        return record

    def _switch(self) -> bool:
        """Move to the segment that starts at the seq we expect, if it exists.

        Returns True when the caller should look again (a new segment was
        entered, or the record at our position has appeared meanwhile).
        """
        segment = self._segment
        assert segment is not None
        path = self._dir / segment_name(self._expected)
        if not path.exists() and not segment.sealed():
            return False  # the writer is still in this segment
        # The writer renames the next segment into place before it sets SEALED
        # (F12), so from here on this segment is complete; what we saw at our
        # position may be older than that, so look again before judging.
        again = lib.jn_record_check(segment.base, segment.size, self._pos, self._expected,
                                    self._prev, self._view)
        if again == lib.JN_OK:
            return True
        if again != lib.JN_R_END:
            raise JournalCorrupt(self._expected,
                                 f"{reason(again)} at offset {self._pos} of a sealed segment (F9)")
        if not path.exists():
            later = [first for first, _ in list_segments(self._dir) if first > self._expected]
            if later:
                raise JournalCorrupt(self._expected, f"segment starting at seq {self._expected} "
                                     f"is missing; the next one starts at {later[0]} (F1)")
            return False
        self._enter(path, self._expected, self._prev)
        return True

    def _judge(self, segment: MappedSegment, code: int) -> None:
        """A bad record below write_end: corruption unless it is a torn tail (F9, F10)."""
        scan = ffi.new("jn_scan_result *")
        lib.jn_scan(segment.base, segment.size, self._pos, self._expected, self._prev, scan)
        if scan.valid_after_pos or self._pos < segment.synced_end():
            raise JournalCorrupt(self._expected, f"{reason(code)} at offset {self._pos} of {segment.path.name}")


class Reader:
    """Reads one stream directory; safe to use while a writer appends elsewhere."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._dir = Path(path)

    def records(self, from_seq: int = 1) -> Iterator[Record]:
        """Every valid record from `from_seq` to the current end (a finite scan).

        Raises JournalCorrupt at a record that is damaged (not merely a torn
        tail the writer will truncate on its next open).
        """
        require_directory(self._dir)
        cursor = _Cursor(self._dir, from_seq)
        try:
            while True:  # each step advances by >= 1 record or sets at_end
                batch = cursor.read()
                yield from batch
                if cursor.at_end:
                    return
        finally:
            cursor.close()

    async def follow(self, from_seq: int = 1, *, poll_seconds: float = 0.005) -> AsyncIterator[Record]:
        """Records from `from_seq` on, waiting for new ones: tails a live writer.

        Never ends by itself; cancel it or break out. Follows rotation and the
        writer's restarts (a torn tail it truncates is never returned).
        """
        steps = self.follow_batches(from_seq, poll_seconds=poll_seconds)
        async with contextlib.aclosing(steps):  # the cursor's segment is unmapped when we stop
            async for batch in steps:
                for record in batch:
                    yield record

    async def follow_batches(self, from_seq: int = 1, *,
                             poll_seconds: float = 0.005) -> AsyncGenerator[list[Record], None]:
        """follow() a list at a time: each item is 1 to 1024 consecutive records.

        The same records, checks and guarantees as follow(), for consumers that
        handle records in bulk (the forwarder): one suspension per list instead
        of one per record. Never ends by itself; cancel it or break out.
        """
        cursor = _Cursor(self._dir, from_seq)
        try:
            while True:  # an endless tail by design; cancellation stops it
                batch = cursor.read() if self._dir.is_dir() else []
                if batch:
                    yield batch
                else:
                    await asyncio.sleep(poll_seconds)
        finally:
            cursor.close()

    def segments(self) -> list[SegmentHeader]:
        require_directory(self._dir)
        return [read_header(path) for _, path in list_segments(self._dir)]


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of verify(). `first_bad_seq`/`reason` are set when `ok` is False."""

    ok: bool
    first_bad_seq: int | None
    reason: str | None
    first_seq: int
    last_seq: int
    last_hash: bytes
    records: int
    segments: int
    epoch: bytes | None
    torn_tail_bytes: int


def verify(path: str | os.PathLike[str], anchor: tuple[int, bytes] | None = None) -> VerifyResult:
    """Check every segment: headers, seq continuity, CRC, chain, zero tails (F1-F11).

    `anchor` is a (seq, chain_hash) held outside the writer (the forwarder's
    checkpoint): the journal must reach that seq with that hash, which is the
    only way to detect a cut tail (invariant 3).
    """
    directory = Path(path)
    require_directory(directory)
    state = _Verify(directory)
    try:
        state.run(anchor)
    except _Bad as bad:
        return state.result(bad.seq, bad.reason)
    return state.result(None, None)


class _Bad(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


class _Verify:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.first_seq = 0
        self.next_seq = 0
        self.last_hash = ZERO_HASH
        self.records = 0
        self.segments = 0
        self.epoch: bytes | None = None
        self.torn_tail_bytes = 0
        self.anchor_hash: bytes | None = None

    def result(self, bad_seq: int | None, why: str | None) -> VerifyResult:
        return VerifyResult(bad_seq is None, bad_seq, why, self.first_seq, max(self.next_seq - 1, 0),
                            self.last_hash, self.records, self.segments, self.epoch,
                            self.torn_tail_bytes)

    def run(self, anchor: tuple[int, bytes] | None) -> None:
        segments = list_segments(self.dir)
        identity = None
        for index, (first_seq, path) in enumerate(segments):
            try:
                header = read_header(path)
            except JournalCorrupt as error:
                raise _Bad(self.next_seq or first_seq, error.reason) from None
            if header.first_seq != first_seq:
                raise _Bad(first_seq, f"{path.name}: header first_seq is {header.first_seq} (F1)")
            if identity is None:
                identity = (header.node_id, header.stream_id, header.epoch)
                self.epoch = header.epoch
                self.first_seq = self.next_seq = first_seq
                self.last_hash = header.prev_hash
                if first_seq == 1 and header.prev_hash != ZERO_HASH:
                    raise _Bad(1, "the first segment's prev_hash must be zero (F5)")
            elif (header.node_id, header.stream_id, header.epoch) != identity:
                raise _Bad(first_seq, f"{path.name}: node, stream or epoch differs (F5)")
            if first_seq != self.next_seq:
                raise _Bad(self.next_seq, f"{path.name} starts at seq {first_seq}, expected "
                           f"{self.next_seq}: records are missing or overlap (F1)")
            if header.prev_hash != self.last_hash:
                raise _Bad(first_seq, f"{path.name}: prev_hash does not continue the chain (F6)")
            self._scan(path, header, last=index == len(segments) - 1, anchor=anchor)
            self.segments += 1
        if segments and read_header(segments[-1][1]).flags & lib.JN_FLAG_SEALED \
                and not (self.dir / segment_name(self.next_seq)).exists():
            # The writer seals a segment only after its successor exists (F12):
            # a sealed last segment means the newer one was removed.
            raise _Bad(self.next_seq, f"{segments[-1][1].name} is SEALED but no segment starts at seq "
                       f"{self.next_seq}: the newest segment is missing (F12)")
        if anchor is not None:
            self._check_anchor(anchor)

    def _scan(self, path: Path, header: SegmentHeader, *, last: bool,
              anchor: tuple[int, bytes] | None) -> None:
        segment = MappedSegment.open(path, writable=False)
        try:
            scan = ffi.new("jn_scan_result *")
            lib.jn_scan(segment.base, segment.size, HEADER_SIZE, self.next_seq, self.last_hash, scan)
            if header.first_seq == 1 and scan.count > 0:
                self._check_genesis(segment, header)
            if anchor is not None and self.next_seq <= anchor[0] < scan.next_seq:
                self.anchor_hash = _hash_at(segment, self.next_seq, self.last_hash, anchor[0])
            self.records += scan.count
            self.next_seq = scan.next_seq
            self.last_hash = ffi.buffer(scan.last_hash, HASH_SIZE)[:]
            if scan.status == lib.JN_SCAN_INVALID:
                self._judge(segment, scan, last=last)
        finally:
            segment.close()

    def _judge(self, segment: MappedSegment, scan: Any, *, last: bool) -> None:
        where = f"{segment.path.name} offset {scan.end}"
        why = reason(scan.reason)
        if scan.reason == lib.JN_R_SEQ:
            found = int.from_bytes(ffi.buffer(segment.base + scan.end + 40, 8)[:], "little")
            why = f"found seq {found} where {scan.next_seq} was expected: a record is missing, " \
                  f"duplicated or out of order (F7c)"
        if not last:
            raise _Bad(scan.next_seq, f"{why} at {where} (a sealed segment has no torn tail, F9)")
        if scan.valid_after_pos:
            raise _Bad(scan.next_seq, f"{why} at {where}, followed by a valid record (F10)")
        if scan.end < segment.synced_end():
            raise _Bad(scan.next_seq, f"{why} at {where}, below the durable mark (F10)")
        self.torn_tail_bytes = scan.nonzero_end - scan.end  # F9: the writer truncates it

    def _check_genesis(self, segment: MappedSegment, header: SegmentHeader) -> None:
        body_len = int.from_bytes(ffi.buffer(segment.base + HEADER_SIZE + 36, 4)[:], "little")
        body = ffi.buffer(segment.base + HEADER_SIZE + RECORD_HEADER_SIZE, body_len)[:]
        if body != genesis_body(header.epoch, header.stream_id, header.node_id):
            raise _Bad(1, "GENESIS body does not match the stream's epoch and identity (F11)")
        assert len(header.epoch) == EPOCH_SIZE

    def _check_anchor(self, anchor: tuple[int, bytes]) -> None:
        seq, expected_hash = anchor
        last = self.next_seq - 1
        if seq > last:
            raise _Bad(last + 1, f"the journal ends at seq {last} but the anchor is at seq {seq}: "
                       f"the tail was cut (invariant 3)")
        if seq < self.first_seq:
            return  # released after shipping: the anchor predates what is kept
        if self.anchor_hash != expected_hash:
            raise _Bad(seq, f"chain hash at seq {seq} differs from the anchor: the journal was rewritten")


def _hash_at(segment: MappedSegment, first_seq: int, prev_hash: bytes, seq: int) -> bytes:
    """Chain hash of record `seq` in a segment already validated up to it."""
    view = ffi.new("jn_record_view *")
    pos, expected, prev = HEADER_SIZE, first_seq, prev_hash
    for _ in range(seq - first_seq + 1):
        code = lib.jn_record_check(segment.base, segment.size, pos, expected, prev, view)
        assert code == lib.JN_OK, f"record {expected} validated by the scan fails now: {code}"
        prev = ffi.buffer(segment.base + pos + 4, HASH_SIZE)[:]
        pos += view.record_size
        expected += 1
    return prev


def releasable_segments(path: str | os.PathLike[str], through_seq: int, older_than_seconds: float, *,
                        now_unix_ns: int | None = None) -> list[tuple[int, int]]:
    """(first_seq, last_seq) of the oldest segments release_segments() would
    delete now, oldest first, without deleting anything: every record in them
    has seq <= through_seq and their successor was created more than
    older_than_seconds ago; the list stops at the first segment that does not
    qualify, and never holds the last segment."""
    if older_than_seconds < 0:
        raise ValueError("older_than_seconds must be >= 0")
    directory = Path(path)
    require_directory(directory)
    now = time.time_ns() if now_unix_ns is None else now_unix_ns
    segments = list_segments(directory)
    found: list[tuple[int, int]] = []
    for (first, _), (next_first, successor) in zip(segments, segments[1:]):
        if next_first - 1 > through_seq:
            break
        sealed_at = read_header(successor).created_unix_ns
        if now - sealed_at < older_than_seconds * 1e9:
            break
        found.append((first, next_first - 1))
    return found


def release_segments(path: str | os.PathLike[str], through_seq: int,
                     older_than_seconds: float, *, now_unix_ns: int | None = None) -> list[Path]:
    """Delete the oldest segments that are both shipped and old enough.

    A segment is released only if every record in it has seq <= through_seq
    (the caller's checkpoint in PostgreSQL is past it) and it was sealed (its
    successor was created) more than older_than_seconds ago. Deletion goes
    oldest first and stops at the first segment that does not qualify, so no
    hole is ever made; the last segment is never deleted. Safe to call from a
    process other than the writer's. A caller that must account for what it
    deletes (the forwarder, FORMAT.md F18) first asks releasable_segments(),
    records the release (append_release), then calls this with through_seq =
    the last seq it recorded.
    """
    directory = Path(path)
    plan = releasable_segments(directory, through_seq, older_than_seconds, now_unix_ns=now_unix_ns)
    removed: list[Path] = []
    for first, _ in plan:
        current = directory / segment_name(first)
        current.unlink()
        removed.append(current)
    if removed:
        fsync_directory(directory)
    return removed
