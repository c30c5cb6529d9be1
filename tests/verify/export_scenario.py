"""A live record to export: real journals shipped by a real forwarder, cosigned
by a real witness, with outbox rows and their events in PostgreSQL.

Two streams of node `node-p`: stream 0 in one epoch; stream 1 wiped and
restarted in the middle of the window (two epochs, the old one's end kept in
journal_epochs). Requests of every kind: executed (an outbox row), handled
(OUTCOME rejected or replayed), ghosts (OUTCOME executed but no outbox row,
or no OUTCOME at all), requests of non-executing routes, unauthenticated
ones. The window cuts through all of it so the export has to extend ranges to
OUTCOMEs after the window and to INGRESS records before it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

import journal
from symphony import attestation
from symphony.checkpoints import CheckpointSigner
from tests.forwarder.conftest import NODE, ForwarderProcess, open_writer, stream_dir, wait_for
from tests.forwarder.tlog_helpers import Witness, cut, signer

UNIX = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
PARTICIPANTS = ("bank-a", "bank-b")


@dataclass
class Request:
    stream_id: int
    epoch: bytes
    seq: int
    attestation_id: int
    participant: str
    at_us: int
    executes: bool
    kind: str  # executed | rejected | replayed | ghost_outcome | ghost_silent
    body_sha256: bytes


@dataclass
class Scenario:
    database_url: str
    key: CheckpointSigner
    witness: Witness
    base_us: int
    requests: list[Request] = field(default_factory=list)
    final_sizes: dict[tuple[int, bytes], int] = field(default_factory=dict)
    outbox_ids: list[str] = field(default_factory=list)

    @property
    def since(self) -> dt.datetime:
        return UNIX + dt.timedelta(microseconds=self.base_us + 20_000)

    @property
    def until(self) -> dt.datetime:
        # Half a millisecond after the INGRESS of a replayed request (request 257 of
        # stream 0, 57 of the new epoch of stream 1), before its OUTCOME: the export
        # has to reach past the window for that OUTCOME, or the request turns into a ghost.
        return UNIX + dt.timedelta(microseconds=self.base_us + 257_500)

    def policy(self, path: Path) -> Path:
        path.write_text(f"log {self.key.vkey}\nwitness w1 {self.witness.verifier.vkey()}\nquorum w1\n")
        return path


def _kind(n: int) -> str:
    return {6: "rejected", 7: "replayed", 8: "ghost_outcome", 9: "ghost_silent"}.get(n % 10, "executed")


def _write(writer: journal.Writer, scenario: Scenario, stream_id: int, count: int, start_us: int,
           aid_base: int) -> None:
    for n in range(count):
        at_us = start_us + n * 1000
        kind = _kind(n)
        executes = n % 13 != 5
        participant = "" if n % 17 == 3 else PARTICIPANTS[n % 2]
        if participant == "" and kind == "executed":
            kind = "rejected"  # an unauthenticated request never executes
        aid = aid_base + n
        digest = hashlib.sha256(f"{stream_id}-{aid}".encode()).digest()
        body = attestation.IngressBody(
            version=1, received_at_us=at_us, participant_id=participant, auth_method="jwt" if participant else "none",
            key_id="k1", policy_version=1, method="POST" if executes else "GET",
            route="/v1/payments" if executes else "/v1/payments/{id}", executes=executes, body_sha256=digest,
            idempotency_key_hash=hashlib.sha256(f"key-{aid}".encode()).digest(), traceparent="",
            verdict="accepted" if participant else "unauthenticated")
        seq, _ = writer.append(journal.RecordType.INGRESS, attestation.encode(body), aid)
        scenario.requests.append(Request(stream_id, writer.epoch, seq, aid, participant, at_us, executes, kind,
                                         digest))
        if kind == "ghost_silent":
            continue
        disposition = {"executed": "executed", "ghost_outcome": "executed", "rejected": "rejected",
                       "replayed": "replayed"}[kind]
        outcome = attestation.OutcomeBody(version=1, ingress_seq=seq, completed_at_us=at_us + 1500,
                                          status=201 if disposition == "executed" else 409,
                                          disposition=disposition, latency_us=1500, reason="")
        writer.append(journal.RecordType.OUTCOME, attestation.encode(outcome), aid)


def _heartbeats(writer: journal.Writer, at_us: int, count: int) -> None:
    for n in range(count):
        body = attestation.HeartbeatBody(version=1, at_us=at_us + n)
        writer.append(journal.RecordType.HEARTBEAT, attestation.encode(body), 0)


async def _cosigned(db: asyncpg.Connection, stream_id: int, epoch: bytes, size: int) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM log_cosignatures WHERE node_id = $1 AND stream_id = $2 "
                                  "AND epoch = $3 AND tree_size = $4", NODE, stream_id, epoch, size))


async def build(root: Path, database_url: str) -> Scenario:
    """Write, ship and witness the record; then the service's outbox rows."""
    key = signer()
    witness = Witness.create(root, key.vkey).start()
    base_us = time.time_ns() // 1000 - 3_600_000_000  # an hour ago: inside today's partitions
    scenario = Scenario(database_url, key, witness, base_us)
    journal_dir = root / "journal"
    db = await asyncpg.connect(database_url)
    forwarder = ForwarderProcess(
        database_url, journal_dir, root / "forwarder.log", log_origin_prefix="symphony.example/test",
        log_key=key.vkey, witnesses=json.dumps([witness.entry]), witness_poll_interval_ms=50,
        witness_retry_delay_ms_initial=50, witness_retry_delay_ms_max=300, batch_rows_max=100)
    try:
        with open_writer(journal_dir, 0) as writer:
            _write(writer, scenario, 0, 300, base_us, 1_000_000)
            cut(writer, key, 0)
            _heartbeats(writer, base_us + 900_000, 3)  # after the window
            last = cut(writer, key, 0)
            scenario.final_sizes[(0, writer.epoch)] = last.tree_size
        with open_writer(journal_dir, 1) as writer:
            _write(writer, scenario, 1, 80, base_us + 50_000, 2_000_000)
            last = cut(writer, key, 1)
            old_epoch = writer.epoch
            scenario.final_sizes[(1, old_epoch)] = last.tree_size
        forwarder.start()
        for (stream_id, epoch), size in list(scenario.final_sizes.items()):
            await wait_for(lambda s=stream_id, e=epoch, n=size: _cosigned(db, s, e, n),
                           f"stream {stream_id} cosigned at {size}", diagnostics=forwarder.log_tail)
        shutil.rmtree(stream_dir(journal_dir, 1))  # the stream is wiped and restarted: a new epoch
        with open_writer(journal_dir, 1) as writer:
            # Outbox rows name a position (node, stream, seq), not an epoch, and the audit
            # takes the earliest record at a position: the new epoch's requests start
            # past the old epoch's last seq so its executions are not taken for the old's.
            _heartbeats(writer, base_us + 190_000, scenario.final_sizes[(1, old_epoch)] + 5)
            _write(writer, scenario, 1, 80, base_us + 200_000, 3_000_000)
            cut(writer, key, 1)
            _heartbeats(writer, base_us + 900_000, 2)
            last = cut(writer, key, 1)
            scenario.final_sizes[(1, writer.epoch)] = last.tree_size
        await wait_for(lambda: _cosigned(db, 1, writer.epoch, last.tree_size), "the new epoch cosigned",
                       diagnostics=forwarder.log_tail)
        assert forwarder.terminate() == 0
        assert await db.fetchval("SELECT count(*) FROM journal_epochs WHERE node_id = $1 AND stream_id = 1 "
                                 "AND epoch = $2", NODE, old_epoch) == 1
        await _outbox(db, scenario)
    finally:
        forwarder.close()
        witness.stop()
        await db.close()
    return scenario


async def _outbox(db: asyncpg.Connection, scenario: Scenario) -> None:
    """The service's side: one intent and outbox row per executed request,
    created 2 ms after its INGRESS; some driven to IN_FLIGHT and SUCCESS (events)."""
    for participant in PARTICIPANTS:
        await db.execute("INSERT INTO participants (participant_id) VALUES ($1)", participant)
    for n, request in enumerate(r for r in scenario.requests if r.kind == "executed" and r.executes):
        created = UNIX + dt.timedelta(microseconds=request.at_us + 2000)
        intent = await db.fetchval(
            "INSERT INTO payment_intents (participant_id, idempotency_key, amount_minor, currency, rail, "
            "destination_account, attestation_id, created_at) VALUES ($1, $2, 100, 'UGX', 'sim', 'acct', $3, $4) "
            "RETURNING intent_id", request.participant, f"key-{request.attestation_id}", request.attestation_id,
            created)
        outbox_id = str(uuid.uuid4())
        await db.execute(
            "INSERT INTO payment_outbox (id, intent_id, participant_id, attestation_id, ingress_node_id, "
            "ingress_stream_id, ingress_seq, ingress_body_sha256, rail, payload, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'sim', '{}', $9)", uuid.UUID(outbox_id), intent,
            request.participant, request.attestation_id, NODE, request.stream_id, request.seq,
            request.body_sha256, created)
        scenario.outbox_ids.append(outbox_id)
        if n % 3 != 2:
            await db.execute("UPDATE payment_outbox SET status = 'IN_FLIGHT', lease_owner = 'relayer-1', "
                             "lease_expires_at = now() + interval '1 minute', attempt_count = 1 WHERE id = $1",
                             uuid.UUID(outbox_id))
        if n % 3 == 0:
            await db.execute("UPDATE payment_outbox SET status = 'SUCCESS', lease_owner = NULL, "
                             "lease_expires_at = NULL, completed_at = now() WHERE id = $1", uuid.UUID(outbox_id))
