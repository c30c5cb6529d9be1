"""A journal stream as the shipper reads it, over the journal's public API.

`journal.Reader.follow_batches()` keeps its position between steps, so one
pump task per stream tails the journal, up to 1024 verified records at a time,
into a bounded buffer and the shipper takes batches from it without waiting.
Finite scans (`Reader.records`) serve the one-off checks at resume; segment
headers give the head seq, the epoch and the stream's creation time;
retention (forwarder/retention.py) frees what is shipped and witnessed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from pathlib import Path

import journal
from forwarder.rows import RecordLike
from forwarder.stream import SourceCorrupt, SourceMissing
from symphony import shipped_marker

log = logging.getLogger("forwarder.source")
HEAD_REFRESH_SECONDS = 0.25  # segment headers are read at most this often for /metrics
MARKER_INTERVAL_SECONDS = 1.0  # the shipped marker is rewritten at most this often per stream
ERROR_RETRY_SECONDS = 1.0


class JournalSource:
    """One stream directory; not thread-safe, used from the event loop only."""

    # The Reader re-checks CRC, seq and chain hash of every record it returns
    # (journal FORMAT.md, reader contract), so the shipper need not hash again.
    verifies_chain = True

    def __init__(self, path: Path, *, buffer_records_max: int, poll_seconds: float,
                 retention_seconds: float, node_id: str = "", stream_id: int = 0) -> None:
        assert buffer_records_max >= 1 and poll_seconds > 0 and retention_seconds >= 0
        self.path = path
        self.node_id = node_id
        self.stream_id = stream_id
        self.marker: tuple[bytes, int, bytes] | None = None  # (epoch, seq, hash) not yet written
        self.marker_written_at = 0.0
        self.reader = journal.Reader(path)
        self.buffer: collections.deque[journal.Record] = collections.deque()
        self.buffer_records_max = buffer_records_max
        self.poll_seconds = poll_seconds
        self.retention_seconds = retention_seconds
        self.space = asyncio.Event()
        self.pump: asyncio.Task[None] | None = None
        self.pump_next = 0  # the seq the pump's next record will carry
        self.failure: journal.JournalCorrupt | None = None
        self.missing_from = 0  # set when the pump's next seq is older than the journal's oldest
        self.head = 0
        self.head_read_at = 0.0
        self.released_through = 0

    # -- reading ------------------------------------------------------------------

    def read(self, from_seq: int, limit: int) -> list[RecordLike]:
        assert from_seq >= 1 and limit >= 1
        if self.pump is None or self._next_buffered() != from_seq:
            self._restart(from_seq)
            return []
        count = min(limit, len(self.buffer))
        out: list[RecordLike] = [self.buffer.popleft() for _ in range(count)]
        if len(self.buffer) < self.buffer_records_max:
            self.space.set()
        if not out and self.failure is not None:
            raise SourceCorrupt(self.failure.seq, self.failure.reason)
        if not out and self.missing_from:
            raise SourceMissing(self.pump_next, self.missing_from)
        return out

    def _next_buffered(self) -> int:
        return self.buffer[0].seq if self.buffer else self.pump_next

    def _restart(self, from_seq: int) -> None:
        if self.pump is not None:
            self.pump.cancel()
        self.buffer.clear()
        self.failure = None
        self.missing_from = 0
        self.pump_next = from_seq
        self.space.set()
        self.pump = asyncio.get_running_loop().create_task(self._run_pump(from_seq), name=f"pump-{self.path}")

    async def _run_pump(self, from_seq: int) -> None:
        """Tail the journal into the buffer, pausing while the buffer is full.

        The buffer holds at most buffer_records_max + 1023 records: a step of
        the Reader (up to 1024) is added whole before the pump pauses.
        """
        buffer, cap = self.buffer, self.buffer_records_max
        for _ in iter(int, 1):  # restarts the tail after a transient journal error
            try:
                # aclosing: a cancelled pump unmaps its segment now, not at GC.
                steps = self.reader.follow_batches(self.pump_next, poll_seconds=self.poll_seconds)
                async with contextlib.aclosing(steps):
                    async for records in steps:
                        assert records and records[0].seq == self.pump_next
                        buffer.extend(records)
                        self.pump_next = records[-1].seq + 1
                        if len(buffer) >= cap:
                            self.space.clear()
                            await self.space.wait()
                        else:
                            # follow_batches() does not suspend while it has a backlog:
                            # let the other streams' COPYs make progress.
                            await asyncio.sleep(0)
                return
            except journal.JournalCorrupt as exc:
                self.failure = exc  # reported once the records before it are shipped
                return
            except (journal.JournalError, OSError) as exc:
                oldest = self._oldest_seq()
                if oldest > self.pump_next:
                    self.missing_from = oldest  # released or deleted before it was shipped
                    return
                # The stream directory or a segment is not readable yet (being
                # created) or any more: try again; a real loss shows as a gap.
                log.warning("journal not readable; retrying",
                            extra={"path": str(self.path), "error": f"{type(exc).__name__}: {exc}"})
                await asyncio.sleep(ERROR_RETRY_SECONDS)

    # -- one-off checks -------------------------------------------------------------

    def record_at(self, seq: int) -> RecordLike | None:
        """The record `seq` if the journal still holds it (a finite scan)."""
        try:
            scan = self.reader.records(from_seq=seq)
            try:
                record = next(scan, None)
            finally:
                getattr(scan, "close")()  # a generator: releases its mapping now
        except journal.JournalCorrupt as exc:
            raise SourceCorrupt(exc.seq, exc.reason) from None
        except (journal.JournalError, OSError):
            return None  # released after shipping, or not created yet
        return record if record is not None and record.seq == seq else None

    def _headers(self) -> list[journal.SegmentHeader]:
        try:
            return self.reader.segments()
        except journal.JournalCorrupt as exc:
            raise SourceCorrupt(exc.seq, exc.reason) from None
        except (journal.JournalError, OSError):
            return []

    def _oldest_seq(self) -> int:
        try:
            headers = self._headers()
        except SourceCorrupt:
            return 0
        return headers[0].first_seq if headers else 0

    def epoch(self) -> bytes | None:
        headers = self._headers()
        return headers[0].epoch if headers else None

    def genesis_at_us(self) -> int:
        """When the stream was created: the time of its GENESIS record."""
        headers = self._headers()
        if headers and headers[0].first_seq == 1:
            return headers[0].created_unix_ns // 1000
        return time.time_ns() // 1000

    def on_disk(self) -> tuple[bytes, int] | None:
        """(epoch, head seq) as the segment headers say right now, not the
        highest head seen so far; None while the directory holds no segment."""
        headers = self._headers()
        if not headers:
            return None
        return headers[0].epoch, headers[-1].write_seq

    def reopen(self) -> None:
        """Forget every position in the journal: the stream has a new epoch
        (the old epoch's marker must not land in the new directory)."""
        self.marker = None
        self.close()
        self.reader = journal.Reader(self.path)
        self.buffer.clear()
        self.failure = None
        self.missing_from = 0
        self.pump_next = 0
        self.head = 0
        self.head_read_at = 0.0
        self.released_through = 0

    def head_seq(self) -> int:
        now = time.monotonic()
        if now - self.head_read_at >= HEAD_REFRESH_SECONDS:
            self.head_read_at = now
            try:
                headers = self._headers()
            except SourceCorrupt:
                headers = []
            if headers:
                self.head = max(self.head, headers[-1].write_seq)
        return max(self.head, self.pump_next - 1)

    # -- retention ----------------------------------------------------------------------

    def release(self, shipped_seq: int) -> None:
        """PostgreSQL's checkpoint is at `shipped_seq`: keep the shipped marker
        current. Segments are not deleted here: forwarder/retention.py releases
        them only under a witnessed checkpoint and records each release.

        `shipped_seq` may be lower than before: the checkpoint in PostgreSQL
        moved back (see `_checkpoint_moved_back`)."""
        if shipped_seq < self.released_through:
            self._checkpoint_moved_back(shipped_seq)
        self.released_through = shipped_seq
        now = time.monotonic()
        if self.marker is not None and now - self.marker_written_at >= MARKER_INTERVAL_SECONDS:
            self._write_marker()  # the last commit before an idle spell is recorded too

    def _checkpoint_moved_back(self, shipped_seq: int) -> None:
        # PostgreSQL lost commits it had acknowledged (crash, failover) or was
        # restored: the shipper re-ships from its checkpoint, so from now on only
        # segments wholly at or below it may go. Segments already released on the
        # strength of the lost commits cannot come back; if they held records past
        # the new checkpoint, the reader reports the hole as SEQ_GAP. Retention
        # reads the shipped seq from the shipper's state each round.
        log.warning("checkpoint moved back below the released position; retention follows it down",
                    extra={"path": str(self.path), "shipped_seq": shipped_seq,
                           "released_through": self.released_through})

    # -- the shipped marker (symphony/shipped_marker.py) ---------------------------------

    def note_shipped(self, epoch: bytes, seq: int, chain_hash: bytes) -> None:
        """PostgreSQL committed through `seq`: record it beside the journal,
        outside the database, at most once per MARKER_INTERVAL_SECONDS."""
        self.marker = (epoch, seq, chain_hash)
        if time.monotonic() - self.marker_written_at >= MARKER_INTERVAL_SECONDS:
            self._write_marker()

    def _write_marker(self) -> None:
        if self.marker is None or not self.node_id:
            return
        epoch, seq, chain_hash = self.marker
        self.marker_written_at = time.monotonic()
        try:
            shipped_marker.write(self.path, self.node_id, self.stream_id, epoch, seq, chain_hash)
        except OSError as exc:
            # An anchor for audits, not for shipping: retried with the next commit.
            log.warning("shipped marker not written", extra={"path": str(self.path),
                                                             "error": f"{type(exc).__name__}: {exc}"})
            return
        self.marker = None

    def close(self) -> None:
        self._write_marker()
        if self.pump is not None:
            self.pump.cancel()
            self.pump = None
