"""Reconciliation against the rails' own statements (`symphony reconcile`).

Goal: a statement the rail produced for what Symphony executed reconciles clean;
a double execution, a foreign debit, a missing credit and an amount mismatch
each become the right incident (RAIL_UNMATCHED / RAIL_MISMATCH, CRITICAL for
money moved without an outbox row), counted for the dashboard and the evidence
bundle, and a statement is ingested once by the scheduled run. Method: a real
simulator of each real-rail shape and a real relayer execute payments; the
simulator's statement (CSV, or camt.053 built with pyiso20022) is fetched,
doctored with the same format's tools, and fed to the real CLI.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from decimal import Decimal
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from repair import reconcile
from repair.config import RepairConfig
from repair.worker import run_cycle
from symphony import iso20022
from tests.conftest import symphony_cli
from tests.relayer.conftest import Processes, add_payments, processes, wait_until  # noqa: F401
from tests.relayer.test_real_rails import ACCOUNT, REAL_RAILS, relayer_toml, start_rail


async def _execute(rail: str, count: int, database_url: str, db: asyncpg.Connection, processes: Processes,
                   tmp_path: Path) -> tuple[str, list[uuid.UUID]]:
    url = start_rail(processes, tmp_path, rail, "--settle-ms", "0")
    ids = await add_payments(db, count, rail=rail, account=ACCOUNT[rail])
    processes.relayer(f"recon-{rail}", database_url, {rail: (rail, url)}, lease_seconds=5.0,
                      rail_toml=relayer_toml(tmp_path))

    async def done() -> bool:
        return await db.fetchval("SELECT count(*) FROM payment_outbox WHERE status = 'SUCCESS'") == count

    await wait_until(done, what="every payment SUCCESS")
    return url, ids


async def _statement(url: str) -> bytes:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/_sim/statement") as response:
        assert response.status == 200
        return await response.read()


def _doctor_csv(rail: str, data: bytes) -> bytes:
    """Double one execution, add a foreign debit, drop one credit, change one amount."""
    rows = list(csv.reader(io.StringIO(data.decode())))
    header, lines = rows[0], rows[1:]
    amount, txn = header.index("Amount"), header.index("Id" if rail == "mtn_momo" else "Airtel Money ID")
    handle = header.index("Reference Id" if rail == "mtn_momo" else "Transaction ID")
    reference = header.index("External Transaction Id" if rail == "mtn_momo" else "Reference")
    double = list(lines[0])
    double[txn] = "SECOND-EXECUTION"
    foreign = list(lines[1])
    foreign[txn], foreign[reference] = "FOREIGN-1", "not-ours"
    foreign[handle] = str(uuid.uuid4()) if rail == "mtn_momo" else "f" * 30
    lines[2][amount] = str(Decimal(lines[2][amount]) + 1)
    del lines[3]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *lines, double, foreign])
    return out.getvalue().encode()


def _doctor_camt053(data: bytes) -> bytes:
    entries = list(reconcile.read_camt053(io.BytesIO(data)))
    assert entries
    parsed = [iso20022.StatementEntry(tx_id=e[1], end_to_end_id=e[2].hex if e[2] else "x", amount=Decimal(e[4]) / 100,
                                      currency=e[5], creditor_account=e[6], reference=e[7], booked_on=e[8])
              for e in entries]
    double = iso20022.StatementEntry(**{**_fields(parsed[0]), "reference": "SECOND-EXECUTION"})
    foreign = iso20022.StatementEntry(**{**_fields(parsed[1]), "tx_id": "f" * 35, "end_to_end_id": "FOREIGN",
                                         "reference": "FOREIGN-1"})
    changed = iso20022.StatementEntry(**{**_fields(parsed[2]), "amount": parsed[2].amount + 1})
    doctored = [parsed[0], parsed[1], changed, *parsed[4:], double, foreign]
    return iso20022.camt053_build("STMT-DOCTORED", "SETTLEMENT", parsed[0].currency, doctored)


def _fields(entry: iso20022.StatementEntry) -> dict[str, object]:
    return {name: getattr(entry, name) for name in entry.__slots__}  # type: ignore[attr-defined]


@pytest.mark.parametrize("rail", REAL_RAILS)
async def test_statement_reconciles_and_every_kind_of_difference_is_an_incident(
        rail: str, database_url: str, db: asyncpg.Connection, processes: Processes, tmp_path: Path) -> None:
    """Clean statement: exit 0, no incident. Doctored: exit 1 and exactly the four findings."""
    url, _ = await _execute(rail, 6, database_url, db, processes, tmp_path)
    original = await _statement(url)
    clean = tmp_path / "clean.stmt"
    clean.write_bytes(original)
    result = symphony_cli("reconcile", "--rail", rail, "--statement", str(clean), "--database-url", database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 lines, 6 matched, 0 unmatched, 0 mismatched, 0 missing" in result.stdout
    assert await db.fetchval("SELECT count(*) FROM repair_incidents WHERE kind LIKE 'RAIL_%'") == 0

    doctored = tmp_path / "doctored.stmt"
    doctored.write_bytes(_doctor_camt053(original) if rail == "iso20022" else _doctor_csv(rail, original))
    result = symphony_cli("reconcile", "--rail", rail, "--statement", str(doctored), "--database-url", database_url)
    assert result.returncode == 1, result.stdout + result.stderr
    rows = await db.fetch("SELECT kind, severity, evidence->>'reason' AS reason FROM repair_incidents "
                          "WHERE kind LIKE 'RAIL_%' ORDER BY 1, 3")
    found = sorted((r["kind"], r["severity"], r["reason"]) for r in rows)
    assert found == sorted([("RAIL_UNMATCHED", "CRITICAL", "DOUBLE_EXECUTION"),
                            ("RAIL_UNMATCHED", "CRITICAL", "NO_OUTBOX_ROW"),
                            ("RAIL_UNMATCHED", "HIGH", "MISSING_FROM_STATEMENT"),
                            ("RAIL_MISMATCH", "CRITICAL", "AMOUNT_CURRENCY_OR_ACCOUNT")]), result.stdout
    counts = await reconcile.summary(db)
    assert counts["statements"] == 2 and counts["unmatched_open"] == 3 and counts["mismatched_open"] == 1
    assert counts["critical_open"] == 3


async def test_scheduled_run_ingests_each_statement_once(database_url: str, db: asyncpg.Connection,
                                                         processes: Processes, tmp_path: Path) -> None:
    """A statement dropped in <dir>/<rail>/ is reconciled by the repair cycle (the schedule) once, never
    twice; a doctored one dropped later opens its incidents on the next cycle."""
    url, _ = await _execute("mtn_momo", 5, database_url, db, processes, tmp_path)
    folder = tmp_path / "statements" / "mtn_momo"
    folder.mkdir(parents=True)
    original = await _statement(url)
    (folder / "day-1.csv").write_bytes(original)
    settings = RepairConfig(reconcile_statement_dir=str(tmp_path / "statements"),
                            reconcile_rails={"mtn_momo": "mtn_momo"})
    for _ in range(2):
        result = await run_cycle(db, settings, "repair:test")
        assert not [e for e in result.errors if e.startswith("reconcile")], result.errors
    rows = await db.fetch("SELECT lines, matched, unmatched, mismatched, missing FROM rail_statements")
    assert [tuple(r) for r in rows] == [(5, 5, 0, 0, 0)]
    (folder / "day-2.csv").write_bytes(_doctor_csv("mtn_momo", original))
    await run_cycle(db, settings, "repair:test")
    assert await db.fetchval("SELECT count(*) FROM rail_statements") == 2
    assert await db.fetchval("SELECT count(*) FROM repair_incidents WHERE kind LIKE 'RAIL_%'") == 4


def test_a_statement_of_another_format_is_a_usage_error(tmp_path: Path, database_url: str) -> None:
    """Garbage in: one line, exit 2, no traceback."""
    path = tmp_path / "x.csv"
    path.write_text(json.dumps({"not": "a statement"}))
    result = symphony_cli("reconcile", "--rail", "mtn_momo", "--statement", str(path), "--database-url",
                          database_url)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "not a mtn_momo statement" in result.stderr


async def test_sql_twins_of_the_handle_and_exponent_agree_with_the_core(db: asyncpg.Connection) -> None:
    """rail_handle_v1 / currency_exponent_v1 (migration 0100) equal symphony.rail_handles / symphony.money."""
    from symphony import money
    from symphony.rail_handles import HANDLE_OF_KIND

    ids = [uuid.uuid4() for _ in range(300)] + [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]
    for kind, derive in HANDLE_OF_KIND.items():
        rows = await db.fetch("SELECT i, rail_handle_v1($1, i) AS h FROM unnest($2::uuid[]) AS i", kind, ids)
        assert len(rows) == len(ids)
        assert all(r["h"] == derive(r["i"]) for r in rows), kind
    currencies = sorted(money.ZERO_DECIMAL | money.THREE_DECIMAL | {"KES", "USD", "EUR", "TZS"})
    rows = await db.fetch("SELECT c, currency_exponent_v1(c) AS e FROM unnest($1::text[]) AS c", currencies)
    assert {r["c"]: r["e"] for r in rows} == {c: money.exponent(c) for c in currencies}
