"""Recovery of a journal Writer on open: a new stream, or the last segment scanned.

A new stream gets segment 1 and its GENESIS record with a fresh epoch. An
existing one is checked (headers agree on identity and epoch, F5) and its last
segment scanned: a torn tail is zeroed, damage below the durable mark or
followed by valid records is refused (F9, F10).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from journal._errors import JournalCorrupt, JournalError, os_error
from journal._files import MappedSegment, read_header, remove_temporaries
from journal._format import (
    EPOCH_SIZE,
    HASH_SIZE,
    HEADER_SIZE,
    ZERO_HASH,
    Durability,
    Record,
    RecordType,
    genesis_body,
    list_segments,
    parse_checkpoint,
    reason,
)
from journal._journal import ffi, lib
from journal._rotation import Rotation


class Recovery(Rotation):
    """Opening a stream (a layer of journal.Writer)."""

    def _open_stream(self) -> None:
        remove_temporaries(self._dir)
        segments = list_segments(self._dir)
        if not segments:
            self._start_new_stream()
            return
        epochs = set()
        for first_seq, path in segments:
            header = read_header(path)
            if header.first_seq != first_seq:
                raise JournalCorrupt(first_seq, f"{path.name}: header first_seq is {header.first_seq}")
            if (header.node_id, header.stream_id) != (self._node_id, self._stream_id):
                raise JournalError(
                    f"{self._dir} holds stream {header.node_id}/{header.stream_id}, "
                    f"not {self._node_id}/{self._stream_id}"
                )
            epochs.add(header.epoch)
        if len(epochs) != 1:
            raise JournalCorrupt(segments[0][0], "segments disagree on the stream epoch (F5)")
        self._epoch = epochs.pop()
        self._recover_last(segments[-1][1])
        self._resume_tree(segments)

    def _start_new_stream(self) -> None:
        """First open of a stream: segment 1 and the GENESIS record with a fresh epoch."""
        self._epoch = os.urandom(EPOCH_SIZE)
        segment = self._allocate_segment()
        try:
            self._install(segment, 1, ZERO_HASH)
        except BaseException:
            segment.discard()
            raise
        self._attach(segment, HEADER_SIZE, 1, ZERO_HASH)
        self._start_tree()
        self._append_genesis()

    def _start_tree(self) -> None:
        """An empty Merkle tree, kept from the next append (GENESIS) on."""
        assert lib.jn_tree_reset(self._w, 0, ffi.NULL, 0) == lib.JN_OK
        assert lib.jn_tree_enable(self._w) == lib.JN_OK

    def _resume_tree(self, segments: list[tuple[int, Path]]) -> None:
        """Rebuild the stream epoch's Merkle tree from its records.

        From the newest CHECKPOINT record's frontier (F17) and the records
        after it; without one, from seq 1 while the first segment is still
        here. Otherwise the tree stays unknown (`tree_size` is None): said,
        never guessed.
        """
        if self._w.tree_enabled:
            return
        if self._resume_tree_from_checkpoint(segments):
            return
        if segments[0][0] != 1:
            return
        assert lib.jn_tree_reset(self._w, 0, ffi.NULL, 0) == lib.JN_OK
        for first_seq, path in segments[:-1]:
            segment = MappedSegment.open(path, writable=False)
            try:
                header = segment.header()
                scan = ffi.new("jn_scan_result *")
                lib.jn_scan(segment.base, segment.size, HEADER_SIZE, first_seq, header.prev_hash, scan)
                if scan.status != lib.JN_SCAN_CLEAN:
                    raise JournalCorrupt(scan.next_seq, f"{path.name}: {reason(scan.reason)} in a sealed segment")
                added = lib.jn_tree_add_records(self._w, segment.base, segment.size, HEADER_SIZE, scan.end)
            finally:
                segment.close()
            assert added == scan.next_seq - first_seq, f"jn_tree_add_records returned {added}"
        current = self._current
        assert current is not None
        added = lib.jn_tree_add_records(self._w, current.base, current.size, HEADER_SIZE, self._w.pos)
        assert added >= 0, f"jn_tree_add_records returned {added}"
        assert lib.jn_tree_enable(self._w) == lib.JN_OK, "the tree does not reach the last record"

    def _resume_tree_from_checkpoint(self, segments: list[tuple[int, Path]]) -> bool:
        """Resume from the newest CHECKPOINT record; False when there is none."""
        from journal._reader import Reader

        last_seq = self._w.next_seq - 1
        for index in range(len(segments) - 1, -1, -1):
            first_seq = segments[index][0]
            end_seq = segments[index + 1][0] - 1 if index + 1 < len(segments) else last_seq
            found: Record | None = None
            for record in Reader(self._dir).records(from_seq=first_seq):
                if record.seq > end_seq:
                    break
                if record.type == RecordType.CHECKPOINT:
                    found = record
            if found is None:
                continue
            body = parse_checkpoint(found.body)
            if body.tree_size != found.seq - 1:
                raise JournalCorrupt(found.seq, f"CHECKPOINT covers {body.tree_size} records, not {found.seq - 1} (F17)")
            hashes = b"".join(body.frontier)
            assert lib.jn_tree_reset(self._w, body.tree_size, hashes, len(body.frontier)) == lib.JN_OK
            for record in Reader(self._dir).records(from_seq=found.seq):
                if record.seq > last_seq:
                    break
                lib.jn_tree_push_canonical(self._w, record.canonical, len(record.canonical))
            assert lib.jn_tree_enable(self._w) == lib.JN_OK, "the tree does not reach the last record"
            self.last_checkpoint_size = body.tree_size
            return True
        return False

    def _append_genesis(self) -> None:
        body = genesis_body(self._epoch, self._stream_id, self._node_id)
        seq = lib.jn_append_genesis(self._w, body, len(body))
        assert seq == 1, f"genesis append returned {seq}"
        if self._level is not Durability.NONE:
            self._sync_current()

    def _recover_last(self, path: Path) -> None:
        """Scan the last segment; truncate a torn tail; refuse damage (F9, F10)."""
        segment = MappedSegment.open(path, writable=True)
        try:
            header = segment.header()
            lib.jn_prefault(segment.base, segment.size)  # it may be cold after a reboot
            scan = ffi.new("jn_scan_result *")
            lib.jn_scan(segment.base, segment.size, HEADER_SIZE, header.first_seq, header.prev_hash, scan)
            last_hash = ffi.buffer(scan.last_hash, HASH_SIZE)[:]
            if scan.status == lib.JN_SCAN_INVALID:
                self._judge_tail(path, header.synced_end, scan)
                self.recovered_tail_bytes = scan.nonzero_end - scan.end
            # Zero the torn tail (if any) and republish the position: the
            # header's write_end may be stale after a crash.
            code = lib.jn_segment_zero(segment.base, segment.size, scan.end, scan.nonzero_end,
                                       scan.next_seq - 1)
            assert code == lib.JN_OK, f"jn_segment_zero returned {code}"
            if self._level is not Durability.NONE and self.recovered_tail_bytes:
                error = lib.jn_msync(segment.base, segment.size, 0, scan.nonzero_end)
                if error:
                    raise os_error(error, f"msync {path.name}")
        except BaseException:
            segment.close()
            raise
        self._attach(segment, scan.end, scan.next_seq, last_hash)
        if scan.next_seq == 1:
            self._start_tree()
            self._append_genesis()  # the crash came before GENESIS was complete

    def _judge_tail(self, path: Path, synced_end: int, scan: Any) -> None:
        bad_seq = scan.next_seq
        where = f"{path.name} offset {scan.end}: {reason(scan.reason)}"
        if scan.end < synced_end:
            raise JournalCorrupt(bad_seq, f"{where}, below the durable mark {synced_end} (F10)")
        if scan.valid_after_pos and not self._recover_unsynced:
            raise JournalCorrupt(
                bad_seq, f"{where}, followed by a valid record at offset {scan.valid_after_pos} (F10)"
            )
