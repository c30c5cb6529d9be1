"""The repair area's SQL verbs: every named query of queries.sql behind one
documented method-like function (the worker owns the loop, this owns the SQL)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from repair.findings import Findings
from symphony.db import queries

QUERIES = queries.load("repair", "queries.sql")
TIMEOUT_SECONDS = 30.0
RESOLUTIONS = ("RESOLVED", "FALSE_POSITIVE", "ACCEPTED_LOSS", "REDRIVEN")
# How an incident closes by itself when its condition clears, per kind.
AUTO_RESOLUTION = {"DEAD_LETTER": "REDRIVEN"}


def to_json(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


async def apply_findings(conn: asyncpg.Connection, found: Findings, actor: str) -> tuple[int, int, int]:
    """Open/refresh incidents for `found`, resolve the cleared ones.

    Returns (opened, refreshed, resolved). One transaction, so a reader never
    sees an incident resolved and its successor not yet opened.
    """
    items = found.items
    async with conn.transaction():
        rows = await conn.fetch(
            QUERIES["upsert_incidents"],
            [f.kind for f in items], [f.dedup_key for f in items], [f.severity for f in items],
            [f.participant_id for f in items], [f.node_id for f in items], [f.stream_id for f in items],
            [f.subject for f in items], [to_json(f.evidence) for f in items],
            timeout=TIMEOUT_SECONDS,
        )
        resolved: list[asyncpg.Record] = []
        if found.complete:
            resolved = await conn.fetch(
                QUERIES["resolve_cleared"], found.kind, [f.dedup_key for f in items], found.scope_since,
                AUTO_RESOLUTION.get(found.kind, "AUTO_RESOLVED"), actor, timeout=TIMEOUT_SECONDS)
    opened = sum(1 for row in rows if row["opened"])
    return opened, len(rows) - opened, len(resolved)


async def record_actions(conn: asyncpg.Connection, kind: str, dedup_keys: Sequence[str], action: str,
                         detail: dict[str, Any], actor: str) -> int:
    """Log `action` against the open incidents of `kind` with these dedup keys."""
    if not dedup_keys:
        return 0
    rows = await conn.fetch(QUERIES["open_incident_ids"], kind, list(dedup_keys), timeout=TIMEOUT_SECONDS)
    for row in rows:
        await conn.execute(QUERIES["record_action"], row["incident_id"], action,
                           to_json({**detail, "dedup_key": row["dedup_key"]}), actor, timeout=TIMEOUT_SECONDS)
    return len(rows)


async def set_instance_status(conn: asyncpg.Connection, instance_id: str, role: str, *,
                              cycle_at: Any = None, cycle_ms: int | None = None, error: str | None = None) -> None:
    await conn.execute(QUERIES["instance_status"], instance_id, role, cycle_at, cycle_ms, error,
                       timeout=TIMEOUT_SECONDS)


async def set_instance_took_over(conn: asyncpg.Connection, instance_id: str) -> None:
    await conn.execute(QUERIES["instance_took_over"], instance_id, timeout=TIMEOUT_SECONDS)


def parse_incident_id(text: str) -> uuid.UUID:
    from symphony.errors import SymphonyError

    try:
        return uuid.UUID(text)
    except ValueError:
        raise SymphonyError(f"{text!r} is not an incident id (a UUID)", exit_code=2) from None
