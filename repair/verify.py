"""Chain verification against PostgreSQL: whole streams (audit) or increments (daemon).

Reads happen in one REPEATABLE READ, read-only transaction per stream, so the
rows and the checkpoint they are compared with come from the same snapshot
(the forwarder moves both in one transaction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from repair import canonical, chain
from repair.store import QUERIES, TIMEOUT_SECONDS

CURSOR_PREFETCH_ROWS = 2_000


@dataclass
class StreamReport:
    node_id: str
    stream_id: int
    records_verified: int
    last_verified_seq: int
    last_verified_hash: bytes
    anchored_at: int | None
    broken: chain.Break | None

    @property
    def status(self) -> str:
        return "OK" if self.broken is None else "BROKEN"

    def as_dict(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "stream_id": self.stream_id, "status": self.status,
                "records_verified": self.records_verified, "last_verified_seq": self.last_verified_seq,
                "anchored_at": self.anchored_at,
                "first_bad_seq": self.broken.seq if self.broken else None,
                "reason": self.broken.reason if self.broken else None,
                "detail": self.broken.detail if self.broken else None}


def _checkpoint(context: asyncpg.Record) -> chain.Checkpoint | None:
    if context["last_seq"] is None:
        return None
    return chain.Checkpoint(context["last_seq"], bytes(context["last_hash"]), bytes(context["epoch"]))


def _report(verifier: chain.StreamVerifier) -> StreamReport:
    return StreamReport(verifier.node_id, verifier.stream_id, verifier.records_verified, verifier.last_seq,
                        verifier.prev_hash, verifier.anchored_at, verifier.broken)


async def list_streams(conn: asyncpg.Connection) -> list[tuple[str, int]]:
    rows = await conn.fetch(QUERIES["list_streams"], timeout=TIMEOUT_SECONDS)
    return [(row["node_id"], row["stream_id"]) for row in rows]


async def verify_stream(conn: asyncpg.Connection, node_id: str, stream_id: int) -> StreamReport:
    """Recompute every chain hash of one stream from its first record."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        context = await conn.fetchrow(QUERIES["stream_context"], node_id, stream_id, timeout=TIMEOUT_SECONDS)
        verifier = chain.StreamVerifier(node_id, stream_id, archived_through=context["archived_through"] or 0)
        cursor = conn.cursor(QUERIES["stream_rows_filtered"], node_id, stream_id, prefetch=CURSOR_PREFETCH_ROWS,
                             timeout=TIMEOUT_SECONDS)
        async for row in cursor:
            if verifier.feed(row) is not None:
                break
        verifier.finish(_checkpoint(context))
    return _report(verifier)


async def verify_increment(conn: asyncpg.Connection, node_id: str, stream_id: int, *, verified_seq: int,
                           verified_hash: bytes | None, batch_rows: int, batches_max: int) -> StreamReport:
    """Verify the records after `verified_seq`, at most batch_rows x batches_max of them.

    The checkpoint comparison (C5) runs only when the end of the stream was
    reached, since a head part-way through says nothing about the tail.
    """
    assert batch_rows >= 1 and batches_max >= 1
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        context = await conn.fetchrow(QUERIES["stream_context"], node_id, stream_id, timeout=TIMEOUT_SECONDS)
        verifier = chain.StreamVerifier(
            node_id, stream_id, next_seq=verified_seq + 1,
            prev_hash=verified_hash if verified_seq > 0 and verified_hash else canonical.GENESIS_PREV_HASH,
            archived_through=context["archived_through"] or 0)
        reached_end = False
        for _ in range(batches_max):
            rows = await conn.fetch(QUERIES["stream_rows"], node_id, stream_id, verifier.last_seq, batch_rows,
                                    timeout=TIMEOUT_SECONDS)
            for row in rows:
                if verifier.feed(row) is not None:
                    break
            if verifier.broken is not None:
                break
            if len(rows) < batch_rows:
                reached_end = True
                break
        if reached_end:
            verifier.finish(_checkpoint(context))
    return _report(verifier)
