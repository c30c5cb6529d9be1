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
import re
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
    parsed = list(reconcile.camt053_entries(io.BytesIO(data)))
    assert parsed
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
    # A third pass finds nothing new to read (the file is known by its SHA-256).
    assert await reconcile.reconcile_directory(db, tmp_path / "statements", {"mtn_momo": "mtn_momo"}) == []
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


async def test_sql_twin_of_the_handle_agrees_with_the_core(db: asyncpg.Connection) -> None:
    """rail_handle_v1 (migration 0100) equals symphony.rail_handles for every kind; the SQL copy of the
    currency table is gone (0150): reconciliation takes symphony.money's table as a parameter."""
    from symphony.rail_handles import HANDLE_OF_KIND

    ids = [uuid.uuid4() for _ in range(300)] + [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]
    for kind, derive in HANDLE_OF_KIND.items():
        rows = await db.fetch("SELECT i, rail_handle_v1($1, i) AS h FROM unnest($2::uuid[]) AS i", kind, ids)
        assert len(rows) == len(ids)
        assert all(r["h"] == derive(r["i"]) for r in rows), kind
    assert await db.fetchval("SELECT count(*) FROM pg_proc WHERE proname = 'currency_exponent_v1'") == 0


def test_money_takes_every_exponent_from_the_iso4217_package() -> None:
    """One table: every code of the package with minor units has its exponent in symphony.money (CLF and
    UYW have 4 decimals), codes without minor units have none, and the SQL parameter is 10^exponent."""
    import iso4217

    from symphony import money

    listed = [c for c in iso4217.Currency if c.exponent is not None]
    assert len(listed) > 150
    assert {c.code: money.exponent(c.code) for c in listed} == {c.code: c.exponent for c in listed}
    assert money.exponent("UYW") == 4 and money.exponent("UGX") == 0 and money.exponent("KWD") == 3
    for code in ("XXX", "XAU", "ZZZ"):
        with pytest.raises(ValueError):
            money.exponent(code)
    codes, factors = reconcile.minor_unit_factors()
    assert dict(zip(codes, factors)) == {c.code: 10 ** c.exponent for c in listed}


def _cells(path: Path) -> list[bytes]:
    out = b"".join(reconcile.camt053_cells(path, reconcile.Progress("test", io.StringIO())))
    return out.splitlines()


def test_camt053_fast_path_reads_exactly_what_pyiso20022_reads(tmp_path: Path) -> None:
    """Goal: the fast reader of camt.053 entries gives the same cells as the exact decoder (pyiso20022) for
    every entry, whether it takes the entry itself or hands it over. Method: a statement built with
    pyiso20022 (varied amounts, currencies, accounts with XML-special characters), one entry turned into
    a credit, the same statement pretty-printed, and one with a prefixed namespace; the fast path must
    have taken the plain entries (its pattern matches them), and the cells must equal those made from
    reconcile.camt053_entries."""
    import datetime as dt

    from xsdata.formats.dataclass.serializers.config import SerializerConfig

    ids = [uuid.uuid4() for _ in range(6)]
    accounts = ["256700000001", "ACC-1", "a&b <c>", 'q"uote,comma', "back\\slash", "  spaced  "]
    amounts = [(Decimal("12.34"), "KES"), (Decimal("1500"), "UGX"), (Decimal("0.125"), "KWD"),
               (Decimal("99999999.99"), "USD"), (Decimal("1.5"), "EUR"), (Decimal("7"), "JPY")]
    entries = [iso20022.StatementEntry(tx_id=f"{index:035d}", end_to_end_id=outbox_id.hex, amount=amount,
                                       currency=currency, creditor_account=account, reference=f"RTGS-{index}",
                                       booked_on=dt.date(2026, 12, 5))
               for index, (outbox_id, account, (amount, currency)) in enumerate(zip(ids, accounts, amounts))]
    compact = iso20022.camt053_build("STMT", "SETTLEMENT", "KES", entries)
    credit = compact.replace(b"<CdtDbtInd>DBIT</CdtDbtInd>", b"<CdtDbtInd>CRDT</CdtDbtInd>", 1)
    pretty = iso20022._serializer.__class__(config=SerializerConfig(xml_declaration=True, encoding="UTF-8",
                                                                    indent="  ")) \
        .render(iso20022._parser.from_bytes(compact, iso20022.camt053.Document),
                ns_map={None: iso20022.CAMT053_NS}).encode()
    prefixed = iso20022._serializer.render(iso20022._parser.from_bytes(compact, iso20022.camt053.Document),
                                           ns_map={"c": iso20022.CAMT053_NS}).encode()
    assert b"\n  " in pretty and b"<c:Ntry>" in prefixed
    for name, data in (("compact", compact), ("credit", credit), ("pretty", pretty), ("prefixed", prefixed)):
        path = tmp_path / f"{name}.xml"
        path.write_bytes(data)
        with path.open("rb") as handle:
            exact = [reconcile._cells_of_entry(e) for e in reconcile.camt053_entries(handle)]
        assert len(exact) == len(entries), name
        assert _cells(path) == exact, name
    fast = [m for m in re.finditer(rb"<Ntry>.*?</Ntry>", pretty, re.S) if reconcile._FAST_ENTRY.fullmatch(m[0])]
    assert len(fast) >= 3, "the fast path took none of the plain entries"
    assert b"-12.34" in b"".join(_cells(tmp_path / "credit.xml"))


def test_camt053_that_is_not_well_formed_is_refused_whole(tmp_path: Path) -> None:
    """A truncated camt.053 is a StatementError (not a partial reconciliation)."""
    entry = iso20022.StatementEntry(tx_id="a" * 35, end_to_end_id=uuid.uuid4().hex, amount=Decimal("1.00"),
                                    currency="KES", creditor_account="ACC1", reference="R1",
                                    booked_on=__import__("datetime").date(2026, 12, 5))
    data = iso20022.camt053_build("STMT", "SETTLEMENT", "KES", [entry, entry])
    path = tmp_path / "cut.xml"
    path.write_bytes(data[:-40])
    with pytest.raises(reconcile.StatementError, match="well-formed"):
        _cells(path)


def test_camt053_entry_the_fast_path_skips_is_still_checked(tmp_path: Path) -> None:
    """Goal: the fast path hands expat everything it does not take whole, so markup it would not accept
    is still refused. Method: a statement whose second entry carries ']]>' in its account (not well-formed
    character data): the fast pattern must refuse that entry and the reader must refuse the statement;
    the same statement with a plain account reads."""
    import datetime as dt

    entries = [iso20022.StatementEntry(tx_id=f"{n:035d}", end_to_end_id=uuid.uuid4().hex, amount=Decimal("1.00"),
                                       currency="KES", creditor_account="ACC", reference=f"R{n}",
                                       booked_on=dt.date(2026, 12, 5)) for n in range(3)]
    data = iso20022.camt053_build("STMT", "SETTLEMENT", "KES", entries)
    good = tmp_path / "good.xml"
    good.write_bytes(data)
    assert len(_cells(good)) == 3
    bad = tmp_path / "bad.xml"
    second = data.index(b"<Id>ACC</Id>", data.index(b"<Ntry>", data.index(b"<Ntry>") + 1))
    bad.write_bytes(data[:second] + b"<Id>A]]>C</Id>" + data[second + len(b"<Id>ACC</Id>"):])
    with pytest.raises(reconcile.StatementError):
        _cells(bad)
