"""Repair and audit over records the real journal wrote and the real forwarder shipped.

Method: a journal Writer appends what a sidecar would (an executed payment, a
request blackholed after attestation, a read, a heartbeat); `symphony
forwarder` runs as a process and ships them; then `symphony audit` (a process)
and a repair cycle look at PostgreSQL. The blackholed request must be exactly
one GHOST; the chain must verify from the shipped bytes alone; an altered row
must be reported with its seq.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import asyncpg

import journal
from repair.config import RepairConfig
from symphony import attestation
from tests.conftest import symphony_cli
from tests.forwarder import conftest as forwarder_support
from tests.repair.conftest import cycle, open_incidents
from tests.repair.helpers import add_outbox_row, tamper


def _ingress(participant: str, route: str, executes: bool, key: bytes) -> bytes:
    now_us = time.time_ns() // 1000
    return attestation.encode(attestation.IngressBody(
        1, now_us, participant, "jwt", "kid-1", 1, "POST" if executes else "GET", route, executes,
        hashlib.sha256(b"body").digest(), hashlib.sha256(key).digest() if key else b"", "", "accepted"))


def _outcome(ingress_seq: int, disposition: str, status: int) -> bytes:
    return attestation.encode(attestation.OutcomeBody(1, ingress_seq, time.time_ns() // 1000, status, disposition,
                                                      800, ""))


async def test_blackholed_request_is_exactly_one_ghost_over_shipped_records(
        tmp_path: Path, database_url: str, db: asyncpg.Connection) -> None:
    node = forwarder_support.NODE
    journal_dir = tmp_path / "journal"
    writer = forwarder_support.open_writer(journal_dir, 0)
    try:
        paid_seq, _ = writer.append(journal.RecordType.INGRESS, _ingress("bank-a", "/v1/payments", True, b"k1"), 101)
        writer.append(journal.RecordType.OUTCOME, _outcome(paid_seq, "executed", 201), 101)
        writer.append(journal.RecordType.INGRESS, _ingress("bank-a", "/v1/payments", True, b"k2"), 102)  # blackholed
        read_seq, _ = writer.append(journal.RecordType.INGRESS, _ingress("bank-b", "/v1/payments/{id}", False, b""),
                                    103)
        writer.append(journal.RecordType.OUTCOME, _outcome(read_seq, "executed", 200), 103)
        head, _ = writer.append(journal.RecordType.HEARTBEAT,
                                attestation.encode(attestation.HeartbeatBody(1, time.time_ns() // 1000)), 0)
    finally:
        writer.close()
    await add_outbox_row(db, participant="bank-a", attestation_id=101, node=node, seq=paid_seq)
    process = forwarder_support.ForwarderProcess(database_url, journal_dir, tmp_path / "forwarder.log").start()
    try:
        async def shipped() -> bool:
            return (await forwarder_support.checkpoints(db)).get(0, 0) >= head

        await forwarder_support.wait_for(shipped, "the forwarder to ship the stream", diagnostics=process.log_tail)
    finally:
        assert process.terminate() == 0

    chain = symphony_cli("audit", "verify-chain", "--json", "--database-url", database_url)
    assert chain.returncode == 0, chain.stdout + chain.stderr
    assert json.loads(chain.stdout)["records_verified"] == head
    gap = symphony_cli("audit", "gap", "--json", "--database-url", database_url)
    assert gap.returncode == 1
    assert json.loads(gap.stdout)["total"] == {"ingress_count": 2, "executions": 1, "handled": 0, "gap": 1,
                                               "unattested": 0, "pending": 0, "pending_age_seconds_max": None,
                                               "status": "FAIL"}

    settings = RepairConfig(ghost_grace_seconds=0, outcome_grace_seconds=0)
    await cycle(db, settings)
    ghosts = await open_incidents(db, "GHOST")
    assert len(ghosts) == 1
    evidence = json.loads(ghosts[0]["evidence"])
    assert evidence["attestation_id"] == 102 and evidence["participant_id"] == "bank-a"
    assert evidence["idempotency_key_hash"] == hashlib.sha256(b"k2").hexdigest()
    assert await open_incidents(db, "CHAIN_BREAK") == []
    assert await open_incidents(db, "SEQ_GAP") == []

    await tamper(db, "UPDATE ingress_attestations SET route = '/v1/refunds' WHERE node_id = $1 AND stream_seq = $2",
                 node, paid_seq)
    broken = symphony_cli("audit", "verify-chain", "--json", "--database-url", database_url)
    assert broken.returncode == 1
    stream = json.loads(broken.stdout)["streams"][0]
    assert (stream["first_bad_seq"], stream["reason"]) == (paid_seq, "column_mismatch")
    await cycle(db, settings)
    breaks = await open_incidents(db, "CHAIN_BREAK")
    assert [json.loads(b["evidence"])["seq"] for b in breaks] == [paid_seq]
