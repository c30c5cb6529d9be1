"""Group commit of a journal Writer: durability waits and syncs.

At level "batch" the flusher, a C thread (journal_core.c), msyncs the current
segment whenever records are pending and signals an eventfd the asyncio loop
watches; the loop then releases the waiters whose records are durable. It is
in C because a Python thread would need the GIL to run, and a busy appending
thread hands the GIL over only every switch interval (5 ms): group-commit
latency would be bounded by that, not by the disk. At level "always" each
append syncs before it returns. A failed sync poisons the writer: no retry
after a failed msync.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator

from journal._errors import JournalError, JournalIOError, os_error
from journal._files import MappedSegment
from journal._format import Durability
from journal._journal import ffi, lib
from journal._writer_state import WriterState


class GroupCommit(WriterState):
    """Durability of appended records (a layer of journal.Writer)."""

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
