"""Hand-built, correctly chained journal records inserted as the forwarder ships them.

`Stream` writes one journal stream's records straight into ingress_attestations
with canonical bytes (repair.canonical.build over symphony.attestation bodies),
chain hashes sha256(prev || canonical), and the decoded query columns; it keeps
the stream's checkpoint up to date in the same transaction, like the forwarder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from repair import canonical
from symphony import attestation
from symphony.attestation import RecordType

_ids = itertools.count(7_000_000)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def ago(**kwargs: float) -> dt.datetime:
    return now() - dt.timedelta(**kwargs)


def _us(at: dt.datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def next_attestation_id() -> int:
    return next(_ids)


@dataclass
class Stream:
    db: asyncpg.Connection
    node: str = "node-a"
    stream: int = 0
    checkpoint: bool = True
    seq: int = 0
    prev_hash: bytes = canonical.GENESIS_PREV_HASH
    epoch: bytes = field(default_factory=lambda: os.urandom(16))
    last_at: dt.datetime | None = None

    async def _append(self, record_type: RecordType, body: Any, attestation_id: int, at: dt.datetime,
                      columns: dict[str, Any]) -> int:
        self.seq += 1
        raw = body if isinstance(body, bytes) else attestation.encode(body)
        data = canonical.build(int(record_type), self.seq, attestation_id, raw)
        chain_hash = canonical.chain_hash(self.prev_hash, data)
        cols = {"node_id": self.node, "stream_id": self.stream, "stream_seq": self.seq,
                "record_type": int(record_type), "attestation_id": attestation_id, "recorded_at": at,
                "chain_hash": chain_hash, "canonical": data, **columns}
        names = ", ".join(cols)
        params = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
        async with self.db.transaction():
            await self.db.execute(f"INSERT INTO ingress_attestations ({names}) VALUES ({params})", *cols.values())
            if self.checkpoint:
                await self.db.execute(
                    """INSERT INTO journal_checkpoints (node_id, stream_id, epoch, last_seq, last_hash, last_record_at,
                                                        records_shipped)
                       VALUES ($1, $2, $3, $4, $5, $6, 1)
                       ON CONFLICT (node_id, stream_id) DO UPDATE
                       SET last_seq = $4, last_hash = $5, last_record_at = $6,
                           records_shipped = journal_checkpoints.records_shipped + 1, updated_at = now()""",
                    self.node, self.stream, self.epoch, self.seq, chain_hash, at)
        self.prev_hash = chain_hash
        self.last_at = at
        return self.seq

    async def genesis(self, at: dt.datetime | None = None) -> int:
        at = at or ago(minutes=30)
        # The journal writes GENESIS in its own binary layout (journal/FORMAT.md F11).
        return await self._append(RecordType.GENESIS, canonical.genesis_body(self.epoch, self.stream, self.node),
                                  0, at, {})

    async def ingress(self, participant: str = "bank-a", *, route: str = "/v1/payments", executes: bool = True,
                      at: dt.datetime | None = None, attestation_id: int | None = None,
                      key: bytes = b"") -> tuple[int, int]:
        """An INGRESS record; returns (attestation_id, seq)."""
        at = at or ago(minutes=10)
        attestation_id = attestation_id or next_attestation_id()
        key_hash = hashlib.sha256(key or b"idem-%d" % attestation_id).digest()
        body_hash = hashlib.sha256(b"body-%d" % attestation_id).digest()
        body = attestation.IngressBody(1, _us(at), participant, "jwt", "kid-1", 1, "POST", route, executes,
                                       body_hash, key_hash, "", "accepted")
        seq = await self._append(RecordType.INGRESS, body, attestation_id, at, {
            "participant_id": participant or None, "method": "POST", "route": route, "executes": executes,
            "idempotency_key_hash": key_hash, "body_sha256": body_hash})
        return attestation_id, seq

    async def outcome(self, attestation_id: int, ingress_seq: int, disposition: str = "executed",
                      status: int = 201, at: dt.datetime | None = None) -> int:
        at = at or ago(minutes=9)
        body = attestation.OutcomeBody(1, ingress_seq, _us(at), status, disposition, 1500, "")
        return await self._append(RecordType.OUTCOME, body, attestation_id, at, {
            "status": status, "disposition": disposition, "latency_us": 1500})

    async def heartbeat(self, at: dt.datetime | None = None) -> int:
        at = at or ago(minutes=1)
        return await self._append(RecordType.HEARTBEAT, attestation.HeartbeatBody(1, _us(at)), 0, at, {})


async def add_participant(db: asyncpg.Connection, participant_id: str) -> None:
    await db.execute("INSERT INTO participants (participant_id) VALUES ($1) ON CONFLICT DO NOTHING", participant_id)


async def add_outbox_row(db: asyncpg.Connection, *, participant: str, attestation_id: int, node: str = "node-a",
                         stream: int = 0, seq: int = 1, amount: int = 1000, key: str | None = None) -> uuid.UUID:
    """An intent and its outbox row in one transaction, as the service writes them."""
    await add_participant(db, participant)
    async with db.transaction():
        intent_id = await db.fetchval(
            """INSERT INTO payment_intents (participant_id, idempotency_key, amount_minor, currency, rail,
                                            destination_account, attestation_id)
               VALUES ($1, $2, $3, 'ZMW', 'mmo', '260970000000', $4) RETURNING intent_id""",
            participant, key or f"idem-{attestation_id}", amount, attestation_id)
        outbox_id: uuid.UUID = await db.fetchval(
            """INSERT INTO payment_outbox (intent_id, participant_id, attestation_id, ingress_node_id,
                                           ingress_stream_id, ingress_seq, rail, payload)
               VALUES ($1, $2, $3, $4, $5, $6, 'mmo', $7::jsonb) RETURNING id""",
            intent_id, participant, attestation_id, node, stream, seq, json.dumps({"amount_minor": amount}))
    return outbox_id


async def executed_payment(stream: Stream, participant: str = "bank-a", **kwargs: Any) -> uuid.UUID:
    """INGRESS + outbox row + OUTCOME executed: the happy path."""
    attestation_id, seq = await stream.ingress(participant, **kwargs)
    outbox_id = await add_outbox_row(stream.db, participant=participant, attestation_id=attestation_id,
                                     node=stream.node, stream=stream.stream, seq=seq)
    await stream.outcome(attestation_id, seq)
    return outbox_id


async def tamper(db: asyncpg.Connection, sql: str, *args: Any) -> None:
    """Run `sql` with the append-only trigger out of the way, as a superuser could."""
    async with db.transaction():
        await db.execute("SET LOCAL session_replication_role = replica")
        await db.execute(sql, *args)
