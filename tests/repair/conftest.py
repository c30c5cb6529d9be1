"""Repair-area fixtures: settings with short limits, a cycle runner."""

from __future__ import annotations

import asyncpg
import pytest

from repair.config import RepairConfig
from repair.worker import CycleResult, CycleState, run_cycle


@pytest.fixture
def settings() -> RepairConfig:
    return RepairConfig(ghost_grace_seconds=120, outcome_grace_seconds=120, zombie_grace_seconds=30,
                        stuck_key_seconds=60, heartbeat_interval_seconds=10, silent_heartbeats=3)


async def cycle(db: asyncpg.Connection, settings: RepairConfig, state: CycleState | None = None) -> CycleResult:
    result = await run_cycle(db, settings, "repair:test", state or CycleState())
    assert result.errors == [], result.errors
    return result


async def open_incidents(db: asyncpg.Connection, kind: str | None = None) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT * FROM repair_incidents WHERE resolved_at IS NULL AND ($1::text IS NULL OR kind = $1) "
        "ORDER BY detected_at, dedup_key", kind)
