"""The dashboard's status when payments are stuck, condition by condition.

Method: real rows in a fresh database, no incident and no gap, so only the
condition under test can move the status; `overview_data` is what the page and
/api/summary show.
"""

from __future__ import annotations

import asyncpg
import pytest

from repair import dashboard
from repair.config import RepairConfig
from tests.repair.helpers import add_outbox_row, next_attestation_id

# Rows here have no INGRESS (no journal in these tests): a long reverse-gap bound keeps them
# pending (counted, not CRITICAL), so the status speaks of the condition under test.
SETTINGS = RepairConfig(dashboard_pending_age_seconds_max=60, unattested_pending_seconds=86_400)


async def _status(db: asyncpg.Connection) -> tuple[str, list[str]]:
    data = await dashboard.overview_data(db, SETTINGS)
    assert data["totals"]["gap"] == 0 and data["totals"]["open_incidents"] == 0
    return data["totals"]["status"], sorted(c["condition"] for c in data["conditions"])


async def _breaker(db: asyncpg.Connection, state: str, valid: str) -> None:
    await db.execute("INSERT INTO rail_breaker_reports (rail, worker_id, state, reported_at, valid_until) "
                     "VALUES ('mmo', 'relayer-1', $1, now() - interval '2 hours', now() + $2::text::interval)", state, valid)


async def test_healthy_with_young_unfinished_payments(db: asyncpg.Connection) -> None:
    """Goal: a payment younger than the threshold is not stuck."""
    await add_outbox_row(db, participant="bank-a", attestation_id=next_attestation_id())
    assert await _status(db) == ("HEALTHY", [])


@pytest.mark.parametrize("status", ["PENDING", "RECOVERING", "IN_FLIGHT"])
async def test_an_old_unfinished_payment_is_action_required(db: asyncpg.Connection, status: str) -> None:
    """Goal: a payment unfinished for longer than dashboard_pending_age_seconds_max
    makes the status ACTION_REQUIRED, and finishing it makes it HEALTHY."""
    outbox_id = await add_outbox_row(db, participant="bank-a", attestation_id=next_attestation_id())
    await db.execute("UPDATE payment_outbox SET created_at = now() - interval '5 minutes' WHERE id = $1", outbox_id)
    in_flight = ("UPDATE payment_outbox SET status = 'IN_FLIGHT', lease_owner = 'r', attempt_count = attempt_count + 1, "
                 "lease_expires_at = now() + interval '30 seconds' WHERE id = $1")
    if status != "PENDING":
        await db.execute(in_flight, outbox_id)
    if status == "RECOVERING":
        await db.execute("UPDATE payment_outbox SET status = 'RECOVERING', lease_owner = NULL, lease_expires_at = NULL "
                         "WHERE id = $1", outbox_id)
    assert await _status(db) == ("ACTION_REQUIRED", ["payments_stuck"])
    if status != "IN_FLIGHT":
        await db.execute(in_flight, outbox_id)
    await db.execute("UPDATE payment_outbox SET status = 'SUCCESS', lease_owner = NULL, lease_expires_at = NULL, "
                     "completed_at = now() WHERE id = $1", outbox_id)
    assert await _status(db) == ("HEALTHY", [])


@pytest.mark.parametrize(("state", "valid", "expected"), [
    ("OPEN", "1 minute", ("ACTION_REQUIRED", ["breaker_open"])),
    ("HALF_OPEN", "1 minute", ("ACTION_REQUIRED", ["breaker_open"])),
    ("CLOSED", "1 minute", ("HEALTHY", [])),
    ("OPEN", "-1 second", ("HEALTHY", [])),  # the last word of a relayer that died
])
async def test_breaker_reports(db: asyncpg.Connection, state: str, valid: str,
                               expected: tuple[str, list[str]]) -> None:
    """Goal: a breaker that is not CLOSED in a live relayer's report makes the
    status ACTION_REQUIRED; an expired report does not count."""
    await _breaker(db, state, valid)
    assert await db.fetchval("SELECT count(*) FROM rail_breaker_reports") == 1
    assert await _status(db) == expected
