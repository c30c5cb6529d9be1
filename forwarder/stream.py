"""One stream's shipping loop: read a batch, check it, ship it, repeat.

The loop owns no state the database does not also hold: it starts from the
stream's checkpoint in PostgreSQL, and after any doubt (a lost commit answer,
a second forwarder) it reloads the checkpoint and resumes from there. It batches
at its own pace (up to `batch_rows_max` records or `batch_wait_ms`), retries a
batch unchanged with capped exponential backoff and full jitter (symphony.backoff) while
PostgreSQL is unreachable, and stops for good only when the stream is halted by
a CHAIN_BREAK, SEQ_GAP or STREAM_REWOUND incident.

While it runs it also watches the journal on disk (every WATCH_SECONDS, and at
once when a read fails): a new epoch in the stream's directory (the journal
wiped and a writer started again) opens a STREAM_REPLACED incident, records
where the old epoch ended (journal_epochs) and ships the new epoch from seq 1;
a head behind the checkpoint (the journal replaced by an older copy, or a
tail lost) opens STREAM_REWOUND and halts the stream.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from forwarder import rows
from forwarder.config import ForwarderConfig
from forwarder.rows import Break, RecordLike, UndecodableRecord
from forwarder.store import TRANSIENT_ERRORS, Checkpoint, Halted, RefusedBatch, Shipped, Stale, Store
from symphony.backoff import Backoff
from symphony.lifecycle import Watchdog

log = logging.getLogger("forwarder.stream")
WATCH_SECONDS = 0.25  # how often the journal's epoch and head are compared with the checkpoint
REWOUND_SIGHTINGS = 2  # a head behind the checkpoint must be seen this many times in a row


class SourceCorrupt(Exception):
    """The journal holds an invalid record at `seq` that is not a torn tail."""

    def __init__(self, seq: int, reason: str, records: Sequence[RecordLike] = ()) -> None:
        super().__init__(f"seq {seq}: {reason}")
        self.seq = seq
        self.reason = reason
        self.records = list(records)  # the valid records read before it


class SourceMissing(Exception):
    """The journal no longer holds `seq` (released or deleted): its oldest record is `first_available`."""

    def __init__(self, seq: int, first_available: int) -> None:
        super().__init__(f"seq {seq} is not in the journal; it starts at seq {first_available}")
        self.seq = seq
        self.first_available = first_available


class Source(Protocol):
    """What the shipper needs from one journal stream (see forwarder/source.py)."""

    # True when read() returns only records whose chain hash it has verified
    # against (prev_hash, canonical); the shipper then skips its own SHA-256.
    verifies_chain: bool

    def read(self, from_seq: int, limit: int) -> list[RecordLike]:
        """Up to `limit` consecutive valid records from `from_seq`, without waiting.

        Raises SourceCorrupt carrying the valid records read before the bad one,
        SourceMissing when `from_seq` is older than the journal's oldest record."""
        ...

    def head_seq(self) -> int:
        """The newest committed seq in the journal (0 if none)."""
        ...

    def record_at(self, seq: int) -> RecordLike | None:
        """Record `seq` if the journal still holds it (raises SourceCorrupt)."""
        ...

    def epoch(self) -> bytes | None:
        """The stream's epoch from its segment headers (None before it exists)."""
        ...

    def genesis_at_us(self) -> int:
        """When the stream was created (the GENESIS record's time)."""
        ...

    def on_disk(self) -> tuple[bytes, int] | None:
        """(epoch, head seq) as the journal says right now (not the highest head
        seen); None while there is no journal. Raises SourceCorrupt."""
        ...

    def reopen(self) -> None:
        """Forget every position: the stream restarted with a new epoch."""
        ...

    def note_shipped(self, epoch: bytes, seq: int, chain_hash: bytes) -> None:
        """PostgreSQL committed the stream through `seq` (the shipped marker)."""
        ...

    def release(self, shipped_seq: int) -> None:
        """Records up to `shipped_seq` are checkpointed in PostgreSQL. It can be
        lower than in an earlier call when the checkpoint moved back."""
        ...

    def close(self) -> None: ...


@dataclass
class StreamState:
    """What /metrics reports about a stream; updated by its shipper."""

    stream_id: int
    shipped_seq: int = 0
    head_seq: int = 0
    oldest_pending_at: float | None = None  # wall clock of the oldest unshipped record
    halted: bool = False
    retrying: bool = False
    records_shipped: int = 0
    batches_shipped: int = 0
    database_errors: int = 0
    checkpoint_moved_back: int = 0  # resumes from a checkpoint below what this shipper had committed
    halt_reason: str | None = None
    updated: float = field(default_factory=time.monotonic)

    def lag_records(self) -> int:
        return max(0, self.head_seq - self.shipped_seq)

    def lag_seconds(self, now: float) -> float:
        if self.oldest_pending_at is None or self.lag_records() == 0:
            return 0.0
        return max(0.0, now - self.oldest_pending_at)


class StreamShipper:
    def __init__(self, stream_id: int, source: Source, store: Store, settings: ForwarderConfig,
                 state: StreamState, stopping: asyncio.Event, watchdog: Watchdog | None = None) -> None:
        self.stream_id = stream_id
        # This loop feeds systemd's watchdog: a batch stuck on the database stops the pings.
        self.watchdog = watchdog or Watchdog()
        self.watchdog_loop = f"stream-{stream_id}"
        self.source = source
        self.store = store
        self.settings = settings
        self.state = state
        self.stopping = stopping
        self.node_id = settings.node_id
        self.backoff = Backoff(settings.retry_delay_ms_initial / 1000, settings.retry_delay_ms_max / 1000)
        self.head: Checkpoint | None = None  # the checkpoint this loop believes in
        self._pending_break: Break | None = None  # what the journal said after the records read
        self._resume_from: Checkpoint | None = None  # where the database says to resume
        self._resume_pending = False
        self._stale_in_a_row = 0  # resumes without progress back off like failures
        self._watched_at = 0.0
        self._rewound_sightings = 0

    async def run(self, checkpoint: Checkpoint | None) -> None:
        """Ship until stopped or halted. A stop request is honoured between batches."""
        try:
            if not await self._resume(checkpoint):
                return
            while not self.stopping.is_set():
                self.watchdog.beat(self.watchdog_loop)
                if self._resume_pending:
                    checkpoint, self._resume_from, self._resume_pending = self._resume_from, None, False
                    if self._stale_in_a_row > 2 and await self._sleep(self.backoff.next_delay()):
                        return
                    if not await self._resume(checkpoint):
                        return
                batch = await self._collect()
                if not batch and self._pending_break is None:
                    continue
                if not await self._ship(batch):
                    return
        finally:
            self.watchdog.forget(self.watchdog_loop)  # halted or stopped on purpose
            self.source.close()

    # -- resume ---------------------------------------------------------------

    async def _resume(self, checkpoint: Checkpoint | None) -> bool:
        """Adopt `checkpoint` and check that the journal still agrees with it."""
        self._pending_break = None
        self.head = checkpoint
        if (checkpoint.last_seq if checkpoint else 0) < self.state.shipped_seq:
            self._note_moved_back(checkpoint)
        if checkpoint is None:
            self.state.shipped_seq = 0
            return True
        self.state.shipped_seq = checkpoint.last_seq
        if checkpoint.halt_reason is not None:
            return self._halted(checkpoint.halt_reason)
        if not await self._watch(force=True):
            return False
        if self.head is not checkpoint:
            return True  # a new epoch: nothing of it is shipped yet
        brk = self._journal_disagrees(checkpoint)
        if brk is None:
            return True
        reason = await self._retry(lambda: self.store.halt(self.stream_id, brk))
        return reason is None or self._halted(reason, brk)

    def _note_moved_back(self, checkpoint: Checkpoint | None) -> None:
        """PostgreSQL's checkpoint is behind what this shipper committed: it lost
        acknowledged commits (a crash with commits not yet durable, failover to a
        replica that had not received them) or was restored from a backup. Rows
        and checkpoint commit together, so the rows went with it: the records are
        shipped again from the checkpoint, as the journal still holds them
        (retention). Rows still present past a moved-back checkpoint are refused
        at ship time as a CHAIN_BREAK instead (the checkpoint was altered)."""
        self.state.checkpoint_moved_back += 1
        log.warning("the database checkpoint moved back; re-shipping from it",
                    extra={"stream_id": self.stream_id, "checkpoint_seq": checkpoint.last_seq if checkpoint else 0,
                           "shipped_seq": self.state.shipped_seq})

    def _journal_disagrees(self, checkpoint: Checkpoint) -> Break | None:
        """The epoch and the checkpointed record, where still in the journal, must
        be the ones PostgreSQL holds: a journal replaced, rewritten or cut behind
        the checkpoint is caught before shipping resumes (invariant 3)."""
        try:
            epoch = self.source.epoch()
            if epoch is not None and epoch != checkpoint.epoch:
                return Break("CHAIN_BREAK", 1, f"epoch {checkpoint.epoch.hex()}", f"epoch {epoch.hex()}",
                             "the journal's epoch is not the checkpointed one: journal replaced")
            found = self.source.record_at(checkpoint.last_seq) if checkpoint.last_seq else None
        except SourceCorrupt as exc:
            return Break("CHAIN_BREAK", exc.seq, "a valid record", exc.reason, "the journal is corrupt")
        except SourceMissing:
            found = None  # released after shipping: the next batch is checked against the hash
        if found is not None and found.chain_hash != checkpoint.last_hash:
            return Break("CHAIN_BREAK", checkpoint.last_seq, checkpoint.last_hash.hex(),
                         found.chain_hash.hex(),
                         "the journal record at the checkpoint differs from the checkpoint hash")
        head = self.source.head_seq()
        if 0 < head < checkpoint.last_seq:
            return Break("SEQ_GAP", head + 1, f"seq {checkpoint.last_seq} or more in the journal",
                         f"journal ends at seq {head}", "the journal is behind its checkpoint: tail cut")
        return None

    # -- watch: a replaced or rewound journal, noticed while running ------------

    async def _watch(self, *, force: bool = False) -> bool:
        """Compare the journal on disk with the checkpoint; False once halted.

        Runs at most every WATCH_SECONDS unless forced. A new epoch switches the
        stream to it (STREAM_REPLACED); a head behind the checkpoint, seen
        REWOUND_SIGHTINGS times in a row (once when forced), halts it
        (STREAM_REWOUND)."""
        now = time.monotonic()
        if self.head is None or self.head.halt_reason is not None:
            return True
        if not force and now - self._watched_at < WATCH_SECONDS:
            return True
        self._watched_at = now
        try:
            seen = self.source.on_disk()
        except SourceCorrupt:
            return True  # the reader reports it, in seq order
        if seen is None:
            return True  # no journal (wiped, or being created): wait for a writer
        epoch, head = seen
        if epoch != self.head.epoch:
            self._rewound_sightings = 0
            return await self._new_epoch(epoch)
        if not 0 < head < self.head.last_seq:
            self._rewound_sightings = 0
            return True
        self._rewound_sightings += 1
        if self._rewound_sightings < REWOUND_SIGHTINGS and not force:
            return True
        if self._checkpointed_record_present():
            self._rewound_sightings = 0
            return True  # the header lags a record already written (a writer stopped mid-commit)
        brk = Break("STREAM_REWOUND", head + 1, f"journal head at seq {self.head.last_seq} or later",
                    f"journal head at seq {head}",
                    "the journal is behind what PostgreSQL already checkpointed: replaced by an older copy "
                    "or its tail was lost")
        reason = await self._retry(lambda: self.store.halt(self.stream_id, brk))
        return reason is None or self._halted(reason, brk)

    def _checkpointed_record_present(self) -> bool:
        assert self.head is not None
        try:
            found = self.source.record_at(self.head.last_seq)
        except SourceCorrupt:
            return False
        return found is not None and found.chain_hash == self.head.last_hash

    async def _new_epoch(self, epoch: bytes) -> bool:
        """The journal restarted with `epoch`: account for the old epoch's end,
        open STREAM_REPLACED and ship the new epoch from seq 1."""
        old = self.head
        assert old is not None and old.epoch != epoch
        journal_head = max(self.state.head_seq, old.last_seq)
        result = await self._retry(lambda: self.store.start_epoch(self.stream_id, old, epoch, journal_head))
        if result is None:
            return True  # stopping: decided again at the next start
        if isinstance(result, str):
            return self._halted(result)
        log.error("journal stream replaced: its new epoch is shipped as a new stream",
                  extra={"stream_id": self.stream_id, "old_epoch": old.epoch.hex(), "new_epoch": epoch.hex(),
                         "old_checkpoint_seq": old.last_seq, "old_journal_head_seq": journal_head})
        self.source.reopen()
        self._pending_break = None
        self.head = result
        self.state.shipped_seq = result.last_seq
        self.state.head_seq = result.last_seq
        self.state.oldest_pending_at = None
        return True

    # -- collect ----------------------------------------------------------------

    async def _collect(self) -> list[RecordLike]:
        """Up to batch_rows_max records after the head, waiting at most
        batch_wait_ms once the first one is there."""
        limit = self.settings.batch_rows_max
        poll = self.settings.poll_interval_ms / 1000
        if not await self._watch():
            return []
        batch = self._read(self._next_seq(), limit)
        if self._pending_break is not None and not await self._watch(force=True):
            return []  # the failed read was a replaced or rewound journal
        if not batch:
            self._refresh_head()
            self.source.release(self.state.shipped_seq)
            if self._pending_break is None:
                await self._sleep(poll)
            return batch
        self._note_pending(batch)
        deadline = time.monotonic() + self.settings.batch_wait_ms / 1000
        while len(batch) < limit and self._pending_break is None and not self.stopping.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            await self._sleep(min(poll, remaining))
            batch.extend(self._read(batch[-1].seq + 1, limit - len(batch)))
        self._refresh_head(batch[-1].seq)
        return batch

    def _read(self, from_seq: int, limit: int) -> list[RecordLike]:
        try:
            return self.source.read(from_seq, limit)
        except SourceCorrupt as exc:
            self._pending_break = Break("CHAIN_BREAK", exc.seq, "a valid record", exc.reason,
                                        "the journal is corrupt")
            return exc.records
        except SourceMissing as exc:
            self._pending_break = Break("SEQ_GAP", exc.seq, f"seq {exc.seq}", f"seq {exc.first_available}",
                                        "records not yet in PostgreSQL are no longer in the journal")
            return []

    def _next_seq(self) -> int:
        return 1 if self.head is None else self.head.last_seq + 1

    def _refresh_head(self, seen: int = 0) -> None:
        self.state.head_seq = max(seen, self.source.head_seq(), self.state.shipped_seq)
        if self.state.head_seq <= self.state.shipped_seq:
            self.state.oldest_pending_at = None

    def _note_pending(self, batch: Sequence[RecordLike]) -> None:
        if self.state.oldest_pending_at is None:
            self.state.oldest_pending_at = time.time()

    # -- ship -------------------------------------------------------------------

    async def _ship(self, batch: list[RecordLike]) -> bool:
        """Ship `batch` (and halt after it if it ends in a break); False once halted."""
        prev_seq, prev_hash = self._head_position()
        sound, brk = rows.first_break(batch, prev_seq, prev_hash, recompute=not self.source.verifies_chain)
        if self.head is None and batch and sound > 0:
            brk_first = rows.genesis_break(batch[0])
            if brk_first is not None:
                sound, brk = 0, brk_first
        if brk is None and self._pending_break is not None and sound == len(batch):
            brk = self._pending_break
        good = batch[:sound]
        genesis_at_us = self.source.genesis_at_us() if good and good[0].seq == 1 else 0
        batch_rows, undecodable = rows.to_rows(self.node_id, self.stream_id, good, genesis_at_us)
        refused = None
        if undecodable is not None:
            good, brk = good[:len(batch_rows)], None
            refused = f"record seq {undecodable.seq} cannot be shipped: {undecodable.reason}"
        if self.head is not None and not good and brk is not None and brk.seq <= self.head.last_seq:
            brk = None  # nothing new: the checkpoint covers it
        if not good and brk is None and refused is None:
            return True
        result = await self._retry(lambda: self.store.ship(
            self.stream_id, good, batch_rows, then_halt=brk, then_halt_reason=refused))
        if result is None:
            return True  # stopping: the batch was not shipped, it will be next time
        return self._apply(result, brk)

    def _head_position(self) -> tuple[int, bytes]:
        if self.head is None:
            return 0, rows.GENESIS_PREV_HASH
        return self.head.last_seq, self.head.last_hash

    def _apply(self, result: Shipped | Stale | Halted | str, brk: Break | None) -> bool:
        if isinstance(result, Shipped):
            self._stale_in_a_row = 0
            self._advance(result.checkpoint, result.count)
            return True
        if isinstance(result, Stale):
            seq = result.checkpoint.last_seq if result.checkpoint else 0
            log.warning("the database checkpoint is not where this forwarder left it; resuming from it",
                        extra={"stream_id": self.stream_id, "checkpoint_seq": seq,
                               "expected_seq": self._head_position()[0]})
            self._resume_from = result.checkpoint
            self._resume_pending = True
            self._stale_in_a_row += 1
            return True
        if isinstance(result, Halted):
            if result.shipped is not None:
                self._advance(result.shipped, result.count)
            return self._halted(result.reason, brk)
        return self._halted(result, brk)

    def _advance(self, checkpoint: Checkpoint, count: int) -> None:
        self.head = checkpoint
        self.state.shipped_seq = checkpoint.last_seq
        self.state.records_shipped += count
        self.state.batches_shipped += 1
        self.state.oldest_pending_at = None if self.state.head_seq <= checkpoint.last_seq else time.time()
        self.source.release(checkpoint.last_seq)
        self.source.note_shipped(checkpoint.epoch, checkpoint.last_seq, checkpoint.last_hash)

    def _halted(self, reason: str, brk: Break | None = None) -> bool:
        self.state.halted = True
        self.state.halt_reason = reason
        log.error("stream halted", extra={"stream_id": self.stream_id, "reason": reason,
                                          "kind": brk.kind if brk else None})
        return False

    async def _retry(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run `call` until it succeeds; transient database failures back off.
        Returns None if a stop was requested while retrying."""
        self.backoff.reset()
        for _ in iter(int, 1):  # until success or stop: the journal holds the records meanwhile
            try:
                result = await call()
            except TRANSIENT_ERRORS as exc:
                self.state.database_errors += 1
                self.state.retrying = True
                delay = self.backoff.next_delay()
                log.warning("database unavailable; retrying the batch",
                            extra={"stream_id": self.stream_id, "error": f"{type(exc).__name__}: {exc}",
                                   "retry_in_seconds": round(delay, 3)})
                self._refresh_head()
                if await self._sleep(delay):
                    return None
                continue
            except (RefusedBatch, UndecodableRecord) as exc:
                # A retry cannot fix it: halt the stream (still retried while the database is down).
                reason = f"PostgreSQL refused the batch: {exc}"
                log.error("batch refused", extra={"stream_id": self.stream_id, "reason": reason})
                call = functools.partial(self.store.halt_refused, self.stream_id, reason)
                continue
            self.state.retrying = False
            return result
        raise AssertionError("unreachable")

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, or wake early on a stop request; True when stopping."""
        return await self.watchdog.wait(self.watchdog_loop, self.stopping, seconds)
