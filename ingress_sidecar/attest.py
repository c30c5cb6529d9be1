"""The worker's side of the journal: one stream, typed records, refusals as reasons.

`Attestor` owns this worker's `journal.Writer` (one stream per worker process,
so no cross-process lock on the hot path). It encodes record bodies
(symphony.attestation), turns every journal error into `AttestationRefused`
with a short reason the 503 answer names, and remembers when it last wrote so
the heartbeat task writes HEARTBEAT only when the stream is idle. The journal
writes the stream's GENESIS record itself when it creates a stream.

No OUTCOME-less INGRESS from a full journal: an INGRESS is appended only
together with a reservation of room for its own OUTCOME and for the OUTCOMEs
of every request still open on this stream. The journal raises JournalFull
only when it needs a new segment, and the reservation makes sure that segment
exists (or refuses the INGRESS) before the INGRESS is written.

Observers (the NDJSON mirror, ingress_sidecar/mirror.py): callables in
`observers` are called after each append with (seq, record type, attestation
id, encoded body, chain hash); they must be cheap and must not raise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import journal
from symphony import attestation as att
from symphony.attestation import RecordType
from symphony.checkpoints import CheckpointSigner, Signed

Observer = Callable[[int, int, int, bytes, bytes], None]

# The largest OUTCOME body the sidecar writes: every field at its bound.
OUTCOME_BODY_BYTES_MAX = len(att.encode(att.OutcomeBody(
    version=att.BODY_VERSION, ingress_seq=2**63 - 1, completed_at_us=2**63 - 1, status=65535,
    disposition="upstream_error", latency_us=2**63 - 1, reason="x" * att.MAX_TEXT)))

OUTCOME_RECORD_BYTES = journal.record_size(OUTCOME_BODY_BYTES_MAX)
# A CHECKPOINT record at its largest: 64 frontier hashes and a note of a few
# hundred bytes (origin, size, root, one Ed25519 signature line), bounded here.
CHECKPOINT_NOTE_BYTES_MAX = 1024
CHECKPOINT_RECORD_BYTES = journal.record_size(8 + 1 + 64 * 32 + 4 + CHECKPOINT_NOTE_BYTES_MAX)


class AttestationRefused(Exception):
    """The journal did not take a record; `reason` goes into the 503 answer."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _refusal(exc: Exception) -> AttestationRefused:
    if isinstance(exc, journal.JournalFull):
        reason = "journal_full"
    elif isinstance(exc, journal.JournalIOError):
        reason = "journal_io_error"
    else:
        reason = "journal_error"
    return AttestationRefused(reason, str(exc) or type(exc).__name__)


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
        self.open_requests = 0  # INGRESS appended whose OUTCOME is not yet written
        self.signer: CheckpointSigner | None = None  # cuts checkpoints when set (docs/verifying.md)
        self.last_checkpoint: Signed | None = None
        self._checkpoint_segment: Path | None = None  # the segment the last checkpoint was cut in

    @classmethod
    def open(cls, journal_root: Path, *, node_id: str, stream_id: int, durability: str,
             segment_bytes: int, bytes_max: int, flush_interval_us: int) -> Attestor:
        stream_dir = journal_root / node_id / str(stream_id)
        writer = journal.Writer(stream_dir, node_id=node_id, stream_id=stream_id, durability=durability,
                                flush_interval_us=flush_interval_us,
                                segment_bytes=segment_bytes or journal.DEFAULT_SEGMENT_BYTES,
                                max_bytes=bytes_max or None)
        return cls(writer, node_id=node_id, stream_id=stream_id)

    def append(self, record_type: RecordType, body: att.Body, attestation_id: int) -> int:
        """Append a record that opens nothing (HEARTBEAT, DROPPED); returns its seq.

        It reserves room for the OUTCOMEs of the open requests too, so it can
        never take the space they were promised.
        """
        assert record_type not in (RecordType.INGRESS, RecordType.OUTCOME), record_type
        return self._append(record_type, att.encode(body), attestation_id, self.open_requests)

    def append_ingress(self, body: att.IngressBody, attestation_id: int) -> int:
        """Append an INGRESS with room reserved for its OUTCOME and those of all open requests.

        On success the caller owns one open request and must end it with
        `append_outcome` (whatever happens to the request).
        """
        seq = self._append(RecordType.INGRESS, att.encode(body), attestation_id, self.open_requests + 1)
        self.open_requests += 1
        return seq

    def append_outcome(self, body: att.OutcomeBody, attestation_id: int) -> int:
        """The OUTCOME of an INGRESS appended with `append_ingress` (its room is reserved)."""
        assert self.open_requests > 0, "OUTCOME without an open INGRESS"
        self.open_requests -= 1
        return self._append(RecordType.OUTCOME, att.encode(body), attestation_id, 0)

    def _append(self, record_type: RecordType, encoded: bytes, attestation_id: int, outcomes_reserved: int) -> int:
        try:
            if outcomes_reserved:
                # Room for this record and the OUTCOMEs promised to every open
                # request, or JournalFull now, before anything is written.
                self.writer.reserve(journal.record_size(len(encoded)) + outcomes_reserved * OUTCOME_RECORD_BYTES)
            # Lazy: only an INGRESS is waited for (wait_durable asks for its
            # group commit); an OUTCOME, HEARTBEAT or DROPPED rides along with
            # the next one, so it never costs a sync a request then queues behind.
            seq, chain_hash = self.writer.append(record_type, encoded, attestation_id, lazy=True)
        except (journal.JournalError, OSError) as exc:
            self.writable = False
            raise _refusal(exc) from None
        except ValueError as exc:  # more open requests than one segment holds OUTCOMEs for
            raise AttestationRefused("journal_busy", str(exc)) from None
        self._appended(seq, record_type, attestation_id, encoded, chain_hash)
        return seq

    async def wait_durable(self, seq: int) -> None:
        """Wait until `seq` is durable at the configured level (invariant 1)."""
        try:
            await self.writer.wait_durable(seq)
        except (journal.JournalError, OSError) as exc:
            self.writable = False
            raise _refusal(exc) from None

    def _appended(self, seq: int, record_type: RecordType, attestation_id: int, encoded: bytes,
                  chain_hash: bytes) -> None:
        assert seq >= 1, seq
        self.writable = True
        self.last_append_monotonic = time.monotonic()
        for observer in self.observers:
            observer(seq, record_type, attestation_id, encoded, chain_hash)

    def idle_seconds(self) -> float:
        return time.monotonic() - self.last_append_monotonic

    def heartbeat(self) -> int:
        return self.append(RecordType.HEARTBEAT, att.HeartbeatBody(version=att.BODY_VERSION, at_us=now_us()), 0)

    def dropped(self, window_start_us: int, window_end_us: int, counts: dict[str, int]) -> int:
        body = att.DroppedBody(version=att.BODY_VERSION, window_start_us=window_start_us,
                               window_end_us=window_end_us, counts=counts)
        return self.append(RecordType.DROPPED, body, 0)

    def checkpoint_due(self) -> bool:
        """The tree grew since the last CHECKPOINT by more than that record itself."""
        size, last = self.writer.tree_size, self.writer.last_checkpoint_size
        return self.signer is not None and size is not None and (last is None or size > last + 1)

    def rotated_since_checkpoint(self) -> bool:
        return self.writer.current_segment != self._checkpoint_segment

    def checkpoint(self, *, publish: bool = True) -> Signed | None:
        """Cut a checkpoint of the stream epoch's tree: sign it, journal it as
        a CHECKPOINT record (F17), publish it (unless `publish` is False: the
        worker's checkpoint task publishes in a thread, since the atomic
        replace with its fsyncs takes milliseconds the event loop should not
        wait). None when there is nothing new (or no signer, or the tree is
        unknown)."""
        if not self.checkpoint_due():
            return None
        assert self.signer is not None
        signer, signed = self.signer, None

        def sign(size: int, root: bytes) -> bytes:
            nonlocal signed
            signed = signer.sign(self.stream_id, self.writer.epoch, size, root)
            note = signed.note.encode()
            assert len(note) <= CHECKPOINT_NOTE_BYTES_MAX, len(note)
            return note

        try:
            # Room for this record and every OUTCOME still owed, as for any record.
            self.writer.reserve(CHECKPOINT_RECORD_BYTES + self.open_requests * OUTCOME_RECORD_BYTES)
            cut = self.writer.checkpoint(sign)
        except (journal.JournalError, OSError) as exc:
            self.writable = False
            raise _refusal(exc) from None
        if cut is None or signed is None:
            return None
        self._checkpoint_segment = self.writer.current_segment
        self._appended(cut.seq, RecordType.CHECKPOINT, 0, cut.body, cut.chain_hash)
        if publish:
            signer.publish(signed)
        self.last_checkpoint = signed
        return signed

    def close(self) -> None:
        """Cut a last checkpoint, make everything appended durable, release the stream."""
        try:
            self.checkpoint()
        except AttestationRefused:
            pass  # the journal cannot take it; the records themselves are durable below
        self.writer.close()
