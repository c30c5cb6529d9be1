"""Least privilege and append-only for real (invariant 13, docs/testing.md).

Method: on a fresh migrated database, connect as a login role in each daemon's
group role (migration 0042), as `symphony up` does, and try first what the
daemon must do (it works), then what it must not (UPDATE/DELETE of
attestations, TRUNCATE of evidence, writes outside its tables): each refused
by PostgreSQL. Then, as the tables' owner, TRUNCATE each evidence table and
partition: refused by the statement-level triggers of migration 0041.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import secrets
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from symphony.attestation import RecordType
from symphony.db import connect, roles
from tests.foundation.fixtures import add_outbox_row, add_participant, add_record, next_attestation_id

EVIDENCE_TABLES = ["ingress_attestations", "outbox_events", "repair_actions", "attestation_archives",
                   "journal_checkpoints", "payment_outbox", "payment_intents", "repair_incidents", "gap_statements"]
REFUSED = (asyncpg.InsufficientPrivilegeError,)


@contextlib.asynccontextmanager
async def as_daemon(db: asyncpg.Connection, database_url: str, daemon: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as a fresh login role in `daemon`'s group, dropped afterwards."""
    login = f"t_{daemon}_{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(16)
    await roles.ensure_login_role(db, login, roles.GROUPS[daemon], password)
    conn = await connect(roles.with_credentials(database_url, login, password))
    try:
        yield conn
    finally:
        await conn.close()
        await db.execute(f'DROP ROLE "{login}"')


async def _refused(conn: asyncpg.Connection, statement: str, *args: object) -> None:
    with pytest.raises(REFUSED):
        await conn.execute(statement, *args)


async def _row_with_history(db: asyncpg.Connection) -> uuid.UUID:
    """An attested outbox row with one transition, so every evidence table has rows."""
    await add_participant(db, "bank-a")
    attestation_id = next_attestation_id()
    await add_record(db, seq=1, record_type=RecordType.INGRESS, attestation_id=attestation_id, participant="bank-a",
                     route="POST /v1/payments", executes=True)
    await db.execute("""INSERT INTO journal_checkpoints (node_id, stream_id, epoch, last_seq, last_hash)
                        VALUES ('node-a', 0, $1, 1, $2)""", b"\x01" * 16, b"\x02" * 32)
    return await add_outbox_row(db, participant="bank-a", attestation_id=attestation_id, seq=1)


def _attestation_row(seq: int) -> tuple[object, ...]:
    canonical = b"record-%d" % seq
    return ("node-f", 0, seq, int(RecordType.HEARTBEAT), 0, dt.datetime.now(dt.timezone.utc),
            hashlib.sha256(canonical).digest(), canonical)


INSERT_ATTESTATION = """INSERT INTO ingress_attestations (node_id, stream_id, stream_seq, record_type, attestation_id,
                                                         recorded_at, chain_hash, canonical)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"""
OPEN_INCIDENT = "SELECT * FROM open_incident_v1('CHAIN_BREAK', $1, 'CRITICAL', NULL, 'node-f', 0, 'test', '{}')"


async def test_forwarder_appends_attestations_and_checkpoints_and_nothing_else(db: asyncpg.Connection,
                                                                               database_url: str) -> None:
    """The forwarder inserts attestations, moves checkpoints, extends partitions
    and opens incidents; it cannot change or remove any of it."""
    await _row_with_history(db)
    async with as_daemon(db, database_url, "forwarder") as conn:
        await conn.execute(INSERT_ATTESTATION, *_attestation_row(1))
        await conn.execute("""INSERT INTO journal_checkpoints (node_id, stream_id, epoch, last_seq, last_hash)
                              VALUES ('node-f', 0, $1, 1, $2)""", b"\x03" * 16, b"\x04" * 32)
        await conn.execute("UPDATE journal_checkpoints SET last_seq = 2 WHERE node_id = 'node-f'")
        far = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=60)).date()
        assert await conn.fetchval("SELECT ensure_attestation_partitions_v1($1, $1)", far) == 1
        opened = await conn.fetchrow(OPEN_INCIDENT, "forwarder-test")
        assert opened is not None and opened["opened"]
        await _refused(conn, "UPDATE ingress_attestations SET participant_id = 'x'")
        await _refused(conn, "DELETE FROM ingress_attestations")
        await _refused(conn, "TRUNCATE ingress_attestations")
        await _refused(conn, "DELETE FROM journal_checkpoints")
        await _refused(conn, "TRUNCATE journal_checkpoints")
        await _refused(conn, "UPDATE repair_incidents SET resolved_at = now(), resolution = 'RESOLVED'")
        await _refused(conn, "INSERT INTO repair_incidents (kind, dedup_key, severity, subject) "
                             "VALUES ('GHOST', 'x', 'LOW', 'forged')")
        await _refused(conn, "SELECT * FROM payment_outbox")
        await _refused(conn, "DROP TABLE ingress_attestations_p" + far.strftime("%Y%m%d"))
    # Refused by privilege, not only by the append-only trigger an owner can disable.
    for privilege in ("UPDATE", "DELETE", "TRUNCATE"):
        assert not await db.fetchval("SELECT has_table_privilege('symphony_forwarder', 'ingress_attestations', $1)",
                                     privilege), privilege
    # The partition the forwarder's role created refuses TRUNCATE like the others.
    name = "ingress_attestations_p" + far.strftime("%Y%m%d")
    with pytest.raises(REFUSED, match="TRUNCATE refused"):
        await db.execute(f"TRUNCATE {name}")


async def test_service_writes_its_own_tables_only(db: asyncpg.Connection, database_url: str) -> None:
    """The service inserts intents, outbox rows (their events by trigger) and keys;
    it cannot move an outbox row, touch events or attestations, or TRUNCATE."""
    outbox_id = await _row_with_history(db)
    async with as_daemon(db, database_url, "service") as conn:
        await add_outbox_row(conn, participant="bank-a", attestation_id=next_attestation_id(), seq=9)
        await conn.execute("""INSERT INTO idempotency_keys (participant_id, idempotency_key, request_fingerprint,
                                  locked_at, attestation_id, expires_at)
                              VALUES ('bank-a', 'k1', $1, now(), 1, now() + interval '1 day')""", b"\x01" * 32)
        await conn.execute("DELETE FROM idempotency_keys WHERE idempotency_key = 'k1'")
        await conn.fetchrow("SELECT * FROM participants WHERE participant_id = 'bank-a' FOR NO KEY UPDATE")
        await _refused(conn, "UPDATE payment_outbox SET status = 'SUCCESS', completed_at = now() WHERE id = $1",
                       outbox_id)
        await _refused(conn, "DELETE FROM outbox_events")
        await _refused(conn, "DELETE FROM payment_outbox")
        await _refused(conn, "TRUNCATE idempotency_keys")
        await _refused(conn, "UPDATE participants SET status = 'SUSPENDED'")
        await _refused(conn, INSERT_ATTESTATION, *_attestation_row(5))
    assert await db.fetchval("SELECT count(*) FROM outbox_events") == 2  # one insert event per outbox row


async def test_relayer_moves_outbox_rows_but_cannot_erase_transitions(db: asyncpg.Connection,
                                                                      database_url: str) -> None:
    """The relayer updates outbox rows (events written by trigger) and opens
    incidents; TRUNCATE or DELETE of outbox_events, and attestations, are refused."""
    outbox_id = await _row_with_history(db)
    async with as_daemon(db, database_url, "relayer") as conn:
        await conn.execute("""UPDATE payment_outbox SET status = 'IN_FLIGHT', lease_owner = 'r1',
                                  lease_expires_at = now() + interval '30 seconds' WHERE id = $1""", outbox_id)
        assert (await conn.fetchrow(OPEN_INCIDENT, "relayer-test"))["opened"]
        await _refused(conn, "TRUNCATE outbox_events")
        await _refused(conn, "TRUNCATE payment_outbox CASCADE")
        await _refused(conn, "DELETE FROM outbox_events")
        await _refused(conn, "DELETE FROM payment_outbox")
        await _refused(conn, "UPDATE ingress_attestations SET participant_id = 'x'")
        await _refused(conn, "INSERT INTO payment_intents (participant_id, idempotency_key, amount_minor, currency, "
                             "rail, destination_account, attestation_id) VALUES ('bank-a', 'x', 1, 'ZMW', 'mmo', "
                             "'1', 1)")
    assert await db.fetchval("SELECT count(*) FROM outbox_events WHERE outbox_id = $1", outbox_id) == 2


async def test_repair_reads_everything_and_writes_incidents_only(db: asyncpg.Connection, database_url: str) -> None:
    """Repair reads every table and writes incidents and its own tables; it
    cannot delete or truncate evidence."""
    await _row_with_history(db)
    async with as_daemon(db, database_url, "repair") as conn:
        assert await conn.fetchval("SELECT count(*) FROM ingress_attestations") == 1
        assert await conn.fetchval("SELECT count(*) FROM execution_attestation_v1") == 1
        incident = await conn.fetchrow(OPEN_INCIDENT, "repair-test")
        await conn.execute("INSERT INTO repair_actions (incident_id, action, actor) VALUES ($1, 'noted', 'test')",
                           incident["incident_id"])
        await conn.execute("UPDATE repair_incidents SET resolved_at = now(), resolution = 'RESOLVED'")
        await _refused(conn, "DELETE FROM ingress_attestations")
        await _refused(conn, "DELETE FROM payment_outbox")
        await _refused(conn, "DELETE FROM repair_incidents")
        await _refused(conn, "DELETE FROM repair_actions")
        await _refused(conn, "TRUNCATE repair_actions")
        await _refused(conn, "UPDATE journal_checkpoints SET last_seq = 0")


async def test_dashboard_and_sidecar_only_read(db: asyncpg.Connection, database_url: str) -> None:
    """The dashboard reads everything and writes nothing (not even incidents);
    the sidecar reads participants and nothing else."""
    await _row_with_history(db)
    async with as_daemon(db, database_url, "dashboard") as conn:
        assert await conn.fetchval("SELECT count(*) FROM regulator_dashboard") == 1
        await _refused(conn, "INSERT INTO participants (participant_id) VALUES ('evil')")
        await _refused(conn, "INSERT INTO repair_incidents (kind, dedup_key, severity, subject) "
                             "VALUES ('GHOST', 'x', 'LOW', 'forged')")
        await _refused(conn, OPEN_INCIDENT, "dashboard-test")
        await _refused(conn, "TRUNCATE ingress_attestations")
    async with as_daemon(db, database_url, "sidecar") as conn:
        assert await conn.fetchval("SELECT count(*) FROM participants") == 1
        await _refused(conn, "SELECT * FROM ingress_attestations")
        await _refused(conn, "UPDATE participants SET policy_version = 99")


async def test_no_daemon_role_is_superuser_or_owner(db: asyncpg.Connection) -> None:
    """The group roles exist, cannot log in, are not superusers and own nothing."""
    rows = await db.fetch("""SELECT r.rolname, r.rolsuper, r.rolcanlogin, r.rolcreaterole, r.rolbypassrls,
                                    (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid) AS owned
                             FROM pg_roles r WHERE r.rolname = ANY($1::text[])""", list(roles.GROUPS.values()))
    assert sorted(r["rolname"] for r in rows) == sorted(roles.GROUPS.values())
    for row in rows:
        assert not row["rolsuper"] and not row["rolcanlogin"] and not row["rolcreaterole"], dict(row)
        assert not row["rolbypassrls"] and row["owned"] == 0, dict(row)


async def test_owner_truncate_of_every_evidence_table_and_partition_is_refused(db: asyncpg.Connection) -> None:
    """Even the tables' owner (the migrating role) cannot TRUNCATE evidence: every
    evidence table and every existing attestation partition refuses; archives
    refuse UPDATE and DELETE; checkpoints refuse DELETE."""
    await _row_with_history(db)
    partitions = [r["name"] for r in await db.fetch(
        "SELECT inhrelid::regclass::text AS name FROM pg_inherits WHERE inhparent = 'ingress_attestations'::regclass")]
    assert len(partitions) >= 9  # yesterday, today and a week ahead
    for table in [*EVIDENCE_TABLES, *partitions]:
        with pytest.raises(REFUSED, match="TRUNCATE refused"):
            await db.execute(f"TRUNCATE {table} CASCADE")
    assert await db.fetchval("SELECT count(*) FROM ingress_attestations") == 1
    await db.execute("""INSERT INTO attestation_archives (partition, node_id, stream_id, first_seq, last_seq, sha256,
                                                          signature, key_id)
                        VALUES ('p', 'node-a', 0, 1, 1, $1, 'sig', 'k')""", b"\x05" * 32)
    with pytest.raises(REFUSED, match="append-only"):
        await db.execute("UPDATE attestation_archives SET signature = 'forged'")
    with pytest.raises(REFUSED, match="append-only"):
        await db.execute("DELETE FROM attestation_archives")
    with pytest.raises(REFUSED, match="append-only"):
        await db.execute("DELETE FROM journal_checkpoints")
