"""The database side of shipping (forwarder/store.py) on a real PostgreSQL 18.

Method: ship in-memory chains (tests/forwarder/records.py) through `Store.ship`
and check rows, checkpoint and incidents after each of the cases the
continuity rule distinguishes: first contact, continuation, a batch the
database already holds, a gap, a break, and a record with no partition yet.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from forwarder import rows
from forwarder.store import Halted, Shipped, Stale, Store
from symphony import db as symphony_db
from tests.forwarder import records as fake

NODE = "node-a"


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    pool = await symphony_db.create_pool(database_url, min_size=1, max_size=2)
    try:
        yield Store(pool, NODE, timeout_seconds=10)
    finally:
        await pool.close()


def _rows(stream_id: int, chain: list[fake.FakeRecord]) -> list[tuple[object, ...]]:
    produced, error = rows.to_rows(NODE, stream_id, chain, time.time_ns() // 1000)
    assert error is None
    return produced


async def _seqs(db: asyncpg.Connection, stream_id: int) -> list[int]:
    found = await db.fetch("SELECT stream_seq FROM ingress_attestations WHERE node_id = $1 AND stream_id = $2 "
                           "ORDER BY stream_seq", NODE, stream_id)
    return [row["stream_seq"] for row in found]


async def test_first_contact_then_continuation(store: Store, db: asyncpg.Connection) -> None:
    epoch = b"E" * 16
    chain = fake.stream(NODE, 0, 20, epoch=epoch)
    first = await store.ship(0, chain[:8], _rows(0, chain[:8]))
    assert isinstance(first, Shipped) and first.checkpoint.last_seq == 8
    second = await store.ship(0, chain[8:], _rows(0, chain[8:]))
    assert isinstance(second, Shipped) and second.count == 12
    assert await _seqs(db, 0) == list(range(1, 21))
    checkpoint = await db.fetchrow("SELECT * FROM journal_checkpoints WHERE node_id = $1 AND stream_id = 0", NODE)
    assert checkpoint["epoch"] == epoch and checkpoint["last_seq"] == 20
    assert checkpoint["last_hash"] == chain[-1].chain_hash and checkpoint["records_shipped"] == 20
    assert checkpoint["last_record_at"] is not None and checkpoint["halted_at"] is None
    stored = await db.fetch("SELECT chain_hash, canonical FROM ingress_attestations ORDER BY stream_seq")
    assert [bytes(r["chain_hash"]) for r in stored] == [r.chain_hash for r in chain]
    assert [bytes(r["canonical"]) for r in stored] == [r.canonical for r in chain]


async def test_batch_the_database_already_holds_is_stale_not_an_incident(store: Store, db: asyncpg.Connection) -> None:
    chain = fake.stream(NODE, 1, 10)
    await store.ship(1, chain[:6], _rows(1, chain[:6]))
    again = await store.ship(1, chain[3:], _rows(1, chain[3:]))
    assert isinstance(again, Stale) and again.checkpoint.last_seq == 6
    assert await _seqs(db, 1) == list(range(1, 7))
    assert await db.fetchval("SELECT count(*) FROM repair_incidents") == 0


async def test_batch_past_the_checkpoint_is_stale_not_an_incident(store: Store, db: asyncpg.Connection) -> None:
    """A batch that starts past the checkpoint means the database lost commits
    (or the checkpoint moved back): nothing is written and the shipper
    re-reads the journal from the checkpoint; only the journal can prove a gap."""
    chain = fake.stream(NODE, 2, 10)
    await store.ship(2, chain[:4], _rows(2, chain[:4]))
    result = await store.ship(2, chain[5:], _rows(2, chain[5:]))
    assert isinstance(result, Stale) and result.checkpoint is not None and result.checkpoint.last_seq == 4
    assert await db.fetchval("SELECT count(*) FROM repair_incidents") == 0
    assert isinstance(await store.ship(2, chain[4:], _rows(2, chain[4:])), Shipped)
    assert await _seqs(db, 2) == list(range(1, 11))


async def test_checkpoint_moved_back_under_existing_rows_is_an_incident(store: Store, db: asyncpg.Connection) -> None:
    chain = fake.stream(NODE, 3, 10)
    await store.ship(3, chain, _rows(3, chain))
    await db.execute("UPDATE journal_checkpoints SET last_seq = 5, last_hash = $1 WHERE stream_id = 3",
                     chain[4].chain_hash)
    result = await store.ship(3, chain[5:], _rows(3, chain[5:]))
    assert isinstance(result, Halted)
    assert await db.fetchval("SELECT kind FROM repair_incidents WHERE stream_id = 3") == "CHAIN_BREAK"
    assert await _seqs(db, 3) == list(range(1, 11))


async def test_altered_checkpoint_hash_is_a_chain_break(store: Store, db: asyncpg.Connection) -> None:
    chain = fake.stream(NODE, 4, 10)
    await store.ship(4, chain[:5], _rows(4, chain[:5]))
    await db.execute("UPDATE journal_checkpoints SET last_hash = $1 WHERE stream_id = 4", b"\x01" * 32)
    result = await store.ship(4, chain[5:], _rows(4, chain[5:]))
    assert isinstance(result, Halted)
    incident = await db.fetchrow("SELECT kind, evidence FROM repair_incidents")
    assert incident["kind"] == "CHAIN_BREAK"
    evidence = json.loads(incident["evidence"])
    assert evidence["seq"] == 6 and evidence["expected"] == ("01" * 32) and evidence["found"] == chain[4].chain_hash.hex()
    halted = await db.fetchrow("SELECT halted_at, halt_reason, last_seq FROM journal_checkpoints WHERE stream_id = 4")
    assert halted["halted_at"] is not None and "CHAIN_BREAK" in halted["halt_reason"] and halted["last_seq"] == 5


async def test_first_contact_not_at_seq_one_is_stale(store: Store, db: asyncpg.Connection) -> None:
    chain = fake.stream(NODE, 5, 10)
    result = await store.ship(5, chain[3:], _rows(5, chain[3:]))
    assert isinstance(result, Stale) and result.checkpoint is None
    assert await _seqs(db, 5) == []


async def test_first_record_not_genesis_halts_with_placeholder(store: Store, db: asyncpg.Connection) -> None:
    rogue = fake.make(1, fake.RecordType.INGRESS, 1, fake.ingress_body(1), fake.ZERO_HASH)
    result = await store.ship(5, [rogue], _rows(5, [rogue]))
    assert isinstance(result, Halted)
    assert await db.fetchval("SELECT kind FROM repair_incidents") == "CHAIN_BREAK"
    row = await db.fetchrow("SELECT last_seq, halted_at FROM journal_checkpoints WHERE stream_id = 5")
    assert row["last_seq"] == 0 and row["halted_at"] is not None
    assert await _seqs(db, 5) == []


async def test_sound_prefix_ships_then_the_break_halts(store: Store, db: asyncpg.Connection) -> None:
    chain = fake.stream(NODE, 6, 10)
    chain[7] = fake.altered(chain[7], fake.ingress_body(4242))
    sound, brk = rows.first_break(chain, 0, rows.GENESIS_PREV_HASH)
    assert sound == 7 and brk is not None
    result = await store.ship(6, chain[:sound], _rows(6, chain[:sound]), then_halt=brk)
    assert isinstance(result, Halted) and result.shipped is not None and result.shipped.last_seq == 7
    assert await _seqs(db, 6) == list(range(1, 8))
    assert await db.fetchval("SELECT (evidence->>'seq')::int FROM repair_incidents WHERE kind = 'CHAIN_BREAK'") == 8


async def test_missing_partition_is_created_on_demand(store: Store, db: asyncpg.Connection) -> None:
    old = dt.datetime(2024, 2, 29, 12, tzinfo=dt.timezone.utc)
    at_us = int(old.timestamp() * 1_000_000)
    chain = fake.stream(NODE, 7, 5, at_us=at_us)
    assert await db.fetchval("SELECT to_regclass('ingress_attestations_p20240229')") is None
    result = await store.ship(7, chain, _rows(7, chain))
    assert isinstance(result, Shipped)
    assert await db.fetchval("SELECT to_regclass('ingress_attestations_p20240229')") is not None
    assert await db.fetchval("SELECT count(*) FROM ingress_attestations_p20240229") == 4


async def test_repeated_incident_is_one_open_row(store: Store, db: asyncpg.Connection) -> None:
    chain = fake.stream(NODE, 8, 6)
    brk = rows.Break("CHAIN_BREAK", 3, "a", "b", "test")
    await store.halt(8, brk)
    await store.halt(8, brk)
    assert await db.fetchval("SELECT count(*) FROM repair_incidents") == 1
    assert isinstance(await store.ship(8, chain, _rows(8, chain)), Halted)
