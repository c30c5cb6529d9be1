"""The reverse gap (invariant 11, docs/testing.md): no execution without an attestation.

Method: build correctly chained attestations and outbox rows in a fresh
database, then reproduce each attack of issue 11 against it: outbox rows whose
INGRESS was never shipped (the journal tail cut while the forwarder lagged), a
stream the forwarder halted, INGRESS removed by the tables' owner (TRUNCATE,
once the owner has disabled the refusal trigger), and outbox rows naming another
participant or body than their INGRESS. Each must end in a named
UNATTESTED_EXECUTION incident from the repair cycle (run as the repair
daemon's own role) and in `symphony audit gap` exiting 1 (the real CLI as a
subprocess); a pending execution is reported with its age until the bound.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from repair import dashboard
from repair.config import RepairConfig
from symphony.db import connect, roles
from tests.conftest import symphony_cli
from tests.repair.conftest import cycle, open_incidents
from tests.repair.helpers import Stream, add_outbox_row, ago, executed_payment, next_attestation_id


@contextlib.asynccontextmanager
async def repair_role(db: asyncpg.Connection, database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the repair daemon's group role (not the tables' owner)."""
    login = f"t_repair_{uuid.uuid4().hex[:8]}"
    password = secrets.token_urlsafe(16)
    await roles.ensure_login_role(db, login, roles.GROUPS["repair"], password)
    conn = await connect(roles.with_credentials(database_url, login, password))
    try:
        yield conn
    finally:
        await conn.close()
        await db.execute(f'DROP ROLE "{login}"')


async def _age(db: asyncpg.Connection, outbox_ids: list[uuid.UUID], minutes: float) -> None:
    """Move executions back in time (the outbox is not evidence-locked against its owner)."""
    await db.execute("UPDATE payment_outbox SET created_at = now() - make_interval(mins => $2) "
                     "WHERE id = ANY($1::uuid[])", outbox_ids, minutes)


async def _unshipped_executions(db: asyncpg.Connection, stream: Stream, count: int) -> list[uuid.UUID]:
    """Outbox rows naming INGRESS records after the stream's checkpoint, never shipped."""
    return [await add_outbox_row(db, participant="bank-a", attestation_id=next_attestation_id(), node=stream.node,
                                 stream=stream.stream, seq=stream.seq + offset) for offset in range(1, count + 1)]


def _audit_gap(database_url: str, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    result = symphony_cli("audit", "gap", "--json", "--database-url", database_url, *extra, env=env)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


async def _incidents_by_outbox(db: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    rows = await open_incidents(db, "UNATTESTED_EXECUTION")
    return {row["dedup_key"]: {**dict(row), "evidence": json.loads(row["evidence"])} for row in rows}


async def test_unshipped_tail_is_pending_then_critical_and_fails_the_audit(
        db: asyncpg.Connection, database_url: str, settings: RepairConfig) -> None:
    """20 executions whose INGRESS lay in a journal tail that was cut while the
    forwarder lagged: pending (with their age) inside the bound, then CRITICAL
    incidents, `audit gap` exit 1 and a CRITICAL_GAP dashboard row past it."""
    stream = Stream(db)
    await stream.genesis()
    await executed_payment(stream)
    lost = await _unshipped_executions(db, stream, 20)
    code, report = _audit_gap(database_url)
    assert code == 0 and report["total"]["pending"] == 20 and report["total"]["unattested"] == 0
    assert report["total"]["pending_age_seconds_max"] is not None
    assert {e["reason"] for e in report["executions_without_ingress"]} == {"unshipped"}
    async with repair_role(db, database_url) as conn:
        await cycle(conn, settings)
        assert await _incidents_by_outbox(db) == {}  # inside the bound: pending, not yet an incident
        await _age(db, lost, minutes=10)  # the bound (300 s) passes and nothing arrives
        await cycle(conn, settings)
        await cycle(conn, settings)  # refreshed, never duplicated
    incidents = await _incidents_by_outbox(db)
    assert sorted(incidents) == sorted(str(i) for i in lost)
    one = incidents[str(lost[0])]
    assert one["severity"] == "CRITICAL" and one["participant_id"] == "bank-a"
    assert one["evidence"]["reason"] == "unshipped" and "never arrived" in one["subject"]
    code, report = _audit_gap(database_url)
    assert code == 1 and report["total"]["unattested"] == 20 and report["total"]["status"] == "FAIL"
    assert report["participants"][0]["gap"] == 0  # the ingress side alone would have said PASS
    text = symphony_cli("audit", "gap", "--database-url", database_url)
    assert text.returncode == 1 and "UNATTESTED: outbox" in text.stdout, text.stdout
    data = await dashboard.overview_data(db, settings)
    row = next(p for p in data["participants"] if p["participant_id"] == "bank-a")
    assert row["unattested"] == 20 and row["status"] == "CRITICAL_GAP"
    assert 'id="total-unattested">20<' in dashboard.render_overview(data)
    # The bound is a setting: with 1 hour the same rows are pending again.
    code, report = _audit_gap(database_url, env={"SYMPHONY_REPAIR_UNATTESTED_PENDING_SECONDS": "3600"})
    assert code == 0 and report["total"]["pending"] == 20 and report["unattested_pending_seconds"] == 3600


async def test_cut_tail_refilled_by_new_records_is_unattested_at_once(
        db: asyncpg.Connection, database_url: str, settings: RepairConfig) -> None:
    """After a cut tail the sidecar goes on numbering from the surviving head: the
    seqs the lost executions name now hold other requests. That is unattested
    immediately (attestation id differs), no bound to wait for."""
    stream = Stream(db)
    await stream.genesis()
    lost = await _unshipped_executions(db, stream, 3)
    for _ in range(3):
        await executed_payment(stream)  # the new requests take the same seqs
    await cycle(db, settings)
    incidents = await _incidents_by_outbox(db)
    assert sorted(incidents) == sorted(str(i) for i in lost)
    # seq 2 and 4 now hold other INGRESS records, seq 3 an OUTCOME.
    assert {i["evidence"]["reason"] for i in incidents.values()} == {"attestation_id_differs", "not_an_ingress"}
    assert _audit_gap(database_url)[0] == 1


async def test_halted_stream_executions_become_critical_past_the_bound(
        db: asyncpg.Connection, database_url: str, settings: RepairConfig) -> None:
    """The forwarder halted the stream (chain break, replaced journal): executions
    whose INGRESS lies beyond its checkpoint are pending 'halted', then CRITICAL."""
    stream = Stream(db)
    await stream.genesis()
    await executed_payment(stream)
    await db.execute("UPDATE journal_checkpoints SET halted_at = now(), halt_reason = 'chain break at ingest'")
    stranded = await _unshipped_executions(db, stream, 5)
    code, report = _audit_gap(database_url)
    assert code == 0 and report["total"]["pending"] == 5
    assert {e["reason"] for e in report["executions_without_ingress"]} == {"halted"}
    await _age(db, stranded, minutes=6)
    await cycle(db, settings)
    incidents = await _incidents_by_outbox(db)
    assert len(incidents) == 5 and {i["evidence"]["reason"] for i in incidents.values()} == {"halted"}
    assert _audit_gap(database_url)[0] == 1


async def test_ingress_truncated_by_the_owner_is_unattested(
        db: asyncpg.Connection, database_url: str, settings: RepairConfig) -> None:
    """The owner's TRUNCATE is refused; an owner who disables the trigger first
    and truncates the partition (and the checkpoints) still leaves executions
    without INGRESS: UNATTESTED at once ('missing'), and after the bound once the
    checkpoints are gone too."""
    stream = Stream(db)
    await stream.genesis()
    executed = [await executed_payment(stream) for _ in range(4)]
    rail = executed[0]
    await db.execute("UPDATE payment_outbox SET status = 'IN_FLIGHT', lease_owner = 'r', "
                     "lease_expires_at = now() + interval '1 minute' WHERE id = $1", rail)
    await cycle(db, settings)
    assert await _incidents_by_outbox(db) == {}
    assert _audit_gap(database_url)[0] == 0
    partition = await db.fetchval("SELECT tableoid::regclass::text FROM ingress_attestations LIMIT 1")
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await db.execute(f"TRUNCATE {partition}")
    assert await db.fetchval("SELECT count(*) FROM ingress_attestations") > 0  # refused
    await db.execute(f"ALTER TABLE {partition} DISABLE TRIGGER evidence_refuse_truncate")
    await db.execute(f"TRUNCATE {partition}")
    await cycle(db, settings)
    incidents = await _incidents_by_outbox(db)
    assert sorted(incidents) == sorted(str(i) for i in executed)
    assert {i["evidence"]["reason"] for i in incidents.values()} == {"missing"}
    assert incidents[str(rail)]["evidence"]["rail_attempts"] == 1
    assert "1 rail attempt(s)" in incidents[str(rail)]["subject"]
    code, report = _audit_gap(database_url)
    assert code == 1 and report["total"]["unattested"] == 4 and report["total"]["ingress_count"] == 0
    # The checkpoints go too: the executions are then "unshipped", failing again past the bound.
    await db.execute("ALTER TABLE journal_checkpoints DISABLE TRIGGER evidence_refuse_truncate")
    await db.execute("TRUNCATE journal_checkpoints")
    await _age(db, executed, minutes=10)
    await cycle(db, settings)
    assert len(await _incidents_by_outbox(db)) == 4
    assert _audit_gap(database_url)[0] == 1


async def test_participant_or_body_differing_from_the_ingress_is_unattested(
        db: asyncpg.Connection, database_url: str, settings: RepairConfig) -> None:
    """An outbox row that names a real INGRESS but another participant, or carries
    another body hash, is unattested; the row with the INGRESS's own body hash is
    attested (positive control)."""
    stream = Stream(db)
    await stream.genesis()
    honest_id, honest_seq = await stream.ingress("bank-a")
    honest = await add_outbox_row(db, participant="bank-a", attestation_id=honest_id, seq=honest_seq)
    await db.execute("UPDATE payment_outbox SET ingress_body_sha256 = $2 WHERE id = $1", honest,
                     hashlib.sha256(b"body-%d" % honest_id).digest())
    other_id, other_seq = await stream.ingress("bank-a")
    foreign = await add_outbox_row(db, participant="bank-b", attestation_id=other_id, seq=other_seq)
    body_id, body_seq = await stream.ingress("bank-a")
    swapped = await add_outbox_row(db, participant="bank-a", attestation_id=body_id, seq=body_seq)
    await db.execute("UPDATE payment_outbox SET ingress_body_sha256 = $2 WHERE id = $1", swapped,
                     hashlib.sha256(b"another body").digest())
    await cycle(db, settings)
    incidents = await _incidents_by_outbox(db)
    assert sorted(incidents) == sorted([str(foreign), str(swapped)])
    assert incidents[str(foreign)]["evidence"]["reason"] == "participant_differs"
    assert incidents[str(foreign)]["participant_id"] == "bank-b"
    assert incidents[str(swapped)]["evidence"]["reason"] == "body_sha256_differs"
    code, report = _audit_gap(database_url)
    assert code == 1
    by_participant = {p["participant_id"]: p for p in report["participants"]}
    assert by_participant["bank-b"]["unattested"] == 1 and by_participant["bank-a"]["unattested"] == 1
    # Repaired by the operator (the honest body hash): the incident resolves itself.
    await db.execute("UPDATE payment_outbox SET ingress_body_sha256 = $2 WHERE id = $1", swapped,
                     hashlib.sha256(b"body-%d" % body_id).digest())
    await cycle(db, settings)
    assert sorted(await _incidents_by_outbox(db)) == [str(foreign)]


async def test_evidence_bundle_counts_unattested_and_fails(db: asyncpg.Connection, database_url: str,
                                                           tmp_path: Any) -> None:
    """The signed bundle carries the unattested term, lists the executions, and
    `symphony evidence bundle` exits 1 naming it."""
    from tests.conftest import REPO_ROOT

    stream = Stream(db)
    await stream.genesis()
    await executed_payment(stream)
    lost = await _unshipped_executions(db, stream, 2)
    await _age(db, lost, minutes=10)
    await stream.heartbeat(ago(seconds=1))
    private, public = tmp_path / "signing.pem", tmp_path / "signing.pub.pem"
    assert symphony_cli("evidence", "keygen", "--private", str(private), "--public", str(public)).returncode == 0
    out = tmp_path / "bundle.json"
    built = symphony_cli("evidence", "bundle", "--out", str(out), "--signing-key", str(private), "--repo",
                         str(REPO_ROOT), "--database-url", database_url)
    assert built.returncode == 1 and "unattested executions = 2" in built.stderr, built.stderr
    bundle = json.loads(out.read_text())
    gap = bundle["ingress_attestation"]["attestation_gap"]
    assert gap["unattested"] == 2 and gap["gap"] == 0 and gap["status"] == "FAIL"
    assert sorted(e["outbox_id"] for e in bundle["ingress_attestation"]["unattested_executions"]) == sorted(
        str(i) for i in lost)
    verified = symphony_cli("evidence", "verify", str(out), "--public-key", str(public))
    assert verified.returncode == 0, verified.stdout + verified.stderr
