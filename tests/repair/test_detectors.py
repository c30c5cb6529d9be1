"""Each detector on hand-built data, deduplication, and auto-resolution.

Method: build correctly chained journal rows, outbox rows and keys in a fresh
database, run one repair cycle (`run_cycle`, the daemon's own pass), and check
the incidents it opened; then clear the cause and check the incident resolves
with resolved_at set (MTTR is measured from detected_at to resolved_at).
"""

from __future__ import annotations

import hashlib
import json

import asyncpg

from repair.config import RepairConfig
from tests.repair.conftest import cycle, open_incidents
from tests.repair.helpers import (
    Stream, add_outbox_row, add_participant, ago, executed_payment, next_attestation_id, tamper,
)


async def test_clean_system_opens_no_incident(db: asyncpg.Connection, settings: RepairConfig) -> None:
    stream = Stream(db)
    await stream.genesis()
    await executed_payment(stream)
    attestation_id, seq = await stream.ingress()
    await stream.outcome(attestation_id, seq, "rejected", 422)
    await stream.heartbeat(ago(seconds=5))
    await cycle(db, settings)
    assert await open_incidents(db) == []


async def test_ghost_is_one_incident_that_says_how_to_retry_and_resolves_when_executed(
        db: asyncpg.Connection, settings: RepairConfig) -> None:
    stream = Stream(db)
    await stream.genesis()
    await executed_payment(stream)
    ghost_id, ghost_seq = await stream.ingress("bank-a", at=ago(minutes=5))
    await stream.heartbeat(ago(seconds=5))
    # Inside the grace period a request without execution is not (yet) a ghost.
    fresh_id, _ = await stream.ingress("bank-a", at=ago(seconds=10))
    await stream.heartbeat(ago(seconds=1))
    await cycle(db, settings)
    await cycle(db, settings)  # a second pass refreshes, never duplicates
    ghosts = await open_incidents(db, "GHOST")
    assert len(ghosts) == 1
    ghost = ghosts[0]
    assert ghost["participant_id"] == "bank-a" and ghost["severity"] == "CRITICAL"
    evidence = json.loads(ghost["evidence"])
    assert evidence["attestation_id"] == ghost_id and evidence["route"] == "/v1/payments"
    assert evidence["idempotency_key_hash"] == hashlib.sha256(b"idem-%d" % ghost_id).hexdigest()
    assert "same idempotency key" in evidence["action_required"]
    assert str(fresh_id) not in ghost["subject"]
    # The participant retried with the same key: the late outbox row explains it.
    await add_outbox_row(db, participant="bank-a", attestation_id=ghost_id, seq=ghost_seq)
    await cycle(db, settings)
    assert await open_incidents(db, "GHOST") == []
    row = await db.fetchrow("SELECT resolution, resolved_at, detected_at FROM repair_incidents WHERE kind = 'GHOST'")
    assert row["resolution"] == "AUTO_RESOLVED" and row["resolved_at"] >= row["detected_at"]


async def test_outcome_missing_is_classified_by_outbox(db: asyncpg.Connection, settings: RepairConfig) -> None:
    stream = Stream(db)
    await stream.genesis()
    executed_id, executed_seq = await stream.ingress("bank-a", at=ago(minutes=5))
    await add_outbox_row(db, participant="bank-a", attestation_id=executed_id, seq=executed_seq)
    lost_id, _ = await stream.ingress("bank-b", at=ago(minutes=5))
    await stream.heartbeat(ago(seconds=2))
    await cycle(db, settings)
    missing = {json.loads(r["evidence"])["attestation_id"]: r for r in await open_incidents(db, "OUTCOME_MISSING")}
    assert set(missing) == {executed_id, lost_id}
    assert json.loads(missing[executed_id]["evidence"])["classification"] == "executed_answer_lost"
    assert json.loads(missing[lost_id]["evidence"])["classification"] == "not_executed"
    assert missing[lost_id]["severity"] == "HIGH" and missing[executed_id]["severity"] == "MEDIUM"
    # The one without an outbox row is a ghost as well; the executed one is not.
    ghosts = [json.loads(r["evidence"])["attestation_id"] for r in await open_incidents(db, "GHOST")]
    assert ghosts == [lost_id]


async def _in_flight(db: asyncpg.Connection, outbox_id: object, expired_seconds_ago: int) -> None:
    await db.execute(
        """UPDATE payment_outbox SET status = 'IN_FLIGHT', lease_owner = 'relayer-x', attempt_count = 1,
               lease_expires_at = now() - make_interval(secs => $2) WHERE id = $1""", outbox_id, expired_seconds_ago)


async def test_zombie_is_requeued_and_resolves_next_cycle(db: asyncpg.Connection, settings: RepairConfig) -> None:
    await add_participant(db, "bank-a")
    zombie = await add_outbox_row(db, participant="bank-a", attestation_id=next_attestation_id())
    recent = await add_outbox_row(db, participant="bank-a", attestation_id=next_attestation_id())
    await _in_flight(db, zombie, 300)
    await _in_flight(db, recent, 5)  # expired, but the relayer still has time to reclaim it itself
    await cycle(db, settings)
    zombies = await open_incidents(db, "ZOMBIE")
    assert [r["dedup_key"] for r in zombies] == [str(zombie)]
    status = await db.fetchval("SELECT status::text FROM payment_outbox WHERE id = $1", zombie)
    assert status == "RECOVERING"
    assert await db.fetchval("SELECT status::text FROM payment_outbox WHERE id = $1", recent) == "IN_FLIGHT"
    actions = await db.fetch("SELECT action, actor FROM repair_actions WHERE incident_id = $1",
                             zombies[0]["incident_id"])
    assert [a["action"] for a in actions] == ["requeued_as_recovering"]
    events = await db.fetch("SELECT new_status::text, actor FROM outbox_events WHERE outbox_id = $1 ORDER BY event_id",
                            zombie)
    assert events[-1]["new_status"] == "RECOVERING"
    await cycle(db, settings)
    assert await open_incidents(db, "ZOMBIE") == []


async def test_zombie_without_requeue_waits_for_the_relayer(db: asyncpg.Connection) -> None:
    settings = RepairConfig(zombie_requeue=False)
    await add_participant(db, "bank-a")
    zombie = await add_outbox_row(db, participant="bank-a", attestation_id=next_attestation_id())
    await _in_flight(db, zombie, 300)
    await cycle(db, settings)
    assert len(await open_incidents(db, "ZOMBIE")) == 1
    # A relayer reclaims it: the incident resolves by itself.
    await db.execute("""UPDATE payment_outbox SET status = 'SUCCESS', lease_owner = NULL, lease_expires_at = NULL,
                            completed_at = now() WHERE id = $1""", zombie)
    await cycle(db, settings)
    assert await open_incidents(db, "ZOMBIE") == []


async def _key(db: asyncpg.Connection, participant: str, key: str, locked_seconds_ago: int,
               intent: object = None) -> None:
    await db.execute(
        """INSERT INTO idempotency_keys (participant_id, idempotency_key, request_fingerprint, locked_at,
                                         intent_id, attestation_id, expires_at)
           VALUES ($1, $2, $3, now() - make_interval(secs => $4), $5, 1, now() + interval '1 day')""",
        participant, key, hashlib.sha256(key.encode()).digest(), locked_seconds_ago, intent)


async def test_stuck_key_without_execution_is_released(db: asyncpg.Connection, settings: RepairConfig) -> None:
    await add_participant(db, "bank-a")
    await _key(db, "bank-a", "stuck-1", 600)
    await _key(db, "bank-a", "busy-1", 5)
    outbox = await add_outbox_row(db, participant="bank-a", attestation_id=next_attestation_id(), key="done-1")
    intent = await db.fetchval("SELECT intent_id FROM payment_outbox WHERE id = $1", outbox)
    await _key(db, "bank-a", "done-1", 600, intent)
    await cycle(db, settings)
    stuck = await open_incidents(db, "STUCK_KEY")
    assert len(stuck) == 2
    assert all("stuck-1" not in r["subject"] and "stuck-1" not in r["evidence"] for r in stuck)  # hashes only
    keys = {r["idempotency_key"] for r in await db.fetch("SELECT idempotency_key FROM idempotency_keys")}
    assert keys == {"busy-1", "done-1"}  # released only where nothing executed
    await cycle(db, settings)
    remaining = await open_incidents(db, "STUCK_KEY")
    assert len(remaining) == 1 and json.loads(remaining[0]["evidence"])["intent_id"] == str(intent)


async def test_seq_gap_reports_the_missing_range(db: asyncpg.Connection, settings: RepairConfig) -> None:
    stream = Stream(db)
    await stream.genesis()
    for _ in range(5):
        await stream.heartbeat(ago(seconds=20))
    await tamper(db, "DELETE FROM ingress_attestations WHERE stream_seq IN (3, 4)")
    await cycle(db, settings)
    gaps = await open_incidents(db, "SEQ_GAP")
    assert len(gaps) == 1
    evidence = json.loads(gaps[0]["evidence"])
    assert (evidence["missing_from"], evidence["missing_to"], evidence["position"]) == (3, 4, "inside")
    breaks = await open_incidents(db, "CHAIN_BREAK")
    assert len(breaks) == 1 and json.loads(breaks[0]["evidence"])["seq"] == 3


async def test_cut_tail_is_a_seq_gap_against_the_checkpoint(db: asyncpg.Connection, settings: RepairConfig) -> None:
    stream = Stream(db)
    await stream.genesis()
    for _ in range(4):
        await stream.heartbeat(ago(seconds=20))
    await tamper(db, "DELETE FROM ingress_attestations WHERE stream_seq = 5")
    await cycle(db, settings)
    evidence = [json.loads(r["evidence"]) for r in await open_incidents(db, "SEQ_GAP")]
    assert [(e["missing_from"], e["missing_to"], e["position"]) for e in evidence] == [(5, 5, "after_last")]
    breaks = [json.loads(r["evidence"]) for r in await open_incidents(db, "CHAIN_BREAK")]
    assert [(b["seq"], b["reason"]) for b in breaks] == [(5, "truncated")]


async def test_silent_stream_is_reported_and_resolves_when_it_speaks(
        db: asyncpg.Connection, settings: RepairConfig) -> None:
    quiet, chatty = Stream(db, node="node-q"), Stream(db, node="node-c")
    await quiet.genesis(ago(minutes=20))
    await quiet.heartbeat(ago(seconds=45))  # 3 x 10 s heartbeat interval have passed
    await chatty.genesis(ago(minutes=20))
    await chatty.heartbeat(ago(seconds=5))
    await cycle(db, settings)
    silent = await open_incidents(db, "NODE_SILENT")
    assert [(r["node_id"], r["stream_id"]) for r in silent] == [("node-q", 0)]
    await quiet.heartbeat(ago(seconds=1))
    await cycle(db, settings)
    assert await open_incidents(db, "NODE_SILENT") == []


async def test_dead_letter_joins_the_manual_queue_and_resolves_when_redriven(
        db: asyncpg.Connection, settings: RepairConfig) -> None:
    await add_participant(db, "bank-a")
    outbox = await add_outbox_row(db, participant="bank-a", attestation_id=next_attestation_id())
    await db.execute("""UPDATE payment_outbox SET status = 'FAILED', attempt_count = 5, completed_at = now(),
                            last_error = 'rail said 500 five times' WHERE id = $1""", outbox)
    await cycle(db, settings)
    letters = await open_incidents(db, "DEAD_LETTER")
    assert [r["dedup_key"] for r in letters] == [str(outbox)]
    queue = await db.fetch("SELECT item_kind FROM manual_intervention_queue ORDER BY item_kind")
    assert [q["item_kind"] for q in queue] == ["DEAD_LETTER", "INCIDENT"]
    await db.execute("""UPDATE payment_outbox SET status = 'PENDING', attempt_count = 0, completed_at = NULL
                        WHERE id = $1""", outbox)
    await cycle(db, settings)
    row = await db.fetchrow("SELECT resolution FROM repair_incidents WHERE kind = 'DEAD_LETTER'")
    assert row["resolution"] == "REDRIVEN"


async def test_operator_accepted_loss_is_not_reopened(db: asyncpg.Connection, settings: RepairConfig) -> None:
    await add_participant(db, "bank-a")
    outbox = await add_outbox_row(db, participant="bank-a", attestation_id=next_attestation_id())
    await db.execute("UPDATE payment_outbox SET status = 'FAILED', attempt_count = 5, completed_at = now() "
                     "WHERE id = $1", outbox)
    await cycle(db, settings)
    await db.execute("UPDATE repair_incidents SET resolved_at = now(), resolution = 'ACCEPTED_LOSS'")
    await cycle(db, settings)
    assert await open_incidents(db, "DEAD_LETTER") == []


async def test_halted_forwarder_is_a_chain_break(db: asyncpg.Connection, settings: RepairConfig) -> None:
    stream = Stream(db)
    await stream.genesis()
    await stream.heartbeat(ago(seconds=2))
    await db.execute("UPDATE journal_checkpoints SET halted_at = now(), halt_reason = 'prev hash mismatch at seq 3'")
    await cycle(db, settings)
    breaks = await open_incidents(db, "CHAIN_BREAK")
    assert len(breaks) == 1 and "prev hash mismatch" in breaks[0]["subject"]
