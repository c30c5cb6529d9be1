"""The worker's side of the journal: one stream, typed records, refusals as reasons.

`Attestor` owns this worker's `journal.Writer` (one stream per worker process,
so no cross-process lock on the hot path). It encodes record bodies
(symphony.attestation), turns every journal error into `AttestationRefused`
with a short reason the 503 answer names, and remembers when it last wrote so
the heartbeat task writes HEARTBEAT only when the stream is idle.

Hook for the NDJSON mirror (a later issue): callables in `observers` are
called with (seq, record type, attestation id, body) after each append.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import journal
from symphony import attestation as att
from symphony.attestation import RecordType

Observer = Callable[[int, RecordType, int, att.Body], None]


class AttestationRefused(Exception):
    """The journal did not take a record; `reason` goes into the 503 answer."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _reason(exc: Exception) -> str:
    if isinstance(exc, journal.JournalFull):
        return "journal_full"
    if isinstance(exc, journal.JournalIOError):
        return "journal_io_error"
    return "journal_error"


def now_us() -> int:
    return time.time_ns() // 1000


class Attestor:
    def __init__(self, writer: journal.Writer, *, node_id: str, stream_id: int) -> None:
        self.writer = writer
        self.node_id = node_id
        self.stream_id = stream_id
        self.observers: list[Observer] = []
        self.last_append_monotonic = time.monotonic()
        self.writable = True

    @classmethod
    def open(cls, journal_root: Path, *, node_id: str, stream_id: int, durability: str,
             segment_bytes: int = 0) -> Attestor:
        stream_dir = journal_root / node_id / str(stream_id)
        stream_dir.mkdir(parents=True, exist_ok=True)
        options = {"segment_bytes": segment_bytes} if segment_bytes else {}
        writer = journal.Writer(stream_dir, node_id=node_id, stream_id=stream_id, durability=durability, **options)
        attestor = cls(writer, node_id=node_id, stream_id=stream_id)
        attestor._write_genesis_if_new()
        return attestor

    def _write_genesis_if_new(self) -> None:
        """A new stream starts with GENESIS carrying a random epoch (invariant 3)."""
        if self.writer.last_seq != 0:
            return
        body = att.GenesisBody(version=att.BODY_VERSION, epoch=os.urandom(16), node_id=self.node_id,
                               stream_id=self.stream_id, created_at_us=now_us())
        self.append(RecordType.GENESIS, body, 0)

    def append(self, record_type: RecordType, body: att.Body, attestation_id: int) -> int:
        """Append without waiting for durability; returns the record's seq."""
        try:
            seq, _ = self.writer.append(record_type, att.encode(body), attestation_id)
        except journal.JournalError as exc:
            self.writable = False
            raise AttestationRefused(_reason(exc), str(exc)) from None
        self._appended(seq, record_type, attestation_id, body)
        return seq

    async def append_durable(self, record_type: RecordType, body: att.Body, attestation_id: int) -> int:
        """Append and wait until durable at the configured level (invariant 1)."""
        try:
            seq, _ = await self.writer.append_durable(record_type, att.encode(body), attestation_id)
        except journal.JournalError as exc:
            self.writable = False
            raise AttestationRefused(_reason(exc), str(exc)) from None
        self._appended(seq, record_type, attestation_id, body)
        return seq

    def _appended(self, seq: int, record_type: RecordType, attestation_id: int, body: att.Body) -> None:
        assert seq >= 1, seq
        self.writable = True
        self.last_append_monotonic = time.monotonic()
        for observer in self.observers:
            observer(seq, record_type, attestation_id, body)

    def idle_seconds(self) -> float:
        return time.monotonic() - self.last_append_monotonic

    def heartbeat(self) -> int:
        return self.append(RecordType.HEARTBEAT, att.HeartbeatBody(version=att.BODY_VERSION, at_us=now_us()), 0)

    def dropped(self, window_start_us: int, window_end_us: int, counts: dict[str, int]) -> int:
        body = att.DroppedBody(version=att.BODY_VERSION, window_start_us=window_start_us,
                               window_end_us=window_end_us, counts=counts)
        return self.append(RecordType.DROPPED, body, 0)

    async def close(self) -> None:
        """Flush what was appended and release the stream."""
        try:
            await self.writer.flush()
        finally:
            self.writer.close()
