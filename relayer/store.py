"""The relayer's database side: one documented method per named query.

The worker never sees SQL; this module never loops over rows on its own. Every
status change sets `symphony.actor` (transaction-local) so outbox_events says
who made it: claim and complete, the hot path, in the statement itself (one
round trip each), the others in a short transaction that runs set_actor first.
No transaction spans a rail call.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec

from symphony.db import queries

QUERIES = queries.load(__package__, "queries.sql")
STATEMENT_TIMEOUT_SECONDS = 10.0
_CLAIM_COLUMNS = ("id", "rail", "payload", "participant_id", "created_at", "attempt", "max_attempts",
                  "old_status", "previous_response_code")


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """One leased outbox row, as the worker dispatches it."""

    id: uuid.UUID
    rail: str
    payload: dict[str, Any]
    participant_id: str
    attempt: int
    max_attempts: int
    old_status: str
    previous_response_code: str | None
    created_at: Any

    @property
    def last_attempt_ambiguous(self) -> bool:
        """The previous attempt may have reached the rail without an answer."""
        return bool(self.previous_response_code and self.previous_response_code.startswith("AMBIGUOUS"))


@dataclass(frozen=True, slots=True)
class Completion:
    """The outcome of one attempt, waiting to be written."""

    id: uuid.UUID
    attempt: int
    status: str  # SUCCESS, FAILED or RECOVERING
    response_code: str
    error: str | None
    rail_reference: str | None
    retry_delay_seconds: float
    dead_letter: bool

    def __post_init__(self) -> None:
        assert self.status in ("SUCCESS", "FAILED", "RECOVERING"), self.status
        assert self.attempt >= 1
        assert not self.dead_letter or self.status == "FAILED"


@dataclass(frozen=True, slots=True)
class BreakerReport:
    """One rail's circuit breaker in this worker, as published for the dashboard."""

    rail: str
    state: str  # CLOSED, HALF_OPEN or OPEN
    opened_at: dt.datetime | None
    consecutive_failures: int


async def _init_connection(conn: asyncpg.Connection) -> None:
    # msgspec decodes a claimed row's payload several times faster than json.loads.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=msgspec.json.decode, schema="pg_catalog")


class OutboxStore:
    def __init__(self, pool: asyncpg.Pool, worker_id: str) -> None:
        self.pool = pool
        self.worker_id = worker_id

    init_connection: Callable[[asyncpg.Connection], Any] = staticmethod(_init_connection)

    async def claim_batch(self, slots: dict[str, int], lease_seconds: float) -> list[ClaimedRow]:
        """Lease up to slots[rail] due rows of each rail; one round trip for all rails."""
        rails = [rail for rail, count in slots.items() if count > 0]
        if not rails:
            return []
        counts = [slots[rail] for rail in rails]
        # One autocommit statement: it sets the actor itself (queries.sql, `actor`).
        async with self.pool.acquire() as conn:
            records = await conn.fetch(QUERIES["claim_batch"], self.worker_id, lease_seconds, rails, counts,
                                       timeout=STATEMENT_TIMEOUT_SECONDS)
        # Positional (cheaper than by name): the column order of claim_batch's RETURNING clause.
        assert not records or tuple(records[0].keys()) == _CLAIM_COLUMNS, tuple(records[0].keys())
        rows = [ClaimedRow(r[0], r[1], r[2], r[3], r[5], r[6], r[7], r[8], r[4]) for r in records]
        assert len(rows) <= sum(counts)
        return rows

    async def complete_batch(self, completions: Sequence[Completion]) -> tuple[int, int]:
        """Write outcomes; returns (rows written, incidents opened or refreshed).

        Rows whose lease this worker no longer holds for that attempt are skipped
        (another relayer reclaimed them; its attempt resends the same key)."""
        if not completions:
            return 0, 0
        columns = (
            [c.id for c in completions], [c.attempt for c in completions], [c.status for c in completions],
            [c.response_code for c in completions], [c.error for c in completions],
            [c.rail_reference for c in completions], [c.retry_delay_seconds for c in completions],
            [c.dead_letter for c in completions],
        )
        # One autocommit statement: it sets the actor itself (queries.sql, `actor`).
        async with self.pool.acquire() as conn:
            record = await conn.fetchrow(QUERIES["complete_batch"], self.worker_id, *columns,
                                         timeout=STATEMENT_TIMEOUT_SECONDS)
        assert record is not None  # an aggregate: always one row
        return int(record["written"]), int(record["incidents_opened"])

    async def reclaim_expired(self, limit: int) -> list[asyncpg.Record]:
        """Expired leases (at most `limit`) become RECOVERING, or dead letters past budget."""
        assert limit >= 1
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(QUERIES["set_actor"], self.worker_id, timeout=STATEMENT_TIMEOUT_SECONDS)
            rows: list[Any] = await conn.fetch(QUERIES["reclaim_expired"], self.worker_id, limit,
                                               timeout=STATEMENT_TIMEOUT_SECONDS)
            return rows

    async def release_unstarted(self, rows: Sequence[ClaimedRow]) -> int:
        """Return claimed-but-never-sent rows to their previous status."""
        if not rows:
            return 0
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(QUERIES["set_actor"], self.worker_id, timeout=STATEMENT_TIMEOUT_SECONDS)
            released = await conn.fetch(QUERIES["release_unstarted"], self.worker_id, [r.id for r in rows],
                                        [r.attempt for r in rows], [r.old_status for r in rows],
                                        timeout=STATEMENT_TIMEOUT_SECONDS)
        return len(released)

    async def report_breakers(self, reports: Sequence[BreakerReport], valid_seconds: float) -> None:
        """Publish this worker's breaker per rail (state, last opening) for `valid_seconds`."""
        assert valid_seconds > 0
        async with self.pool.acquire() as conn:
            await conn.execute(QUERIES["report_breakers"], self.worker_id, [r.rail for r in reports],
                               [r.state for r in reports], [r.opened_at for r in reports],
                               [r.consecutive_failures for r in reports], valid_seconds,
                               timeout=STATEMENT_TIMEOUT_SECONDS)

    async def forget_breakers(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(QUERIES["forget_breakers"], self.worker_id, timeout=STATEMENT_TIMEOUT_SECONDS)

    async def ping(self) -> bool:
        async with self.pool.acquire() as conn:
            return bool(await conn.fetchval(QUERIES["ping"], timeout=2.0) == 1)


async def redrive(conn: asyncpg.Connection, outbox_id: uuid.UUID, *, actor: str, note: str,
                  extra_attempts: int) -> asyncpg.Record | None:
    """Re-drive one dead letter (operator action); None if it is not FAILED."""
    assert extra_attempts >= 1
    async with conn.transaction():
        await conn.execute(QUERIES["set_actor"], actor, timeout=STATEMENT_TIMEOUT_SECONDS)
        row = await conn.fetchrow(QUERIES["redrive"], outbox_id, extra_attempts,
                                  f"redrive by {actor}: {note}", timeout=STATEMENT_TIMEOUT_SECONDS)
        if row is not None:
            await conn.fetch(QUERIES["resolve_dead_letter_incident"], str(outbox_id), actor, note,
                             timeout=STATEMENT_TIMEOUT_SECONDS)
    return row


async def outbox_row(conn: asyncpg.Connection, outbox_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(QUERIES["outbox_row"], outbox_id, timeout=STATEMENT_TIMEOUT_SECONDS)
