"""The journal writer: recovery on open, append, rotation, group commit, retention.

The C core does the per-record work (journal_core.c); this module decides
when to rotate, when to sync and what to do on failure. Two helper threads run
beside the appending thread:

- the preparer allocates and pre-faults the next segment ahead of the writer,
  so rotation only renames a ready file (no first-touch stalls);
- the flusher (durability "batch" only) is a C thread (journal_core.c) that
  msyncs the current segment whenever records are pending and signals an
  eventfd the asyncio loop watches; the loop then releases the waiters whose
  records are durable. It is in C because a Python thread would need the GIL
  to run, and a busy appending thread hands the GIL over only every switch
  interval (5 ms): group-commit latency would be bounded by that, not by the
  disk.

Blocking calls (msync, fallocate, pre-faulting) run with the GIL released
(cffi releases it around every call).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

from journal._errors import JournalCorrupt, JournalError, JournalFull, JournalIOError, os_error
from journal._files import (
    MappedSegment,
    fsync_directory,
    lock_stream,
    read_header,
    remove_temporaries,
    stream_bytes,
)
from journal._format import (
    EPOCH_SIZE,
    HASH_SIZE,
    HEADER_SIZE,
    NODE_ID,
    STREAM_ID_MAX,
    ZERO_HASH,
    Durability,
    RecordType,
    genesis_body,
    list_segments,
    reason,
    record_size,
    segment_name,
)
from journal._journal import ffi, lib

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
_IDLE_WAIT_SECONDS = 0.5        # an idle flusher re-checks at least this often
_JOIN_SECONDS = 30.0            # bound on waiting for a helper thread to stop
_PREPARE_WAIT_SECONDS = 60.0    # bound on waiting for the preparer at rotation

# Writers of this process, so a forked child cannot append through a copy of
# a parent's writer (two writers on one stream, the lock notwithstanding).
_LIVE_WRITERS: weakref.WeakSet[Writer] = weakref.WeakSet()


def _disable_writers_after_fork() -> None:
    for writer in list(_LIVE_WRITERS):
        writer._w.base = ffi.NULL  # appends now return JN_E_CLOSED


os.register_at_fork(after_in_child=_disable_writers_after_fork)


class Writer:
    """The single writer of one journal stream (one directory of segments).

    Parameters
    ----------
    path:
        The stream directory, by convention ``<journal_dir>/<node_id>/<stream_id>``.
        Created if missing.
    node_id, stream_id:
        The stream's identity, written into every segment header; reopening a
        directory with a different identity is refused.
    durability:
        ``"none"``, ``"batch"`` (default) or ``"always"``; see README.md.
    segment_bytes:
        Size of each preallocated segment file (multiple of 4096, >= 64 KiB).
    max_bytes:
        Size cap for the stream's files; reaching it makes appends raise
        JournalFull until segments are released. None: no cap.
    flush_interval_us, flush_records:
        Group commit ("batch"): the flusher syncs when records are pending,
        at most once per interval unless `flush_records` are pending.
    prefault:
        Prepare and pre-fault the next segment in the background (default);
        False allocates at rotation time (benchmark comparison only).
    recover_unsynced:
        After a power loss, a bad record beyond the durable mark followed by
        valid-looking ones is refused as corruption by default (F10); True
        truncates it like a torn tail. Those records were never acknowledged
        as durable at level batch or always.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        node_id: str,
        stream_id: int,
        durability: Durability | str = Durability.BATCH,
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        max_bytes: int | None = None,
        flush_interval_us: int = 100,
        flush_records: int = 4096,
        prefault: bool = True,
        recover_unsynced: bool = False,
    ) -> None:
        if not NODE_ID.fullmatch(node_id):
            raise ValueError(f"node_id must be 1-63 characters of [A-Za-z0-9._-], got {node_id!r}")
        if not 0 <= stream_id <= STREAM_ID_MAX:
            raise ValueError(f"stream_id must be 0..{STREAM_ID_MAX}, got {stream_id}")
        if segment_bytes < lib.JN_SEGMENT_MIN or segment_bytes % 4096 != 0:
            raise ValueError(f"segment_bytes must be a multiple of 4096 and >= {lib.JN_SEGMENT_MIN}")
        if max_bytes is not None and max_bytes < segment_bytes:
            raise ValueError("max_bytes must hold at least one segment")
        if flush_interval_us < 0 or flush_records < 1:
            raise ValueError("flush_interval_us must be >= 0 and flush_records >= 1")
        self._dir = Path(path)
        self._node_id = node_id
        self._stream_id = stream_id
        self._level = Durability(durability)
        self._segment_bytes = segment_bytes
        self._max_bytes = max_bytes
        self._flush_interval_ns = flush_interval_us * 1000
        self._flush_records = flush_records
        self._prefault = prefault
        self._recover_unsynced = recover_unsynced

        self._w = ffi.new("jn_writer *")
        self._hash_out = ffi.new("char[32]")
        self._sync_result = ffi.new("jn_sync_result *")
        self._current: MappedSegment | None = None
        self._epoch = b""
        self._durable_seq = 0
        self._failure: JournalError | None = None
        self._closed = False
        self._stopping = False
        self.recovered_tail_bytes = 0

        # Group commit: the C flusher, the eventfd it signals after a sync
        # when there are waiters, and the waiters (seq order) on one loop.
        self._flusher = ffi.NULL
        self._notify_fd = -1
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None

        # Preparer state, guarded by _prepare_cond.
        self._prepare_cond = threading.Condition()
        self._prepared: MappedSegment | None = None
        self._prepare_error: JournalError | None = None
        self._preparing = False
        self._allocate_lock = threading.Lock()

        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = lock_stream(self._dir)
        try:
            self._open_stream()
            if self._level is not Durability.NONE:
                self._sync_current()  # what recovery kept is durable before we build on it
        except BaseException:
            self._release_resources()
            raise
        self._threads: list[threading.Thread] = []
        if self._level is Durability.BATCH:
            try:
                self._start_flusher()
            except BaseException:
                self._release_resources()
                raise
        if prefault:
            self._start_thread(self._prepare_loop, "journal-prepare")
        _LIVE_WRITERS.add(self)

    # ------------------------------------------------------------------ open

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

        Possible only while the segment that starts at seq 1 is still here;
        otherwise the tree stays unknown (`tree_size` is None) until resuming
        from a CHECKPOINT record's frontier exists.
        """
        if self._w.tree_enabled or segments[0][0] != 1:
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

    @property
    def tree_size(self) -> int | None:
        """Leaves in the stream epoch's Merkle tree (= last seq), or None when unknown."""
        return int(self._w.tree_size) if self._w.tree_enabled else None

    def tree_root(self) -> bytes | None:
        """RFC 9162 root over every record so far (leaf i = canonical bytes of seq i + 1)."""
        if not self._w.tree_enabled:
            return None
        lib.jn_tree_root(self._w, self._hash_out)
        root: bytes = ffi.buffer(self._hash_out, HASH_SIZE)[:]
        return root

    def tree_frontier(self) -> list[bytes]:
        """The compact range (largest subtree first): what a CHECKPOINT record carries to resume."""
        frontier: list[bytes] = [ffi.buffer(self._w.tree[i], HASH_SIZE)[:] for i in range(self._w.tree_count)]
        return frontier

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

    def _attach(self, segment: MappedSegment, pos: int, next_seq: int, last_hash: bytes) -> None:
        code = lib.jn_writer_attach(self._w, segment.base, segment.size, pos, next_seq, last_hash)
        assert code == lib.JN_OK, f"jn_writer_attach returned {code}"
        self._current = segment

    # ---------------------------------------------------------------- append

    def append(self, type: RecordType, body: bytes, attestation_id: int = 0, *,
               lazy: bool = False) -> tuple[int, bytes]:
        """Append one record; return its (seq, chain_hash).

        At level "always" the record is durable on return; at "batch" it is in
        the mapping and will be durable after the next group commit (use
        append_durable or wait_durable to wait); at "none" it is in the mapping.

        lazy (level "batch"): the record does not ask for a group commit of its
        own; it becomes durable with the next one anybody asks for (an eager
        append, wait_durable), when flush_records are pending, or within 5 ms.
        For a caller that waits explicitly, or not at all.
        """
        seq = lib.jn_append(self._w, type, attestation_id, body, len(body), self._hash_out)
        if seq < 0:
            seq = self._append_slow(type, body, attestation_id, seq)
        if self._level is Durability.ALWAYS:
            self._sync_current()
        elif not lazy and self._flusher != ffi.NULL:
            lib.jn_flusher_want(self._flusher, seq)
        return seq, ffi.unpack(self._hash_out, HASH_SIZE)

    def _append_slow(self, type: RecordType, body: bytes, attestation_id: int, code: int) -> int:
        if code == lib.JN_E_SEGMENT_FULL:
            self._check_fits(len(body))
            self._rotate()
            code = lib.jn_append(self._w, type, attestation_id, body, len(body), self._hash_out)
            if code > 0:
                return code
        raise self._error_for(code, type)

    def append_many(
        self,
        type: RecordType | Sequence[RecordType],
        bodies: Sequence[bytes],
        attestation_ids: Sequence[int] | None = None,
        *,
        lazy: bool = False,
    ) -> tuple[int, bytes]:
        """Append many records in one call; return (first_seq, chain_hash of the last).

        The records get seqs first_seq .. first_seq + len(bodies) - 1. JournalFull
        is raised before any of them is written (the next segment is reserved
        first), so a refused batch leaves no trace.
        """
        count = len(bodies)
        if count == 0:
            raise ValueError("append_many needs at least one body")
        types = [int(type)] * count if isinstance(type, int) else [int(t) for t in type]
        if len(types) != count or (attestation_ids is not None and len(attestation_ids) != count):
            raise ValueError("types, bodies and attestation_ids must have the same length")
        lengths = [len(body) for body in bodies]
        blob = ffi.from_buffer(b"".join(bodies))
        c_types = ffi.new("uint16_t[]", types)
        c_ids = ffi.new("uint64_t[]", attestation_ids if attestation_ids is not None else count)
        c_lengths = ffi.new("uint32_t[]", lengths)
        self._reserve_batch(lengths)
        first_seq = self._w.next_seq
        done = 0
        offsets: list[int] | None = None
        for _ in range(count + 1):  # each pass appends >= 1 record or raises
            if offsets is None and done:
                offsets = [0, *accumulate(lengths)]
            offset = offsets[done] if offsets else 0
            appended = lib.jn_append_many(self._w, count - done, c_types + done, c_ids + done,
                                          blob + offset, c_lengths + done, self._hash_out)
            if appended < 0:
                raise self._error_for(appended, types[done])
            done += appended
            if done == count:
                break
            self._check_fits(lengths[done])
            self._rotate()
        assert done == count
        if self._level is Durability.ALWAYS:
            self._sync_current()
        elif not lazy and self._flusher != ffi.NULL:
            lib.jn_flusher_want(self._flusher, first_seq + count - 1)
        return first_seq, ffi.unpack(self._hash_out, HASH_SIZE)

    def reserve(self, record_bytes: int) -> bool:
        """Make sure records totalling `record_bytes` can be appended without JournalFull.

        For a caller that must not be refused half-way through a group of
        records (the sidecar: an INGRESS must never lack room for its OUTCOME).
        The journal raises JournalFull only when a record needs a new segment
        that cannot be allocated; this allocates that segment now, before
        anything of the group is written, or raises JournalFull here.

        Parameters
        ----------
        record_bytes:
            The sum of ``journal.record_size(body length)`` over the records
            to come (padding included). Must be at most `segment_capacity`, so
            the group needs at most one rotation: whatever does not fit in the
            rest of the current segment fits in the next one.

        Returns
        -------
        bool
            True when the rest of the current segment holds them (a comparison,
            nothing else: cheap enough for every request); False when the next
            segment is allocated and kept for them.

        Raises
        ------
        JournalFull
            The next segment is needed and cannot be allocated (size cap, disk
            full). Nothing was written; the writer stays usable.
        ValueError
            `record_bytes` is negative or exceeds `segment_capacity`.

        The promise covers the next rotation only: appends the caller did not
        count can use up the room. One writer serves one thread (as append).
        """
        if not 0 <= record_bytes <= self._segment_bytes - HEADER_SIZE:
            raise ValueError(f"cannot reserve {record_bytes} bytes: one segment holds "
                             f"{self._segment_bytes - HEADER_SIZE} bytes of records")
        if record_bytes <= self._w.size - self._w.pos:
            return True
        self._keep_next_segment()
        return False

    @property
    def segment_capacity(self) -> int:
        """Bytes of records one segment holds (its size less its header)."""
        return self._segment_bytes - HEADER_SIZE

    @property
    def segment_free_bytes(self) -> int:
        """Bytes of records the current segment still holds before a rotation."""
        return int(self._w.size - self._w.pos)

    def _reserve_batch(self, lengths: list[int]) -> None:
        """Make sure an append_many batch can be written whole before writing any of it."""
        needed = sum(record_size(length) for length in lengths)
        free = self._w.size - self._w.pos
        if needed <= free:
            return
        if needed - free > self._segment_bytes - HEADER_SIZE:
            raise ValueError(f"batch of {needed} bytes does not fit in one segment after the current one")
        self._keep_next_segment()

    def _keep_next_segment(self) -> None:
        """Allocate the next segment now (unless the preparer has one): JournalFull here, not mid-group."""
        with self._prepare_cond:
            ready = self._prepared is not None
        if not ready:
            segment = self._take_prepared()  # raises JournalFull before anything is written
            with self._prepare_cond:
                self._prepared = segment

    def _check_fits(self, body_len: int) -> None:
        if record_size(body_len) > self._segment_bytes - HEADER_SIZE or body_len > lib.JN_BODY_MAX:
            raise ValueError(f"a {body_len}-byte body does not fit in a segment")

    def _error_for(self, code: int, type: int) -> Exception:
        if code == lib.JN_E_CLOSED:
            return JournalError("the writer is closed (or this is a forked child)")
        if code == lib.JN_E_FAILED:
            return self._current_failure() or JournalIOError("the writer failed")
        if code == lib.JN_E_ARGUMENT:
            return ValueError(f"invalid record type {type} or body length (max {lib.JN_BODY_MAX})")
        return JournalError(f"append failed with code {code}")

    # ---------------------------------------------------------- durability

    async def append_durable(
        self, type: RecordType, body: bytes, attestation_id: int = 0
    ) -> tuple[int, bytes]:
        """Append one record and wait, without blocking the loop, until it is durable."""
        seq, chain_hash = self.append(type, body, attestation_id)
        await self.wait_durable(seq)
        return seq, chain_hash

    async def wait_durable(self, seq: int) -> None:
        """Wait until record `seq` is durable at this writer's level.

        "none": returns at once (the mapping is that level). "always": appends
        are synced before they return. "batch": waits, without blocking the
        loop, for the group commit that covers `seq`; raises JournalIOError
        if that sync fails.
        """
        if self._level is not Durability.BATCH or self._flusher == ffi.NULL:
            failure = self._current_failure()
            if failure is not None and seq > self._durable_seq:
                raise failure
            return
        if seq <= lib.jn_flusher_durable(self._flusher):
            return
        lib.jn_flusher_want(self._flusher, seq)  # a lazy record is wanted now
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            loop.add_reader(self._notify_fd, self._on_notify)
        elif self._loop is not loop:
            raise JournalError("a writer serves durability waiters on one event loop only")
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append((seq, future))
        lib.jn_flusher_want_notify(self._flusher, 1)
        self._release_waiters()  # the sync may have finished before want_notify was set
        await future

    @property
    def durable_seq(self) -> int:
        """Highest seq known durable (synced); 0 at level "none" until close."""
        if self._flusher != ffi.NULL:
            return int(lib.jn_flusher_durable(self._flusher))
        return self._durable_seq

    def _start_flusher(self) -> None:
        self._notify_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        error = ffi.new("int *")
        flusher = lib.jn_flusher_start(self._w, self._flush_interval_ns, self._flush_records,
                                       self._notify_fd, error)
        if flusher == ffi.NULL:
            raise os_error(error[0], "start the journal flusher")
        self._flusher = flusher
        lib.jn_flusher_set_durable(flusher, self._durable_seq)

    def _on_notify(self) -> None:
        """The flusher finished a sync (runs on the event loop)."""
        try:
            os.eventfd_read(self._notify_fd)
        except BlockingIOError:
            pass  # already drained by an earlier callback
        self._release_waiters()

    def _current_failure(self) -> JournalError | None:
        if self._failure is None and self._flusher != ffi.NULL:
            code = lib.jn_flusher_error(self._flusher)
            if code:
                self._failure = JournalIOError(f"msync failed: {os.strerror(code)}", code)
        return self._failure

    def _release_waiters(self) -> None:
        """Resolve waiters whose records are durable (runs on the event loop)."""
        durable = self.durable_seq
        failure = self._current_failure()
        for _ in range(len(self._waiters)):
            seq, future = self._waiters[0]
            if seq > durable and failure is None:
                break
            self._waiters.popleft()
            if future.done():
                continue  # cancelled by its caller
            if seq <= durable:
                future.set_result(None)
            else:
                assert failure is not None
                future.set_exception(failure)
        if not self._waiters and self._flusher != ffi.NULL:
            lib.jn_flusher_want_notify(self._flusher, 0)

    @contextlib.contextmanager
    def _flusher_excluded(self) -> Iterator[None]:
        """Keep the flusher out while segments are swapped (it may be mid-sync)."""
        flusher = self._flusher
        if flusher == ffi.NULL:
            yield
            return
        lib.jn_flusher_lock(flusher)  # the GIL is released while this waits
        try:
            yield
        finally:
            lib.jn_flusher_unlock(flusher)

    def _sync_current(self) -> None:
        assert self._current is not None
        self._sync_segment(self._current)
        if self._failure is not None:
            raise self._failure

    def _sync_segment(self, segment: MappedSegment) -> None:
        """msync a segment; on failure poison the writer (no retry after a failed sync)."""
        code = lib.jn_sync(segment.base, segment.size, self._sync_result)
        if code < 0:
            failure = os_error(-code, f"msync {segment.path.name}")
            if not isinstance(failure, JournalIOError):
                failure = JournalIOError(str(failure), -code)
            self._failure = failure
            self._w.failed = 1
            raise failure
        if self._sync_result.seq > self._durable_seq:
            self._durable_seq = self._sync_result.seq
        if self._flusher != ffi.NULL:
            lib.jn_flusher_set_durable(self._flusher, self._durable_seq)  # we hold its lock

    # -------------------------------------------------------------- rotation

    def _rotate(self) -> None:
        """Move to a new segment; the chain and seq continue in its header (F5, F6)."""
        if self._failure is not None:
            raise self._failure
        segment = self._take_prepared()
        with self._flusher_excluded():
            old = self._current
            assert old is not None
            first_seq = self._w.next_seq
            prev_hash = ffi.buffer(self._w.last_hash, HASH_SIZE)[:]
            try:
                if self._level is not Durability.NONE:
                    # The old segment is complete on disk before the new one
                    # exists, so a crash never leaves a torn non-last segment.
                    self._sync_segment(old)
                self._install(segment, first_seq, prev_hash)
            except BaseException:
                segment.discard()
                raise
            lib.jn_segment_seal(old.base)
            self._attach(segment, HEADER_SIZE, first_seq, prev_hash)
            old.close()
        with self._prepare_cond:
            self._prepare_error = None  # space was found: let the preparer try again
            self._prepare_cond.notify_all()  # the preparer starts on the next one

    def _install(self, segment: MappedSegment, first_seq: int, prev_hash: bytes) -> None:
        """Write the header, then rename the prepared file to its segment name."""
        node = self._node_id.encode("ascii")
        code = lib.jn_segment_init(segment.base, segment.size, first_seq, time.time_ns(),
                                   self._stream_id, node, len(node), self._epoch, prev_hash)
        assert code == lib.JN_OK, f"jn_segment_init returned {code}"
        if self._level is not Durability.NONE:
            error = lib.jn_msync(segment.base, segment.size, 0, HEADER_SIZE)
            if error:
                raise os_error(error, f"msync header of {segment.path.name}")
        target = self._dir / segment_name(first_seq)
        try:
            os.rename(segment.path, target)
            if self._level is not Durability.NONE:
                fsync_directory(self._dir)
        except OSError as error:
            raise os_error(error.errno or 5, f"install {target.name}") from error
        segment.path = target

    def _take_prepared(self) -> MappedSegment:
        """The next segment: the preparer's if ready, else allocated now."""
        deadline = time.monotonic() + _PREPARE_WAIT_SECONDS
        with self._prepare_cond:
            while self._preparing and time.monotonic() < deadline:
                self._prepare_cond.wait(0.1)
            segment, self._prepared = self._prepared, None
        if segment is None:
            segment = self._allocate_segment()
        return segment

    def _allocate_segment(self) -> MappedSegment:
        with self._allocate_lock:
            if self._max_bytes is not None:
                used = stream_bytes(self._dir)
                if used + self._segment_bytes > self._max_bytes:
                    raise JournalFull(
                        f"size cap reached: {used} of {self._max_bytes} bytes in use, "
                        f"a new segment needs {self._segment_bytes}; release shipped segments"
                    )
            return MappedSegment.create_temporary(self._dir, self._segment_bytes, prefault=self._prefault)

    def _prepare_loop(self) -> None:
        # Runs until close(); prepares one segment ahead, waits otherwise.
        while True:
            with self._prepare_cond:
                while not self._stopping and (
                    self._prepared is not None or self._prepare_error is not None
                ):
                    self._prepare_cond.wait(_IDLE_WAIT_SECONDS)
                if self._stopping:
                    return
                self._preparing = True
            segment: MappedSegment | None = None
            error: JournalError | None = None
            try:
                segment = self._allocate_segment()
            except JournalError as failure:
                error = failure  # rotation retries synchronously and reports it
            with self._prepare_cond:
                self._preparing = False
                if self._stopping and segment is not None:
                    segment.discard()
                    segment = None
                self._prepared = segment
                self._prepare_error = error
                self._prepare_cond.notify_all()

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=f"{name}-{self._node_id}-{self._stream_id}",
                                  daemon=True)
        thread.start()
        self._threads.append(thread)

    # ------------------------------------------------------------- retention

    def release_through(self, seq: int, older_than_seconds: float) -> list[Path]:
        """Delete segments shipped through `seq` and sealed longer ago than the period.

        See journal.release_segments; the current segment is never deleted.
        """
        from journal._reader import release_segments

        return release_segments(self._dir, seq, older_than_seconds)

    # ----------------------------------------------------------------- state

    @property
    def path(self) -> Path:
        return self._dir

    @property
    def durability(self) -> Durability:
        return self._level

    @property
    def epoch(self) -> bytes:
        return self._epoch

    @property
    def next_seq(self) -> int:
        return int(self._w.next_seq)

    @property
    def head(self) -> tuple[int, bytes]:
        """(seq, chain_hash) of the last record appended."""
        return int(self._w.next_seq) - 1, ffi.buffer(self._w.last_hash, HASH_SIZE)[:]

    def c_writer(self) -> object:
        """The jn_writer* (for benchmarks that call the C loop entry point)."""
        return self._w

    # ----------------------------------------------------------------- close

    def close(self) -> None:
        """Stop the helpers, make everything durable, unmap, release the lock."""
        if self._closed:
            return
        self._closed = True
        _LIVE_WRITERS.discard(self)
        self._stopping = True
        with self._prepare_cond:
            self._prepare_cond.notify_all()
        for thread in self._threads:
            thread.join(_JOIN_SECONDS)
        flusher, self._flusher = self._flusher, ffi.NULL
        if flusher != ffi.NULL:
            self._durable_seq = max(self._durable_seq, lib.jn_flusher_durable(flusher))
            code = lib.jn_flusher_error(flusher)
            if code and self._failure is None:
                self._failure = JournalIOError(f"msync failed: {os.strerror(code)}", code)
            lib.jn_flusher_stop(flusher)  # joins the C thread
        if self._current is not None and self._failure is None and self._w.base != ffi.NULL:
            try:
                # Twice: the second sync makes the first one's synced_end durable.
                self._sync_segment(self._current)
                self._sync_segment(self._current)
            except JournalIOError:
                pass  # recorded in _failure; waiters receive it
        self._close_waiters()
        self._release_resources()

    def _close_waiters(self) -> None:
        """Resolve the remaining waiters and unhook the eventfd from the loop."""
        loop, fd = self._loop, self._notify_fd
        self._notify_fd = -1
        if loop is None:
            if fd >= 0:
                os.close(fd)
            return

        def finish() -> None:
            self._release_waiters()
            loop.remove_reader(fd)
            os.close(fd)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            finish()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(finish)
        else:
            os.close(fd)

    def _release_resources(self) -> None:
        self._w.base = ffi.NULL
        if self._current is not None:
            self._current.close()
            self._current = None
        with self._prepare_cond:
            if self._prepared is not None:
                self._prepared.discard()
                self._prepared = None
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
