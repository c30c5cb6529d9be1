"""Reconciliation against the rails' own statements.

A statement lists what the rail says moved. Each line names the rail's
idempotency handle and the payment's reference (the outbox id Symphony sent);
a line matches an outbox row when the row exists on that rail and the line's
handle is the row's derived handle (symphony.rail_handles), with the same
amount, currency and account. Everything else is an incident, opened through
open_incident_v1 (kinds from migration 0100): see repair/reconcile.sql.

Formats read (the simulators produce them from their stores, rail_sim/real_rails.py):

    mtn_momo      CSV, the partner portal's transaction history: Id, External Transaction Id,
                  Reference Id, Date, Status, Type, To, Amount, Currency (SUCCESSFUL lines count)
    airtel_money  CSV statement: Transaction ID, Airtel Money ID, Reference, Transaction Date,
                  Status, MSISDN, Amount, Currency (TS lines count)
    iso20022      camt.053.001.08: one booked DBIT Ntry per transfer, read one <Ntry> at a time
                  (xml.etree iterparse) and decoded with the pyiso20022 models

Memory stays bounded and Python does no work per CSV line: after its header is
checked, a CSV statement is streamed in 1 MiB chunks straight into a temporary
table (COPY ... CSV), and PostgreSQL derives each line's outbox id, expected
handle (rail_handle_v1, the SQL twin of symphony.rail_handles) and minor amount,
then matches. A camt.053 is decoded entry by entry and COPYed in batches of
`batch_lines`. Progress goes to stderr when it is a terminal.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import msgspec

from symphony import iso20022, money
from symphony.db import queries
from symphony.rail_handles import HANDLE_OF_KIND

QUERIES = queries.load(__package__, "reconcile.sql")
TIMEOUT_SECONDS = 600.0
BATCH_LINES = 20_000
FORMATS = ("mtn_momo", "airtel_money", "iso20022")
COLUMNS = ("line_no", "handle", "outbox_id", "expected_handle", "amount_minor", "currency", "account", "rail_txn",
           "booked_on")


class StatementError(ValueError):
    """A statement this reader cannot read (wrong format, missing column)."""


@dataclass
class Report:
    rail: str
    source: str
    lines: int = 0
    matched: int = 0
    unmatched: int = 0
    mismatched: int = 0
    missing: int = 0
    already_ingested: bool = False
    seconds: float = 0.0
    incidents: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return self.unmatched == 0 and self.mismatched == 0 and self.missing == 0


Row = tuple[int, str, uuid.UUID | None, str | None, int, str, str, str, dt.date | None]


def _outbox_of(reference: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(reference)
    except ValueError:
        return None


def _row(kind: str, line_no: int, handle: str, reference: str, amount: str, currency: str, account: str,
         rail_txn: str, when: str) -> Row:
    outbox_id = _outbox_of(reference)
    expected = HANDLE_OF_KIND[kind](outbox_id) if outbox_id is not None else None
    try:
        amount_minor = money.to_minor(amount, currency)
    except (ValueError, ArithmeticError, AssertionError):
        raise StatementError(f"line {line_no}: amount {amount!r} {currency!r} is not readable") from None
    try:
        booked = dt.date.fromisoformat(when[:10]) if when else None
    except ValueError:
        raise StatementError(f"line {line_no}: date {when!r} is not ISO 8601") from None
    return (line_no, handle, outbox_id, expected, amount_minor, currency, account, rail_txn, booked)


CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "mtn_momo": ("Id", "External Transaction Id", "Reference Id", "Date", "Status", "Type", "To", "Amount",
                 "Currency"),
    "airtel_money": ("Transaction ID", "Airtel Money ID", "Reference", "Transaction Date", "Status", "MSISDN",
                     "Amount", "Currency"),
}
CHUNK_BYTES = 1 << 20


def csv_header(kind: str, path: Path) -> int:
    """Check the statement's header; the byte offset where its lines begin."""
    with path.open("rb") as handle:
        first = handle.readline()
    try:
        header = next(csv.reader([first.decode("utf-8-sig")]))
    except (UnicodeDecodeError, StopIteration, csv.Error):
        raise StatementError(f"not a {kind} statement: no readable header") from None
    if tuple(header) != CSV_COLUMNS[kind]:
        raise StatementError(f"not a {kind} statement: header {header[:9]!r}, expected {list(CSV_COLUMNS[kind])}")
    return len(first)


async def copy_csv(conn: asyncpg.Connection, kind: str, path: Path, progress: Progress) -> int:
    """Stream the CSV lines into recon_raw (COPY), then into recon_lines (one INSERT ... SELECT)."""
    offset = csv_header(kind, path)
    await conn.execute(QUERIES["create_raw"], timeout=TIMEOUT_SECONDS)
    await conn.execute(QUERIES["clear_raw"], timeout=TIMEOUT_SECONDS)
    columns = [f"c{index}" for index in range(1, len(CSV_COLUMNS[kind]) + 1)]

    async def chunks() -> Any:
        newlines = 0
        with path.open("rb") as handle:
            handle.seek(offset)
            for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                newlines += chunk.count(b"\n")
                progress.update(newlines)
                yield chunk

    try:
        await conn.copy_to_table("recon_raw", source=chunks(), columns=columns, format="csv",
                                 timeout=TIMEOUT_SECONDS)
        inserted = await conn.execute(QUERIES[f"lines_from_{kind}_csv"], timeout=TIMEOUT_SECONDS)
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.BadCopyFileFormatError) as exc:
        raise StatementError(f"not a readable {kind} statement: {exc}"[:300]) from None
    await conn.execute(QUERIES["clear_raw"], timeout=TIMEOUT_SECONDS)
    total = int(inserted.split()[-1])
    progress.update(total, final=True)
    return total


def read_camt053(stream: IO[bytes]) -> Iterator[Row]:
    """One <Ntry> at a time: decoded with pyiso20022's ReportEntry10, then dropped from the tree."""
    namespace = "{" + iso20022.CAMT053_NS + "}"
    line_no = 0
    seen_document = False
    for event, element in ET.iterparse(stream, events=("start", "end")):
        if event == "start":
            if not seen_document:
                if element.tag != namespace + "Document":
                    raise StatementError(f"not a camt.053.001.08 document (root {element.tag})")
                seen_document = True
            continue
        if element.tag != namespace + "Ntry":
            continue
        line_no += 1
        ET.register_namespace("", iso20022.CAMT053_NS)
        try:
            entry = iso20022.camt053_entry_parse(ET.tostring(element))
        except iso20022.MessageError as exc:
            raise StatementError(f"entry {line_no}: {exc}") from None
        element.clear()
        reference = entry.end_to_end_id
        try:
            reference = str(uuid.UUID(hex=entry.end_to_end_id))
        except ValueError:
            pass
        yield _row("iso20022", line_no, entry.tx_id, reference, str(entry.amount), entry.currency,
                   entry.creditor_account, entry.reference, entry.booked_on.isoformat())


def read_statement(kind: str, path: Path) -> Iterator[Row]:
    """The lines of a statement decoded in Python (camt.053; the CSVs go straight to COPY)."""
    if kind != "iso20022":
        raise StatementError(f"{kind} statements are read by COPY, not line by line")
    with path.open("rb") as binary:
        yield from read_camt053(binary)


def file_sha256(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()


class Progress:
    """A one-line counter on a terminal (stderr), silent otherwise."""

    def __init__(self, label: str, stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.label = label
        self.started = time.monotonic()
        self._last = 0.0

    def update(self, lines: int, *, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self._last < 0.2):
            return
        self._last = now
        rate = lines / max(now - self.started, 1e-9)
        self.stream.write(f"\r{self.label}: {lines:,} lines, {rate:,.0f} lines/s" + ("\n" if final else ""))
        self.stream.flush()


async def load_lines(conn: asyncpg.Connection, rows: Iterator[Row], batch_lines: int, progress: Progress) -> int:
    batch: list[Row] = []
    total = 0
    for row in rows:
        batch.append(row)
        if len(batch) >= batch_lines:
            await conn.copy_records_to_table("recon_lines", records=batch, columns=COLUMNS, timeout=TIMEOUT_SECONDS)
            total += len(batch)
            batch = []
            progress.update(total)
    if batch:
        await conn.copy_records_to_table("recon_lines", records=batch, columns=COLUMNS, timeout=TIMEOUT_SECONDS)
        total += len(batch)
    progress.update(total, final=True)
    return total


async def open_incidents(conn: asyncpg.Connection, findings: list[asyncpg.Record]) -> None:
    """Through open_incident_v1, one round trip per batch (the repair worker's upsert_incidents)."""
    from repair.store import QUERIES as REPAIR_QUERIES

    for start in range(0, len(findings), 5_000):
        chunk = findings[start:start + 5_000]
        await conn.fetch(REPAIR_QUERIES["upsert_incidents"], [f["kind"] for f in chunk],
                         [f["dedup_key"] for f in chunk], [f["severity"] for f in chunk],
                         [f["participant_id"] for f in chunk], [None] * len(chunk), [None] * len(chunk),
                         [f["subject"] for f in chunk],
                         [msgspec.json.encode(f["evidence"]).decode() if not isinstance(f["evidence"], str)
                          else f["evidence"] for f in chunk], timeout=TIMEOUT_SECONDS)


async def reconcile(conn: asyncpg.Connection, rail: str, kind: str, path: Path, *,
                    batch_lines: int = BATCH_LINES, progress: Progress | None = None,
                    once: bool = False) -> Report:
    """Ingest one statement of `rail` (adapter kind `kind`) and open its incidents.

    `once`: skip a statement whose SHA-256 was ingested before (the scheduled run)."""
    started = time.monotonic()
    report = Report(rail=rail, source=str(path))
    digest = file_sha256(path)
    if once and await conn.fetchval(QUERIES["statement_seen"], digest, timeout=TIMEOUT_SECONDS) is not None:
        report.already_ingested = True
        return report
    progress = progress or Progress(f"reconcile {rail}")
    if kind not in FORMATS:
        raise StatementError(f"no statement format for rail kind {kind!r} (known: {', '.join(FORMATS)})")
    await conn.execute(QUERIES["session_memory"], timeout=TIMEOUT_SECONDS)
    try:
        await conn.execute(QUERIES["session_temp_buffers"], timeout=TIMEOUT_SECONDS)
    except asyncpg.InvalidParameterValueError:
        pass  # this session used a temporary table before: it keeps its temp_buffers
    await conn.execute(QUERIES["create_lines"], timeout=TIMEOUT_SECONDS)
    await conn.execute(QUERIES["clear_lines"], timeout=TIMEOUT_SECONDS)
    if kind in CSV_COLUMNS:
        report.lines = await copy_csv(conn, kind, path, progress)
    else:
        report.lines = await load_lines(conn, read_statement(kind, path), batch_lines, progress)
    await conn.execute(QUERIES["index_lines"], timeout=TIMEOUT_SECONDS)
    await conn.execute(QUERIES["analyze_lines"], timeout=TIMEOUT_SECONDS)
    findings = await conn.fetch(QUERIES["findings"], rail, timeout=TIMEOUT_SECONDS)
    counts = await conn.fetchrow(QUERIES["counts"], rail, timeout=TIMEOUT_SECONDS)
    await open_incidents(conn, findings)
    report.matched = int(counts["matched"])
    for finding in findings:
        evidence = finding["evidence"]
        reason = (evidence if isinstance(evidence, dict) else msgspec.json.decode(evidence))["reason"]
        if reason == "MISSING_FROM_STATEMENT":
            report.missing += 1
        elif finding["kind"] == "RAIL_MISMATCH":
            report.mismatched += 1
        else:
            report.unmatched += 1
        report.incidents.append({"kind": finding["kind"], "severity": finding["severity"], "reason": reason,
                                 "subject": finding["subject"]})
    await conn.execute(QUERIES["record_statement"], digest, rail, str(path), report.lines, report.matched,
                       report.unmatched, report.mismatched, report.missing, counts["period_from"],
                       counts["period_to"], timeout=TIMEOUT_SECONDS)
    await conn.execute(QUERIES["clear_lines"], timeout=TIMEOUT_SECONDS)
    report.seconds = time.monotonic() - started
    return report


async def reconcile_directory(conn: asyncpg.Connection, directory: Path, kinds: dict[str, str]) -> list[Report]:
    """The scheduled run: every statement file in `<directory>/<rail>/` not ingested before."""
    reports = []
    for rail, kind in sorted(kinds.items()):
        folder = directory / rail
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            report = await reconcile(conn, rail, kind, path, once=True,
                                     progress=Progress(f"reconcile {rail}", io.StringIO()))
            if not report.already_ingested:
                reports.append(report)
    return reports


async def summary(conn: asyncpg.Connection) -> dict[str, int]:
    """Counts for the dashboard and the evidence bundle."""
    row = await conn.fetchrow(QUERIES["summary"], timeout=TIMEOUT_SECONDS)
    return {key: int(row[key]) for key in row.keys()}
