"""The relayer's SQL against real PostgreSQL 18, in process (no HTTP).

Goal: claims are leased, batched and fenced; expired leases are reclaimed in
bounded numbers and past the budget become dead letters with one incident; the
trigger records every transition with the worker as actor; a redrive keeps the
outbox id (so the rail key). Method: drive OutboxStore and an in-process
Relayer with the no-op rail, then read payment_outbox, outbox_events and
repair_incidents.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import asyncpg
import msgspec
import pytest

from relayer import adapters
from relayer.adapters import Kind, Outcome, rail_key
from relayer.config import RailConfig, RelayerConfig
from relayer.store import Completion, OutboxStore, redrive
from relayer.worker import Relayer
from tests.relayer.conftest import add_payments, statuses, wait_until


def _settings(**overrides: object) -> RelayerConfig:
    base = {"rails": {"fast": {"kind": "noop", "concurrency": 500}}, "poll_interval_seconds": 0.05,
            "lease_seconds": 20.0, "backoff_base_seconds": 0.01, "backoff_max_seconds": 0.02,
            "admin_port": 0}
    base.update(overrides)
    return msgspec.convert(base, RelayerConfig)


def test_rail_key_is_sha256_of_the_uuid_bytes() -> None:
    outbox_id = uuid.UUID("0190a6f4-1234-7abc-8def-0123456789ab")
    assert rail_key(outbox_id) == hashlib.sha256(bytes.fromhex("0190a6f412347abc8def0123456789ab")).hexdigest()
    assert rail_key(outbox_id) != hashlib.sha256(str(outbox_id).encode()).hexdigest()


async def test_rail_key_matches_postgres(db: asyncpg.Connection) -> None:
    ids = await add_payments(db, 3, rail="fast")
    for outbox_id in ids:
        in_sql = await db.fetchval("SELECT encode(sha256(uuid_send($1::uuid)), 'hex')", outbox_id)
        assert in_sql == rail_key(outbox_id)


async def test_noop_relayer_completes_everything_with_actor(db: asyncpg.Connection, pool, database_url: str) -> None:
    ids = await add_payments(db, 600, rail="fast")
    settings = _settings(batch_size=250)
    store = OutboxStore(pool, "worker-t1")
    relayer = Relayer(settings, store, {"fast": adapters.build("fast", settings.rails["fast"])},
                      database_url=database_url)
    stop = asyncio.Event()
    task = asyncio.create_task(relayer.run(stop))
    try:
        await wait_until(lambda: _count(db, "SUCCESS"), what="600 SUCCESS", timeout=60)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    assert await statuses(db) == {"SUCCESS": len(ids)}
    events = await db.fetch("SELECT old_status::text, new_status::text, actor FROM outbox_events ORDER BY event_id")
    transitions = [(e["old_status"], e["new_status"]) for e in events]
    assert transitions.count((None, "PENDING")) == 600
    assert transitions.count(("PENDING", "IN_FLIGHT")) == 600
    assert transitions.count(("IN_FLIGHT", "SUCCESS")) == 600
    assert {e["actor"] for e in events if e["old_status"] is not None} == {"worker-t1"}
    assert await db.fetchval("SELECT count(*) FROM payment_outbox WHERE completed_at IS NULL") == 0


async def _count(db: asyncpg.Connection, status: str) -> bool:
    return await db.fetchval("SELECT count(*) = (SELECT count(*) FROM payment_outbox) FROM payment_outbox "
                             "WHERE status = $1::outbox_status", status)


async def _leases_expired(db: asyncpg.Connection) -> None:
    """Wait (bounded) until every IN_FLIGHT lease has expired by the database's clock."""
    await wait_until(lambda: db.fetchval("SELECT bool_and(lease_expires_at < clock_timestamp()) "
                                         "FROM payment_outbox WHERE status = 'IN_FLIGHT'"),
                     what="the 0.2 s leases to expire")


async def test_claims_are_fenced_and_expired_leases_reclaimed_in_bounds(db: asyncpg.Connection, pool) -> None:
    """Goal: claims are exclusive, an expired lease is reclaimed (bounded per
    cycle) and the old holder's late outcome is fenced off; an expired last
    attempt dead-letters with an incident (invariant 7). Method: two stores
    on one pool, leases of 0.2 s, waiting for them to expire by PostgreSQL's
    clock (which decides reclaiming) rather than sleeping."""
    await add_payments(db, 5, rail="fast", max_attempts=2)
    first = OutboxStore(pool, "w-first")
    second = OutboxStore(pool, "w-second")
    claimed = await first.claim_batch({"fast": 10}, lease_seconds=0.2)
    assert len(claimed) == 5 and all(r.attempt == 1 and r.old_status == "PENDING" for r in claimed)
    assert await second.claim_batch({"fast": 10}, lease_seconds=5) == []
    await _leases_expired(db)
    reclaimed = await second.reclaim_expired(limit=3)  # bounded per cycle
    assert len(reclaimed) == 3
    assert {r["new_status"] for r in reclaimed} == {"RECOVERING"}
    reclaimed += await second.reclaim_expired(limit=3)
    assert len(reclaimed) == 5
    # The first worker's late outcomes are fenced off: its lease is gone.
    late = [Completion(r.id, r.attempt, "SUCCESS", "HTTP_201", None, "x", 0.0, False) for r in claimed]
    assert (await first.complete_batch(late))[0] == 0
    again = await second.claim_batch({"fast": 10}, lease_seconds=0.2)
    assert len(again) == 5 and all(r.attempt == 2 and r.last_attempt_ambiguous for r in again)
    await _leases_expired(db)
    # The expired attempt was the last one: dead letters, one CRITICAL incident each.
    dead = await second.reclaim_expired(limit=100)
    assert {r["new_status"] for r in dead} == {"FAILED"}
    incidents = await db.fetch("SELECT kind, dedup_key, severity FROM repair_incidents")
    assert sorted(i["dedup_key"] for i in incidents) == sorted(str(r.id) for r in claimed)
    assert {(i["kind"], i["severity"]) for i in incidents} == {("DEAD_LETTER", "CRITICAL")}
    actors = await db.fetch("SELECT DISTINCT actor FROM outbox_events WHERE new_status = 'RECOVERING'")
    assert [a["actor"] for a in actors] == ["w-second"]


async def test_budget_exhaustion_dead_letters_and_redrive_keeps_the_key(db: asyncpg.Connection, pool) -> None:
    (outbox_id,) = await add_payments(db, 1, rail="fast", max_attempts=2)
    settings = _settings()
    store = OutboxStore(pool, "w-budget")
    relayer = Relayer(settings, store, {"fast": adapters.build("fast", settings.rails["fast"])})
    for attempt in (1, 2):
        await db.execute("UPDATE payment_outbox SET next_attempt_at = now() WHERE id = $1", outbox_id)
        (row,) = await store.claim_batch({"fast": 1}, lease_seconds=5)
        assert row.attempt == attempt
        completion = relayer.completion_for(row, Outcome(Kind.TRANSIENT, "HTTP_503", "down"))
        assert completion.status == ("RECOVERING" if attempt == 1 else "FAILED")
        assert (await store.complete_batch([completion]))[0] == 1
    incident = await db.fetchrow("SELECT * FROM repair_incidents WHERE dedup_key = $1", str(outbox_id))
    assert incident["kind"] == "DEAD_LETTER" and incident["severity"] == "HIGH"
    queue = await db.fetch("SELECT item_kind FROM manual_intervention_queue")
    assert sorted(q["item_kind"] for q in queue) == ["DEAD_LETTER", "INCIDENT"]
    async with pool.acquire() as conn:
        result = await redrive(conn, outbox_id, actor="operator:alice", note="rail fixed", extra_attempts=3)
    assert result["max_attempts"] == 5
    event = await db.fetchrow("SELECT * FROM outbox_events WHERE outbox_id = $1 ORDER BY event_id DESC LIMIT 1",
                              outbox_id)
    assert (event["old_status"], event["new_status"], event["actor"]) == ("FAILED", "RECOVERING", "operator:alice")
    assert "rail fixed" in event["detail"]
    resolved = await db.fetchrow("SELECT resolution, resolved_by FROM repair_incidents WHERE dedup_key = $1",
                                 str(outbox_id))
    assert tuple(resolved) == ("REDRIVEN", "operator:alice")
    (row,) = await store.claim_batch({"fast": 1}, lease_seconds=5)
    assert row.id == outbox_id and row.attempt == 3  # same id: same rail key


async def test_release_unstarted_restores_previous_status(db: asyncpg.Connection, pool) -> None:
    await add_payments(db, 3, rail="fast")
    store = OutboxStore(pool, "w-release")
    rows = await store.claim_batch({"fast": 3}, lease_seconds=5)
    assert await store.release_unstarted(rows) == 3
    assert await statuses(db) == {"PENDING": 3}
    assert await db.fetchval("SELECT max(attempt_count) FROM payment_outbox") == 0


def test_config_refuses_a_lease_shorter_than_the_rail_timeout() -> None:
    with pytest.raises(msgspec.ValidationError, match="lease_seconds"):
        msgspec.convert({"rails": {"r": {"kind": "swiftpay", "url": "http://127.0.0.1:1", "timeout_seconds": 30}},
                         "lease_seconds": 20}, RelayerConfig)
    RailConfig(kind="noop")
