"""Schema v1 constraints, partitions, uuidv7 and the auditors' views.

Method: hand-built rows on a fresh migrated database (real PostgreSQL 18); each
test states the numbers it expects before it queries.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import asyncpg
import pytest

from symphony.attestation import RecordType
from tests.foundation.fixtures import add_outbox_row, add_participant, add_record, next_attestation_id, now

I, O, H = RecordType.INGRESS, RecordType.OUTCOME, RecordType.HEARTBEAT


# -- constraints -------------------------------------------------------------------


async def test_duplicate_stream_seq_is_rejected(db: asyncpg.Connection) -> None:
    at = now()
    await add_record(db, seq=1, record_type=H, at=at)
    with pytest.raises(asyncpg.UniqueViolationError):
        await add_record(db, seq=1, record_type=H, at=at)
    # Another stream, or another node, may use the same seq.
    await add_record(db, seq=1, stream=1, record_type=H, at=at)
    await add_record(db, seq=1, node="node-b", record_type=H, at=at)


async def test_attestations_are_append_only(db: asyncpg.Connection) -> None:
    await add_record(db, seq=1, record_type=H)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute("UPDATE ingress_attestations SET status = 500")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute("DELETE FROM ingress_attestations")
    assert await db.fetchval("SELECT count(*) FROM ingress_attestations") == 1


async def test_record_columns_are_checked(db: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await add_record(db, seq=0, record_type=H)
    with pytest.raises(asyncpg.CheckViolationError):
        await add_record(db, seq=1, record_type=I, disposition="vanished")


async def test_outbox_transitions_are_recorded_in_outbox_events(db: asyncpg.Connection) -> None:
    await add_participant(db, "bank-a")
    outbox_id = await add_outbox_row(db, participant="bank-a", attestation_id=next_attestation_id())
    async with db.transaction():
        await db.execute("SELECT set_config('symphony.actor', 'relayer-1', true)")
        await db.execute(
            """UPDATE payment_outbox SET status = 'IN_FLIGHT', lease_owner = 'relayer-1',
                   lease_expires_at = now() + interval '30 seconds', attempt_count = 1 WHERE id = $1""",
            outbox_id,
        )
    await db.execute(
        """UPDATE payment_outbox SET status = 'SUCCESS', lease_owner = NULL, lease_expires_at = NULL,
               completed_at = now(), last_response_code = '200' WHERE id = $1""",
        outbox_id,
    )
    # A write that does not change the status is not a transition.
    await db.execute("UPDATE payment_outbox SET rail_reference = 'r-1' WHERE id = $1", outbox_id)
    events = await db.fetch(
        "SELECT old_status, new_status, attempt, actor, response_code FROM outbox_events "
        "WHERE outbox_id = $1 ORDER BY event_id", outbox_id,
    )
    assert [(e["old_status"], e["new_status"]) for e in events] == [
        (None, "PENDING"), ("PENDING", "IN_FLIGHT"), ("IN_FLIGHT", "SUCCESS"),
    ]
    assert events[1]["actor"] == "relayer-1"
    assert events[2]["response_code"] == "200"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await db.execute("DELETE FROM outbox_events")


async def test_lease_exists_exactly_while_in_flight(db: asyncpg.Connection) -> None:
    await add_participant(db, "bank-a")
    outbox_id = await add_outbox_row(db, participant="bank-a", attestation_id=next_attestation_id())
    with pytest.raises(asyncpg.CheckViolationError, match="outbox_lease_iff_in_flight"):
        await db.execute("UPDATE payment_outbox SET status = 'IN_FLIGHT' WHERE id = $1", outbox_id)
    with pytest.raises(asyncpg.CheckViolationError, match="outbox_completed_iff_terminal"):
        await db.execute("UPDATE payment_outbox SET status = 'SUCCESS' WHERE id = $1", outbox_id)


async def test_one_attestation_executes_at_most_one_intent(db: asyncpg.Connection) -> None:
    await add_participant(db, "bank-a")
    attestation_id = next_attestation_id()
    await add_outbox_row(db, participant="bank-a", attestation_id=attestation_id)
    second_intent = await db.fetchval(
        """INSERT INTO payment_intents (participant_id, idempotency_key, amount_minor, currency, rail,
               destination_account, attestation_id) VALUES ('bank-a', 'other', 5, 'ZMW', 'mmo', 'x', $1)
           RETURNING intent_id""",
        attestation_id,
    )
    with pytest.raises(asyncpg.UniqueViolationError, match="payment_outbox_ingress_node_id_attestation_id_key"):
        await db.execute(
            """INSERT INTO payment_outbox (intent_id, participant_id, attestation_id, ingress_node_id,
                   ingress_stream_id, ingress_seq, rail, payload)
               VALUES ($1, 'bank-a', $2, 'node-a', 0, 1, 'mmo', '{}')""",
            second_intent, attestation_id,
        )


async def test_idempotency_key_per_participant_is_unique(db: asyncpg.Connection) -> None:
    await add_participant(db, "bank-a")
    insert = """INSERT INTO idempotency_keys (participant_id, idempotency_key, request_fingerprint,
                    locked_at, attestation_id, expires_at)
                VALUES ('bank-a', 'k1', $1, now(), 1, now() + interval '1 day')"""
    await db.execute(insert, b"\x01" * 32)
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(insert, b"\x02" * 32)


async def test_open_incidents_are_deduplicated(db: asyncpg.Connection) -> None:
    insert = """INSERT INTO repair_incidents (kind, dedup_key, severity, subject)
                VALUES ('GHOST', 'node-a/0/7', 'CRITICAL', 'ghost')"""
    await db.execute(insert)
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(insert)
    await db.execute("UPDATE repair_incidents SET resolved_at = now(), resolution = 'AUTO_RESOLVED'")
    await db.execute(insert)  # the same problem may come back after it was resolved


async def test_open_incident_v1_is_the_one_rule(db: asyncpg.Connection) -> None:
    """open_incident_v1 opens, refreshes, respects an operator's closing, and
    refuses a kind no migration declared.

    Method: call it as every daemon does; read back the rows.
    """
    call = "SELECT * FROM open_incident_v1($1, 'node-a/0/7', $2, NULL, 'node-a', 0, $3, $4::jsonb)"
    first = await db.fetchrow(call, "GHOST", "HIGH", "ghost seen", '{"n": 1}')
    assert first is not None and first["opened"] is True
    again = await db.fetchrow(call, "GHOST", "CRITICAL", "ghost seen again", '{"n": 2}')
    assert again is not None and again["opened"] is False and again["incident_id"] == first["incident_id"]
    row = await db.fetchrow("SELECT severity, subject, evidence, last_seen_at >= detected_at AS moved "
                            "FROM repair_incidents WHERE incident_id = $1", first["incident_id"])
    assert row is not None
    assert (row["severity"], row["subject"], row["moved"]) == ("CRITICAL", "ghost seen again", True)
    assert '"n": 2' in row["evidence"]
    await db.execute("UPDATE repair_incidents SET resolved_at = now(), resolution = 'ACCEPTED_LOSS'")
    assert await db.fetchrow(call, "GHOST", "HIGH", "ghost", "{}") is None  # the operator's word stands
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db.fetchrow(call, "NO_SUCH_KIND", "HIGH", "x", "{}")
    await db.execute("INSERT INTO incident_kinds (kind, description) VALUES ('NEW_KIND', 'a later migration')")
    added = await db.fetchrow(call, "NEW_KIND", "LOW", "x", "{}")
    assert added is not None and added["opened"] is True


async def test_policy_change_is_notified(db: asyncpg.Connection, database_url: str) -> None:
    from symphony.db import connect

    await add_participant(db, "bank-a")
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await connect(database_url)
    try:
        await listener.add_listener("symphony_participants", lambda *a: received.put_nowait(a[3]))
        await db.execute("UPDATE participants SET policy_version = policy_version + 1 WHERE participant_id = 'bank-a'")
        assert await asyncio.wait_for(received.get(), timeout=10) == "bank-a"
    finally:
        await listener.close()


# -- partitions and ids ------------------------------------------------------------


async def test_partitions_exist_ahead_and_today_and_tomorrow_land(db: asyncpg.Connection) -> None:
    today = now().date()
    names = {r["relname"] for r in await db.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'ingress_attestations'::regclass")}
    for offset in range(-1, 8):
        day = today + dt.timedelta(days=offset)
        assert f"ingress_attestations_p{day:%Y%m%d}" in names
    midnight = dt.datetime.combine(today, dt.time(), dt.timezone.utc)
    await add_record(db, seq=1, record_type=H, at=midnight)
    await add_record(db, seq=2, record_type=H, at=midnight + dt.timedelta(days=1, hours=23, minutes=59))
    placed = await db.fetch("SELECT tableoid::regclass::text AS part FROM ingress_attestations ORDER BY stream_seq")
    assert [p["part"] for p in placed] == [
        f"ingress_attestations_p{today:%Y%m%d}",
        f"ingress_attestations_p{today + dt.timedelta(days=1):%Y%m%d}",
    ]


async def test_partition_maintainer_is_idempotent_and_bounded(db: asyncpg.Connection) -> None:
    today = now().date()
    created = await db.fetchval("SELECT ensure_attestation_partitions_v1($1, $2)", today, today + dt.timedelta(days=10))
    assert created == 3  # days 8, 9, 10; the migration made up to today + 7
    assert await db.fetchval("SELECT ensure_attestation_partitions_v1($1, $2)", today, today + dt.timedelta(days=10)) == 0
    with pytest.raises(asyncpg.RaiseError, match="refused"):
        await db.fetchval("SELECT ensure_attestation_partitions_v1($1, $2)", today, today + dt.timedelta(days=500))


async def test_outbox_ids_are_uuidv7_in_insertion_order(db: asyncpg.Connection) -> None:
    await add_participant(db, "bank-a")
    ids = [await add_outbox_row(db, participant="bank-a", attestation_id=next_attestation_id()) for _ in range(50)]
    assert all(i.version == 7 for i in ids)
    assert ids == sorted(ids)
    assert await db.fetchval("SELECT bool_and(uuid_extract_version(id) = 7) FROM payment_outbox")


# -- views ----------------------------------------------------------------------------


async def _traffic_with_known_ghosts(db: asyncpg.Connection) -> dict[str, int]:
    """bank-a: 4 executing ingress -> 2 executed, 1 rejected, 1 ghost (no outcome).
    bank-b: 3 executing ingress -> 1 executed, 1 replayed, 1 ghost (outcome says
    executed, but no outbox row exists: the sidecar's word is not proof).
    Non-executing routes and heartbeats never count."""
    for p in ("bank-a", "bank-b"):
        await add_participant(db, p)
    await add_participant(db, "bank-idle")
    seq = 0
    ghosts = {}

    async def request(participant: str, outcome: str | None, execute: bool) -> int:
        nonlocal seq
        attestation_id = next_attestation_id()
        seq += 1
        ingress_seq = seq
        await add_record(db, seq=seq, record_type=I, attestation_id=attestation_id, participant=participant,
                         route="POST /v1/payments", executes=True)
        if execute:
            await add_outbox_row(db, participant=participant, attestation_id=attestation_id, seq=ingress_seq)
        if outcome is not None:
            seq += 1
            await add_record(db, seq=seq, record_type=O, attestation_id=attestation_id, disposition=outcome,
                             status=201 if outcome == "executed" else 409)
        return ingress_seq

    await request("bank-a", "executed", True)
    await request("bank-a", "executed", True)
    await request("bank-a", "rejected", False)
    ghosts["bank-a"] = await request("bank-a", None, False)
    await request("bank-b", "executed", True)
    await request("bank-b", "replayed", False)
    ghosts["bank-b"] = await request("bank-b", "executed", False)
    seq += 1
    await add_record(db, seq=seq, record_type=I, attestation_id=next_attestation_id(), participant="bank-a",
                     route="GET /v1/payments/{id}", executes=False)
    seq += 1
    await add_record(db, seq=seq, record_type=H)
    return ghosts


async def test_attestation_gap_counts_known_ghosts(db: asyncpg.Connection) -> None:
    await _traffic_with_known_ghosts(db)
    rows = {r["participant_id"]: dict(r) for r in await db.fetch("SELECT * FROM attestation_gap")}
    assert rows["bank-a"] == {"participant_id": "bank-a", "ingress_count": 4, "executions": 2,
                              "handled": 1, "gap": 1, "status": "FAIL",
                              "unattested": 0, "pending": 0, "pending_age_seconds_max": None}
    assert rows["bank-b"] == {"participant_id": "bank-b", "ingress_count": 3, "executions": 1,
                              "handled": 1, "gap": 1, "status": "FAIL",
                              "unattested": 0, "pending": 0, "pending_age_seconds_max": None}
    assert set(rows) == {"bank-a", "bank-b"}


async def test_ghosts_view_lists_each_ghost_by_id(db: asyncpg.Connection) -> None:
    ghosts = await _traffic_with_known_ghosts(db)
    rows = await db.fetch("SELECT participant_id, stream_seq, outcome_disposition FROM attestation_ghosts ORDER BY stream_seq")
    assert [(r["participant_id"], r["stream_seq"]) for r in rows] == sorted(
        [("bank-a", ghosts["bank-a"]), ("bank-b", ghosts["bank-b"])], key=lambda x: x[1])
    assert [r["outcome_disposition"] for r in rows] == [None, "executed"]


async def test_gap_window_function_filters_by_time(db: asyncpg.Connection) -> None:
    await _traffic_with_known_ghosts(db)
    future = now() + dt.timedelta(hours=1)
    assert await db.fetch("SELECT * FROM attestation_gap_v1($1, $2)", future, future + dt.timedelta(hours=1)) == []
    rows = await db.fetch("SELECT sum(gap) AS gap FROM attestation_gap_v1($1, $2)",
                          now() - dt.timedelta(hours=1), future)
    assert rows[0]["gap"] == 2


async def test_regulator_dashboard_statuses(db: asyncpg.Connection) -> None:
    await _traffic_with_known_ghosts(db)
    await add_participant(db, "bank-c")
    attestation_id = next_attestation_id()
    await add_record(db, node="node-c", seq=1, record_type=I, attestation_id=attestation_id, participant="bank-c",
                     route="POST /v1/payments", executes=True)
    outbox_id = await add_outbox_row(db, participant="bank-c", attestation_id=attestation_id, node="node-c")
    await db.execute("""UPDATE payment_outbox SET status = 'FAILED', completed_at = now(),
                            last_error = 'rail said no' WHERE id = $1""", outbox_id)
    rows = {r["participant_id"]: r for r in await db.fetch("SELECT * FROM regulator_dashboard")}
    assert rows["bank-a"]["status"] == "CRITICAL_GAP"
    assert rows["bank-a"]["integrity_score"] == 75
    assert rows["bank-c"]["status"] == "ACTION_REQUIRED"
    assert rows["bank-c"]["dead_letters"] == 1
    assert rows["bank-idle"]["status"] == "HEALTHY"
    assert rows["bank-idle"]["integrity_score"] == 100
    queue = await db.fetch("SELECT item_kind, item_id FROM manual_intervention_queue")
    assert [(q["item_kind"], q["item_id"]) for q in queue] == [("DEAD_LETTER", str(outbox_id))]


async def test_views_are_zero_on_clean_data(db: asyncpg.Connection) -> None:
    await add_participant(db, "bank-a")
    for n in range(5):
        attestation_id = next_attestation_id()
        await add_record(db, seq=2 * n + 1, record_type=I, attestation_id=attestation_id, participant="bank-a",
                         route="POST /v1/payments", executes=True)
        await add_outbox_row(db, participant="bank-a", attestation_id=attestation_id, seq=2 * n + 1)
        await add_record(db, seq=2 * n + 2, record_type=O, attestation_id=attestation_id, disposition="executed")
    gap = await db.fetchrow("SELECT * FROM attestation_gap")
    assert (gap["ingress_count"], gap["executions"], gap["handled"], gap["gap"], gap["status"]) == (5, 5, 0, 0, "PASS")
    assert await db.fetch("SELECT * FROM attestation_ghosts") == []
    assert await db.fetch("SELECT * FROM stream_sequence_gaps") == []
    assert (await db.fetchrow("SELECT status FROM regulator_dashboard"))["status"] == "HEALTHY"


async def test_sequence_gaps_report_missing_ranges_per_stream(db: asyncpg.Connection) -> None:
    # node-a/0: 1,2,3,6,7,10 -> holes 4-5 and 8-9.  node-a/1: starts at 3 -> 1-2 missing.
    # node-b/0: 1,2 but checkpoint says 5 was shipped -> tail 3-5 cut.
    for seq in (1, 2, 3, 6, 7, 10):
        await add_record(db, seq=seq, record_type=H)
    for seq in (3, 4):
        await add_record(db, stream=1, seq=seq, record_type=H)
    for seq in (1, 2):
        await add_record(db, node="node-b", seq=seq, record_type=H)
    await db.execute("""INSERT INTO journal_checkpoints (node_id, stream_id, epoch, last_seq, last_hash)
                        VALUES ('node-b', 0, $1, 5, $2), ('node-a', 0, $1, 10, $2)""", b"\0" * 16, b"\0" * 32)
    rows = await db.fetch("SELECT node_id, stream_id, missing_from, missing_to, position FROM stream_sequence_gaps "
                          "ORDER BY node_id, stream_id, missing_from")
    assert [tuple(r) for r in rows] == [
        ("node-a", 0, 4, 5, "inside"),
        ("node-a", 0, 8, 9, "inside"),
        ("node-a", 1, 1, 2, "before_first"),
        ("node-b", 0, 3, 5, "after_last"),
    ]


async def test_archived_prefix_is_not_a_gap(db: asyncpg.Connection) -> None:
    for seq in (101, 102):
        await add_record(db, seq=seq, record_type=H)
    await db.execute("""INSERT INTO attestation_archives (partition, node_id, stream_id, first_seq, last_seq,
                            sha256, signature, key_id)
                        VALUES ('ingress_attestations_p20200101', 'node-a', 0, 1, 100, $1, $2, 'k')""",
                     b"\0" * 32, b"sig")
    assert await db.fetch("SELECT * FROM stream_sequence_gaps") == []


async def test_dashboard_counts_young_unexplained_ingress_as_in_flight(db: asyncpg.Connection) -> None:
    """A request still in flight is not yet a ghost on the live dashboard, but the
    strict audit view (no grace: used after quiescence) already counts it."""
    await add_participant(db, "bank-a")
    await add_record(db, seq=1, record_type=I, attestation_id=next_attestation_id(), participant="bank-a",
                     route="POST /v1/payments", executes=True, at=now())
    row = await db.fetchrow("SELECT status, gap, in_flight FROM regulator_dashboard WHERE participant_id = 'bank-a'")
    assert (row["status"], row["gap"], row["in_flight"]) == ("HEALTHY", 0, 1)
    assert await db.fetchval("SELECT gap FROM attestation_gap WHERE participant_id = 'bank-a'") == 1
    strict = await db.fetchrow("SELECT gap, in_flight FROM attestation_gap_v2('-infinity', 'infinity', '0 seconds')")
    assert (strict["gap"], strict["in_flight"]) == (1, 0)
