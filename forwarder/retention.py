"""Journal retention that cannot hide deletion (issue 13, journal/FORMAT.md F18).

A task of the forwarder. Every RELEASE_INTERVAL_SECONDS, for each stream, the
oldest segments that are shipped (PostgreSQL's checkpoint is past them) and
sealed longer than journal_retention_seconds ago are released only if a
*witnessed* checkpoint covers their last record: a checkpoint in
log_checkpoints (signed by the node, checked against the shipped tree) with
cosignatures in log_cosignatures from at least retention_witness_quorum() of
the configured witnesses (0: the node's own checkpoint suffices; weaker, see
docs/operations.md). Until one does, nothing is deleted: the wait shows as
symphony_forwarder_retention_waiting_segments and a warning in the log.

Every release is recorded, in this order:
1. an entry in the stream directory's RELEASES file, fsync'd (the journal's
   append_release): range, last leaf hash, last chain hash, the tree's
   frontier at the range's end, an inclusion proof of the last leaf in the
   covering checkpoint, and that checkpoint verbatim with its cosignatures;
2. the same in PostgreSQL (log_releases);
3. only then are the segments deleted.

A crash between 1 and 3 leaves a recorded release whose segments (some or
all) are still there: `symphony verify journal` accepts that copy, and the
next round finishes it (2 again, idempotent, then 3). The reverse order could
leave segments gone with no record, which the verifier must call a deletion.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

import journal
from forwarder.config import ForwarderConfig
from forwarder.publisher import read_tiles
from forwarder.store import TRANSIENT_ERRORS
from symphony.db import queries
from symphony.tlog import merkle, tiles

log = logging.getLogger("forwarder.retention")
QUERIES = queries.load("forwarder", "retention.sql")
RELEASE_INTERVAL_SECONDS = 1.0  # retention is looked at this often
WAITING_LOG_SECONDS = 60.0  # a stream waiting for a witness is logged at most this often
RELEASES_TAIL_BYTES = 1 << 20  # entries recorded but not yet deleted are always the newest few
RETRIED: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, journal.JournalError)


@dataclass(frozen=True)
class Covering:
    """The newest witnessed checkpoint of a stream epoch covering a range."""

    size: int
    root: bytes
    note: str  # the node's signed note followed by the cosignature lines

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Covering:
        note = row["note"] if row["note"].endswith("\n") else row["note"] + "\n"
        return cls(int(row["tree_size"]), bytes(row["root"]), note + "".join(row["lines"]))


@dataclass
class RetentionStats:
    """For /metrics, per stream."""

    waiting_segments: dict[int, int] = field(default_factory=dict)  # releasable but not yet witnessed
    released_segments: dict[int, int] = field(default_factory=dict)  # deleted by this process
    releases: dict[int, int] = field(default_factory=dict)  # release records written by this process


class Retainer:
    """Releases shipped, witnessed segments of the streams `streams()` lists."""

    def __init__(self, pool: asyncpg.Pool, settings: ForwarderConfig, stopping: asyncio.Event,
                 streams: Callable[[], list[tuple[int, Path, int]]]) -> None:
        self.pool = pool
        self.settings = settings
        self.node_id = settings.node_id
        self.stopping = stopping
        self.streams = streams  # (stream_id, directory, shipped seq) of the streams being shipped
        self.timeout = settings.statement_timeout_seconds
        self.quorum = settings.retention_witness_quorum()
        self.witness_names = [verifier.name for _, verifier in settings.witness_verifiers()]
        self.stats = RetentionStats()
        self.waiting_logged_at: dict[int, float] = {}

    async def run(self) -> None:
        while not self.stopping.is_set():
            for stream_id, path, shipped_seq in self.streams():
                if self.stopping.is_set():
                    break
                try:
                    await self.retain(stream_id, path, shipped_seq)
                except RETRIED as exc:
                    # The database is unavailable, or the journal not readable
                    # (being created, or its segments changing under us): nothing
                    # was deleted that is not recorded; the next round tries again.
                    log.warning("retention round failed; retried next round",
                                extra={"stream_id": stream_id, "error": f"{type(exc).__name__}: {exc}"})
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=RELEASE_INTERVAL_SECONDS)
            except asyncio.TimeoutError:
                continue

    async def retain(self, stream_id: int, path: Path, shipped_seq: int) -> list[Path]:
        """One round for one stream; returns the segment files deleted."""
        headers = journal.Reader(path).segments()
        if len(headers) < 2 or shipped_seq < 1:
            self.stats.waiting_segments[stream_id] = 0
            return []
        epoch = headers[0].epoch
        recorded = journal.read_releases(path, tail_bytes=RELEASES_TAIL_BYTES).for_epoch(epoch)  # the newest entries
        if recorded and recorded[-1].last_seq >= headers[0].first_seq:
            return await self._finish(stream_id, path, [r for r in recorded if r.last_seq >= headers[0].first_seq])
        plan = journal.releasable_segments(path, shipped_seq, self.settings.journal_retention_seconds)
        if not plan:
            self.stats.waiting_segments[stream_id] = 0
            return []
        async with self.pool.acquire(timeout=self.timeout) as conn:
            row = await conn.fetchrow(QUERIES["witnessed_checkpoint"], self.node_id, stream_id, epoch, plan[0][1],
                                      self.witness_names, self.quorum, timeout=self.timeout)
        if row is None:
            self._waiting(stream_id, plan, "retention waits for a witnessed checkpoint: shipped segments are kept")
            return []
        covering = Covering.from_row(row)
        covered = [segment for segment in plan if segment[1] <= covering.size]
        assert covered, "the query asked for a checkpoint covering the first segment"
        release = await self._describe(stream_id, path, epoch, covered[0][0], covered[-1][1], covering)
        if release is None:
            self._waiting(stream_id, plan, "retention cannot prove the release from the tree in PostgreSQL "
                                           "(tiles missing, or the journal's record differs): segments kept")
            return []
        self.stats.waiting_segments[stream_id] = len(plan) - len(covered)
        journal.append_release(path, release)
        self.stats.releases[stream_id] = self.stats.releases.get(stream_id, 0) + 1
        return await self._finish(stream_id, path, [release])

    async def _finish(self, stream_id: int, path: Path, pending: list[journal.Release]) -> list[Path]:
        """Copy recorded releases to PostgreSQL, then delete their segments."""
        try:
            async with self.pool.acquire(timeout=self.timeout) as conn, conn.transaction():
                for r in pending:
                    size = int(r.checkpoint.split("\n", 2)[1])
                    await conn.execute(QUERIES["insert_release"], r.node_id, r.stream_id, r.epoch, r.first_seq,
                                       r.last_seq, r.last_leaf_hash, r.last_chain_hash, b"".join(r.frontier),
                                       b"".join(r.inclusion_proof), size, r.checkpoint,
                                       _timestamp(r.released_at_unix_ns), timeout=self.timeout)
        except asyncpg.IntegrityConstraintViolationError as exc:
            # The checkpoint the file names is not in log_checkpoints (a database
            # restored to before it): keep the segments until an operator looks.
            log.error("retention: a recorded release cannot be copied to log_releases; segments kept",
                      extra={"stream_id": stream_id, "first_seq": pending[0].first_seq,
                             "last_seq": pending[-1].last_seq, "error": f"{type(exc).__name__}: {exc}"})
            return []
        removed = journal.release_segments(path, pending[-1].last_seq, 0.0)
        if removed:
            self.stats.released_segments[stream_id] = self.stats.released_segments.get(stream_id, 0) + len(removed)
            log.info("journal segments released under a witnessed checkpoint",
                     extra={"stream_id": stream_id, "path": str(path), "first_seq": pending[0].first_seq,
                            "last_seq": pending[-1].last_seq, "segments": [p.name for p in removed]})
        return removed

    async def _describe(self, stream_id: int, path: Path, epoch: bytes, first_seq: int, last_seq: int,
                        covering: Covering) -> journal.Release | None:
        """The release entry: the last record's hashes from the journal, the
        frontier and the inclusion proof from the tiles, each checked against
        the covering checkpoint before anything is recorded."""
        last = _record_at(path, last_seq)
        if last is None:
            return None
        leaf = merkle.leaf_hash(last.canonical)

        def needs(read: merkle.NodeReader) -> object:
            return merkle.frontier_hashes(read, last_seq), merkle.inclusion_proof(read, last_seq - 1, covering.size)

        fetched = await read_tiles(self.pool, self.node_id, stream_id, epoch, self.timeout, needs)
        try:
            read = tiles.TileReader(fetched)
            frontier = merkle.frontier_hashes(read, last_seq)
            path_hashes = merkle.inclusion_proof(read, last_seq - 1, covering.size)
            merkle.verify_inclusion(leaf, last_seq - 1, covering.size, path_hashes, covering.root)
        except (tiles.TileError, merkle.ProofError) as exc:
            log.debug("retention: no proof for the release", extra={
                "stream_id": stream_id, "seq": last_seq, "error": f"{type(exc).__name__}: {exc}"})
            return None
        return journal.Release(node_id=self.node_id, stream_id=stream_id, epoch=epoch, first_seq=first_seq,
                               last_seq=last_seq, last_leaf_hash=leaf, last_chain_hash=last.chain_hash,
                               frontier=frontier, inclusion_proof=path_hashes, checkpoint=covering.note,
                               released_at_unix_ns=time.time_ns())

    def _waiting(self, stream_id: int, plan: list[tuple[int, int]], why: str) -> None:
        """Releasable segments are kept: counted for /metrics, logged at most once a minute per stream."""
        self.stats.waiting_segments[stream_id] = len(plan)
        now = time.monotonic()
        if now - self.waiting_logged_at.get(stream_id, -WAITING_LOG_SECONDS) >= WAITING_LOG_SECONDS:
            self.waiting_logged_at[stream_id] = now
            log.warning(why, extra={"stream_id": stream_id, "segments": len(plan), "through_seq": plan[-1][1],
                                    "witnesses_required": self.quorum})


def _record_at(path: Path, seq: int) -> journal.Record | None:
    scan = journal.Reader(path).records(from_seq=seq)
    try:
        record = next(scan, None)
    finally:
        getattr(scan, "close")()
    return record if record is not None and record.seq == seq else None


def _timestamp(unix_ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix_ns / 1e9, tz=dt.timezone.utc)
