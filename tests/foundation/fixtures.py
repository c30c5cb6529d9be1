"""Hand-built rows for schema and view tests.

Rows are inserted directly, as the forwarder and the service would write them,
so the views can be checked against numbers known in advance.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import uuid

import asyncpg

from symphony.attestation import RecordType

_ids = itertools.count(1_000_000)


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


async def add_participant(db: asyncpg.Connection, participant_id: str) -> None:
    await db.execute("INSERT INTO participants (participant_id) VALUES ($1)", participant_id)


async def add_record(
    db: asyncpg.Connection,
    *,
    node: str = "node-a",
    stream: int = 0,
    seq: int,
    record_type: RecordType,
    attestation_id: int = 0,
    participant: str | None = None,
    route: str | None = None,
    executes: bool | None = None,
    disposition: str | None = None,
    status: int | None = None,
    at: dt.datetime | None = None,
) -> None:
    """One journal record as the forwarder ships it (chain hash not checked here).

    Records default to ten minutes ago: past the dashboard's ghost grace period.
    """
    canonical = f"{node}/{stream}/{seq}/{record_type}/{attestation_id}".encode()
    await db.execute(
        """
        INSERT INTO ingress_attestations
            (node_id, stream_id, stream_seq, record_type, attestation_id, recorded_at,
             participant_id, method, route, executes, status, disposition,
             idempotency_key_hash, chain_hash, canonical)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
        """,
        node, stream, seq, int(record_type), attestation_id, at or now() - dt.timedelta(minutes=10),
        participant, "POST" if route else None, route, executes, status, disposition,
        hashlib.sha256(b"key-%d" % attestation_id).digest() if record_type == RecordType.INGRESS else None,
        hashlib.sha256(canonical).digest(), canonical,
    )


async def add_outbox_row(
    db: asyncpg.Connection, *, participant: str, attestation_id: int, node: str = "node-a",
    stream: int = 0, seq: int = 1, amount: int = 1000,
) -> uuid.UUID:
    """An intent and its outbox row in one transaction, as the service writes them."""
    async with db.transaction():
        key = f"idem-{attestation_id}"
        intent_id = await db.fetchval(
            """
            INSERT INTO payment_intents (participant_id, idempotency_key, amount_minor, currency, rail,
                                         destination_account, attestation_id)
            VALUES ($1, $2, $3, 'ZMW', 'mmo', '260970000000', $4) RETURNING intent_id
            """,
            participant, key, amount, attestation_id,
        )
        outbox_id: uuid.UUID = await db.fetchval(
            """
            INSERT INTO payment_outbox (intent_id, participant_id, attestation_id, ingress_node_id,
                                        ingress_stream_id, ingress_seq, rail, payload)
            VALUES ($1, $2, $3, $4, $5, $6, 'mmo', $7::jsonb) RETURNING id
            """,
            intent_id, participant, attestation_id, node, stream, seq, json.dumps({"amount_minor": amount}),
        )
    return outbox_id


def next_attestation_id() -> int:
    return next(_ids)
