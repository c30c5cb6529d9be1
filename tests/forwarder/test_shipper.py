"""The shipping loop (forwarder/stream.py, server.Forwarder) in one process.

Method: real PostgreSQL 18, journals replaced by in-memory sources that
behave like the journal Reader (finite reads, head seq, release); the on-disk
journal and real processes are exercised in test_process.py. Each test
checks the rows, the checkpoints and the incidents, never timings.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import msgspec
import pytest

from forwarder.config import ForwarderConfig
from forwarder.rows import RecordLike
from forwarder.server import Forwarder
from forwarder.store import Store
from forwarder.stream import SourceMissing
from symphony import db as symphony_db
from tests.forwarder import records as fake

NODE = "node-t"
WAIT_SECONDS = 30.0


class MemorySource:
    """A stream held in a list: what a journal Reader would return, except that
    it does not verify chain hashes, so the shipper's own check is exercised."""

    verifies_chain = False

    def __init__(self, records: list[fake.FakeRecord]) -> None:
        self.records = records
        self.released = 0
        self.closed = False

    def read(self, from_seq: int, limit: int) -> list[RecordLike]:
        if self.records and from_seq < self.records[0].seq:
            raise SourceMissing(from_seq, self.records[0].seq)
        start = max(0, from_seq - self.records[0].seq) if self.records else 0
        return list(self.records[start:start + limit])

    def head_seq(self) -> int:
        return self.records[-1].seq if self.records else 0

    def record_at(self, seq: int) -> RecordLike | None:
        if not self.records or seq < self.records[0].seq:
            return None
        found = self.read(seq, 1)
        return found[0] if found and found[0].seq == seq else None

    def epoch(self) -> bytes | None:
        return self.records[0].body[:16] if self.records and self.records[0].seq == 1 else None

    def genesis_at_us(self) -> int:
        return time.time_ns() // 1000

    def on_disk(self) -> tuple[bytes, int] | None:
        epoch = self.epoch()
        return None if epoch is None else (epoch, self.head_seq())

    def reopen(self) -> None:
        pass

    def note_shipped(self, epoch: bytes, seq: int, chain_hash: bytes) -> None:
        pass

    def release(self, shipped_seq: int) -> None:
        # Lower than before when the checkpoint moved back (Source.release).
        self.released = shipped_seq

    def close(self) -> None:
        self.closed = True


def _settings(tmp_path: Path, **overrides: object) -> ForwarderConfig:
    base = ForwarderConfig(node_id=NODE, journal_dir=str(tmp_path), batch_rows_max=50, batch_wait_ms=5,
                           poll_interval_ms=5, discovery_interval_seconds=0.05)
    return msgspec.structs.replace(base, **overrides)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    pool = await symphony_db.create_pool(database_url, min_size=1, max_size=4)
    try:
        yield Store(pool, NODE, timeout_seconds=10)
    finally:
        await pool.close()


async def _run(settings: ForwarderConfig, store: Store, sources: dict[int, MemorySource]) -> Forwarder:
    for stream_id in sources:
        (settings.node_journal_dir() / str(stream_id)).mkdir(parents=True, exist_ok=True)
    forwarder = Forwarder(settings, store, lambda stream_id, path: sources[stream_id])
    forwarder.checkpoints = await store.load_checkpoints()
    forwarder.start_new_streams()
    return forwarder


async def _until(predicate, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _shipped(db: asyncpg.Connection, stream_id: int) -> int:
    return int(await db.fetchval("SELECT coalesce(max(last_seq), 0) FROM journal_checkpoints "
                                 "WHERE node_id = $1 AND stream_id = $2", NODE, stream_id))


async def _assert_exact(db: asyncpg.Connection, stream_id: int, chain: Sequence[fake.FakeRecord]) -> None:
    found = await db.fetch("SELECT stream_seq, chain_hash FROM ingress_attestations WHERE node_id = $1 "
                           "AND stream_id = $2 ORDER BY stream_seq", NODE, stream_id)
    assert [row["stream_seq"] for row in found] == [r.seq for r in chain]
    assert [bytes(row["chain_hash"]) for row in found] == [r.chain_hash for r in chain]


async def test_streams_ship_exactly_once_and_release_after_checkpoint(
        tmp_path: Path, store: Store, db: asyncpg.Connection) -> None:
    chains = {stream_id: fake.stream(NODE, stream_id, 300) for stream_id in range(4)}
    sources = {stream_id: MemorySource(list(chain[:120])) for stream_id, chain in chains.items()}
    forwarder = await _run(_settings(tmp_path), store, sources)
    try:
        for stream_id in chains:
            await _until(lambda s=stream_id: _bigger(db, s, 119), f"stream {stream_id} first part")
        for stream_id, chain in chains.items():
            sources[stream_id].records.extend(chain[120:])  # the writer goes on
        for stream_id in chains:
            await _until(lambda s=stream_id: _bigger(db, s, 299), f"stream {stream_id} second part")
    finally:
        await forwarder.drain()
    for stream_id, chain in chains.items():
        await _assert_exact(db, stream_id, chain)
        assert sources[stream_id].released == 300
        assert forwarder.states[stream_id].lag_records() == 0
    assert await db.fetchval("SELECT count(*) FROM repair_incidents") == 0


async def _bigger(db: asyncpg.Connection, stream_id: int, seq: int) -> bool:
    return await _shipped(db, stream_id) > seq


async def test_altered_journal_record_halts_its_stream_only(
        tmp_path: Path, store: Store, db: asyncpg.Connection) -> None:
    good, bad = fake.stream(NODE, 0, 200), fake.stream(NODE, 1, 200)
    tampered = list(bad)
    tampered[149] = fake.altered(bad[149], fake.ingress_body(77))
    sources = {0: MemorySource(good), 1: MemorySource(tampered)}
    forwarder = await _run(_settings(tmp_path), store, sources)
    try:
        await _until(lambda: _bigger(db, 0, 199), "the healthy stream")
        await _until(lambda: _halted(db, 1), "the tampered stream to halt")
    finally:
        await forwarder.drain()
    await _assert_exact(db, 0, good)
    await _assert_exact(db, 1, bad[:149])
    incident = await db.fetchrow("SELECT kind, node_id, stream_id, (evidence->>'seq')::int AS seq FROM repair_incidents")
    assert dict(incident) == {"kind": "CHAIN_BREAK", "node_id": NODE, "stream_id": 1, "seq": 150}
    assert forwarder.states[1].halted and not forwarder.states[0].halted
    assert sources[1].released == 149


async def _halted(db: asyncpg.Connection, stream_id: int) -> bool:
    return bool(await db.fetchval("SELECT halted_at IS NOT NULL FROM journal_checkpoints "
                                  "WHERE node_id = $1 AND stream_id = $2", NODE, stream_id))


async def test_checkpoint_altered_while_stopped_is_caught_on_resume(
        tmp_path: Path, store: Store, db: asyncpg.Connection) -> None:
    chain = fake.stream(NODE, 0, 100)
    sources = {0: MemorySource(list(chain[:60]))}
    forwarder = await _run(_settings(tmp_path), store, sources)
    await _until(lambda: _bigger(db, 0, 59), "the first part")
    await forwarder.drain()
    await db.execute("UPDATE journal_checkpoints SET last_hash = $1 WHERE stream_id = 0", b"\x02" * 32)
    sources = {0: MemorySource(list(chain))}
    forwarder = await _run(_settings(tmp_path), store, sources)
    try:
        await _until(lambda: _halted(db, 0), "the stream to halt")
    finally:
        await forwarder.drain()
    incident = await db.fetchrow("SELECT kind, (evidence->>'seq')::int AS seq FROM repair_incidents")
    assert (incident["kind"], incident["seq"]) == ("CHAIN_BREAK", 60)
    await _assert_exact(db, 0, chain[:60])


async def test_replaced_journal_is_caught_by_its_epoch(
        tmp_path: Path, store: Store, db: asyncpg.Connection) -> None:
    """A journal replaced while the forwarder was down (new epoch, seq 1 again) is
    seen at start-up: STREAM_REPLACED, the old epoch's end kept in
    journal_epochs, and the new epoch shipped as a new stream (rows tagged with
    their epoch, nothing mixed)."""
    chain = fake.stream(NODE, 0, 30)
    sources = {0: MemorySource(list(chain))}
    forwarder = await _run(_settings(tmp_path), store, sources)
    await _until(lambda: _bigger(db, 0, 29), "the stream")
    await forwarder.drain()
    wiped = fake.stream(NODE, 0, 40)  # a new journal: new epoch, restarts at seq 1
    forwarder = await _run(_settings(tmp_path), store, {0: MemorySource(wiped)})
    try:
        await _until(lambda: _bigger(db, 0, 39), "the new epoch to ship")
    finally:
        await forwarder.drain()
    assert await db.fetchval("SELECT kind FROM repair_incidents") == "STREAM_REPLACED"
    ended = await db.fetchrow("SELECT epoch, last_seq, last_hash, successor_epoch FROM journal_epochs")
    assert (bytes(ended["epoch"]), ended["last_seq"], bytes(ended["last_hash"])) == (
        chain[0].body[:16], 30, chain[-1].chain_hash)
    assert bytes(ended["successor_epoch"]) == wiped[0].body[:16]
    found = await db.fetch("SELECT stream_seq, chain_hash FROM ingress_attestations WHERE node_id = $1 "
                           "AND stream_id = 0 AND epoch = $2 ORDER BY stream_seq", NODE, wiped[0].body[:16])
    assert [bytes(row["chain_hash"]) for row in found] == [r.chain_hash for r in wiped]
    assert await db.fetchval("SELECT count(*) FROM ingress_attestations WHERE epoch = $1", chain[0].body[:16]) == 30


async def test_truncated_journal_tail_is_a_gap(tmp_path: Path, store: Store, db: asyncpg.Connection) -> None:
    chain = fake.stream(NODE, 0, 50)
    forwarder = await _run(_settings(tmp_path), store, {0: MemorySource(list(chain))})
    await _until(lambda: _bigger(db, 0, 49), "the stream")
    await forwarder.drain()
    forwarder = await _run(_settings(tmp_path), store, {0: MemorySource(list(chain[:40]))})
    try:
        await _until(lambda: _halted(db, 0), "the stream to halt")
    finally:
        await forwarder.drain()
    row = await db.fetchrow("SELECT kind, evidence->>'found' AS found FROM repair_incidents")
    assert row["kind"] == "STREAM_REWOUND" and "40" in row["found"]


async def test_records_gone_from_the_journal_before_shipping_are_a_gap(
        tmp_path: Path, store: Store, db: asyncpg.Connection) -> None:
    """A journal whose oldest record is past the checkpoint lost records that
    PostgreSQL never got: SEQ_GAP with expected and found seqs, stream halted."""
    chain = fake.stream(NODE, 0, 80)
    forwarder = await _run(_settings(tmp_path), store, {0: MemorySource(list(chain[:30]))})
    await _until(lambda: _bigger(db, 0, 29), "the first part")
    await forwarder.drain()
    forwarder = await _run(_settings(tmp_path), store, {0: MemorySource(list(chain[50:]))})
    try:
        await _until(lambda: _halted(db, 0), "the stream to halt")
    finally:
        await forwarder.drain()
    row = await db.fetchrow("SELECT kind, evidence->>'expected' AS expected, evidence->>'found' AS found "
                            "FROM repair_incidents")
    assert (row["kind"], row["expected"], row["found"]) == ("SEQ_GAP", "seq 31", "seq 51")
