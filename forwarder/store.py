"""The forwarder's database side: one documented method per named query.

The rule that makes shipping exactly-once lives in `ship()`: the batch's rows
are copied and the stream's checkpoint advanced in one transaction, under the
checkpoint row's lock (`SELECT … FOR UPDATE`), and only if the batch starts
exactly one past the checkpoint and chains to its hash. A forwarder killed at
any point leaves either the whole batch and the new checkpoint, or neither;
after a restart it resumes from the checkpoint and the lock makes a second
forwarder on the same stream wait, then see it is behind (`Stale`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from forwarder import rows
from forwarder.rows import Break, RecordLike
from forwarder.tree import TreeKeeper
from symphony.db import queries

QUERIES = queries.load("forwarder", "queries.sql")
TABLE = "ingress_attestations"
COLUMNS = (*rows.COLUMNS, "epoch")

# Failures that say nothing about the batch: the database is down, restarting,
# overloaded or unreachable. The batch is retried, unchanged, after a backoff.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.OperatorInterventionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InsufficientResourcesError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)


@dataclass(frozen=True)
class Checkpoint:
    """A stream's head in PostgreSQL: what has been shipped, and whether it may go on."""

    epoch: bytes
    last_seq: int
    last_hash: bytes
    last_record_at: dt.datetime | None
    halt_reason: str | None  # None while the stream ships

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Checkpoint:
        halted = row["halted_at"] is not None
        return cls(epoch=bytes(row["epoch"]), last_seq=int(row["last_seq"]), last_hash=bytes(row["last_hash"]),
                   last_record_at=row["last_record_at"],
                   halt_reason=(row["halt_reason"] or "halted") if halted else None)


@dataclass(frozen=True)
class Shipped:
    """The batch committed; the checkpoint is now `checkpoint`."""

    checkpoint: Checkpoint
    count: int


@dataclass(frozen=True)
class Stale:
    """The batch does not start right after the database's checkpoint: nothing
    was written; resume from `checkpoint` (None: nothing shipped yet).

    The database is ahead after a commit whose answer was lost or with a second
    forwarder; it is behind after it lost commits (failover to a replica that
    had not received them). Either way the journal decides: the shipper
    re-reads it from the checkpoint, and a seq the journal cannot give any more
    is a SEQ_GAP incident there.
    """

    checkpoint: Checkpoint | None


@dataclass(frozen=True)
class Halted:
    """The stream is halted (now, by this batch's break, or earlier)."""

    reason: str
    shipped: Checkpoint | None = None  # set when a sound prefix committed before the break
    count: int = 0


ShipResult = Shipped | Stale | Halted


class RefusedBatch(Exception):
    """PostgreSQL refused rows for a reason a retry cannot fix (a CHECK failed)."""


class Store:
    """Named queries over a pool; every call carries an explicit timeout."""

    def __init__(self, pool: asyncpg.Pool, node_id: str, *, timeout_seconds: float,
                 tree: TreeKeeper | None = None) -> None:
        assert timeout_seconds > 0
        self.pool = pool
        self.node_id = node_id
        self.timeout = timeout_seconds
        self.tree = tree  # the Merkle tree upkeep (forwarder/tree.py), in each batch's transaction

    async def ping(self) -> None:
        async with self.pool.acquire(timeout=self.timeout) as conn:
            await conn.fetchval(QUERIES["ping"], timeout=self.timeout)

    async def load_checkpoints(self) -> dict[int, Checkpoint]:
        async with self.pool.acquire(timeout=self.timeout) as conn:
            found = await conn.fetch(QUERIES["list_checkpoints"], self.node_id, timeout=self.timeout)
        return {int(row["stream_id"]): Checkpoint.from_row(row) for row in found}

    async def ensure_partitions(self, from_day: dt.date, to_day: dt.date) -> int:
        assert from_day <= to_day
        async with self.pool.acquire(timeout=self.timeout) as conn:
            created = await conn.fetchval(QUERIES["ensure_partitions"], from_day, to_day, timeout=self.timeout)
        return int(created)

    async def ship(
        self,
        stream_id: int,
        records: Sequence[RecordLike],
        batch_rows: Sequence[tuple[Any, ...]],
        *,
        then_halt: Break | None = None,
        then_halt_reason: str | None = None,
    ) -> ShipResult:
        """Copy `batch_rows` (one per record, chain already checked among
        themselves) and advance the checkpoint, in one transaction.

        `then_halt` (a break found right after these records) or
        `then_halt_reason` (a record that cannot be shipped) halts the stream
        in the same transaction, after the sound prefix.
        """
        assert len(records) == len(batch_rows)
        assert records or then_halt is not None or then_halt_reason is not None
        for attempt in range(2):
            try:
                return await self._ship_once(stream_id, records, batch_rows, then_halt, then_halt_reason)
            except asyncpg.CheckViolationError as exc:
                if "no partition" not in str(exc) or attempt > 0:
                    raise RefusedBatch(str(exc)) from None
                days = sorted({rows.recorded_at(row).date() for row in batch_rows})
                for day in days:
                    await self.ensure_partitions(day, day)
            except asyncpg.UniqueViolationError:
                # Rows past the checkpoint are already in the table: the
                # checkpoint was moved back (altered, or restored alone).
                first = records[0].seq
                brk = Break("CHAIN_BREAK", first, f"checkpoint at seq {first} or later",
                            f"checkpoint at seq {first - 1}",
                            "rows past the checkpoint are already in PostgreSQL: the checkpoint was moved back")
                await self.halt(stream_id, brk)
                return Halted(brk.subject(self.node_id, stream_id))
            except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                raise RefusedBatch(f"{type(exc).__name__}: {exc}") from None
        raise AssertionError("unreachable")

    async def _ship_once(
        self,
        stream_id: int,
        records: Sequence[RecordLike],
        batch_rows: Sequence[tuple[Any, ...]],
        then_halt: Break | None,
        then_halt_reason: str | None,
    ) -> ShipResult:
        async with self.pool.acquire(timeout=self.timeout) as conn, conn.transaction():
            checkpoint, brk, stale = await self._lock_or_create(conn, stream_id, records)
            if stale:
                return Stale(None)
            if brk is not None:
                reason = await self._halt(conn, stream_id, brk, created=checkpoint is not None)
                return Halted(reason)
            if checkpoint is None:
                # Nothing shipped yet and the very first record cannot be.
                assert not records
                if then_halt is not None:
                    return Halted(await self._halt(conn, stream_id, then_halt, created=False))
                assert then_halt_reason is not None
                await conn.execute(QUERIES["create_halted_checkpoint"], self.node_id, stream_id,
                                   then_halt_reason, timeout=self.timeout)
                return Halted(then_halt_reason)
            if checkpoint.halt_reason is not None:
                return Halted(checkpoint.halt_reason)
            if records and records[0].seq != checkpoint.last_seq + 1:
                return Stale(checkpoint)
            brk = _continuity_break(checkpoint, records)
            if brk is not None:
                return Halted(await self._halt(conn, stream_id, brk, created=True))
            shipped = checkpoint
            if records:
                shipped = await self._copy_and_advance(conn, stream_id, checkpoint, records, batch_rows)
            if then_halt is None and then_halt_reason is None:
                return Shipped(shipped, len(records))
            if then_halt is not None:
                reason = await self._halt(conn, stream_id, then_halt, created=True)
            else:
                assert then_halt_reason is not None
                reason = await self._halt_without_incident(conn, stream_id, then_halt_reason)
            return Halted(reason, shipped if records else None, len(records))

    async def _lock_or_create(
        self, conn: asyncpg.Connection, stream_id: int, records: Sequence[RecordLike]
    ) -> tuple[Checkpoint | None, Break | None, bool]:
        """(locked checkpoint, break, stale); on first contact the checkpoint is
        created from the GENESIS record (invariant 3: seq 1, zero hash, epoch)."""
        row = await conn.fetchrow(QUERIES["lock_checkpoint"], self.node_id, stream_id, timeout=self.timeout)
        if row is not None:
            return Checkpoint.from_row(row), None, False
        if not records:
            return None, None, False
        if records[0].seq != 1:
            return None, None, True
        brk = rows.genesis_break(records[0])
        if brk is not None:
            return None, brk, False
        epoch = rows.genesis_epoch(records[0])
        await conn.execute(QUERIES["create_checkpoint"], self.node_id, stream_id, epoch,
                           rows.GENESIS_PREV_HASH, timeout=self.timeout)
        row = await conn.fetchrow(QUERIES["lock_checkpoint"], self.node_id, stream_id, timeout=self.timeout)
        assert row is not None
        return Checkpoint.from_row(row), None, False

    async def _copy_and_advance(
        self,
        conn: asyncpg.Connection,
        stream_id: int,
        checkpoint: Checkpoint,
        records: Sequence[RecordLike],
        batch_rows: Sequence[tuple[Any, ...]],
    ) -> Checkpoint:
        # Each row carries the epoch it belongs to (a replaced stream reuses seqs 1, 2, …).
        epoch = checkpoint.epoch
        await conn.copy_records_to_table(TABLE, records=[(*row, epoch) for row in batch_rows], columns=COLUMNS,
                                         timeout=self.timeout)
        if self.tree is not None:  # tiles and checkpoints commit with the rows, or not at all
            await self.tree.extend(conn, stream_id, epoch, checkpoint.last_seq, checkpoint.last_hash,
                                   records, batch_rows)
        last = records[-1]
        last_at = rows.recorded_at(batch_rows[-1])
        status = await conn.execute(
            QUERIES["advance_checkpoint"], self.node_id, stream_id, last.seq, last.chain_hash, last_at,
            len(records), checkpoint.last_seq, timeout=self.timeout)
        # The row is locked by this transaction, so the guard cannot fail; if it
        # does, the transaction must not commit.
        assert status == "UPDATE 1", status
        return Checkpoint(checkpoint.epoch, last.seq, last.chain_hash, last_at, None)

    async def halt(self, stream_id: int, brk: Break) -> str:
        """Open the incident and halt the stream, outside any batch (resume checks)."""
        async with self.pool.acquire(timeout=self.timeout) as conn, conn.transaction():
            row = await conn.fetchrow(QUERIES["lock_checkpoint"], self.node_id, stream_id, timeout=self.timeout)
            return await self._halt(conn, stream_id, brk, created=row is not None)

    async def _halt(self, conn: asyncpg.Connection, stream_id: int, brk: Break, *, created: bool) -> str:
        reason = brk.subject(self.node_id, stream_id)
        await conn.execute(
            QUERIES["open_incident"], brk.kind, brk.dedup_key(self.node_id, stream_id), self.node_id,
            stream_id, reason, json.dumps(brk.evidence(self.node_id, stream_id)), timeout=self.timeout)
        query = "halt_stream" if created else "create_halted_checkpoint"
        await conn.execute(QUERIES[query], self.node_id, stream_id, reason, timeout=self.timeout)
        return reason

    async def _halt_without_incident(self, conn: asyncpg.Connection, stream_id: int, reason: str) -> str:
        await conn.execute(QUERIES["halt_stream"], self.node_id, stream_id, reason, timeout=self.timeout)
        return reason

    async def start_epoch(self, stream_id: int, seen: Checkpoint, epoch: bytes,
                          journal_head_seq: int) -> Checkpoint | str:
        """The stream's journal restarted with `epoch`: in one transaction, record
        where the checkpointed epoch ended (journal_epochs), open STREAM_REPLACED
        and move the checkpoint to the new epoch with nothing shipped. Returns
        the new checkpoint, or the halt reason when the stream is halted.

        `seen` is the checkpoint the shipper held; the row locked here decides
        (another forwarder may have switched already: then it is returned)."""
        assert len(epoch) == rows.EPOCH_BYTES
        async with self.pool.acquire(timeout=self.timeout) as conn, conn.transaction():
            row = await conn.fetchrow(QUERIES["lock_checkpoint"], self.node_id, stream_id, timeout=self.timeout)
            if row is None:
                return "the checkpoint of the stream is gone"
            current = Checkpoint.from_row(row)
            if current.halt_reason is not None:
                return current.halt_reason
            if current.epoch == epoch:
                return current
            head = max(journal_head_seq, current.last_seq)
            subject = (f"STREAM_REPLACED on stream {self.node_id}/{stream_id}: the journal restarted with epoch "
                       f"{epoch.hex()}; epoch {current.epoch.hex()} ended at checkpoint seq {current.last_seq} "
                       f"(journal head seen at seq {head}, {head - current.last_seq} record(s) never shipped)")
            evidence = {"node_id": self.node_id, "stream_id": stream_id, "old_epoch": current.epoch.hex(),
                        "new_epoch": epoch.hex(), "old_last_seq": current.last_seq,
                        "old_last_hash": current.last_hash.hex(), "old_journal_head_seq": head,
                        "unshipped_records": head - current.last_seq,
                        "shipper_checkpoint_seq": seen.last_seq}
            await conn.execute(QUERIES["retire_epoch"], self.node_id, stream_id, head, epoch, subject,
                               timeout=self.timeout)
            await conn.execute(
                QUERIES["open_incident"], "STREAM_REPLACED", f"{self.node_id}/{stream_id}/{current.epoch.hex()}",
                self.node_id, stream_id, subject, json.dumps(evidence), timeout=self.timeout)
            status = await conn.execute(QUERIES["start_epoch"], self.node_id, stream_id, epoch,
                                        rows.GENESIS_PREV_HASH, current.epoch, timeout=self.timeout)
            assert status == "UPDATE 1", status  # the row is locked by this transaction
            return Checkpoint(epoch, 0, rows.GENESIS_PREV_HASH, None, None)

    async def halt_refused(self, stream_id: int, reason: str) -> str:
        """Halt a stream whose rows PostgreSQL refuses (no incident kind fits; logged)."""
        async with self.pool.acquire(timeout=self.timeout) as conn, conn.transaction():
            row = await conn.fetchrow(QUERIES["lock_checkpoint"], self.node_id, stream_id, timeout=self.timeout)
            query = "halt_stream" if row is not None else "create_halted_checkpoint"
            await conn.execute(QUERIES[query], self.node_id, stream_id, reason, timeout=self.timeout)
        return reason


def _continuity_break(checkpoint: Checkpoint, records: Sequence[RecordLike]) -> Break | None:
    """A batch that starts right after the checkpoint must chain to its hash."""
    if not records:
        return None
    first = records[0]
    assert first.seq == checkpoint.last_seq + 1
    if first.prev_hash != checkpoint.last_hash:
        return Break("CHAIN_BREAK", first.seq, checkpoint.last_hash.hex(), first.prev_hash.hex(),
                     "the record does not chain to the checkpoint hash")
    return None
