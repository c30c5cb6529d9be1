"""`symphony participant`: administration without hand-written SQL, recorded append-only."""

from __future__ import annotations

import json

import asyncpg
import pytest

from tests.conftest import symphony_cli
from tests.repair.helpers import add_participant


async def test_changes_are_applied_and_recorded_with_who_when_why(db: asyncpg.Connection, database_url: str) -> None:
    """Goal: suspend, revoke-tokens and reinstate change the participant and each
    writes one participant_admin_events row (operator from --operator or $USER,
    the database role, the reason); a no-op records nothing; usage errors exit 2.
    Method: run the CLI as a real process against a fresh database."""
    await add_participant(db, "bank-a")
    await add_participant(db, "bank-b")
    url = ("--database-url", database_url)

    no_reason = symphony_cli("participant", "suspend", "bank-a", *url)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    blank = symphony_cli("participant", "suspend", "bank-a", "--reason", "  ", *url)
    assert blank.returncode == 2 and "--reason must say why" in blank.stderr and "Traceback" not in blank.stderr
    unknown = symphony_cli("participant", "suspend", "nobody", "--reason", "x", *url)
    assert unknown.returncode == 2 and "no participant 'nobody'" in unknown.stderr
    assert await db.fetchval("SELECT count(*) FROM participant_admin_events") == 0

    suspended = symphony_cli("participant", "suspend", "bank-a", "--reason", "AML hold, ticket 42",
                             "--operator", "alice", *url)
    assert suspended.returncode == 0, suspended.stderr
    assert "ACTIVE pv 1 -> SUSPENDED pv 1" in suspended.stdout
    again = symphony_cli("participant", "suspend", "bank-a", "--reason", "twice", *url)
    assert again.returncode == 0 and "already SUSPENDED" in again.stderr
    revoked = symphony_cli("participant", "revoke-tokens", "bank-a", "--reason", "key leaked", *url,
                           env={"USER": "bob"})
    assert revoked.returncode == 0 and "pv 1 -> SUSPENDED pv 2" in revoked.stdout, revoked.stderr
    reinstated = symphony_cli("participant", "reinstate", "bank-a", "--reason", "hold lifted", "--operator", "carol",
                              *url)
    assert reinstated.returncode == 0, reinstated.stderr

    row = await db.fetchrow("SELECT status, policy_version FROM participants WHERE participant_id = 'bank-a'")
    assert (row["status"], row["policy_version"]) == ("ACTIVE", 2)
    events = await db.fetch("SELECT action, operator, database_role, reason, old_status, new_status, "
                            "old_policy_version, new_policy_version, occurred_at FROM participant_admin_events "
                            "ORDER BY event_id")
    assert [(e["action"], e["operator"], e["reason"]) for e in events] == [
        ("SUSPEND", "alice", "AML hold, ticket 42"), ("REVOKE_TOKENS", "bob", "key leaked"),
        ("REINSTATE", "carol", "hold lifted")]
    assert [(e["old_status"], e["new_status"], e["old_policy_version"], e["new_policy_version"]) for e in events] == [
        ("ACTIVE", "SUSPENDED", 1, 1), ("SUSPENDED", "SUSPENDED", 1, 2), ("SUSPENDED", "ACTIVE", 2, 2)]
    role = await db.fetchval("SELECT current_user")
    assert all(e["database_role"] == role and e["occurred_at"] is not None for e in events)

    listed = json.loads(symphony_cli("participant", "list", "--json", *url).stdout)
    assert [(p["participant_id"], p["status"], p["last_action"]) for p in listed] == [
        ("bank-a", "ACTIVE", "REINSTATE"), ("bank-b", "ACTIVE", None)]
    shown = json.loads(symphony_cli("participant", "show", "bank-a", "--json", *url).stdout)
    assert shown["participant"]["policy_version"] == 2 and [e["action"] for e in shown["events"]] == [
        "REINSTATE", "REVOKE_TOKENS", "SUSPEND"]
    text = symphony_cli("participant", "show", "bank-a", *url)
    assert text.returncode == 0 and "key leaked" in text.stdout and "by bob" in text.stdout


@pytest.mark.parametrize("statement", [
    "UPDATE participant_admin_events SET reason = 'nothing happened'",
    "DELETE FROM participant_admin_events",
    "TRUNCATE participant_admin_events",
])
async def test_the_record_is_append_only(db: asyncpg.Connection, database_url: str, statement: str) -> None:
    """Goal: the administrative record cannot be rewritten, not even by the
    table's owner. Method: record one change through the CLI, then try to
    change or remove it; the trigger refuses, the row stays."""
    await add_participant(db, "bank-a")
    done = symphony_cli("participant", "suspend", "bank-a", "--reason", "test", "--database-url", database_url)
    assert done.returncode == 0, done.stderr
    assert await db.fetchval("SELECT count(*) FROM participant_admin_events") == 1
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await db.execute(statement)
    assert await db.fetchval("SELECT reason FROM participant_admin_events") == "test"
