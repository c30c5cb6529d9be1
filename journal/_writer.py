"""The journal writer: append, reserve, retention and close, on top of its layers.

The C core does the per-record work (journal_core.c); the Python layers
decide when to rotate, when to sync and what to do on failure. One class,
`Writer`, built in layers, each in its own module:

- journal/_writer_state.py: the attributes every layer shares;
- journal/_group_commit.py: durability waits and syncs (the C flusher thread
  at level "batch", its eventfd and the asyncio waiters);
- journal/_rotation.py: the next segment, prepared ahead by a helper thread,
  and its installation at rotation;
- journal/_recovery.py: opening a stream (a new one, or the last segment
  scanned and its torn tail truncated);
- this module: appends, reservation, state, close.

Blocking calls (msync, fallocate, pre-faulting) run with the GIL released
(cffi releases it around every call).
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from itertools import accumulate
from pathlib import Path
from typing import NamedTuple

from journal._errors import JournalError, JournalIOError
from journal._files import MappedSegment, lock_stream
from journal._format import (
    HASH_SIZE,
    HEADER_SIZE,
    NODE_ID,
    STREAM_ID_MAX,
    Durability,
    RecordType,
    checkpoint_body,
    record_size,
)
from journal._journal import ffi, lib
from journal._recovery import Recovery

DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
_JOIN_SECONDS = 30.0            # bound on waiting for a helper thread to stop

# Writers of this process, so a forked child cannot append through a copy of
# a parent's writer (two writers on one stream, the lock notwithstanding).
_LIVE_WRITERS: weakref.WeakSet[Writer] = weakref.WeakSet()


def _disable_writers_after_fork() -> None:
    for writer in list(_LIVE_WRITERS):
        writer._w.base = ffi.NULL  # appends now return JN_E_CLOSED


os.register_at_fork(after_in_child=_disable_writers_after_fork)


class CheckpointCut(NamedTuple):
    """A CHECKPOINT record just appended: its seq, the tree size it covers, the
    signed note, the record body and its chain hash."""

    seq: int
    tree_size: int
    note: bytes
    body: bytes
    chain_hash: bytes


class Writer(Recovery):
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
        self.last_checkpoint_size = None  # tree size of the newest CHECKPOINT record

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

    # ---------------------------------------------------------------- tree

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

    def checkpoint(self, sign: Callable[[int, bytes], bytes]) -> CheckpointCut | None:
        """Cut a checkpoint: `sign(tree size, root)` returns the signed note for
        the tree as it stands; it is appended as a CHECKPOINT record (F17) with
        the frontier that lets a reopened writer resume the tree. None while
        the tree is unknown. The record is itself the next leaf: the
        checkpoint covers the records before it.
        """
        size = self.tree_size
        root = self.tree_root()
        if size is None or root is None:
            return None
        note = sign(size, root)
        body = checkpoint_body(size, self.tree_frontier(), note)
        seq, chain_hash = self.append(RecordType.CHECKPOINT, body, 0, lazy=True)
        assert seq == size + 1, (seq, size)
        self.last_checkpoint_size = size
        return CheckpointCut(seq, size, note, body, chain_hash)

    @property
    def current_segment(self) -> Path | None:
        """The segment file records go to now (it changes at each rotation)."""
        return self._current.path if self._current is not None else None

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

    async def append_durable(
        self, type: RecordType, body: bytes, attestation_id: int = 0
    ) -> tuple[int, bytes]:
        """Append one record and wait, without blocking the loop, until it is durable."""
        seq, chain_hash = self.append(type, body, attestation_id)
        await self.wait_durable(seq)
        return seq, chain_hash

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
