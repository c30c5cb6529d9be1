"""outbox_events written per statement (migration 0021) keep the per-row semantics.

Method: multi-row INSERTs and UPDATEs on a fresh migrated database (real
PostgreSQL 18); each test says which events it expects before it reads them.
The statement-level triggers must give exactly what the schema v1 per-row
trigger gave: one event per row whose status changed, none otherwise, with the
actor, attempt, response code and detail of the new row.
"""

from __future__ import annotations

import uuid

import asyncpg

from tests.relayer.conftest import add_payments


async def _events(db: asyncpg.Connection, ids: list[uuid.UUID]) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT outbox_id, old_status, new_status, attempt, actor, response_code, detail FROM outbox_events "
        "WHERE outbox_id = ANY($1::uuid[]) ORDER BY event_id", ids)


async def test_multi_row_statements_record_one_event_per_changed_row(db: asyncpg.Connection) -> None:
    ids = await add_payments(db, 50, rail="swiftpay")
    inserted = await _events(db, ids)
    assert len(inserted) == 50
    assert {(e["old_status"], e["new_status"], e["attempt"]) for e in inserted} == {(None, "PENDING", 0)}
    # A statement that changes nothing first (0 rows), as a reclaim often does:
    # the next, large statement must still be recorded completely.
    await db.execute("UPDATE payment_outbox SET status = 'FAILED' WHERE false")
    claimed, untouched = ids[:30], ids[30:]
    async with db.transaction():
        await db.execute("SELECT set_config('symphony.actor', 'relayer-7', true)")
        await db.execute(
            """UPDATE payment_outbox SET status = 'IN_FLIGHT', lease_owner = 'relayer-7',
                   lease_expires_at = now() + interval '30 seconds', attempt_count = attempt_count + 1
               WHERE id = ANY($1::uuid[])""", claimed)
    # One statement: 10 rows change status, 40 rows only get a new rail_reference.
    async with db.transaction():
        await db.execute("SELECT set_config('symphony.actor', 'relayer-7', true)")
        await db.execute(
            """UPDATE payment_outbox
               SET rail_reference = 'ref',
                   status = CASE WHEN id = ANY($1::uuid[]) THEN 'RECOVERING'::outbox_status ELSE status END,
                   lease_owner = CASE WHEN id = ANY($1::uuid[]) THEN NULL ELSE lease_owner END,
                   lease_expires_at = CASE WHEN id = ANY($1::uuid[]) THEN NULL ELSE lease_expires_at END,
                   last_response_code = CASE WHEN id = ANY($1::uuid[]) THEN '503' ELSE last_response_code END,
                   last_error = CASE WHEN id = ANY($1::uuid[]) THEN 'rail down' ELSE last_error END
               WHERE id = ANY($2::uuid[])""", claimed[:10], ids)
    events = await _events(db, ids)
    claims = [e for e in events if e["new_status"] == "IN_FLIGHT"]
    retries = [e for e in events if e["new_status"] == "RECOVERING"]
    assert len(events) == 50 + 30 + 10
    assert {e["outbox_id"] for e in claims} == set(claimed)
    assert all(e["old_status"] == "PENDING" and e["actor"] == "relayer-7" and e["attempt"] == 1 for e in claims)
    assert {e["outbox_id"] for e in retries} == set(claimed[:10])
    assert all(e["old_status"] == "IN_FLIGHT" and e["response_code"] == "503" and e["detail"] == "rail down"
               for e in retries)
    assert not any(e["outbox_id"] in untouched and e["new_status"] != "PENDING" for e in events)


async def test_actor_falls_back_to_lease_owner_then_current_user(db: asyncpg.Connection) -> None:
    ids = await add_payments(db, 2, rail="swiftpay")
    await db.execute(
        """UPDATE payment_outbox SET status = 'IN_FLIGHT', lease_owner = 'relayer-9',
               lease_expires_at = now() + interval '30 seconds', attempt_count = 1 WHERE id = $1""", ids[0])
    await db.execute(
        """UPDATE payment_outbox SET status = 'SUCCESS', lease_owner = NULL, lease_expires_at = NULL,
               completed_at = now(), last_response_code = '201', last_error = 'ignored' WHERE id = $1""", ids[0])
    events = await _events(db, ids[:1])
    user = await db.fetchval("SELECT current_user")
    assert [(e["new_status"], e["actor"]) for e in events] == [
        ("PENDING", user), ("IN_FLIGHT", "relayer-9"), ("SUCCESS", user)]
    # Detail is kept for FAILED and RECOVERING only.
    assert events[2]["response_code"] == "201" and events[2]["detail"] is None


async def test_updated_at_moves_unless_the_statement_sets_it(db: asyncpg.Connection) -> None:
    ids = await add_payments(db, 1, rail="swiftpay")
    await db.execute("UPDATE payment_outbox SET updated_at = '2000-01-01Z' WHERE id = $1", ids[0])
    assert str(await db.fetchval("SELECT updated_at FROM payment_outbox WHERE id = $1", ids[0])).startswith("2000")
    # An operator UPDATE that does not mention updated_at still moves it.
    await db.execute("UPDATE payment_outbox SET rail_reference = 'x' WHERE id = $1", ids[0])
    moved = await db.fetchval("SELECT updated_at > now() - interval '1 minute' FROM payment_outbox WHERE id = $1",
                              ids[0])
    assert moved
    # No status change, so still only the insert event.
    assert len(await _events(db, ids)) == 1
