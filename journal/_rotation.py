"""Rotation of a journal Writer: the next segment, prepared ahead, installed in turn.

The preparer, a Python thread, allocates and pre-faults the next segment
ahead of the writer, so rotation only renames a ready file (no first-touch
stalls). Rotation syncs the old segment before the new one exists, writes the
new header (the chain and seq continue in it, F5, F6) and renames it into
place. Blocking calls (msync, fallocate, pre-faulting) run with the GIL
released (cffi releases it around every call).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from journal._errors import JournalError, JournalFull, os_error
from journal._files import MappedSegment, fsync_directory, stream_bytes
from journal._format import HASH_SIZE, HEADER_SIZE, Durability, segment_name
from journal._group_commit import GroupCommit
from journal._journal import ffi, lib

_IDLE_WAIT_SECONDS = 0.5        # an idle preparer re-checks at least this often
_PREPARE_WAIT_SECONDS = 60.0    # bound on waiting for the preparer at rotation


class Rotation(GroupCommit):
    """Segments after the first (a layer of journal.Writer)."""

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

    def _keep_next_segment(self) -> None:
        """Allocate the next segment now (unless the preparer has one): JournalFull here, not mid-group."""
        with self._prepare_cond:
            ready = self._prepared is not None
        if not ready:
            segment = self._take_prepared()  # raises JournalFull before anything is written
            with self._prepare_cond:
                self._prepared = segment
