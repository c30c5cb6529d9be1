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
    iso20022      camt.053.001.08: one booked DBIT Ntry per transfer (see "camt.053" below for
                  how an entry is read: a fast path for the layout, pyiso20022 for anything else)

Memory stays bounded (one 1 MiB chunk of the file at a time) for every format.
Python does no work per CSV line: after its header is checked, a CSV statement is
streamed in chunks straight into a temporary table (COPY ... CSV). A camt.053 is
turned into one row of cells per entry and streamed the same way (COPY text).
Then PostgreSQL derives each line's outbox id, expected handle
(rail_handle_of_digest_v1, the SQL twin of symphony.rail_handles) and minor
amount, and matches. The minor-unit factors come from symphony.money (the
`iso4217` package) as a query parameter: there is no second currency table in
SQL. Progress goes to stderr when it is a terminal.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import sys
import time
import xml.etree.ElementTree as ET
from xml.parsers import expat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import msgspec

from symphony import iso20022, money
from symphony.db import queries

QUERIES = queries.load(__package__, "reconcile.sql")
TIMEOUT_SECONDS = 600.0
FORMATS = ("mtn_momo", "airtel_money", "iso20022")


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


def minor_unit_factors() -> tuple[list[str], list[int]]:
    """symphony.money's ISO 4217 table as the SQL's $1 (codes) and $2 (10 ** exponent, minor units per major)."""
    codes = sorted(money.EXPONENTS)
    return codes, [10 ** money.EXPONENTS[code] for code in codes]


async def copy_csv(conn: asyncpg.Connection, kind: str, path: Path, progress: Progress,
                   factors: tuple[list[str], list[int]]) -> int:
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
        inserted = await conn.execute(QUERIES[f"lines_from_{kind}_csv"], *factors, timeout=TIMEOUT_SECONDS)
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.BadCopyFileFormatError) as exc:
        raise StatementError(f"not a readable {kind} statement: {exc}"[:300]) from None
    await conn.execute(QUERIES["clear_raw"], timeout=TIMEOUT_SECONDS)
    total = int(inserted.split()[-1])
    progress.update(total, final=True)
    return total


# -- camt.053 ----------------------------------------------------------------------
#
# A camt.053 becomes one row of cells per <Ntry>, COPYed (text format) into recon_raw
# and turned into recon_lines by the SQL `lines_from_iso20022`, like the CSVs:
#
#     c1 handle    Ntry/NtryDtls/TxDtls/Refs/TxId, else Ntry/NtryRef
#     c2 reference Refs/EndToEndId (the outbox id as 32 hex digits, as Symphony sends it)
#     c3 amount    Ntry/Amt, negative when Ntry/CdtDbtInd is CRDT (money came back)
#     c4 currency  Ntry/Amt/@Ccy
#     c5 account   TxDtls/RltdPties/CdtrAcct/Id/Othr/Id
#     c6 rail txn  Ntry/AcctSvcrRef
#     c7 booked on Ntry/BookgDt/Dt (1970-01-01 when absent)
#
# The exact decoder is pyiso20022's ReportEntry10 (camt053_entries, below), at
# about 2 000 entries/s. A bank writes every entry of a statement the same way,
# so the fast path reads an entry with one regular expression that accepts only
# that layout, element by element in the schema's order (the layout xsdata
# writes, with or without whitespace between elements), and hands any entry it
# does not accept (another element order or optional element, an entity or CDATA
# in a value, attributes) to the exact decoder. Expat (C, no callbacks) checks the
# rest of the document (_well_formed), so a statement that is not well-formed XML
# is refused as a whole. The fast path needs the camt.053 namespace as the default
# namespace of the <Document> root; any other document (prefixed names) is read
# entirely by the exact decoder. tests/repair/test_reconcile.py proves that both
# paths give the same cells on varied entries.

_WS = rb"[ \t\r\n]*"
# Character data with no markup, no control character and no ']' (so never ']]>').
_TEXT = rb"[^<&\\\]\x00-\x1f]*"
_VALUE = rb"(" + _TEXT + rb")"


def _element(name: bytes, value: bytes = _VALUE) -> bytes:
    return rb"<" + name + rb">" + value + rb"</" + name + rb">" + _WS


_AMOUNT = rb'<Amt[ \t\r\n]+Ccy="([A-Z]{3})"[ \t\r\n]*>([0-9]{1,18}(?:\.[0-9]{1,5})?)</Amt>' + _WS
_FAST_ENTRY = re.compile(
    rb"<Ntry>" + _WS + _element(rb"NtryRef") + _AMOUNT + _element(rb"CdtDbtInd", rb"(DBIT|CRDT)")
    + rb"<Sts>" + _WS + rb"<Cd>BOOK</Cd>" + _WS + rb"</Sts>" + _WS
    + rb"<BookgDt>" + _WS + rb"<Dt>([0-9]{4}-[0-9]{2}-[0-9]{2})</Dt>" + _WS + rb"</BookgDt>" + _WS
    + _element(rb"AcctSvcrRef")
    + rb"(?:<BkTxCd>" + _WS + rb"<Domn>" + _WS + _element(rb"Cd", rb"[A-Z]{1,4}") + rb"<Fmly>" + _WS
    + _element(rb"Cd", rb"[A-Z]{1,4}") + _element(rb"SubFmlyCd", rb"[A-Z]{1,4}") + rb"</Fmly>" + _WS
    + rb"</Domn>" + _WS + rb"</BkTxCd>" + _WS + rb")?"
    + rb"<NtryDtls>" + _WS + rb"<TxDtls>" + _WS + rb"<Refs>" + _WS
    + rb"(?:<AcctSvcrRef>" + _TEXT + rb"</AcctSvcrRef>" + _WS + rb")?"
    + _element(rb"EndToEndId") + _element(rb"TxId") + rb"</Refs>" + _WS
    + rb'<Amt[ \t\r\n]+Ccy="[A-Z]{3}"[ \t\r\n]*>[0-9.]{1,25}</Amt>' + _WS
    + _element(rb"CdtDbtInd", rb"(?:DBIT|CRDT)")
    + rb"<RltdPties>" + _WS + rb"<CdtrAcct>" + _WS + rb"<Id>" + _WS + rb"<Othr>" + _WS + _element(rb"Id")
    + rb"</Othr>" + _WS + rb"</Id>" + _WS + rb"</CdtrAcct>" + _WS + rb"</RltdPties>" + _WS
    + rb"</TxDtls>" + _WS + rb"</NtryDtls>" + _WS + rb"</Ntry>")
_OTHER_ENCODING = re.compile(rb'<\?xml[^>]*encoding[ \t\r\n]*=[ \t\r\n]*["\'](?![Uu][Tt][Ff]-?8["\'])')
_DEFAULT_NAMESPACE_ROOT = re.compile(
    rb'<Document[ \t\r\n]+xmlns[ \t\r\n]*=[ \t\r\n]*"' + re.escape(iso20022.CAMT053_NS.encode())
    + rb'"[ \t\r\n]*>')
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    """A value as one field of COPY's text format."""
    return value.translate(_COPY_ESCAPES)


def _cells_of_entry(entry: iso20022.StatementEntry) -> bytes:
    cells = (entry.tx_id, entry.end_to_end_id, str(entry.amount), entry.currency, entry.creditor_account,
             entry.reference, entry.booked_on.isoformat())
    return "\t".join(_copy_text(cell) for cell in cells).encode()


def _fast_cells(match: re.Match[bytes]) -> bytes:
    ntry_ref, currency, amount, sign, booked, rail_txn, end_to_end, tx_id, account = match.groups()
    signed = b"-" + amount if sign == b"CRDT" else amount
    return b"\t".join((tx_id or ntry_ref, end_to_end, signed, currency, account, rail_txn, booked))


def _exact_cells(fragment: bytes, number: int) -> bytes:
    """One <Ntry> of a default-namespace document, decoded by pyiso20022."""
    assert fragment.startswith(b"<Ntry") and fragment.endswith(b"</Ntry>")
    scoped = b'<Ntry xmlns="' + iso20022.CAMT053_NS.encode() + b'"' + fragment[len(b"<Ntry"):]
    try:
        return _cells_of_entry(iso20022.camt053_entry_parse(scoped))
    except iso20022.MessageError as exc:
        raise StatementError(f"entry {number}: {exc}") from None


def camt053_entries(stream: IO[bytes]) -> Iterator[iso20022.StatementEntry]:
    """The exact decoder: one <Ntry> at a time (iterparse), decoded by pyiso20022's ReportEntry10."""
    namespace = "{" + iso20022.CAMT053_NS + "}"
    number = 0
    seen_document = False
    try:
        for event, element in ET.iterparse(stream, events=("start", "end")):
            if event == "start":
                if not seen_document:
                    if element.tag != namespace + "Document":
                        raise StatementError(f"not a camt.053.001.08 document (root {element.tag})")
                    seen_document = True
                continue
            if element.tag != namespace + "Ntry":
                continue
            number += 1
            ET.register_namespace("", iso20022.CAMT053_NS)
            try:
                entry = iso20022.camt053_entry_parse(ET.tostring(element))
            except iso20022.MessageError as exc:
                raise StatementError(f"entry {number}: {exc}") from None
            element.clear()
            yield entry
    except ET.ParseError as exc:
        raise StatementError(f"not well-formed XML: {exc}") from None


def camt053_cells(path: Path, progress: Progress) -> Iterator[bytes]:
    """COPY text of the statement's entries, in chunks (fast path, exact decoder where it must)."""
    with path.open("rb") as handle:
        head = handle.read(CHUNK_BYTES)
        first = head.find(b"<Ntry>")
        limit = first if first >= 0 else len(head)
        if _OTHER_ENCODING.match(head.removeprefix(b"\xef\xbb\xbf")) \
                or not _DEFAULT_NAMESPACE_ROOT.search(head, 0, limit):
            handle.seek(0)
            number = 0
            batch: list[bytes] = []
            for entry in camt053_entries(handle):
                number += 1
                batch.append(_cells_of_entry(entry))
                if len(batch) >= 1_000:
                    progress.update(number)
                    yield b"\n".join(batch) + b"\n"
                    batch = []
            if batch:
                yield b"\n".join(batch) + b"\n"
            return
        yield from _camt053_fast(handle, head, progress)


def _camt053_fast(handle: IO[bytes], head: bytes, progress: Progress) -> Iterator[bytes]:
    """Cells of every entry; expat checks every byte the fast pattern did not take (see below)."""
    checker = expat.ParserCreate()
    number = 0
    pending = b""
    chunk = head
    while chunk:
        buffer = pending + chunk
        cells: list[bytes] = []
        checked = 0  # bytes of `buffer` given to expat, or taken whole by the fast pattern
        position = buffer.find(b"<Ntry>")
        while position >= 0:
            end = buffer.find(b"</Ntry>", position)
            if end < 0:
                break
            end += len(b"</Ntry>")
            number += 1
            match = _FAST_ENTRY.fullmatch(buffer, position, end)
            if match is not None:
                _well_formed(checker, buffer[checked:position], number)
                checked = end
                cells.append(_fast_cells(match))
            else:
                cells.append(_exact_cells(buffer[position:end], number))
            position = buffer.find(b"<Ntry>", end)
        keep = position if position >= 0 else max(checked, len(buffer) - len(b"<Ntry>"))
        _well_formed(checker, buffer[checked:keep], number)
        pending = buffer[keep:]
        if cells:
            progress.update(number)
            yield b"\n".join(cells) + b"\n"
        chunk = handle.read(CHUNK_BYTES)
    _well_formed(checker, pending, number, final=True)


def _well_formed(checker: expat.XMLParserType, data: bytes, number: int, *, final: bool = False) -> None:
    """Feed expat the document minus the entries the fast pattern took.

    The pattern accepts an entry only as a sequence of fixed tags whose values
    hold no markup, no control character and no ']' (so no ']]>'): such an
    entry is a well-formed element, and cutting a well-formed element out of
    element content leaves a document well-formed exactly when the whole was.
    So the statement is well-formed iff what expat sees is, and expat reads a
    fifth of the bytes."""
    try:
        checker.Parse(data, final)
    except expat.ExpatError as exc:
        raise StatementError(f"not well-formed XML near entry {number}: {expat.ErrorString(exc.code)}") from None


async def copy_camt053(conn: asyncpg.Connection, path: Path, progress: Progress,
                       factors: tuple[list[str], list[int]]) -> int:
    """Stream the entries' cells into recon_raw (COPY), then into recon_lines (one INSERT ... SELECT)."""
    await conn.execute(QUERIES["create_raw"], timeout=TIMEOUT_SECONDS)
    await conn.execute(QUERIES["clear_raw"], timeout=TIMEOUT_SECONDS)
    columns = [f"c{index}" for index in range(1, 8)]

    async def chunks() -> Any:
        for chunk in camt053_cells(path, progress):
            yield chunk

    try:
        await conn.copy_to_table("recon_raw", source=chunks(), columns=columns, format="text",
                                 timeout=TIMEOUT_SECONDS)
        inserted = await conn.execute(QUERIES["lines_from_iso20022"], *factors, timeout=TIMEOUT_SECONDS)
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.BadCopyFileFormatError) as exc:
        raise StatementError(f"not a readable iso20022 statement: {exc}"[:300]) from None
    await conn.execute(QUERIES["clear_raw"], timeout=TIMEOUT_SECONDS)
    total = int(inserted.split()[-1])
    progress.update(total, final=True)
    return total


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
                    progress: Progress | None = None,
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
        report.lines = await copy_csv(conn, kind, path, progress, minor_unit_factors())
    else:
        report.lines = await copy_camt053(conn, path, progress, minor_unit_factors())
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
