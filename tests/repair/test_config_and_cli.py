"""The area's configuration example, the `repair` incident commands and `audit gap/ghosts/seq-gaps`.

Method: load config.example.toml through symphony.config.load and compare its
keys with the struct; run the CLI as a real process against hand-built data.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import asyncpg
import msgspec

from repair.config import RepairConfig, load
from tests.conftest import REPO_ROOT, symphony_cli
from tests.repair.conftest import cycle
from tests.repair.helpers import Stream, ago, executed_payment

EXAMPLE = REPO_ROOT / "repair" / "config.example.toml"


def test_example_config_documents_every_key_with_its_default() -> None:
    loaded = load(str(EXAMPLE))
    keys = set(tomllib.loads(EXAMPLE.read_text()))
    assert keys == {f.name for f in msgspec.structs.fields(RepairConfig)}
    assert loaded == RepairConfig()


def test_invalid_value_is_refused_with_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "repair.toml"
    bad.write_text("cycle_seconds = 0\n")
    result = symphony_cli("repair", "--config", str(bad), "--database-url", "postgresql://127.0.0.1:1/x")
    assert result.returncode == 2 and "cycle_seconds" in result.stderr and "Traceback" not in result.stderr


async def _ghost_world(db: asyncpg.Connection) -> int:
    stream = Stream(db)
    await stream.genesis()
    await executed_payment(stream, "bank-a")
    await executed_payment(stream, "bank-b")
    rejected, seq = await stream.ingress("bank-b")
    await stream.outcome(rejected, seq, "rejected", 403)
    ghost, _ = await stream.ingress("bank-a", at=ago(minutes=5))
    await stream.heartbeat(ago(seconds=1))
    return ghost


async def test_audit_gap_ghosts_and_seq_gaps(db: asyncpg.Connection, database_url: str) -> None:
    ghost = await _ghost_world(db)
    gap = symphony_cli("audit", "gap", "--json", "--database-url", database_url)
    assert gap.returncode == 1, gap.stderr
    report = json.loads(gap.stdout)
    assert report["total"] == {"ingress_count": 4, "executions": 2, "handled": 1, "gap": 1, "unattested": 0,
                               "pending": 0, "pending_age_seconds_max": None, "status": "FAIL"}
    by = {p["participant_id"]: p for p in report["participants"]}
    assert by["bank-a"]["gap"] == 1 and by["bank-b"]["status"] == "PASS"
    only_b = symphony_cli("audit", "gap", "--participant", "bank-b", "--database-url", database_url)
    assert only_b.returncode == 0 and "TOTAL" in only_b.stdout
    window = symphony_cli("audit", "gap", "--since", "2m", "--json", "--database-url", database_url)
    assert window.returncode == 0 and json.loads(window.stdout)["total"]["gap"] == 0  # the ghost is older
    ghosts = symphony_cli("audit", "ghosts", "--json", "--database-url", database_url)
    assert ghosts.returncode == 1
    assert [g["attestation_id"] for g in json.loads(ghosts.stdout)["ghosts"]] == [ghost]
    gaps = symphony_cli("audit", "seq-gaps", "--database-url", database_url)
    assert gaps.returncode == 0 and "0 gap(s)" in gaps.stdout
    bad_time = symphony_cli("audit", "gap", "--since", "yesterday-ish", "--database-url", database_url)
    assert bad_time.returncode == 2 and "Traceback" not in bad_time.stderr


async def test_repair_list_show_report_resolve(db: asyncpg.Connection, database_url: str, settings) -> None:
    ghost = await _ghost_world(db)
    await cycle(db, settings)
    listed = symphony_cli("repair", "list", "--json", "--kind", "GHOST", "--database-url", database_url)
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)
    assert len(items) == 1
    incident_id = items[0]["incident_id"]
    shown = symphony_cli("repair", "show", incident_id, "--database-url", database_url)
    assert json.loads(shown.stdout)["evidence_chain"]["attestation_id"] == ghost
    md = symphony_cli("repair", "report", incident_id, "--database-url", database_url)
    assert md.returncode == 0
    assert "## Evidence chain" in md.stdout and "INGRESS" in md.stdout and "No outbox row." in md.stdout
    assert "same idempotency key" in md.stdout
    as_json = json.loads(symphony_cli("repair", "report", incident_id, "--format", "json",
                                      "--database-url", database_url).stdout)
    assert as_json["evidence_chain"]["ledger_intent"] is None
    done = symphony_cli("repair", "resolve", incident_id, "--outcome", "ACCEPTED_LOSS", "--note",
                        "participant abandoned the payment", "--by", "alice", "--database-url", database_url)
    assert done.returncode == 0, done.stderr
    row = await db.fetchrow("SELECT resolution, resolved_by, operator_notes FROM repair_incidents "
                            "WHERE incident_id = $1::uuid", incident_id)
    assert row["resolution"] == "ACCEPTED_LOSS" and row["resolved_by"] == "alice"
    assert json.loads(row["operator_notes"])[0]["note"] == "participant abandoned the payment"
    again = symphony_cli("repair", "resolve", incident_id, "--outcome", "RESOLVED", "--note", "x",
                         "--database-url", database_url)
    assert again.returncode == 2 and "already resolved" in again.stderr
    await cycle(db, settings)  # accepted loss: not reopened
    assert await db.fetchval("SELECT count(*) FROM repair_incidents WHERE kind = 'GHOST'") == 1


async def test_report_of_a_dead_letter_shows_transitions_and_rail_attempts(
        db: asyncpg.Connection, database_url: str, settings) -> None:
    stream = Stream(db)
    await stream.genesis()
    outbox = await executed_payment(stream)
    for attempt in range(1, 3):
        await db.execute("""UPDATE payment_outbox SET status = 'IN_FLIGHT', lease_owner = 'r1', attempt_count = $2,
                                lease_expires_at = now() + interval '30 s' WHERE id = $1""", outbox, attempt)
        await db.execute("""UPDATE payment_outbox SET status = 'RECOVERING', lease_owner = NULL,
                                lease_expires_at = NULL, last_response_code = '503', last_error = 'rail busy'
                            WHERE id = $1""", outbox)
    await db.execute("""UPDATE payment_outbox SET status = 'FAILED', completed_at = now(), last_error = 'budget'
                        WHERE id = $1""", outbox)
    await stream.heartbeat(ago(seconds=1))
    await cycle(db, settings)
    incident = await db.fetchval("SELECT incident_id::text FROM repair_incidents WHERE kind = 'DEAD_LETTER'")
    data = json.loads(symphony_cli("repair", "report", incident, "--format", "json",
                                   "--database-url", database_url).stdout)
    chain = data["evidence_chain"]
    assert chain["outbox"]["status"] == "FAILED" and chain["ledger_intent"]["amount_minor"] == 1000
    assert [t["new_status"] for t in chain["transitions"]] == [
        "PENDING", "IN_FLIGHT", "RECOVERING", "IN_FLIGHT", "RECOVERING", "FAILED"]
    assert len(chain["rail_attempts"]) == 2 and chain["rail_attempts"][0]["response_code"] == "503"
    assert [a["record_type"] for a in chain["attestations"]] == [2, 3]


def test_up_components_run_repair_and_a_token_protected_dashboard(tmp_path: Path) -> None:
    from repair import up
    from symphony.components import UpContext

    ctx = UpContext(data_dir=tmp_path, database_url="postgresql://127.0.0.1:1/x", node_id="node-t")
    specs = up.components(ctx)
    assert [s.name for s in specs] == ["repair", "dashboard"]
    token = tmp_path / "keys" / "dashboard-token"
    assert token.stat().st_mode & 0o777 == 0o600 and len(token.read_text().strip()) >= 32
    assert "--token-file" in specs[1].argv and all(s.wait_port for s in specs)
    first = token.read_text()
    up.components(ctx)
    assert token.read_text() == first  # created once
